// Test support: run the pipeline (in-process, or the chatcap binary) and get its records
// back as JSON, so capture tests assert on exactly what a user would read.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "chatcap/pipeline.hpp"
#include "support/pcap_builder.hpp"

namespace chatcap::testing {

using Records = std::vector<nlohmann::json>;

// Default config for tests: port 8077, every path recorded unless the test says otherwise.
PipelineConfig test_config(std::vector<std::string> endpoints = {"/"});

// Feeds rendered packets straight into a Pipeline, then ends the capture.
Records run_pipeline(Link link, const std::vector<Packet>& packets, const PipelineConfig& config = test_config());
// Reads a pcap file through OfflineCapture, as `chatcap read` does.
Records run_pipeline_on_file(const std::string& path, const PipelineConfig& config = test_config());

// Records of one type, in output order.
Records of_type(const Records& records, const std::string& type);
// The record body bytes, base64-decoded when body_encoding says so.
std::string body_of(const nlohmann::json& record);

// Runs a program with an argument list (no shell); captures stdout and stderr.
struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
CommandResult run_command(const std::vector<std::string>& argv);

// A temporary directory removed with everything in it when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace chatcap::testing
