// `chatcap run --metrics ADDR:PORT`: Prometheus's scrape endpoint, served by Debian's
// libmicrohttpd on a thread of its own. GET /metrics answers Metrics::exposition() (text
// format 0.0.4); every other path a 404, every other method a 405. Bound to the address
// given, loopback when only a port is. An I/O edge, like the capture and the log writer.
#pragma once

#include <cstdint>
#include <string>

#include "chatcap/errors.hpp"
#include "chatcap/metrics.hpp"

struct MHD_Daemon;

namespace chatcap {

class MetricsServer {
 public:
  // Listens at once; throws LogError with a sentence naming the cause and the fix.
  MetricsServer(const Metrics& metrics, const std::string& address, std::uint16_t port);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  std::uint16_t port() const { return port_; }

 private:
  const Metrics& metrics_;
  MHD_Daemon* daemon_ = nullptr;
  std::uint16_t port_ = 0;
};

}  // namespace chatcap
