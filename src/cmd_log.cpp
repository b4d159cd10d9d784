// `chatcap last`, `chatcap show`, `chatcap tail`: the log read back for people (or, with
// --json, for jq). They only read files, so they work when the daemon or the server is dead.
#include <signal.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <fmt/format.h>

#include "chatcap/commands.hpp"
#include "chatcap/log_reader.hpp"
#include "chatcap/report.hpp"

namespace chatcap {
namespace {

constexpr long kTailPollMs = 200;
// Request ids `tail` remembers to recognise the copies the writer carries across a
// rotation; far more than the log holds, so a copy is never printed twice.
constexpr std::size_t kTailRememberedIds = 4096;

volatile std::sig_atomic_t g_stop_tail = 0;

extern "C" void on_stop_signal(int) { g_stop_tail = 1; }

void print_json_line(const nlohmann::json& value) {
  fmt::print("{}\n", value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

std::string start_time(const LoggedExchange& e) {
  const nlohmann::json& origin = e.request.is_null() ? e.exchange : e.request;
  auto it = origin.find("ts");
  return it != origin.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string ts_of(const nlohmann::json& record) {
  auto it = record.find("ts");
  return it != record.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool carries_risk(const LoggedExchange& e) {
  auto risks = e.request.is_object() ? e.request.find("risks") : e.request.end();
  return e.request.is_object() && risks != e.request.end() && risks->is_array() && !risks->empty();
}

// The terminal's width, else $COLUMNS, else 120 (a pipe gets lines a pager can show).
std::size_t output_width() {
  winsize size{};
  if (::isatty(STDOUT_FILENO) == 1 && ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col >= 40) {
    return size.ws_col;
  }
  if (const char* columns = std::getenv("COLUMNS"); columns != nullptr) {
    const long n = std::strtol(columns, nullptr, 10);
    if (n >= 40 && n <= 1000) return static_cast<std::size_t>(n);
  }
  return 120;
}

// The last exchanges, with the server deaths that happened among them and the watched-only
// requests (other paths) that carry a known engine killer, in time order (RFC 3339 UTC
// timestamps of one format compare as strings): a line each under a header, or with --full
// a block each.
void print_human(const LogContents& log, std::size_t first, bool full) {
  RenderStyle style = RenderStyle::for_stdout();
  const std::size_t width = output_width();
  auto print_exchange = [&](const LoggedExchange& e) {
    if (full) {
      fmt::print("{}\n", render_exchange(e, Detail::brief, style));
    } else {
      fmt::print("{}", render_exchange_line(e, style, width));
    }
  };
  auto print_down = [&](const nlohmann::json& record) {
    if (full) {
      fmt::print("{}\n", render_server_down(record, style));
    } else {
      fmt::print("{}", render_server_down_line(record, style, width));
    }
  };
  std::string window_start = start_time(log.exchanges[first]);
  std::vector<const LoggedExchange*> risky_watched;
  for (const LoggedExchange& e : log.watched) {
    if (carries_risk(e) && start_time(e) >= window_start) risky_watched.push_back(&e);
  }
  std::stable_sort(risky_watched.begin(), risky_watched.end(),
                   [](const LoggedExchange* a, const LoggedExchange* b) { return start_time(*a) < start_time(*b); });
  if (!full) fmt::print("{}", render_exchange_line_header(style, width));
  std::size_t down = 0;
  std::size_t watched = 0;
  auto print_others_before = [&](const std::string& ts, bool all) {
    for (;;) {
      const bool down_next = down < log.server_downs.size() && (all || ts_of(log.server_downs[down]) < ts);
      const bool watched_next = watched < risky_watched.size() && (all || start_time(*risky_watched[watched]) < ts);
      if (!down_next && !watched_next) return;
      if (watched_next && (!down_next || start_time(*risky_watched[watched]) <= ts_of(log.server_downs[down]))) {
        print_exchange(*risky_watched[watched++]);
      } else {
        const nlohmann::json& record = log.server_downs[down++];
        if (ts_of(record) >= window_start) print_down(record);
      }
    }
  };
  for (std::size_t i = first; i < log.exchanges.size(); ++i) {
    print_others_before(start_time(log.exchanges[i]), false);
    print_exchange(log.exchanges[i]);
  }
  print_others_before({}, true);
}

// Prints what `tail` reads, one record at a time. Keeps the requests it has printed until
// their exchange ends, to give the end block its model and to skip rotation copies. Of the
// watched log (other paths, possibly a flood) only requests with a known risk are shown,
// and how they end.
class TailPrinter {
 public:
  void on_line(const std::string& line, bool from_watched_log = false) {
    nlohmann::json record = nlohmann::json::parse(line, nullptr, false);
    if (record.is_discarded() || !record.is_object()) return;  // `last` reports bad lines
    std::string type = string_of(record, "type");
    std::string id = string_of(record, "id");
    if (from_watched_log && !(type == "request" ? has_risks(record) : open_.count(id) > 0)) return;
    if (type == "request" && !id.empty()) {
      on_request(std::move(record), id);
    } else if (type == "exchange" && !id.empty()) {
      on_exchange(std::move(record), id);
    } else if (type == "server_down") {
      fmt::print("{}\n", render_server_down(record, style_));
    }
  }

 private:
  static bool has_risks(const nlohmann::json& record) {
    auto it = record.find("risks");
    return it != record.end() && it->is_array() && !it->empty();
  }

  static std::string string_of(const nlohmann::json& record, const char* key) {
    auto it = record.find(key);
    return it != record.end() && it->is_string() ? it->get<std::string>() : std::string();
  }

  void on_request(nlohmann::json record, const std::string& id) {
    if (!remember(id)) return;  // a copy carried across a rotation
    fmt::print("{}", render_request_line(record, style_));
    open_.emplace(id, std::move(record));
  }

  void on_exchange(nlohmann::json record, const std::string& id) {
    LoggedExchange e;
    e.id = id;
    if (auto it = open_.find(id); it != open_.end()) {
      e.request = std::move(it->second);
      open_.erase(it);
    }
    e.exchange = std::move(record);
    remember(id);
    fmt::print("{}\n", render_exchange(e, Detail::ended, style_));
  }

  // False when `id` was seen already. Forgets the oldest ids beyond the bound.
  bool remember(const std::string& id) {
    if (!seen_.insert(id).second) return false;
    order_.push_back(id);
    if (order_.size() > kTailRememberedIds) {
      seen_.erase(order_.front());
      open_.erase(order_.front());
      order_.pop_front();
    }
    return true;
  }

  RenderStyle style_ = RenderStyle::for_stdout();
  std::unordered_map<std::string, nlohmann::json> open_;
  std::unordered_set<std::string> seen_;
  std::deque<std::string> order_;
};

// TERM and INT end `tail` with exit 0; no SA_RESTART, so the sleep is cut short.
void install_stop_handlers() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

void sleep_ms(long ms) {
  timespec delay{ms / 1000, (ms % 1000) * 1'000'000};
  nanosleep(&delay, nullptr);  // EINTR from a stop signal is the point
}

}  // namespace

bool load_log(const Options& options, LogContents& log) {
  try {
    log = read_log(options.log_dir);
  } catch (const LogError& e) {
    fmt::print(stderr, "chatcap: {}\n", e.what());
    return false;
  }
  if (log.bad_lines > 0) {
    fmt::print(stderr, "chatcap: warning: skipped {} unreadable line{} in {}\n", log.bad_lines,
               log.bad_lines == 1 ? "" : "s", options.log_dir);
  }
  return true;
}

int command_last(const Options& options) {
  LogContents log;
  if (!load_log(options, log)) return 1;
  if (log.exchanges.empty()) {
    if (!options.json) fmt::print(stderr, "chatcap: no exchanges recorded in {} yet\n", options.log_dir);
    return 0;
  }
  std::size_t count = std::min(options.last_n, log.exchanges.size());
  std::size_t first = log.exchanges.size() - count;
  if (options.json) {
    for (std::size_t i = first; i < log.exchanges.size(); ++i) print_json_line(joined_json(log.exchanges[i]));
  } else {
    print_human(log, first, options.full);
  }
  return 0;
}

int command_show(const Options& options) {
  if (options.curl) return command_show_curl(options);
  if (options.body_only) return command_show_body(options);
  LogContents log;
  if (!load_log(options, log)) return 1;
  try {
    const LoggedExchange& e = find_exchange(log, options.show_id, options.log_dir);
    if (options.json) {
      print_json_line(joined_json(e));
    } else {
      fmt::print("{}", render_exchange(e, Detail::full, RenderStyle::for_stdout()));
    }
  } catch (const LogError& error) {
    fmt::print(stderr, "chatcap: {}\n", error.what());
    return 1;
  }
  return 0;
}

int command_tail(const Options& options) {
  g_stop_tail = 0;
  install_stop_handlers();
  try {
    LogFollower follower(options.log_dir);
    LogFollower watched(options.log_dir, LogFollower::Start::at_end, kWatchedLogName);
    // Said once the follower is positioned: whatever is appended from now on is shown.
    fmt::print(stderr, "chatcap: following {} (and the requests of {} with a known risk; Ctrl-C to stop)\n",
               follower.path(), watched.path());
    std::fflush(stderr);
    TailPrinter printer;
    while (g_stop_tail == 0) {
      for (const std::string& line : follower.poll()) printer.on_line(line);
      for (const std::string& line : watched.poll()) printer.on_line(line, true);
      std::fflush(stdout);
      sleep_ms(kTailPollMs);
    }
  } catch (const LogError& e) {
    fmt::print(stderr, "chatcap: {}\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace chatcap
