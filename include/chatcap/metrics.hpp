// Prometheus metrics of what chatcap sees, named after OpenTelemetry's GenAI semantic
// conventions as Prometheus spells them (dots become underscores, units a suffix):
//
//   gen_ai_server_request_duration_seconds        histogram: first request byte to last response byte
//   gen_ai_server_time_to_first_token_seconds     histogram: request complete to first token event
//   gen_ai_server_time_per_output_token_seconds   histogram: mean gap between token events after the first
//   gen_ai_client_token_usage                     histogram, by gen_ai_token_type (input, output)
// labelled by server (server_address, server_port), gen_ai_operation_name (chat,
// text_completion), dialect (chat, completions, responses, messages, other) and
// gen_ai_request_model; and chatcap's own counters: requests and exchanges by state,
// server deaths by kind, requests carrying a known risk by id, capture and queue drops,
// records lost, log bytes written.
//
// A stage between the server watch and the recorder (ExchangeSink and ServerDownSink in and
// out): per exchange, never per packet. The exposition is read from another thread (the
// HTTP server's), so every update and the reading take one mutex. Cardinality is bounded:
// past max_models models, and past max_servers servers, the rest fold into "other".
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "chatcap/exchange.hpp"
#include "chatcap/http_session.hpp"
#include "chatcap/server_watch.hpp"

namespace chatcap {

struct MetricsConfig {
  std::size_t max_models = 16;
  std::size_t max_servers = 16;
};

// What the daemon counts outside the pipeline, handed over once a second.
struct IoCounters {
  std::uint64_t kernel_drops = 0;
  std::uint64_t queue_drops = 0;
  std::uint64_t records_lost = 0;
  std::uint64_t log_bytes = 0;
};

class Metrics : public ExchangeSink, public ServerDownSink {
 public:
  Metrics(ExchangeSink& next, ServerDownSink& downs, MetricsConfig config = {});

  void on_request_complete(Exchange& exchange) override;
  void on_exchange_end(Exchange& exchange) override;
  void on_server_down(const ServerDown& down) override;
  void set_io(const IoCounters& counters);

  // The Prometheus text exposition format (version 0.0.4).
  std::string exposition() const;

  struct Histogram {
    std::vector<std::uint64_t> counts;  // per bucket (not cumulative), plus +Inf last
    double sum = 0;
    std::uint64_t count = 0;
  };

 private:
  // Label values of one series, in the family's label order.
  using Labels = std::vector<std::string>;
  struct Family {
    std::vector<double> bounds;           // histogram bucket upper bounds; empty for counters
    std::map<Labels, Histogram> series;   // histograms
    std::map<Labels, std::uint64_t> counts;  // counters
  };

  Labels exchange_labels(const Exchange& exchange);
  std::string model_label(std::string_view model);
  std::string server_label(const Endpoint& server, std::string& port);
  void observe(Family& family, const Labels& labels, double value);

  ExchangeSink& next_;
  ServerDownSink& downs_;
  MetricsConfig config_;
  mutable std::mutex mutex_;
  Family duration_, ttft_, per_token_, tokens_;
  Family requests_, exchanges_, deaths_, risky_;
  std::vector<std::string> models_;   // seen, up to max_models
  std::map<std::string, std::string> request_models_;  // exchange id → its request's model, while open
  std::vector<std::string> servers_;  // "addr:port", up to max_servers
  IoCounters io_;
};

// "127.0.0.1:9477", "[::1]:9477", ":9477" or "9477" (loopback) into an address and port;
// false for anything else.
bool parse_listen_address(std::string_view text, std::string& address, std::uint16_t& port);

}  // namespace chatcap
