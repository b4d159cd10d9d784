#include "chatcap/log_writer.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace chatcap {
namespace {

// A request record starts with this prefix (the recorder writes "type" first).
constexpr std::string_view kRequestPrefix = "{\"type\":\"request\"";

std::string errno_text(int error) { return std::strerror(error); }

bool write_all_at_end(int fd, std::string_view bytes, std::size_t& written) {
  written = 0;
  while (written < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    written += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

LogWriter::LogWriter(LogWriterConfig config) : config_(std::move(config)) {
  if (config_.keep == 0) throw LogError("--keep 0 would keep nothing — give at least 1");
  std::error_code ec;
  std::filesystem::create_directories(config_.dir, ec);
  if (ec) {
    throw LogError(fmt::format("cannot create log directory {}: {} — create it or pass --log-dir to a writable place",
                               config_.dir, ec.message()));
  }
  ::chmod(config_.dir.c_str(), config_.dir_mode);  // best effort: the directory may not be ours
  open_files();
  count_existing_exchanges();
}

LogWriter::~LogWriter() {
  write_pending();
  close_files();
}

std::string LogWriter::current_path() const { return config_.dir + "/" + config_.name; }
std::string LogWriter::previous_path() const { return config_.dir + "/" + config_.name + ".1"; }

void LogWriter::open_files() {
  current_fd_ = ::open(current_path().c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, config_.file_mode);
  if (current_fd_ < 0) {
    int error = errno;
    throw LogError(fmt::format("cannot write {}: {} — run as a user that may write {} or pass --log-dir",
                               current_path(), errno_text(error), config_.dir));
  }
  struct stat st{};
  ::fstat(current_fd_, &st);
  current_size_ = st.st_size;
  previous_fd_ = ::open(previous_path().c_str(), O_RDONLY | O_CLOEXEC);  // may not exist yet
}

void LogWriter::close_files() {
  if (current_fd_ >= 0) ::close(current_fd_);
  if (previous_fd_ >= 0) ::close(previous_fd_);
  current_fd_ = -1;
  previous_fd_ = -1;
}

void LogWriter::reopen() {
  write_pending();  // into the file they were meant for
  close_files();
  open_files();
  // Files moved away by another tool: what we remembered of offsets no longer holds.
  open_requests_.clear();
  ++generation_;
  count_existing_exchanges();
}

void LogWriter::count_existing_exchanges() {
  // A restarted daemon continues the current file: count what it already holds, and drop a
  // torn last line (a crash mid-write) so the next record starts on a line of its own.
  exchanges_in_current_ = 0;
  std::vector<char> content(static_cast<std::size_t>(current_size_));
  int fd = ::open(current_path().c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ssize_t n = content.empty() ? 0 : ::pread(fd, content.data(), content.size(), 0);
  ::close(fd);
  if (n <= 0) return;
  std::string_view text(content.data(), static_cast<std::size_t>(n));
  std::size_t last_newline = text.rfind('\n');
  std::size_t whole = last_newline == std::string_view::npos ? 0 : last_newline + 1;
  if (whole < text.size() && ::ftruncate(current_fd_, static_cast<off_t>(whole)) == 0) {
    current_size_ = static_cast<off_t>(whole);
  }
  std::set<std::string> ids;  // copies of a request carry the same id: count it once
  for (std::size_t at = 0; at < whole;) {
    std::size_t end = text.find('\n', at);
    nlohmann::json record = nlohmann::json::parse(text.substr(at, end - at), nullptr, false);
    // Pinned copies (a watched-only suspect next to its death) are not the ring's exchanges.
    if (record.is_object() && record.value("type", "") == "request" && !record.value("pinned", false)) {
      ids.insert(record.value("id", ""));
    }
    at = end + 1;
  }
  exchanges_in_current_ = ids.size();
}

bool LogWriter::append(std::string_view line, Location* where) {
  if (!batching_) return write_now(line, where);
  // Written before, not after, taking this record: its caller still counts it as pending.
  if (pending_.size() >= kBatchBytes) write_pending();
  if (where != nullptr) {
    *where = Location{generation_, current_size_ + static_cast<off_t>(pending_.size()), line.size()};
  }
  pending_.append(line);
  ++pending_records_;
  return true;
}

void LogWriter::write_pending() {
  if (pending_.empty()) return;
  std::size_t written = 0;
  if (write_all_at_end(current_fd_, pending_, written)) {
    current_size_ += static_cast<off_t>(pending_.size());
    records_written_ += pending_records_;
    note_written();
  } else {
    int error = errno;
    // Undo the part written, as for a single record; the whole batch is lost, and requests
    // remembered at offsets in it are forgotten (they are not in the file to copy).
    undo_partial_write(written);
    records_lost_ += pending_records_;
    exchanges_in_current_ -= std::min(exchanges_in_current_, pending_requests_);
    std::erase_if(open_requests_, [&](const auto& entry) {
      return entry.second.generation == generation_ && entry.second.offset >= current_size_;
    });
    report_failure(error);
  }
  pending_.clear();
  pending_records_ = 0;
  pending_requests_ = 0;
  if (pending_.capacity() > 4 * kBatchBytes) pending_.shrink_to_fit();  // one huge body passed through
}

// Never leave half a record: the next one would be glued to it. (If the file cannot be cut
// back, what was written stays counted, so offsets remain true.)
void LogWriter::undo_partial_write(std::size_t written) {
  if (written > 0 && ::ftruncate(current_fd_, current_size_) != 0) current_size_ += static_cast<off_t>(written);
}

void LogWriter::note_written() {
  if (!failing_) return;
  failing_ = false;
  if (on_problem) on_problem(fmt::format("writing {} again ({} records were lost meanwhile)", current_path(), records_lost_));
}

bool LogWriter::write_now(std::string_view line, Location* where) {
  std::size_t written = 0;
  if (!write_all_at_end(current_fd_, line, written)) {
    int error = errno;
    undo_partial_write(written);
    ++records_lost_;
    report_failure(error);
    return false;
  }
  if (where != nullptr) *where = Location{generation_, current_size_, line.size()};
  current_size_ += static_cast<off_t>(line.size());
  ++records_written_;
  note_written();
  return true;
}

void LogWriter::report_failure(int error) {
  if (failing_) return;  // once per episode, not once per record
  failing_ = true;
  if (on_problem) {
    on_problem(fmt::format("cannot write {}: {} — records are being lost until it is writable again (free disk space)",
                           current_path(), errno_text(error)));
  }
}

bool LogWriter::copy_forward(const Location& from, Location& to) {
  int fd = from.generation == generation_ ? -1 : previous_fd_;
  if (fd < 0 || from.generation + 1 != generation_) return false;  // already here, or gone
  std::string line(from.length, '\0');
  ssize_t n = ::pread(fd, line.data(), line.size(), from.offset);
  if (n != static_cast<ssize_t>(line.size()) || !std::string_view(line).starts_with(kRequestPrefix)) return false;
  return append(line, &to);
}

void LogWriter::rotate() {
  write_pending();  // the file about to be renamed gets all its records first
  // Keep the file about to be dropped open: in-flight requests are copied out of it after
  // the rename, from the inode that is no longer in the directory.
  int dropped_fd = previous_fd_;
  previous_fd_ = -1;
  if (::rename(current_path().c_str(), previous_path().c_str()) != 0) {
    int error = errno;
    if (dropped_fd >= 0) ::close(dropped_fd);
    report_failure(error);
    return;
  }
  ::close(current_fd_);
  current_fd_ = -1;
  std::uint64_t dropped_generation = generation_ - 1;
  ++generation_;
  ++rotations_;
  open_files();
  exchanges_in_current_ = 0;

  for (auto& [id, location] : open_requests_) {
    if (location.generation != dropped_generation || dropped_fd < 0) continue;
    std::string line(location.length, '\0');
    ssize_t n = ::pread(dropped_fd, line.data(), line.size(), location.offset);
    if (n == static_cast<ssize_t>(line.size())) append(line, &location);
  }
  if (dropped_fd >= 0) ::close(dropped_fd);
}

void LogWriter::write_record(RecordType type, std::string_view id, std::string_view line) {
  if (type == RecordType::request || type == RecordType::watched_request) {
    if (exchanges_in_current_ >= config_.keep) rotate();
    Location where;
    if (append(line, &where)) {
      ++exchanges_in_current_;
      if (batching_) ++pending_requests_;
      if (!id.empty()) open_requests_[std::string(id)] = where;
    }
    return;
  }
  if (type == RecordType::exchange || type == RecordType::watched_exchange) {
    auto it = open_requests_.find(std::string(id));
    if (it != open_requests_.end()) {
      Location copy;
      copy_forward(it->second, copy);  // its request into this file, if it is in the previous one
      open_requests_.erase(it);
    }
  }
  append(line, nullptr);
}

// ---- LogFiles ----

namespace {

LogWriterConfig watched_config(const LogWriterConfig& ring, std::size_t keep) {
  LogWriterConfig config = ring;
  config.name = kWatchedLogName;
  config.keep = keep;
  return config;
}

}  // namespace

LogFiles::LogFiles(const LogWriterConfig& ring, std::size_t keep_watched) : ring_(ring) {
  if (keep_watched > 0) watched_.emplace(watched_config(ring, keep_watched));
}

void LogFiles::write_record(RecordType type, std::string_view id, std::string_view line) {
  if (type == RecordType::watched_request || type == RecordType::watched_exchange) {
    if (watched_) watched_->write_record(type, id, line);
    return;
  }
  ring_.write_record(type, id, line);
}

void LogFiles::reopen() {
  ring_.reopen();
  if (watched_) watched_->reopen();
}

LogFiles::Batch::Batch(LogFiles& files) : ring_(files.ring_) {
  if (files.watched_) watched_.emplace(*files.watched_);
}

}  // namespace chatcap
