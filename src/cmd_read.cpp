// `chatcap read FILE`: the pipeline on one capture file, records to stdout.
#include <cstdio>
#include <stdexcept>

#include <fmt/format.h>

#include "chatcap/capture.hpp"
#include "chatcap/commands.hpp"

namespace chatcap {
namespace {

// Records go to stdout through stdio's buffer: one fwrite per record, flushed at exit.
// Watched-only records are printed like the others ("watched_only":true): stdout is one
// stream, not a ring. A pinned copy repeats a record already printed, and is left out.
class StdoutSink : public RecordSink {
 public:
  explicit StdoutSink(bool quiet) : quiet_(quiet) {}
  void write_record(RecordType type, std::string_view, std::string_view line) override {
    if (type == RecordType::pinned_request) return;
    if (std::fwrite(line.data(), 1, line.size(), stdout) != line.size()) failed_ = true;
  }
  void on_risk_notice(std::string_view sentence) override {
    if (!quiet_) fmt::print(stderr, "chatcap: {}\n", sentence);
  }
  bool failed() const { return failed_; }

 private:
  bool quiet_;
  bool failed_ = false;
};

}  // namespace

PipelineConfig pipeline_config_from(const Options& options) {
  PipelineConfig config;
  for (const std::string& port : options.ports) {
    if (port == "any") {
      config.flows.server_ports.clear();
      break;
    }
    unsigned long value = 0;
    try {
      std::size_t used = 0;
      value = std::stoul(port, &used);
      if (used != port.size()) throw std::invalid_argument(port);
    } catch (const std::exception&) {
      value = 0;
    }
    if (value == 0 || value > 65535) {
      throw std::invalid_argument(fmt::format("--port {}: not a port number — give 1-65535 or `any`", port));
    }
    config.flows.server_ports.push_back(static_cast<std::uint16_t>(value));
  }
  for (const std::string& host : options.hosts) {
    IpAddress address;
    if (!IpAddress::parse(host, address)) {
      throw std::invalid_argument(fmt::format("--host {}: not an IPv4 or IPv6 address — give one like 127.0.0.1 or ::1", host));
    }
    config.hosts.push_back(address);
  }
  config.flows.http.scope.endpoints = options.endpoints;
  config.flows.http.scope.watch_other_posts = options.keep_watched > 0;
  for (const std::string& endpoint : options.endpoints) {
    if (endpoint.empty() || endpoint.front() != '/') {
      throw std::invalid_argument(fmt::format("--endpoint {}: a path must start with / (use / for every path)", endpoint));
    }
  }
  config.recorder.redact = !options.no_redact;
  config.flows.http.max_body_bytes = static_cast<std::size_t>(options.max_body);
  config.flows.http.max_stream_body_bytes = static_cast<std::size_t>(options.stream_body);
  return config;
}

int command_read(const Options& options) {
  PipelineConfig config = pipeline_config_from(options);
  OfflineCapture capture(options.read_file);
  StdoutSink sink(options.quiet);
  Pipeline pipeline(capture.linktype(), std::move(config), sink);
  OfflineResult result = capture.run(pipeline);
  pipeline.finish(result.last_ts, ExchangeState::capture_stopped, "the capture ended before the exchange did");
  std::fflush(stdout);

  if (result.truncated) {
    fmt::print(stderr, "chatcap: warning: {} ends inside a packet ({}); every whole packet before it was read\n",
               options.read_file, result.warning);
  }
  if (!options.quiet) {
    PipelineStats s = pipeline.stats();
    fmt::print(stderr,
               "chatcap: {} packets, {} TCP segments ({} outside the port/host filter), {} connections, "
               "{} requests and {} exchanges recorded, {} other requests watched, {} with a known risk, "
               "{} server deaths, {} bytes lost to capture gaps\n",
               s.packets, s.tcp_segments, s.filtered_out, s.connections, s.requests_recorded, s.exchanges_recorded,
               s.watched_requests, s.risky_requests, s.server_downs, s.gap_bytes);
  }
  if (sink.failed()) {
    fmt::print(stderr, "chatcap: cannot write records to stdout: {}\n", std::strerror(errno));
    return 1;
  }
  return 0;
}

}  // namespace chatcap
