#include "chatcap/pipeline.hpp"

#include <algorithm>

namespace chatcap {

Pipeline::Pipeline(int linktype, PipelineConfig config, RecordSink& sink)
    : config_(std::move(config)),
      decoder_(linktype),
      recorder_(config_.recorder, sink),
      metrics_(config_.metrics ? std::make_unique<Metrics>(recorder_, recorder_) : nullptr),
      watch_(metrics_ ? static_cast<ExchangeSink&>(*metrics_) : recorder_,
             metrics_ ? static_cast<ServerDownSink&>(*metrics_) : recorder_),
      analyzer_(watch_),
      flows_(analyzer_, config_.flows, &watch_) {
  flows_.numbering().id_salt = config_.id_salt;
}

bool Pipeline::wanted(const TcpSegment& segment) const {
  const auto& ports = config_.flows.server_ports;
  if (!ports.empty()) {
    bool port_ok = std::find(ports.begin(), ports.end(), segment.src.port) != ports.end() ||
                   std::find(ports.begin(), ports.end(), segment.dst.port) != ports.end();
    if (!port_ok) return false;
  }
  if (!config_.hosts.empty()) {
    auto involved = [&](const IpAddress& host) {
      return segment.src.address == host || segment.dst.address == host;
    };
    if (std::none_of(config_.hosts.begin(), config_.hosts.end(), involved)) return false;
  }
  return true;
}

void Pipeline::on_packet(timestamp_us ts, std::span<const std::uint8_t> frame, std::uint32_t wire_length) {
  ++packets_;
  bytes_ += wire_length;
  last_ts_ = std::max(last_ts_, ts);
  if (ts >= next_watch_tick_) {
    watch_.tick(ts);  // decide incidents whose window has passed, even on a quiet server
    next_watch_tick_ = ts + kMicrosPerSecond / 10;
  }
  if (decoder_.decode(ts, frame, wire_length, segment_) != DecodeOutcome::tcp) {
    flows_.tick(ts);
    return;
  }
  if (!wanted(segment_)) {
    ++filtered_out_;
    flows_.tick(ts);
    return;
  }
  flows_.on_segment(segment_);
}

void Pipeline::on_idle(timestamp_us now) {
  flows_.tick(now);
  watch_.tick(now);
}

void Pipeline::on_capture_drops(std::uint64_t dropped) {
  if (dropped > 0) flows_.flag_open(Anomaly::capture_drops);
}

void Pipeline::finish(timestamp_us ts, ExchangeState state, std::string_view why) {
  flows_.finish(std::max(ts, last_ts_), state, why);
  watch_.finish(std::max(ts, last_ts_));
}

PipelineStats Pipeline::stats() const {
  PipelineStats s;
  s.packets = packets_;
  s.bytes = bytes_;
  s.tcp_segments = decoder_.count(DecodeOutcome::tcp);
  s.filtered_out = filtered_out_;
  s.not_tcp = decoder_.count(DecodeOutcome::not_ip) + decoder_.count(DecodeOutcome::not_tcp) +
              decoder_.count(DecodeOutcome::ip_fragment);
  s.undecodable = decoder_.count(DecodeOutcome::truncated) + decoder_.count(DecodeOutcome::malformed) +
                  decoder_.count(DecodeOutcome::unsupported_link);
  s.open_connections = flows_.size();
  s.connections = flows_.connections_seen();
  s.gap_bytes = flows_.gap_bytes();
  s.requests_recorded = recorder_.requests_written();
  s.exchanges_recorded = recorder_.exchanges_written();
  s.watched_requests = recorder_.watched_requests_written();
  s.risky_requests = recorder_.risky_requests();
  s.server_downs = recorder_.server_downs_written();
  return s;
}

}  // namespace chatcap
