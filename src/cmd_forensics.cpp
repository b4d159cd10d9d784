// Crash forensics from the log files alone (the daemon and the server may both be dead):
//   `chatcap suspects [--json] [--all]`  which requests were in flight when the server died,
//                                        each with its request (structured output first) and
//                                        what became of it;
//   `chatcap show ID --curl`             a bash command that replays the exact request;
//   `chatcap show ID --body`             the exact request body bytes, nothing else;
//   `chatcap risks [--json]`             the known engine-killing request shapes chatcap flags.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "chatcap/commands.hpp"
#include "chatcap/log_reader.hpp"
#include "chatcap/report.hpp"
#include "chatcap/risks.hpp"

namespace chatcap {
namespace {

// Writes all of `bytes` to stdout (a pipe may take them in pieces).
bool write_stdout(const std::string& bytes) {
  std::fflush(stdout);
  std::size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(STDOUT_FILENO, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      fmt::print(stderr, "chatcap: cannot write to stdout: {}\n", std::strerror(errno));
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// The exchange `options.show_id` names; prints the error and returns nullptr when none.
const LoggedExchange* find(const Options& options, const LogContents& log) {
  try {
    return &find_exchange(log, options.show_id, options.log_dir);
  } catch (const LogError& error) {
    fmt::print(stderr, "chatcap: {}\n", error.what());
    return nullptr;
  }
}

}  // namespace

int command_suspects(const Options& options) {
  LogContents log;
  if (!load_log(options, log)) return 1;
  if (log.server_downs.empty()) {
    // A normal answer, not a failure: the server never died while chatcap watched it.
    fmt::print(stderr, "chatcap: no server death recorded in {}\n", options.log_dir);
    return 0;
  }
  const std::size_t deaths = log.server_downs.size();
  const std::size_t first = options.all ? 0 : deaths - 1;  // oldest first, the latest last
  RenderStyle style = RenderStyle::for_stdout();
  for (std::size_t i = first; i < deaths; ++i) {
    const nlohmann::json& down = log.server_downs[i];
    if (options.json) {
      fmt::print("{}\n", suspects_json(down, log).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    } else {
      fmt::print("{}{}", i == first ? "" : "\n", render_suspects(down, suspects_of(down, log), style));
    }
  }
  if (!options.json && !options.all && deaths > 1) {
    fmt::print("\n({} earlier server death{} in {}: `chatcap suspects --all` lists them all)\n", deaths - 1,
               deaths == 2 ? "" : "s", escape_control(options.log_dir));
  }
  return 0;
}

int command_show_curl(const Options& options) {
  LogContents log;
  if (!load_log(options, log)) return 1;
  const LoggedExchange* e = find(options, log);
  if (e == nullptr) return 1;
  try {
    return write_stdout(curl_command(*e)) ? 0 : 1;
  } catch (const LogError& error) {
    fmt::print(stderr, "chatcap: {}\n", error.what());
    return 1;
  }
}

int command_show_body(const Options& options) {
  LogContents log;
  if (!load_log(options, log)) return 1;
  const LoggedExchange* e = find(options, log);
  if (e == nullptr) return 1;
  std::string body;
  try {
    body = exact_request_body(*e);
  } catch (const LogError& error) {
    fmt::print(stderr, "chatcap: {}\n", error.what());
    return 1;
  }
  // Like curl: bytes a terminal would act on (escape sequences, bidi overrides, binary) are
  // not sent to one. Plain text and JSON are.
  if (::isatty(STDOUT_FILENO) == 1 && escape_control(body, /*keep_newlines=*/true) != body) {
    fmt::print(stderr,
               "chatcap: the request body of exchange {} holds control characters or bytes that are not text, "
               "which the terminal would act on — redirect it: chatcap show {} --body > body.bin\n",
               escape_control(e->id), escape_control(e->id));
    return 1;
  }
  return write_stdout(body) ? 0 : 1;
}

int command_risks(const Options& options) {
  if (options.json) {
    for (const RiskEntry& risk : risk_table()) {
      nlohmann::json entry{{"id", risk.id},     {"shape", risk.shape}, {"versions", risk.versions},
                           {"ref", risk.ref},   {"why", risk.why}};
      fmt::print("{}\n", entry.dump());
    }
    return 0;
  }
  fmt::print("Known engine-killing request shapes: a request that matches one is flagged the moment it is\n"
             "complete (its record's \"risks\", `last`, `tail`, the journal) and ranks first among the\n"
             "suspects if the server then dies.\n");
  for (const RiskEntry& risk : risk_table()) {
    fmt::print("\n{}  ({})\n  shape:    {}\n  versions: {}\n  why:      {}\n", risk.id, risk.ref, risk.shape,
               risk.versions, risk.why);
  }
  return 0;
}

}  // namespace chatcap
