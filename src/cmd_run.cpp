// `chatcap run`: the live recorder. Builds the daemon's configuration from the flags.
#include <chrono>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "chatcap/commands.hpp"
#include "chatcap/daemon.hpp"

namespace chatcap {

int command_run(const Options& options) {
  DaemonConfig config;
  config.pipeline = pipeline_config_from(options);
  // Exchange ids stay unique across restarts of the daemon writing into the same log.
  config.pipeline.id_salt = static_cast<std::uint64_t>(
      std::chrono::system_clock::now().time_since_epoch().count());
  config.capture.interface = options.interface;
  config.capture.filter = build_capture_filter(config.pipeline.flows.server_ports, options.hosts);
  if (options.buffer_size > static_cast<std::uint64_t>(1) << 31) {
    throw std::invalid_argument("--buffer-size is over 2 GiB — give a smaller kernel buffer (e.g. 64MiB)");
  }
  config.capture.buffer_bytes = static_cast<int>(options.buffer_size);
  config.log.dir = options.log_dir;
  if (options.keep == 0) throw std::invalid_argument("--keep 0 would keep nothing — give at least 1");
  config.log.keep = options.keep;
  config.keep_watched = options.keep_watched;
  config.pidfile = options.pidfile;
  std::string ports = config.pipeline.flows.server_ports.empty() ? std::string("any port") : fmt::format("port {}", fmt::join(config.pipeline.flows.server_ports, ","));
  config.description = fmt::format("{}, tcp {}", options.interface, ports);
  return run_daemon(config);
}

}  // namespace chatcap
