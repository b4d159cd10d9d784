// The processing pipeline, wired once: decode → flow table (reassembly, HTTP, SSE) →
// request analyzer (summary, risks) → server watch (death detection) → [metrics] → recorder →
// record sink. The same object runs `chatcap read` (one thread, a file) and the
// processing thread of `chatcap run` (fed from the capture thread's queue).
//
// It does no I/O of its own and reads no clock: packets come with their pcap timestamps,
// and on_idle(now) lets a live caller run timers when the wire is quiet.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "chatcap/flow_table.hpp"
#include "chatcap/metrics.hpp"
#include "chatcap/packet.hpp"
#include "chatcap/recorder.hpp"
#include "chatcap/risks.hpp"
#include "chatcap/server_watch.hpp"
#include "chatcap/types.hpp"

namespace chatcap {

struct PipelineConfig {
  FlowTableConfig flows;
  RecorderConfig recorder;
  std::vector<IpAddress> hosts;  // empty = any host; else a segment must involve one of them
  std::uint64_t id_salt = 0;     // makes exchange ids differ between runs
  bool metrics = false;          // keep Prometheus metrics (`run --metrics`)
};

struct PipelineStats {
  std::uint64_t packets = 0;
  std::uint64_t bytes = 0;
  std::uint64_t tcp_segments = 0;
  std::uint64_t filtered_out = 0;  // TCP segments outside --port/--host (offline mode)
  std::uint64_t not_tcp = 0;       // not IP, not TCP, fragments
  std::uint64_t undecodable = 0;   // truncated headers, malformed, unsupported link
  std::uint64_t open_connections = 0;
  std::uint64_t connections = 0;
  std::uint64_t gap_bytes = 0;
  std::uint64_t requests_recorded = 0;
  std::uint64_t exchanges_recorded = 0;
  std::uint64_t watched_requests = 0;  // watched-only requests written (not in the ring)
  std::uint64_t risky_requests = 0;    // requests carrying a known engine killer
  std::uint64_t server_downs = 0;
};

class Pipeline {
 public:
  Pipeline(int linktype, PipelineConfig config, RecordSink& sink);

  void on_packet(timestamp_us ts, std::span<const std::uint8_t> frame, std::uint32_t wire_length);
  // No packet for a while: run timers as of `now` (packet-time scale).
  void on_idle(timestamp_us now);
  // The capture lost packets (kernel or queue drops): flag exchanges open now.
  void on_capture_drops(std::uint64_t dropped);
  // Capture ended: close every open exchange with `state`.
  void finish(timestamp_us ts, ExchangeState state, std::string_view why);

  PipelineStats stats() const;
  timestamp_us last_packet_ts() const { return last_ts_; }
  const PacketDecoder& decoder() const { return decoder_; }
  const Recorder& recorder() const { return recorder_; }
  Metrics* metrics() { return metrics_.get(); }  // null unless config.metrics
  FlowTable& flows() { return flows_; }

 private:
  bool wanted(const TcpSegment& segment) const;

  PipelineConfig config_;
  PacketDecoder decoder_;
  Recorder recorder_;
  std::unique_ptr<Metrics> metrics_;  // between the watch and the recorder, when kept
  ServerWatch watch_;  // between the analyzer and the recorder
  RequestAnalyzer analyzer_;  // between the sessions and the watch
  FlowTable flows_;
  timestamp_us next_watch_tick_ = 0;
  TcpSegment segment_;  // reused for every packet
  timestamp_us last_ts_ = 0;
  std::uint64_t packets_ = 0;
  std::uint64_t bytes_ = 0;
  std::uint64_t filtered_out_ = 0;
};

}  // namespace chatcap
