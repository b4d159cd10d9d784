#include "support/records.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string_view>

#include "chatcap/capture.hpp"

extern char** environ;

namespace chatcap::testing {
namespace {

class CollectingSink : public RecordSink {
 public:
  Records records;
  void write_record(RecordType, std::string_view, std::string_view line) override {
    if (line.empty() || line.back() != '\n') throw std::logic_error("a record line must end in a newline");
    if (line.substr(0, line.size() - 1).find('\n') != std::string_view::npos) {
      throw std::logic_error("a record must be one line");
    }
    records.push_back(nlohmann::json::parse(line));
  }
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

PipelineConfig test_config(std::vector<std::string> endpoints) {
  PipelineConfig config;
  config.flows.server_ports = {8077};
  config.flows.http.scope.endpoints = std::move(endpoints);
  return config;
}

Records run_pipeline(Link link, const std::vector<Packet>& packets, const PipelineConfig& config) {
  CollectingSink sink;
  Pipeline pipeline(dlt_of(link), config, sink);
  timestamp_us last = 0;
  for (const Packet& p : packets) {
    pipeline.on_packet(p.ts, std::span<const std::uint8_t>(p.frame.data(), p.frame.size()), p.wire_len);
    last = p.ts;
  }
  pipeline.finish(last, ExchangeState::capture_stopped, "the capture ended before the exchange did");
  return std::move(sink.records);
}

Records run_pipeline_on_file(const std::string& path, const PipelineConfig& config) {
  CollectingSink sink;
  OfflineCapture capture(path);
  Pipeline pipeline(capture.linktype(), config, sink);
  OfflineResult result = capture.run(pipeline);
  pipeline.finish(result.last_ts, ExchangeState::capture_stopped, "the capture ended before the exchange did");
  return std::move(sink.records);
}

Records of_type(const Records& records, const std::string& type) {
  Records out;
  for (const auto& r : records) {
    if (r.value("type", "") == type) out.push_back(r);
  }
  return out;
}

std::string body_of(const nlohmann::json& record) {
  std::string body = record.at("body").get<std::string>();
  if (record.value("body_encoding", "") != "base64") return body;
  std::string out(body.size(), '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(body.data()), static_cast<int>(body.size()));
  if (n < 0) throw std::runtime_error("bad base64 in a record");
  std::size_t padding = 0;
  for (auto it = body.rbegin(); it != body.rend() && *it == '='; ++it) ++padding;
  out.resize(static_cast<std::size_t>(n) - padding);
  return out;
}

CommandResult run_command(const std::vector<std::string>& argv) {
  TempDir dir;
  std::string out_path = dir.file("stdout");
  std::string err_path = dir.file("stderr");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  CommandResult result;
  if (posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ) != 0) {
    posix_spawn_file_actions_destroy(&actions);
    throw std::runtime_error("cannot start " + argv[0]);
  }
  posix_spawn_file_actions_destroy(&actions);
  int status = 0;
  waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.out = slurp(out_path);
  result.err = slurp(err_path);
  return result;
}

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "chatcap-test-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

}  // namespace chatcap::testing
