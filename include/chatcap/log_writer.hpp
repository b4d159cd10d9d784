// The log writer: the only stage that writes files. JSON Lines in a directory, bounded by
// exchanges, friendly to `tail -F`.
//
//   <dir>/<name>     the current file (exchanges.jsonl): every record is appended whole
//   <dir>/<name>.1   the previous file
//
// LogFiles drives two writers in one directory (log_names.hpp): the ring (exchanges.jsonl,
// --keep) and the watched log (watched.jsonl, --keep-watched), each bounded on its own.
//
// Rotation: when the current file already holds `keep` exchanges and a new one begins, it
// is renamed to exchanges.jsonl.1 (replacing the older one) and a fresh file is started. The
// two files hold between keep and 2×keep exchanges; no record is ever split across files.
//
// Two copies keep every exchange readable from the files alone, whatever rotation did:
//   * a request still in flight when its file is about to be dropped is copied forward into
//     the new file (the request a dying server was working on must never rotate away);
//   * an exchange record whose request record sits in the previous file is preceded by a
//     copy of that request record, so the pair always ends up in one file.
// Copies are the same line, same id; readers keep one. Only byte offsets are remembered per
// open exchange; copies are read back from the file, so memory does not grow with bodies.
//
// Batches: the daemon opens a Batch around each batch of packets it processes (at most a
// few milliseconds of traffic); records appended meanwhile are written together, with one
// write() when the batch ends (or as soon as 64 KiB wait), before the processing thread
// looks at the clock or sleeps. A file system pays per write() call (ext4: a journal handle
// and a page lookup each); one call per record was a sixth of the daemon's CPU at top speed.
// Outside a batch every record is written at once with its own write().
//
// Failures: a write that fails (disk full, I/O error) is undone (the file is truncated back
// to its last whole record), counted and reported through `on_problem`; the next record
// tries again, so writing resumes by itself when space returns.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "chatcap/errors.hpp"
#include "chatcap/log_names.hpp"
#include "chatcap/recorder.hpp"

namespace chatcap {

struct LogWriterConfig {
  std::string dir = "/var/log/chatcap";
  std::string name = kCurrentLogName;  // the current file; the previous one is name + ".1"
  std::size_t keep = 20;             // exchanges per file; disk holds keep..2×keep
  mode_t dir_mode = 0750;
  mode_t file_mode = 0640;
};

class LogWriter : public RecordSink {
 public:
  // Creates the directory if needed and opens the current file; throws LogError with a
  // user-facing sentence when it cannot.
  explicit LogWriter(LogWriterConfig config);
  ~LogWriter() override;
  LogWriter(const LogWriter&) = delete;
  LogWriter& operator=(const LogWriter&) = delete;

  // request and watched_request records count toward `keep` (the writer of a pair sees one
  // kind); pinned_request records are appended as they are, neither counted nor followed.
  void write_record(RecordType type, std::string_view id, std::string_view line) override;

  // While one is alive, records wait in memory and are written together when it ends.
  class Batch {
   public:
    explicit Batch(LogWriter& log) : log_(log) { log_.batching_ = true; }
    ~Batch() {
      log_.batching_ = false;
      log_.write_pending();
    }
    Batch(const Batch&) = delete;
    Batch& operator=(const Batch&) = delete;

   private:
    LogWriter& log_;
  };
  // Reopens both files (SIGHUP: an external tool moved them).
  void reopen();

  // Called with one sentence when writing starts failing and when it recovers.
  std::function<void(const std::string&)> on_problem;

  std::uint64_t records_written() const { return records_written_; }
  std::uint64_t records_lost() const { return records_lost_; }
  std::uint64_t rotations() const { return rotations_; }
  std::size_t exchanges_in_current() const { return exchanges_in_current_; }
  std::string current_path() const;
  std::string previous_path() const;

 private:
  // Where a request record lies: which file generation, at what offset, how long.
  struct Location {
    std::uint64_t generation = 0;
    off_t offset = 0;
    std::size_t length = 0;
  };

  void open_files();
  void close_files();
  void rotate();
  void count_existing_exchanges();
  bool append(std::string_view line, Location* where);
  bool write_now(std::string_view line, Location* where);
  void write_pending();
  void undo_partial_write(std::size_t written);
  void note_written();
  bool copy_forward(const Location& from, Location& to);
  void report_failure(int error);

  LogWriterConfig config_;
  int current_fd_ = -1;
  int previous_fd_ = -1;           // read side of exchanges.jsonl.1, for copies
  off_t current_size_ = 0;
  std::uint64_t generation_ = 1;   // of the current file; the previous one is generation_ - 1
  std::size_t exchanges_in_current_ = 0;
  std::unordered_map<std::string, Location> open_requests_;  // id → its request record
  std::uint64_t records_written_ = 0;
  std::uint64_t records_lost_ = 0;
  std::uint64_t rotations_ = 0;
  bool failing_ = false;
  // Records of the open batch, not yet written; current_size_ does not count them.
  static constexpr std::size_t kBatchBytes = 64 * 1024;
  bool batching_ = false;
  std::string pending_;
  std::uint64_t pending_records_ = 0;
  std::size_t pending_requests_ = 0;
};

// The two logs of a directory behind one sink: ring records to one writer, watched-only
// records to the other. keep_watched 0: watched-only records are not written at all.
class LogFiles : public RecordSink {
 public:
  LogFiles(const LogWriterConfig& ring, std::size_t keep_watched);

  void write_record(RecordType type, std::string_view id, std::string_view line) override;
  void on_risk_notice(std::string_view sentence) override {
    if (on_notice) on_notice(sentence);
  }
  void reopen();

  class Batch {
   public:
    explicit Batch(LogFiles& files);
   private:
    LogWriter::Batch ring_;
    std::optional<LogWriter::Batch> watched_;
  };

  // Called with each sentence the recorder has for people (risk notices).
  std::function<void(std::string_view)> on_notice;

  LogWriter& ring() { return ring_; }
  LogWriter* watched() { return watched_ ? &*watched_ : nullptr; }
  std::uint64_t records_lost() const { return ring_.records_lost() + (watched_ ? watched_->records_lost() : 0); }
  std::uint64_t records_written() const {
    return ring_.records_written() + (watched_ ? watched_->records_written() : 0);
  }

 private:
  LogWriter ring_;
  std::optional<LogWriter> watched_;
};

}  // namespace chatcap
