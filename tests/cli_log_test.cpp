// `chatcap last`, `--last`, `show` and `tail` as a user runs them: the binary on a log
// directory, its output, exit codes and messages.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "chatcap/log_reader.hpp"
#include "support/records.hpp"

extern char** environ;

using namespace chatcap;
using namespace chatcap::testing;
using nlohmann::json;

namespace {

std::string request_line(const std::string& id, const std::string& body, const std::string& model = "gpt-oss-120b") {
  json r = {{"type", "request"}, {"id", id}, {"ts", "2026-11-24T15:21:53.758382Z"}, {"client", "127.0.0.1:39866"},
            {"server", "127.0.0.1:8077"}, {"method", "POST"}, {"target", "/v1/chat/completions"},
            {"headers", json::array({json::array({"content-type", "application/json"})})}, {"body", body},
            {"body_bytes", body.size()}, {"summary", {{"model", model}, {"stream", true}, {"messages", 1}}}};
  return r.dump() + "\n";
}

std::string exchange_line(const std::string& id, const std::string& content) {
  json r = {{"type", "exchange"}, {"id", id}, {"ts", "2026-11-24T15:21:55.000000Z"}, {"client", "127.0.0.1:39866"},
            {"server", "127.0.0.1:8077"}, {"method", "POST"}, {"target", "/v1/chat/completions"},
            {"state", "complete"}, {"status", 200}, {"reason", "OK"}, {"response_headers", json::array()},
            {"sse", {{"events", 3}, {"done", true}, {"content", content}, {"reasoning", ""},
                     {"tool_calls", json::array()}, {"finish_reason", "stop"}, {"usage", nullptr}, {"error", nullptr}}},
            {"timing", {{"ttfb_ms", 12.1}, {"ttft_ms", 80.4}, {"duration_ms", 2210.0}}}, {"anomalies", json::array()}};
  return r.dump() + "\n";
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

void append_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::app) << bytes;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<json> json_lines(const std::string& out) {
  std::vector<json> lines;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) lines.push_back(json::parse(line));
  return lines;
}

// A log of three finished exchanges (one across a rotation) and one in flight.
void write_sample_log(const TempDir& dir) {
  write_file(dir.file(kPreviousLogName),
             request_line("aa11", "{\"n\":1}") + exchange_line("aa11", "one") + request_line("ab22", "{\"n\":2}"));
  write_file(dir.file(kCurrentLogName), request_line("ab22", "{\"n\":2}") + request_line("bb33", "{\"n\":3}") +
                                            exchange_line("ab22", "two") + exchange_line("bb33", "three") +
                                            request_line("cc44", "{\"n\":4}"));
}

// A command left running in the background, its output going to files.
class Background {
 public:
  explicit Background(const std::vector<std::string>& argv) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, out_path().c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&actions, 2, err_path().c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    int rc = posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) throw std::runtime_error("cannot start " + argv[0]);
  }
  ~Background() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  std::string out() const { return slurp(out_path()); }
  std::string err() const { return slurp(err_path()); }
  // Waits (up to 10 s) until `path`'s text contains `needle`.
  bool wait_for(bool from_stdout, const std::string& needle) const {
    for (int i = 0; i < 500; ++i) {
      if ((from_stdout ? out() : err()).find(needle) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
  // Sends `signal` and returns the exit code (128+N when killed by a signal).
  int stop(int signal) {
    ::kill(pid_, signal);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  std::string out_path() const { return files_.file("stdout"); }
  std::string err_path() const { return files_.file("stderr"); }
  TempDir files_;
  pid_t pid_ = -1;
};

}  // namespace

TEST_CASE("cli: last --full shows the last N exchanges as blocks, oldest first, in flight marked", "[cli_log]") {
  TempDir dir;
  write_sample_log(dir);
  CommandResult all = run_command({CHATCAP_BINARY, "last", "--full", "--log-dir", dir.path()});
  CHECK(all.exit_code == 0);
  CHECK(all.err.empty());
  std::size_t a = all.out.find("id aa11"), b = all.out.find("id ab22"), c = all.out.find("id bb33"),
              d = all.out.find("id cc44");
  REQUIRE(a != std::string::npos);
  REQUIRE(d != std::string::npos);
  CHECK((a < b && b < c && c < d));
  CHECK(all.out.find("id ab22", b + 1) == std::string::npos);  // the rotation copy is not shown twice
  CHECK_THAT(all.out, Catch::Contains("IN FLIGHT") && Catch::Contains("model gpt-oss-120b") &&
                          Catch::Contains("ttft 80.4 ms") && Catch::Contains("2.21 s") &&
                          Catch::Contains("2026-11-24 15:21:53.758 UTC") && Catch::Contains("three"));
  CHECK(all.out.find('\x1b') == std::string::npos);  // not a terminal: no colour

  // A server death is shown with the exchanges it happened among.
  json down = {{"type", "server_down"}, {"ts", "2026-11-24T15:21:53.900000Z"}, {"server", "127.0.0.1:8077"},
               {"evidence", {"SYN refused"}}, {"suspects", {{{"id", "bb33"}, {"why", "no token received"}}}}};
  append_file(dir.file(kCurrentLogName), down.dump() + "\n");
  std::string with_down = run_command({CHATCAP_BINARY, "last", "--full", "--log-dir", dir.path()}).out;
  CHECK_THAT(with_down, Catch::Contains("server 127.0.0.1:8077 down") && Catch::Contains("no token received"));

  CommandResult two = run_command({CHATCAP_BINARY, "last", "2", "--full", "--log-dir", dir.path()});
  CHECK(two.exit_code == 0);
  CHECK_THAT(two.out, Catch::Contains("id bb33") && Catch::Contains("id cc44") && !Catch::Contains("id ab22"));
}

TEST_CASE("cli: last --json and the flag form --last N print joined objects", "[cli_log]") {
  TempDir dir;
  write_sample_log(dir);
  CommandResult r = run_command({CHATCAP_BINARY, "last", "3", "--log-dir", dir.path(), "--json"});
  CHECK(r.exit_code == 0);
  std::vector<json> lines = json_lines(r.out);
  REQUIRE(lines.size() == 3);
  CHECK(lines[0]["id"] == "ab22");
  CHECK(lines[0]["request"]["body"] == "{\"n\":2}");
  CHECK(lines[0]["exchange"]["sse"]["content"] == "two");
  CHECK(lines[2]["id"] == "cc44");
  CHECK(lines[2]["exchange"].is_null());
  for (const json& line : lines) CHECK(line.size() == 3);

  CommandResult flag = run_command({CHATCAP_BINARY, "--last", "3", "--log-dir", dir.path(), "--json"});
  CHECK(flag.exit_code == 0);
  CHECK(flag.out == r.out);
  CommandResult human = run_command({CHATCAP_BINARY, "--last", "1", "--log-dir", dir.path()});
  CHECK(human.exit_code == 0);
  CHECK_THAT(human.out, Catch::Contains(" cc44 ") && Catch::Contains("in flight") && !Catch::Contains(" bb33 "));
}

TEST_CASE("cli: show takes a full id or a unique prefix", "[cli_log]") {
  TempDir dir;
  write_sample_log(dir);
  CommandResult full = run_command({CHATCAP_BINARY, "show", "bb33", "--log-dir", dir.path()});
  CHECK(full.exit_code == 0);
  CHECK_THAT(full.out, Catch::Contains("id bb33") && Catch::Contains("request headers") &&
                           Catch::Contains("content-type: application/json") && Catch::Contains("three"));
  CommandResult prefix = run_command({CHATCAP_BINARY, "show", "b", "--log-dir", dir.path(), "--json"});
  CHECK(prefix.exit_code == 0);
  std::vector<json> lines = json_lines(prefix.out);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0]["id"] == "bb33");
  CHECK(lines[0]["exchange"]["state"] == "complete");

  CommandResult ambiguous = run_command({CHATCAP_BINARY, "show", "a", "--log-dir", dir.path()});
  CHECK(ambiguous.exit_code == 1);
  CHECK(ambiguous.out.empty());
  CHECK_THAT(ambiguous.err, Catch::Contains("ambiguous") && Catch::Contains("aa11") && Catch::Contains("ab22"));
  CommandResult missing = run_command({CHATCAP_BINARY, "show", "zz", "--log-dir", dir.path()});
  CHECK(missing.exit_code == 1);
  CHECK_THAT(missing.err, Catch::Contains("no exchange with id zz in " + dir.path()) &&
                              Catch::Contains("chatcap last"));
}

TEST_CASE("cli: log commands fail with one sentence and the right exit code", "[cli_log]") {
  TempDir dir;
  CommandResult no_dir = run_command({CHATCAP_BINARY, "last", "--log-dir", dir.file("absent")});
  CHECK(no_dir.exit_code == 1);
  CHECK_THAT(no_dir.err, Catch::Contains("does not exist") && Catch::Contains("--log-dir"));
  CHECK(run_command({CHATCAP_BINARY, "show", "x", "--log-dir", dir.file("absent")}).exit_code == 1);
  CHECK(run_command({CHATCAP_BINARY, "tail", "--log-dir", dir.file("absent")}).exit_code == 1);

  CommandResult empty = run_command({CHATCAP_BINARY, "last", "--log-dir", dir.path()});
  CHECK(empty.exit_code == 0);
  CHECK(empty.out.empty());
  CHECK_THAT(empty.err, Catch::Contains("no exchanges"));

  write_file(dir.file(kCurrentLogName), request_line("aa11", "{}") + "garbage\n" + "{\"type\":\"request\",\"id\":\"x");
  CommandResult bad = run_command({CHATCAP_BINARY, "last", "--log-dir", dir.path()});
  CHECK(bad.exit_code == 0);
  CHECK_THAT(bad.err, Catch::Contains("skipped 1 unreadable line"));

  CHECK(run_command({CHATCAP_BINARY, "last", "0", "--log-dir", dir.path()}).exit_code == 2);
  CHECK(run_command({CHATCAP_BINARY, "last", "many", "--log-dir", dir.path()}).exit_code == 2);
  CHECK(run_command({CHATCAP_BINARY, "show", "--log-dir", dir.path()}).exit_code == 2);
  CHECK(run_command({CHATCAP_BINARY, "--last", "2", "show", "aa"}).exit_code == 2);
  CommandResult help = run_command({CHATCAP_BINARY, "show", "--help"});
  CHECK(help.exit_code == 0);
  CHECK_THAT(help.out, Catch::Contains("Example") && Catch::Contains("--log-dir") && Catch::Contains("--json"));
  CHECK_THAT(run_command({CHATCAP_BINARY, "last", "--help"}).out, Catch::Contains("Example"));
  CHECK_THAT(run_command({CHATCAP_BINARY, "tail", "--help"}).out, Catch::Contains("Example"));
}

TEST_CASE("cli: human output escapes terminal control bytes from captured bodies", "[cli_log]") {
  TempDir dir;
  std::string evil = "{\"messages\":[{\"content\":\"x\"}]}\n\x1b]0;owned\x07\x1b[2J\r";
  write_file(dir.file(kCurrentLogName), request_line("ee55", evil, "m\x1b[5m"));
  for (const char* command : {"last", "show"}) {
    std::vector<std::string> argv{CHATCAP_BINARY, command, "--log-dir", dir.path()};
    if (std::string(command) == "show") argv.insert(argv.begin() + 2, "ee55");
    if (std::string(command) == "last") argv.push_back("--full");
    CommandResult r = run_command(argv);
    CHECK(r.exit_code == 0);
    CHECK(r.out.find('\x1b') == std::string::npos);
    CHECK(r.out.find('\x07') == std::string::npos);
    CHECK_THAT(r.out, Catch::Contains("\\x1b]0;owned\\x07") && Catch::Contains("model m\\x1b[5m"));
  }
  // One line per exchange: the same escapes, and the model's ESC never reaches the terminal.
  CommandResult line = run_command({CHATCAP_BINARY, "last", "--log-dir", dir.path()});
  CHECK(line.out.find('\x1b') == std::string::npos);
  CHECK_THAT(line.out, Catch::Contains("m\\x1b[5m"));
  // --json keeps the exact bytes (JSON-escaped).
  CommandResult raw = run_command({CHATCAP_BINARY, "show", "ee55", "--json", "--log-dir", dir.path()});
  REQUIRE(raw.exit_code == 0);
  CHECK(json_lines(raw.out).at(0)["request"]["body"] == evil);
}

TEST_CASE("cli: tail follows new records through a rotation until SIGTERM", "[cli_log]") {
  TempDir dir;
  write_file(dir.file(kCurrentLogName), request_line("old1", "{}") + exchange_line("old1", "before tail"));
  Background tail({CHATCAP_BINARY, "tail", "--log-dir", dir.path()});
  REQUIRE(tail.wait_for(false, "following"));
  append_file(dir.file(kCurrentLogName), request_line("new1", "{}", "model-one"));
  REQUIRE(tail.wait_for(true, "(id new1)"));
  CHECK_THAT(tail.out(), Catch::Contains("→ POST /v1/chat/completions") && Catch::Contains("model model-one") &&
                             !Catch::Contains("old1"));
  // Rotation with new1 in flight: the writer copies its request into the new file.
  std::filesystem::rename(dir.file(kCurrentLogName), dir.file(kPreviousLogName));
  write_file(dir.file(kCurrentLogName), request_line("new1", "{}", "model-one") + request_line("new2", "{}") +
                                            exchange_line("new1", "answer of one"));
  REQUIRE(tail.wait_for(true, "answer of one"));
  CHECK(tail.stop(SIGTERM) == 0);
  std::string out = tail.out();
  CHECK(out.find("(id new1)") == out.rfind("(id new1)"));  // the copy is not printed again
  CHECK_THAT(out, Catch::Contains("(id new2)") && Catch::Contains("id new1") && Catch::Contains("complete") &&
                      Catch::Contains("200 OK"));
  CHECK(out.find("(id new2)") < out.find("answer of one"));
}

TEST_CASE("cli: tail stops cleanly on SIGINT too", "[cli_log]") {
  TempDir dir;
  Background tail({CHATCAP_BINARY, "tail", "--log-dir", dir.path()});
  REQUIRE(tail.wait_for(false, "following"));
  CHECK(tail.stop(SIGINT) == 0);
}

TEST_CASE("cli: tail shows the watched log's requests that carry a known risk, and how they end", "[cli_log]") {
  TempDir dir;
  Background tail({CHATCAP_BINARY, "tail", "--log-dir", dir.path()});
  REQUIRE(tail.wait_for(false, "following"));
  auto watched = [](const std::string& id, bool risky) {
    json r = json::parse(request_line(id, R"({"input":"x"})"));
    r["target"] = "/v1/embeddings";
    r["watched_only"] = true;
    if (risky) {
      r["target"] = "/v1/completions";
      r["risks"] = json::array({{{"id", "too_many_logit_bias"}, {"why", "w"}, {"ref", "vllm-project/vllm#55164"}}});
    }
    return r.dump() + "\n";
  };
  auto watched_end = [](const std::string& id) {
    json r = json::parse(exchange_line(id, "ended " + id));
    r["watched_only"] = true;
    return r.dump() + "\n";
  };
  append_file(dir.file(kWatchedLogName), watched("plain1", false) + watched_end("plain1") + watched("risky1", true));
  REQUIRE(tail.wait_for(true, "(id risky1)"));
  append_file(dir.file(kWatchedLogName), watched_end("risky1"));
  REQUIRE(tail.wait_for(true, "ended risky1"));
  CHECK(tail.stop(SIGTERM) == 0);
  const std::string out = tail.out();
  CHECK_THAT(out, Catch::Contains("→ POST /v1/completions") && Catch::Contains("⚠ known engine killer: too_many_logit_bias"));
  CHECK_THAT(out, !Catch::Contains("plain1"));  // a flood of other requests is not shown one by one
}

TEST_CASE("cli: last prints a line per exchange: 20 exchanges with 30 KiB prompts fit 20 lines and a header",
          "[cli_log]") {
  TempDir dir;
  std::string lines;
  for (int i = 0; i < 20; ++i) {
    const std::string id = fmt::format("{:012x}", 0xabc000 + i);
    json messages = json::array();
    messages.push_back({{"role", "system"}, {"content", std::string(30 * 1024, 's')}});
    for (int k = 0; k < 21; ++k) messages.push_back({{"role", k % 2 ? "assistant" : "user"}, {"content", "turn " + std::to_string(k)}});
    messages.push_back({{"role", "user"}, {"content", "What is the weather in Paris\ntoday, exchange " + std::to_string(i) + "?"}});
    json request = json::parse(request_line(id, json{{"model", "gpt-oss-120b"}, {"messages", messages}}.dump()));
    if (i == 7) request["risks"] = json::array({{{"id", "too_many_logit_bias"}, {"why", "w"}, {"ref", "r"}}});
    lines += request.dump() + "\n";
    json exchange = json::parse(exchange_line(id, "answer " + std::to_string(i)));
    exchange["sse"]["dialect"] = "chat";
    exchange["sse"]["input_tokens"] = 7200 + i;
    exchange["sse"]["output_tokens"] = 18;
    if (i != 19) lines += exchange.dump() + "\n";  // the last still in flight
  }
  write_file(dir.file(kCurrentLogName), lines);
  setenv("COLUMNS", "140", 1);
  CommandResult r = run_command({CHATCAP_BINARY, "last", "20", "--log-dir", dir.path()});
  unsetenv("COLUMNS");
  REQUIRE(r.exit_code == 0);
  std::vector<std::string> out;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  REQUIRE(out.size() == 21);  // the header and one line each
  CHECK_THAT(out[0], Catch::StartsWith("TIME") && Catch::Contains("LAST USER MESSAGE"));
  auto columns = [](const std::string& text) {
    std::size_t n = 0;
    for (unsigned char c : text) n += (c & 0xC0) != 0x80;
    return n;
  };
  for (const std::string& line : out) {
    INFO(line);
    CHECK(columns(line) <= 140);
  }
  CHECK_THAT(out[1], Catch::Contains(" 000000abc000 ") && Catch::Contains(" chat ") && Catch::Contains("gpt-oss-120b") &&
                         Catch::Contains("200 complete") && Catch::Contains("80.4 ms") && Catch::Contains("7200→18") &&
                         Catch::Contains("What is the weather in Paris today"));
  CHECK_THAT(out[8], Catch::Contains("⚠ too_many_logit_bias"));
  CHECK_THAT(out[20], Catch::Contains("in flight"));
  // --full: today's blocks.
  CommandResult full = run_command({CHATCAP_BINARY, "last", "2", "--full", "--log-dir", dir.path()});
  CHECK_THAT(full.out, Catch::Contains("━━") && Catch::Contains("request body"));
}
