// Command line: the commands and flags of DESIGN.md ("Command line"), parsed with CLI11.
// Every flag may also come from a config file (--config, default /etc/chatcap/chatcap.conf),
// with the same keys. main() only calls run_cli().
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace chatcap {

struct Options {
  // filters
  std::string interface = "lo";
  std::vector<std::string> ports{"8077"};
  std::vector<std::string> hosts;
  std::vector<std::string> endpoints{"/v1/chat/completions"};
  std::size_t keep = 20;
  std::size_t keep_watched = 100;  // watched-only requests per watched.jsonl file (run); 0 = none
  std::uint64_t max_body = 4 * 1024 * 1024;
  std::uint64_t stream_body = 0;
  bool no_redact = false;
  // files
  std::string log_dir = "/var/log/chatcap";
  std::string pidfile = "/run/chatcap/chatcap.pid";
  std::uint64_t buffer_size = 32 * 1024 * 1024;
  // commands
  std::string read_file;
  bool quiet = false;
  bool json = false;
  std::size_t last_n = 20;
  std::string show_id;
  bool curl = false;
  bool body_only = false;
  bool all = false;
  bool full = false;  // last: a block per exchange instead of a line
};

// Parses argv and runs the chosen command; returns the process exit code.
int run_cli(int argc, char** argv);

}  // namespace chatcap
