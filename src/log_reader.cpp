#include "chatcap/log_reader.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

#include <fmt/format.h>

namespace chatcap {
namespace {

constexpr std::size_t kReadChunk = 64 * 1024;
// A rotation between opening the current file and the previous one makes both names point
// at the same file; this many retries is plenty for a writer that rotates every N exchanges.
constexpr int kOpenRetries = 5;

std::string file_in(const std::string& dir, const char* name) { return dir + "/" + name; }

[[noreturn]] void throw_open_error(const std::string& path, int error) {
  if (error == EACCES || error == EPERM) {
    throw LogError(fmt::format("cannot read {}: permission denied — run as root (sudo) or as a member of the "
                               "group that owns the log directory",
                               path));
  }
  throw LogError(fmt::format("cannot read {}: {} — check the file, or pass another --log-dir", path,
                             std::strerror(error)));
}

// Opens a log file for reading; -1 when it does not exist (not an error: no log yet).
int open_log_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno != ENOENT) throw_open_error(path, errno);
  return fd;
}

// Closes the descriptor it owns, whatever way the function leaves.
struct Fd {
  int fd = -1;
  Fd() = default;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  void reset(int replacement = -1) {
    if (fd >= 0) ::close(fd);
    fd = replacement;
  }
};

bool same_file(int a, int b) {
  struct stat sa {}, sb {};
  if (a < 0 || b < 0 || ::fstat(a, &sa) != 0 || ::fstat(b, &sb) != 0) return false;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

// Appends `chunk` to `pending` and hands out every complete line; what follows the last
// '\n' stays in `pending` (a line still being written).
template <typename OnLine>
void split_lines(std::string& pending, std::string_view chunk, OnLine&& on_line) {
  std::size_t start = 0;
  for (std::size_t nl = chunk.find('\n'); nl != std::string_view::npos; nl = chunk.find('\n', start)) {
    if (pending.empty()) {
      on_line(chunk.substr(start, nl - start));
    } else {
      pending.append(chunk.substr(start, nl - start));
      on_line(std::string_view(pending));
      pending.clear();
    }
    start = nl + 1;
  }
  pending.append(chunk.substr(start));
}

// Reads `fd` from its current position to the end, feeding whole lines to the joiner.
void read_lines(int fd, const std::string& path, LogJoiner& joiner) {
  std::string pending;
  std::string chunk(kReadChunk, '\0');
  for (;;) {
    ssize_t n = ::read(fd, chunk.data(), chunk.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_open_error(path, errno);
    if (n == 0) break;
    split_lines(pending, std::string_view(chunk.data(), static_cast<std::size_t>(n)),
                [&](std::string_view line) { joiner.add_line(line); });
  }
  // `pending` is a last line without its '\n': the writer is still writing it. Ignored.
}

// The offset just after the last '\n' before `size` (0 when there is none).
off_t end_of_last_line(int fd, off_t size) {
  char chunk[kReadChunk];
  off_t end = size;
  while (end > 0) {
    off_t begin = end > static_cast<off_t>(sizeof chunk) ? end - static_cast<off_t>(sizeof chunk) : 0;
    ssize_t n = ::pread(fd, chunk, static_cast<std::size_t>(end - begin), begin);
    if (n <= 0) return 0;
    for (ssize_t i = n; i > 0; --i) {
      if (chunk[i - 1] == '\n') return begin + i;
    }
    end = begin;
  }
  return 0;
}

// A string field, or "" when absent or not a string (records from a newer writer, or edited
// by hand, must not make the reader throw).
std::string string_field(const nlohmann::json& record, const char* key) {
  auto it = record.find(key);
  return it != record.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool only_whitespace(std::string_view line) {
  return line.find_first_not_of(" \t\r") == std::string_view::npos;
}

}  // namespace

// ---- LogJoiner ----

void LogJoiner::add_line(std::string_view line) {
  if (only_whitespace(line)) return;
  nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (record.is_discarded() || !record.is_object()) {
    ++contents_.bad_lines;
    return;
  }
  add_record(std::move(record));
}

void LogJoiner::add_record(nlohmann::json record) {
  std::string type = string_field(record, "type");
  if (type == "server_down") {
    contents_.server_downs.push_back(std::move(record));
    return;
  }
  if (type != "request" && type != "exchange") return;  // a newer writer's record type
  std::string id = string_field(record, "id");
  if (id.empty()) {
    ++contents_.bad_lines;  // cannot be joined to anything
    return;
  }
  auto watched = record.find("watched_only");
  LoggedExchange& slot = slot_for(id, watched != record.end() && watched->is_boolean() && watched->get<bool>());
  // The first copy wins: later request records are copies carried across a rotation.
  nlohmann::json& field = type == "request" ? slot.request : slot.exchange;
  if (field.is_null()) field = std::move(record);
}

LoggedExchange& LogJoiner::slot_for(const std::string& id, bool watched) {
  std::vector<LoggedExchange>& list = watched ? contents_.watched : contents_.exchanges;
  auto [it, inserted] = index_.try_emplace(id, watched, list.size());
  if (inserted) {
    LoggedExchange fresh;
    fresh.id = id;
    list.push_back(std::move(fresh));
  }
  auto [in_watched, at] = it->second;
  return (in_watched ? contents_.watched : contents_.exchanges)[at];
}

LogContents LogJoiner::take() {
  index_.clear();
  return std::exchange(contents_, LogContents{});
}

// ---- read_log ----

void check_log_dir(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) {
      throw LogError(fmt::format(
          "no chatcap log in {}: the directory does not exist — start `chatcap run` or pass --log-dir", dir));
    }
    throw_open_error(dir, errno);
  }
  if (!S_ISDIR(st.st_mode)) {
    throw LogError(fmt::format("no chatcap log in {}: it is not a directory — pass the log directory with --log-dir",
                               dir));
  }
  if (::access(dir.c_str(), X_OK) != 0) throw_open_error(dir, errno);
}

namespace {

// One pair of files (NAME.1, then NAME) into the joiner.
void read_pair(const std::string& dir, const char* current_name, const char* previous_name, LogJoiner& joiner) {
  const std::string current_path = file_in(dir, current_name);
  const std::string previous_path = file_in(dir, previous_name);
  // Current first, then .1: if the writer rotates in between, both names give the same file
  // (the old current, now .1) and a retry picks up the new current.
  Fd current;
  Fd previous;
  for (int attempt = 1;; ++attempt) {
    current.reset(open_log_file(current_path));
    previous.reset(open_log_file(previous_path));
    if (!same_file(current.fd, previous.fd)) break;
    current.reset();
    if (attempt == kOpenRetries) break;  // keep .1 alone rather than read it twice
  }
  if (previous.fd >= 0) read_lines(previous.fd, previous_path, joiner);
  if (current.fd >= 0) read_lines(current.fd, current_path, joiner);
}

}  // namespace

LogContents read_log(const std::string& dir) {
  check_log_dir(dir);
  LogJoiner joiner;
  read_pair(dir, kCurrentLogName, kPreviousLogName, joiner);
  read_pair(dir, kWatchedLogName, kPreviousWatchedLogName, joiner);
  return joiner.take();
}

const LoggedExchange& find_exchange(const LogContents& log, const std::string& id, const std::string& dir) {
  std::vector<const LoggedExchange*> matches;
  for (const auto* list : {&log.exchanges, &log.watched}) {
    for (const LoggedExchange& e : *list) {
      if (e.id == id) return e;  // a full id wins even when it is the prefix of another
      if (!id.empty() && e.id.starts_with(id)) matches.push_back(&e);
    }
  }
  if (matches.size() == 1) return *matches.front();
  if (matches.empty()) {
    throw LogError(fmt::format("no exchange with id {} in {} — list them with `chatcap last`", id, dir));
  }
  constexpr std::size_t kNamed = 3;
  std::string named;
  for (std::size_t i = 0; i < matches.size() && i < kNamed; ++i) named += (i == 0 ? "" : ", ") + matches[i]->id;
  if (matches.size() > kNamed) named += ", …";
  throw LogError(fmt::format("id {} is ambiguous: {} exchanges in {} start with it ({}) — give more of the id",
                             id, matches.size(), dir, named));
}

nlohmann::json joined_json(const LoggedExchange& e) {
  return nlohmann::json{{"id", e.id}, {"request", e.request}, {"exchange", e.exchange}};
}

// ---- forensics ----

bool decode_base64(std::string_view text, std::string& out) {
  out.clear();
  out.reserve(text.size() / 4 * 3);
  std::uint32_t bits = 0;
  int count = 0;    // 6-bit groups in `bits`
  int padding = 0;  // '=' seen; only more '=' and whitespace may follow
  for (char c : text) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    int value = c >= 'A' && c <= 'Z' ? c - 'A'
                : c >= 'a' && c <= 'z' ? c - 'a' + 26
                : c >= '0' && c <= '9' ? c - '0' + 52
                : c == '+' ? 62
                : c == '/' ? 63
                : c == '=' ? -2
                           : -1;
    if (value == -1) return false;
    if (value == -2) {
      ++padding;
      continue;
    }
    if (padding > 0) return false;
    bits = (bits << 6) | static_cast<std::uint32_t>(value);
    if (++count == 4) {
      out += static_cast<char>((bits >> 16) & 0xFF);
      out += static_cast<char>((bits >> 8) & 0xFF);
      out += static_cast<char>(bits & 0xFF);
      bits = 0;
      count = 0;
    }
  }
  // A last group of 2 or 3 characters carries 1 or 2 bytes; padding, when present, completes it.
  if (count == 1 || padding > 2 || (padding > 0 && count + padding != 4)) return false;
  if (count == 2) out += static_cast<char>((bits >> 4) & 0xFF);
  if (count == 3) {
    out += static_cast<char>((bits >> 10) & 0xFF);
    out += static_cast<char>((bits >> 2) & 0xFF);
  }
  return true;
}

std::string exact_request_body(const LoggedExchange& e) {
  const nlohmann::json& r = e.request;
  if (!r.is_object()) {
    throw LogError(fmt::format("the request record of exchange {} is no longer in the log (rotated out), so its "
                               "exact bytes are not on disk — raise --keep on `chatcap run` to keep more",
                               e.id));
  }
  auto total_it = r.find("body_bytes");
  const bool has_total = total_it != r.end() && total_it->is_number_integer() && total_it->get<std::int64_t>() >= 0;
  const std::uint64_t total = has_total ? total_it->get<std::uint64_t>() : 0;
  if (auto cut = r.find("body_truncated"); cut != r.end() && cut->is_boolean() && cut->get<bool>()) {
    throw LogError(fmt::format("the request body of exchange {} was cut when it was recorded (body_truncated: {} "
                               "bytes sent, only the first ones kept, see --max-body), so the exact request is "
                               "not on disk and cannot be replayed — raise --max-body on `chatcap run` to keep "
                               "such bodies whole",
                               e.id, has_total ? std::to_string(total) : std::string("more")));
  }
  if (auto complete = r.find("complete"); complete != r.end() && complete->is_boolean() && !complete->get<bool>()) {
    throw LogError(fmt::format("the request of exchange {} was not complete when it was recorded (the connection "
                               "ended or the capture stopped mid-request), so the exact request is not on disk",
                               e.id));
  }
  std::string body;
  auto body_it = r.find("body");
  if (body_it == r.end() || body_it->is_null()) {
    if (has_total && total > 0) {
      throw LogError(fmt::format("the request record of exchange {} has no body although {} bytes were sent", e.id,
                                 total));
    }
    return body;
  }
  if (!body_it->is_string()) {
    throw LogError(fmt::format("the request body of exchange {} is not a string in the log — the log was edited "
                               "or written by an incompatible version",
                               e.id));
  }
  if (string_field(r, "body_encoding") == "base64") {
    if (!decode_base64(body_it->get_ref<const std::string&>(), body)) {
      throw LogError(fmt::format("the request body of exchange {} is marked base64 but is not base64 — the log "
                                 "was edited or damaged",
                                 e.id));
    }
  } else {
    body = body_it->get<std::string>();
  }
  if (has_total && total != body.size()) {
    throw LogError(fmt::format("the log holds {} bytes of the request body of exchange {} but {} were sent, so the "
                               "exact request is not on disk",
                               body.size(), e.id, total));
  }
  return body;
}

std::vector<const LoggedExchange*> suspects_of(const nlohmann::json& server_down, const LogContents& log) {
  std::vector<const LoggedExchange*> joined;
  auto suspects = server_down.find("suspects");
  if (suspects == server_down.end() || !suspects->is_array()) return joined;
  std::unordered_map<std::string_view, const LoggedExchange*> by_id;
  for (const auto* list : {&log.exchanges, &log.watched}) {
    for (const LoggedExchange& e : *list) by_id.emplace(e.id, &e);
  }
  for (const nlohmann::json& s : *suspects) {
    std::string id = s.is_object() ? string_field(s, "id") : std::string();
    auto it = id.empty() ? by_id.end() : by_id.find(id);
    joined.push_back(it == by_id.end() ? nullptr : it->second);
  }
  return joined;
}

nlohmann::json suspects_json(const nlohmann::json& server_down, const LogContents& log) {
  std::vector<const LoggedExchange*> joined = suspects_of(server_down, log);
  nlohmann::json list = nlohmann::json::array();
  auto suspects = server_down.find("suspects");
  for (std::size_t i = 0; i < joined.size(); ++i) {
    const nlohmann::json& s = (*suspects)[i];
    nlohmann::json entry = nlohmann::json::object();
    entry["id"] = s.is_object() ? s.value("id", nlohmann::json()) : nlohmann::json();
    entry["why"] = s.is_object() ? s.value("why", nlohmann::json()) : nlohmann::json();
    entry["rank"] = i + 1;
    entry["request"] = joined[i] != nullptr ? joined[i]->request : nlohmann::json();
    entry["exchange"] = joined[i] != nullptr ? joined[i]->exchange : nlohmann::json();
    list.push_back(std::move(entry));
  }
  return nlohmann::json{{"server_down", server_down}, {"suspects", std::move(list)}};
}

// ---- LogFollower ----

LogFollower::LogFollower(std::string dir, Start start, const char* name) : path_(file_in(dir, name)) {
  check_log_dir(dir);
  open_current(start);
}

LogFollower::~LogFollower() { close_fd(); }

void LogFollower::close_fd() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  offset_ = 0;
  buffer_.clear();
}

// Opens the current file. At the end: just after its last '\n', so a line the writer is in
// the middle of is still read whole once finished.
bool LogFollower::open_current(Start start) {
  fd_ = open_log_file(path_);
  if (fd_ < 0) return false;
  struct stat st {};
  if (::fstat(fd_, &st) != 0) throw_open_error(path_, errno);
  dev_ = st.st_dev;
  ino_ = st.st_ino;
  offset_ = 0;
  buffer_.clear();
  if (start == Start::at_end) offset_ = end_of_last_line(fd_, st.st_size);
  ::lseek(fd_, offset_, SEEK_SET);
  return true;
}

void LogFollower::drain(std::vector<std::string>& lines) {
  if (fd_ < 0) return;
  char chunk[kReadChunk];
  for (;;) {
    ssize_t n = ::read(fd_, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    offset_ += n;
    split_lines(buffer_, std::string_view(chunk, static_cast<std::size_t>(n)),
                [&](std::string_view line) { lines.emplace_back(line); });
  }
}

void LogFollower::switch_if_rotated(std::vector<std::string>& lines) {
  struct stat st {};
  // Renamed away and no new file yet: keep reading the old one, the writer may still be in it.
  if (::stat(path_.c_str(), &st) != 0) return;
  if (st.st_dev != dev_ || st.st_ino != ino_) {
    // Rotated. The writer may have appended its last record to the old file between our
    // read and the rename: read it to the end before switching. A partial line left there
    // will never be finished (records are never split across files).
    drain(lines);
    close_fd();
    if (open_current(Start::at_beginning)) drain(lines);
    return;
  }
  struct stat open_st {};
  if (::fstat(fd_, &open_st) == 0 && open_st.st_size < offset_) {
    // Truncated in place (copytruncate): everything in it now is new.
    ::lseek(fd_, 0, SEEK_SET);
    offset_ = 0;
    buffer_.clear();
    drain(lines);
  }
}

std::vector<std::string> LogFollower::poll() {
  std::vector<std::string> lines;
  if (fd_ < 0 && !open_current(Start::at_beginning)) return lines;  // no file yet
  drain(lines);
  switch_if_rotated(lines);
  return lines;
}

}  // namespace chatcap
