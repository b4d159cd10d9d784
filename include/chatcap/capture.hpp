// Capture: where packets come from. Only this stage touches the network side.
//
// OfflineCapture reads a pcap or pcapng file (any link type PacketDecoder knows) and feeds
// the pipeline on the calling thread.
//
// LiveCapture opens an interface (pcap_create, block delivery within 50 ms, a kernel buffer of
// --buffer-size, snaplen 262144 because loopback carries 64 KiB segments) with a BPF filter
// built from --port/--host, and runs a capture thread whose only job is to copy packets
// into the PacketQueue: it never waits for the processing thread. Kernel drops
// (pcap_stats) are read on that thread and published as counters. Timestamps are the file's (micro- or nanosecond files
// both become microseconds). A file cut short (tcpdump killed mid-write) is not an error:
// every whole packet is processed and the result says the file was truncated.
#pragma once

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "chatcap/errors.hpp"
#include "chatcap/packet_queue.hpp"
#include "chatcap/pipeline.hpp"

struct pcap;

namespace chatcap {

struct OfflineResult {
  std::uint64_t packets = 0;
  timestamp_us last_ts = 0;
  bool truncated = false;  // the file ended inside a packet
  std::string warning;     // set when truncated: what pcap said
};

class OfflineCapture {
 public:
  explicit OfflineCapture(const std::string& path);  // throws CaptureError
  ~OfflineCapture();
  OfflineCapture(const OfflineCapture&) = delete;
  OfflineCapture& operator=(const OfflineCapture&) = delete;

  int linktype() const { return linktype_; }
  // Feeds every packet to the pipeline, in file order.
  OfflineResult run(Pipeline& pipeline);

 private:
  std::string path_;
  pcap* handle_ = nullptr;
  int linktype_ = 0;
};

// "tcp and (port 8077) and (host 127.0.0.1 or host ::1)"; an empty port list means any port.
std::string build_capture_filter(const std::vector<std::uint16_t>& ports, const std::vector<std::string>& hosts);

struct LiveCaptureConfig {
  std::string interface = "lo";
  std::string filter = "tcp";
  int snaplen = 262144;
  int buffer_bytes = 32 * 1024 * 1024;  // the kernel's ring for this socket
  // The longest a captured packet waits in the kernel before it is handed over (packets
  // come in blocks; see LiveCapture). Also how often the capture thread sees its stop flag.
  int delivery_timeout_ms = 50;
};

struct CaptureCounters {
  std::uint64_t received = 0;        // packets the kernel handed to the filter (pcap_stats)
  std::uint64_t kernel_dropped = 0;  // dropped by the kernel: the buffer was full
  std::uint64_t interface_dropped = 0;
};

class LiveCapture {
 public:
  // Opens and activates the capture; throws CaptureError naming the cause and the fix
  // (no such interface, no permission, bad filter).
  explicit LiveCapture(LiveCaptureConfig config);
  ~LiveCapture();
  LiveCapture(const LiveCapture&) = delete;
  LiveCapture& operator=(const LiveCapture&) = delete;

  int linktype() const { return linktype_; }
  // Starts the capture thread, which pushes every packet into `queue`.
  void start(PacketQueue& queue);
  // Stops the thread (returns once it has ended).
  void stop();

  CaptureCounters counters() const;
  // Non-empty when the capture thread ended on an error (interface gone, ...).
  bool failed() const { return failed_.load(); }
  std::string failure() const;

 private:
  void loop(PacketQueue& queue);
  void publish_stats();
  bool install_filter(const std::string& expression);  // false: pcap_geterr says why
  void drop_outgoing_copies();
  static bool is_loopback(const std::string& interface);

  LiveCaptureConfig config_;
  pcap* handle_ = nullptr;
  int linktype_ = 0;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> failed_{false};
  std::string failure_;  // written by the capture thread before failed_ is set
  std::atomic<std::uint64_t> received_{0};
  std::atomic<std::uint64_t> kernel_dropped_{0};
  std::atomic<std::uint64_t> interface_dropped_{0};
};

}  // namespace chatcap
