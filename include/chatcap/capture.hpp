// Capture: where packets come from. Only this stage touches the network side.
//
// OfflineCapture reads a pcap or pcapng file (any link type PacketDecoder knows) and feeds
// the pipeline on the calling thread. Timestamps are the file's (micro- or nanosecond files
// both become microseconds). A file cut short (tcpdump killed mid-write) is not an error:
// every whole packet is processed and the result says the file was truncated.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "chatcap/pipeline.hpp"

struct pcap;

namespace chatcap {

// A failure the user must act on; what() is one sentence naming the cause and the fix.
class CaptureError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

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

}  // namespace chatcap
