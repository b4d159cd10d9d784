// Reading the log that `chatcap run` writes (DESIGN.md, "Record format"), for the commands
// that work when the daemon or the server is dead: `last`, `show`, `tail`, `suspects`.
//
// The log directory holds `exchanges.jsonl` (current) and `exchanges.jsonl.1` (the one
// before the last rotation; may be absent) — the ring — and `watched.jsonl`(.1), the
// watched-only requests (log_names.hpp). Each line is one JSON object. The reader is
// lenient, because the writer may be mid-write and the files may have been edited by hand:
//   - a last line without its '\n' is being written: it is ignored, not counted;
//   - a line that is not a JSON object (or a request/exchange without a string id) is
//     skipped and counted in bad_lines — never an exception;
//   - unknown "type" values and unknown fields are ignored.
// Joining: an exchange is its "request" record plus, once it ended, its "exchange" record
// (same id). A request record may appear more than once (the writer copies in-flight
// requests forward across a rotation); the first copy is kept. Exchanges are ordered by the
// first appearance of their request record, .1 before the current file — oldest first; an
// exchange whose request record was rotated away is placed where its exchange record is.
// Records marked "watched_only" (the watched log, and the copies pinned in the ring beside a
// server death) join into `watched`, never into the ring's `exchanges`.
//
// Usage:
//   LogContents log = read_log("/var/log/chatcap");      // throws LogError if no such dir
//   for (const LoggedExchange& e : log.exchanges) ...    // e.exchange.is_null(): in flight
//
//   LogFollower follow("/var/log/chatcap");              // positioned at the end
//   for (;;) { for (std::string& line : follow.poll()) ...; sleep 200 ms; }
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "chatcap/errors.hpp"
#include "chatcap/log_names.hpp"

namespace chatcap {


struct LoggedExchange {
  nlohmann::json request;   // the "request" record; null when it was rotated away
  nlohmann::json exchange;  // the "exchange" record; null while the exchange is in flight
  std::string id;
};

struct LogContents {
  std::vector<LoggedExchange> exchanges;     // the ring (--endpoint paths), oldest first
  std::vector<LoggedExchange> watched;       // watched-only requests (other paths), oldest first
  std::vector<nlohmann::json> server_downs;  // "server_down" records, in file order
  std::size_t bad_lines = 0;                 // lines skipped because they were unusable
};

// Joins records fed line by line, in log order (.1 first, then the current file).
class LogJoiner {
 public:
  // One line without its '\n'. Blank lines are ignored; unusable ones counted.
  void add_line(std::string_view line);
  void add_record(nlohmann::json record);
  LogContents take();

 private:
  LoggedExchange& slot_for(const std::string& id, bool watched);

  LogContents contents_;
  // id → (watched?, position in exchanges or watched)
  std::unordered_map<std::string, std::pair<bool, std::size_t>> index_;
};

// Reads and joins the log files of `dir` (the ring's, then the watched log's). An empty
// directory is an empty log.
LogContents read_log(const std::string& dir);

// The exchange (ring or watched) whose id is `id`, else the only one whose id starts with it. Throws LogError
// ("no exchange with id X in DIR — list them with `chatcap last`") when none or several match.
const LoggedExchange& find_exchange(const LogContents& log, const std::string& id, const std::string& dir);

// {"id":..., "request":{...} or null, "exchange":{...} or null}: what --json prints.
nlohmann::json joined_json(const LoggedExchange& exchange);

// Throws LogError when `dir` does not exist, is not a directory or cannot be searched.
void check_log_dir(const std::string& dir);

// ---- forensics: `chatcap suspects`, `chatcap show ID --curl/--body` ----

// Standard base64 (RFC 4648, '=' padding; whitespace ignored) into `out`; false when `text`
// is not base64.
bool decode_base64(std::string_view text, std::string& out);

// The request body exactly as the client sent it: the record's "body", base64-decoded when
// "body_encoding" is "base64". Throws LogError (a sentence naming the exchange, the cause and
// what to do) when the log does not hold those exact bytes: the request record was rotated
// away, the body was cut at --max-body (body_truncated), the request never completed, or
// the body is unreadable.
std::string exact_request_body(const LoggedExchange& exchange);

// The exchanges a "server_down" record names as suspects, in the record's order (likeliest
// first): one entry per element of its "suspects" array, nullptr when no record of that id
// is in the log any more (rotated away) or the entry has no id.
std::vector<const LoggedExchange*> suspects_of(const nlohmann::json& server_down, const LogContents& log);

// What `chatcap suspects --json` prints for one death:
//   {"server_down": {...the record...},
//    "suspects": [{"id", "why", "rank" (1 = likeliest), "request": {...}|null, "exchange": {...}|null}, ...]}
nlohmann::json suspects_json(const nlohmann::json& server_down, const LogContents& log);

// Follows `dir`/exchanges.jsonl (or `name`) like `tail -F`: yields each complete line appended to it,
// surviving rotation (renamed to .1, a new file created: the old file is read to its end
// before switching) and truncation (read again from the start). Poll-based: call poll()
// every ~200 ms. A file that does not exist yet is waited for.
class LogFollower {
 public:
  enum class Start { at_end, at_beginning };

  explicit LogFollower(std::string dir, Start start = Start::at_end, const char* name = kCurrentLogName);
  ~LogFollower();
  LogFollower(const LogFollower&) = delete;
  LogFollower& operator=(const LogFollower&) = delete;

  // Complete lines (without '\n') appended since the last call, in order.
  std::vector<std::string> poll();
  const std::string& path() const { return path_; }

 private:
  bool open_current(Start start);
  void drain(std::vector<std::string>& lines);
  void switch_if_rotated(std::vector<std::string>& lines);
  void close_fd();

  std::string path_;
  int fd_ = -1;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  off_t offset_ = 0;    // bytes of the open file consumed into buffer_
  std::string buffer_;  // bytes after the last '\n' seen
};

}  // namespace chatcap
