// The live recorder (`chatcap run`): process plumbing around the pipeline.
//
//   capture thread:    LiveCapture → PacketQueue (never blocks)
//   processing thread: PacketQueue → Pipeline → LogFiles (ring + watched log), plus signals,
//                      timers, systemd
// A request carrying a known engine killer is said on stderr (the journal) the moment it is
// complete: at most kRiskNoticesPerMinute sentences a minute, then how many more there were.
//
// Signals are never handled asynchronously: TERM, INT, HUP and USR1 are blocked in every
// thread and read from a signalfd in the processing loop, next to the queue's eventfd.
//   TERM/INT  stop the capture, close every open exchange as capture_stopped, flush, remove
//             the pidfile, exit 0
//   HUP       reopen the log files (for an external logrotate)
//   USR1      write the counters to stderr
// systemd (Type=notify): READY=1 once the capture is open, STATUS= with counters every few
// seconds, WATCHDOG=1 from the processing loop when WatchdogSec= is set (so a stuck
// pipeline, not only a dead process, gets restarted).
#pragma once

#include <csignal>
#include <cstdint>
#include <string>

#include "chatcap/capture.hpp"
#include "chatcap/log_writer.hpp"
#include "chatcap/pipeline.hpp"

namespace chatcap {

// A pidfile held with flock() for the life of the process. A second instance is refused
// with the running PID; a file left by a dead process is taken over.
class Pidfile {
 public:
  explicit Pidfile(std::string path);  // throws LogError with a user-facing sentence
  ~Pidfile();
  Pidfile(const Pidfile&) = delete;
  Pidfile& operator=(const Pidfile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

struct DaemonConfig {
  LiveCaptureConfig capture;
  PipelineConfig pipeline;
  LogWriterConfig log;
  std::size_t keep_watched = 100;  // watched-only requests per watched.jsonl file; 0 = none
  std::string pidfile = "/run/chatcap/chatcap.pid";
  std::size_t queue_bytes = PacketQueue::kDefaultBytes;
  std::string description;  // "lo, tcp port 8077" for status lines
};

inline constexpr int kRiskNoticesPerMinute = 10;

// Runs until TERM/INT; returns the exit code.
int run_daemon(const DaemonConfig& config);

}  // namespace chatcap
