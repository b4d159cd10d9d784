#include "chatcap/daemon.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

namespace chatcap {
namespace {

timestamp_us wall_clock_now() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

std::uint64_t monotonic_ms() {
  using namespace std::chrono;
  return static_cast<std::uint64_t>(duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count());
}

void say(const std::string& line) { fmt::print(stderr, "chatcap: {}\n", line); }

// TERM, INT, HUP and USR1 blocked in this thread and every thread it starts; read from a
// signalfd instead of running handlers.
class SignalReader {
 public:
  SignalReader() {
    sigemptyset(&set_);
    for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&set_, s);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
    fd_ = signalfd(-1, &set_, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd_ < 0) throw LogError(fmt::format("cannot create a signalfd: {}", std::strerror(errno)));
  }
  ~SignalReader() {
    if (fd_ >= 0) ::close(fd_);
  }
  int fd() const { return fd_; }
  // The next pending signal, or 0.
  int next() {
    signalfd_siginfo info{};
    ssize_t n = ::read(fd_, &info, sizeof info);
    return n == static_cast<ssize_t>(sizeof info) ? static_cast<int>(info.ssi_signo) : 0;
  }

 private:
  sigset_t set_{};
  int fd_ = -1;
};

// Risk notices, at most kRiskNoticesPerMinute a minute: a client sending killers in a loop
// must not flood the journal. What is held back is counted and said when the minute ends.
class NoticeLimiter {
 public:
  void say_or_count(std::string_view sentence) {
    roll();
    if (said_ < kRiskNoticesPerMinute) {
      ++said_;
      say(std::string(sentence));
    } else {
      ++held_back_;
    }
  }
  void roll() {
    std::uint64_t now = monotonic_ms();
    if (now - minute_start_ms_ < 60'000) return;
    if (held_back_ > 0) {
      say(fmt::format("{} more request{} with a known engine killer in the last minute (not said one by one) — "
                      "`chatcap last` shows them",
                      held_back_, held_back_ == 1 ? "" : "s"));
    }
    minute_start_ms_ = now;
    said_ = 0;
    held_back_ = 0;
  }

 private:
  std::uint64_t minute_start_ms_ = monotonic_ms();
  int said_ = 0;
  std::uint64_t held_back_ = 0;
};

// The processing thread's state between loop turns.
class Daemon {
 public:
  Daemon(const DaemonConfig& config, LiveCapture& capture, LogFiles& log)
      : config_(config),
        capture_(capture),
        log_(log),
        queue_(config.queue_bytes),
        pipeline_(capture.linktype(), config.pipeline, log) {
    log_.on_notice = [this](std::string_view sentence) { notices_.say_or_count(sentence); };
  }

  int run(SignalReader& signals);

 private:
  bool handle_signals(SignalReader& signals);  // false: stop
  void process_packets();
  void sleep_until_work(SignalReader& signals);
  void every_second();
  void report_counters(bool to_stderr);
  std::string status_line() const;

  const DaemonConfig& config_;
  LiveCapture& capture_;
  LogFiles& log_;
  PacketQueue queue_;
  Pipeline pipeline_;
  NoticeLimiter notices_;
  std::uint64_t last_second_ms_ = 0;
  std::uint64_t last_status_ms_ = 0;
  std::uint64_t drops_seen_ = 0;
  std::uint64_t watchdog_interval_ms_ = 0;
  std::uint64_t last_watchdog_ms_ = 0;
  std::uint64_t last_packets_ = 0;
};

int Daemon::run(SignalReader& signals) {
  std::uint64_t watchdog_usec = 0;
  if (sd_watchdog_enabled(0, &watchdog_usec) > 0) watchdog_interval_ms_ = watchdog_usec / 2000;
  capture_.start(queue_);
  sd_notifyf(0, "READY=1\nSTATUS=recording %s", config_.description.c_str());
  say(fmt::format("recording {} into {}/{} (keep {} exchanges; other POSTs in {}, keep {})", config_.description,
                  config_.log.dir, kCurrentLogName, config_.log.keep,
                  config_.keep_watched > 0 ? kWatchedLogName : "no file", config_.keep_watched));
  int exit_code = 0;
  for (;;) {
    if (!handle_signals(signals)) break;
    process_packets();
    if (capture_.failed()) {
      say(capture_.failure() + " — chatcap stops (systemd restarts it)");
      exit_code = 1;
      break;
    }
    every_second();
    sleep_until_work(signals);
  }
  sd_notify(0, "STOPPING=1\nSTATUS=stopping: closing open exchanges");
  capture_.stop();
  process_packets();  // what the capture thread queued before it stopped
  pipeline_.finish(wall_clock_now(), ExchangeState::capture_stopped, "chatcap stopped before the exchange ended");
  report_counters(true);
  return exit_code;
}

bool Daemon::handle_signals(SignalReader& signals) {
  for (int signal = signals.next(); signal != 0; signal = signals.next()) {
    switch (signal) {
      case SIGTERM:
      case SIGINT:
        say(fmt::format("{} received: stopping", signal == SIGTERM ? "SIGTERM" : "SIGINT"));
        return false;
      case SIGHUP:
        log_.reopen();
        say("SIGHUP received: log files reopened");
        break;
      case SIGUSR1:
        report_counters(true);
        break;
      default:
        break;
    }
  }
  return true;
}

void Daemon::process_packets() {
  // Bounded batches so signals and timers are looked at even under a flood.
  constexpr std::size_t kBatch = 4096;
  for (;;) {
    std::size_t handled = 0;
    {
      LogFiles::Batch records(log_);  // what these packets complete is written together
      handled = queue_.drain([this](timestamp_us ts, std::span<const std::uint8_t> frame,
                                    std::uint32_t wire_length) { pipeline_.on_packet(ts, frame, wire_length); },
                             kBatch);
    }
    if (handled < kBatch) break;
    every_second();
  }
}

void Daemon::sleep_until_work(SignalReader& signals) {
  if (!queue_.prepare_to_sleep()) return;
  pollfd fds[2] = {{queue_.wake_fd(), POLLIN, 0}, {signals.fd(), POLLIN, 0}};
  ::poll(fds, 2, 250);  // wake at least 4×/s for timers, watchdog and status
  queue_.woke();
}

void Daemon::every_second() {
  std::uint64_t now_ms = monotonic_ms();
  if (watchdog_interval_ms_ > 0 && now_ms - last_watchdog_ms_ >= watchdog_interval_ms_) {
    sd_notify(0, "WATCHDOG=1");
    last_watchdog_ms_ = now_ms;
  }
  if (now_ms - last_second_ms_ < 1000) return;
  last_second_ms_ = now_ms;
  notices_.roll();

  CaptureCounters counters = capture_.counters();
  std::uint64_t drops = counters.kernel_dropped + counters.interface_dropped + queue_.drops();
  if (drops > drops_seen_) {
    // Those packets may have held bytes of any exchange open now: say so on each.
    pipeline_.on_capture_drops(drops - drops_seen_);
    say(fmt::format("{} packets lost by the capture (kernel {}, queue {}) — open exchanges are flagged capture_drops",
                    drops - drops_seen_, counters.kernel_dropped, queue_.drops()));
    drops_seen_ = drops;
  }
  // Timers run on packet time; when the wire is quiet, the wall clock moves them on.
  PipelineStats stats = pipeline_.stats();
  if (stats.packets == last_packets_) pipeline_.on_idle(wall_clock_now());
  last_packets_ = stats.packets;
  if (now_ms - last_status_ms_ >= 5000) {
    sd_notifyf(0, "STATUS=%s", status_line().c_str());
    last_status_ms_ = now_ms;
  }
}

std::string Daemon::status_line() const {
  PipelineStats s = pipeline_.stats();
  CaptureCounters c = capture_.counters();
  return fmt::format(
      "recording {}: {} exchanges recorded, {} other requests watched, {} with a known risk, {} open connections, "
      "{} packets, drops: kernel {} queue {}, records lost {}",
      config_.description, s.exchanges_recorded, s.watched_requests, s.risky_requests, s.open_connections, s.packets,
      c.kernel_dropped, queue_.drops(), log_.records_lost());
}

void Daemon::report_counters(bool to_stderr) {
  PipelineStats s = pipeline_.stats();
  CaptureCounters c = capture_.counters();
  std::string text = fmt::format(
      "counters: packets {} ({} bytes), tcp segments {}, not tcp {}, undecodable {}, connections {} ({} open), "
      "requests recorded {}, exchanges recorded {}, watched requests {}, risky requests {}, server deaths {}, "
      "gap bytes {}, kernel received {} dropped {} ifdropped {}, "
      "queue pushed {} dropped {}, log records written {} lost {}, rotations {}",
      s.packets, s.bytes, s.tcp_segments, s.not_tcp, s.undecodable, s.connections, s.open_connections,
      s.requests_recorded, s.exchanges_recorded, s.watched_requests, s.risky_requests, s.server_downs, s.gap_bytes,
      c.received, c.kernel_dropped, c.interface_dropped, queue_.pushed(), queue_.drops(), log_.records_written(),
      log_.records_lost(), log_.ring().rotations());
  if (to_stderr) say(text);
}

}  // namespace

Pidfile::Pidfile(std::string path) : path_(std::move(path)) {
  std::error_code ec;
  std::filesystem::path parent = std::filesystem::path(path_).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    throw LogError(fmt::format("cannot open pidfile {}: {} — run as root or pass --pidfile to a writable place",
                               path_, std::strerror(errno)));
  }
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {};
    ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
    std::string pid = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "?";
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    ::close(fd_);
    fd_ = -1;
    throw LogError(fmt::format("chatcap is already running as PID {} (pidfile {}) — stop it first "
                               "(systemctl stop chatcap) or give this one another --pidfile",
                               pid, path_));
  }
  // Held: whatever the file said belonged to a process that is gone. Take it over.
  std::string pid = fmt::format("{}\n", ::getpid());
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    throw LogError(fmt::format("cannot write pidfile {}: {}", path_, std::strerror(errno)));
  }
}

Pidfile::~Pidfile() {
  if (fd_ < 0) return;
  ::unlink(path_.c_str());  // while still holding the lock: no one can take a file we remove
  ::close(fd_);
}

int run_daemon(const DaemonConfig& config) {
  SignalReader signals;  // first: the capture thread inherits the blocked mask
  Pidfile pidfile(config.pidfile);
  LiveCapture capture(config.capture);  // before the log: a failed start leaves nothing behind
  LogFiles log(config.log, config.keep_watched);
  auto on_problem = [](const std::string& problem) {
    say(problem);
    sd_notifyf(0, "STATUS=%s", problem.c_str());
  };
  log.ring().on_problem = on_problem;
  if (log.watched() != nullptr) log.watched()->on_problem = on_problem;

  Daemon daemon(config, capture, log);
  return daemon.run(signals);
}

}  // namespace chatcap
