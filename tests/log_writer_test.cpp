// The log writer on a real directory: one line per record, rotation by exchanges, requests
// carried across rotation, torn lines repaired, permissions.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "chatcap/log_writer.hpp"
#include "support/records.hpp"

using namespace chatcap;
using chatcap::testing::TempDir;

namespace {

std::string request_line(const std::string& id, const std::string& body = "{}") {
  return nlohmann::ordered_json{{"type", "request"}, {"id", id}, {"body", body}}.dump() + "\n";
}
std::string exchange_line(const std::string& id) {
  return nlohmann::ordered_json{{"type", "exchange"}, {"id", id}, {"state", "complete"}}.dump() + "\n";
}

std::vector<nlohmann::json> lines_of(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

std::set<std::string> ids_of(const std::vector<nlohmann::json>& records, const std::string& type) {
  std::set<std::string> ids;
  for (const auto& r : records) {
    if (r["type"] == type) ids.insert(r["id"].get<std::string>());
  }
  return ids;
}

// One exchange from start to end.
void whole_exchange(LogWriter& log, const std::string& id) {
  log.write_record(RecordType::request, id, request_line(id));
  log.write_record(RecordType::exchange, id, exchange_line(id));
}

// /dev/full fails every write with ENOSPC: the current file is moved aside and replaced by
// a link to it, and the writer reopens. Returns the current file's path.
std::string make_disk_full(LogWriter& log, TempDir& dir) {
  std::string path = log.current_path();
  std::rename(path.c_str(), dir.file("saved.jsonl").c_str());
  REQUIRE(::symlink("/dev/full", path.c_str()) == 0);
  log.reopen();
  return path;
}

// Space again: the link goes, and the writer reopens a real file.
void make_disk_writable(LogWriter& log, const std::string& path) {
  ::unlink(path.c_str());
  log.reopen();
}

}  // namespace

TEST_CASE("log writer: the files hold between keep and 2×keep exchanges", "[log_writer]") {
  TempDir dir;
  LogWriterConfig config;
  config.dir = dir.file("log");
  config.keep = 5;
  LogWriter log(config);
  for (int i = 0; i < 23; ++i) {
    whole_exchange(log, "ex" + std::to_string(i));
    auto current = lines_of(log.current_path());
    auto previous = lines_of(log.previous_path());
    std::set<std::string> all = ids_of(current, "request");
    for (const auto& id : ids_of(previous, "request")) all.insert(id);
    INFO("after exchange " << i);
    CHECK(all.size() <= 10);
    if (i >= 5) CHECK(all.size() >= 5);
    CHECK(all.count("ex" + std::to_string(i)) == 1);
  }
  CHECK(log.rotations() == 4);
  struct stat st {};
  REQUIRE(::stat(config.dir.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0750);
  REQUIRE(::stat(log.current_path().c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0640);
}

TEST_CASE("log writer: a request in flight survives any number of rotations", "[log_writer]") {
  TempDir dir;
  LogWriterConfig config;
  config.dir = dir.file("log");
  config.keep = 3;
  LogWriter log(config);
  log.write_record(RecordType::request, "slow", request_line("slow", "the request the server died on"));
  for (int i = 0; i < 20; ++i) whole_exchange(log, "fast" + std::to_string(i));
  // Still in flight: its request record must be in one of the two files.
  auto current = lines_of(log.current_path());
  auto previous = lines_of(log.previous_path());
  bool found = ids_of(current, "request").count("slow") + ids_of(previous, "request").count("slow") > 0;
  CHECK(found);
  // When it ends, its exchange record lands next to a copy of its request.
  log.write_record(RecordType::exchange, "slow", exchange_line("slow"));
  current = lines_of(log.current_path());
  CHECK(ids_of(current, "request").count("slow") == 1);
  CHECK(ids_of(current, "exchange").count("slow") == 1);
  for (const auto& r : current) {
    if (r["id"] == "slow" && r["type"] == "request") CHECK(r["body"] == "the request the server died on");
  }
}

TEST_CASE("log writer: a restart continues the file and repairs a torn last line", "[log_writer]") {
  TempDir dir;
  LogWriterConfig config;
  config.dir = dir.file("log");
  config.keep = 4;
  {
    LogWriter log(config);
    whole_exchange(log, "a");
    whole_exchange(log, "b");
  }
  {
    std::ofstream torn(config.dir + "/exchanges.jsonl", std::ios::app);
    torn << R"({"type":"request","id":"half)";  // a crash mid-write
  }
  LogWriter log(config);
  CHECK(log.exchanges_in_current() == 2);
  whole_exchange(log, "c");
  auto current = lines_of(log.current_path());  // every line parses: the torn one is gone
  CHECK(ids_of(current, "request") == std::set<std::string>{"a", "b", "c"});
  whole_exchange(log, "d");
  whole_exchange(log, "e");  // the fifth: rotation
  CHECK(log.rotations() == 1);
}

TEST_CASE("log writer: reopen after the files were moved away (SIGHUP)", "[log_writer]") {
  TempDir dir;
  LogWriterConfig config;
  config.dir = dir.file("log");
  LogWriter log(config);
  whole_exchange(log, "before");
  std::rename(log.current_path().c_str(), dir.file("moved.jsonl").c_str());
  log.reopen();
  whole_exchange(log, "after");
  CHECK(ids_of(lines_of(log.current_path()), "request") == std::set<std::string>{"after"});
  CHECK(ids_of(lines_of(dir.file("moved.jsonl")), "request") == std::set<std::string>{"before"});
}

TEST_CASE("log writer: a directory that cannot be created is a clear error", "[log_writer]") {
  TempDir dir;
  std::ofstream(dir.file("plain-file")) << "x";
  LogWriterConfig config;
  config.dir = dir.file("plain-file") + "/log";
  try {
    LogWriter log(config);
    FAIL("expected LogError");
  } catch (const LogError& e) {
    CHECK_THAT(e.what(), Catch::Contains("cannot create log directory") && Catch::Contains("--log-dir"));
  }
}

TEST_CASE("log writer: a failing write is undone, reported once, and writing resumes", "[log_writer]") {
  TempDir dir;
  LogWriterConfig config;
  config.dir = dir.file("log");
  LogWriter log(config);
  std::vector<std::string> problems;
  log.on_problem = [&](const std::string& p) { problems.push_back(p); };
  whole_exchange(log, "ok1");
  std::string path = make_disk_full(log, dir);
  whole_exchange(log, "lost1");
  whole_exchange(log, "lost2");
  CHECK(log.records_lost() == 4);
  REQUIRE(problems.size() == 1);
  CHECK_THAT(problems[0], Catch::Contains("No space left") && Catch::Contains("free disk space"));
  make_disk_writable(log, path);
  whole_exchange(log, "ok2");
  REQUIRE(problems.size() == 2);
  CHECK_THAT(problems[1], Catch::Contains("again"));
  CHECK(ids_of(lines_of(path), "request") == std::set<std::string>{"ok2"});
}

TEST_CASE("log writer: a batch's records reach the file together when it ends", "[log_writer]") {
  TempDir dir;
  LogWriterConfig config;
  config.dir = dir.file("log");
  config.keep = 3;
  LogWriter log(config);
  whole_exchange(log, "alone");  // outside a batch: at once
  CHECK(lines_of(log.current_path()).size() == 2);
  {
    LogWriter::Batch batch(log);
    log.write_record(RecordType::request, "slow", request_line("slow", "in flight across rotations"));
    for (int i = 0; i < 7; ++i) whole_exchange(log, "b" + std::to_string(i));
    // Rotation in a batch writes what waits first: the renamed file is whole.
    CHECK(log.rotations() == 2);
    for (const auto& r : lines_of(log.previous_path())) CHECK(r.contains("id"));
  }
  CHECK(log.records_lost() == 0);
  auto current = lines_of(log.current_path());
  auto previous = lines_of(log.previous_path());
  std::set<std::string> requests = ids_of(current, "request");
  for (const auto& id : ids_of(previous, "request")) requests.insert(id);
  CHECK(requests.count("slow") == 1);  // copied forward out of the dropped file
  CHECK(requests.count("b6") == 1);
  CHECK(ids_of(current, "exchange").count("b6") == 1);
  // Its end, written outside a batch, still lands next to a copy of its request.
  log.write_record(RecordType::exchange, "slow", exchange_line("slow"));
  current = lines_of(log.current_path());
  CHECK(ids_of(current, "request").count("slow") == 1);
  CHECK(ids_of(current, "exchange").count("slow") == 1);
}

TEST_CASE("log writer: records wait in a batch until it ends, or until 64 KiB wait", "[log_writer]") {
  TempDir dir;
  LogWriterConfig config;
  config.dir = dir.file("log");
  config.keep = 1000;
  LogWriter log(config);
  {
    LogWriter::Batch batch(log);
    whole_exchange(log, "small");
    CHECK(lines_of(log.current_path()).empty());
    const std::string body(40 * 1024, 'x');
    log.write_record(RecordType::request, "big1", request_line("big1", body));
    log.write_record(RecordType::request, "big2", request_line("big2", body));
    log.write_record(RecordType::request, "big3", request_line("big3", body));
    // Past 64 KiB the waiting records were written; the latest still waits.
    CHECK(ids_of(lines_of(log.current_path()), "request") == std::set<std::string>{"small", "big1", "big2"});
  }
  CHECK(ids_of(lines_of(log.current_path()), "request") == std::set<std::string>{"small", "big1", "big2", "big3"});
  CHECK(log.records_written() == 5);
}

TEST_CASE("log writer: a batch that cannot be written is undone and counted, record by record", "[log_writer]") {
  TempDir dir;
  LogWriterConfig config;
  config.dir = dir.file("log");
  LogWriter log(config);
  std::vector<std::string> problems;
  log.on_problem = [&](const std::string& p) { problems.push_back(p); };
  std::string path = make_disk_full(log, dir);
  {
    LogWriter::Batch batch(log);
    whole_exchange(log, "lost1");
    log.write_record(RecordType::request, "lost2", request_line("lost2"));
  }
  CHECK(log.records_lost() == 3);
  CHECK(log.records_written() == 0);
  CHECK(log.exchanges_in_current() == 0);  // the lost requests do not count toward rotation
  REQUIRE(problems.size() == 1);
  make_disk_writable(log, path);
  {
    LogWriter::Batch batch(log);
    log.write_record(RecordType::exchange, "lost2", exchange_line("lost2"));  // its request is gone
    whole_exchange(log, "ok");
  }
  REQUIRE(problems.size() == 2);
  CHECK_THAT(problems[1], Catch::Contains("again"));
  auto current = lines_of(path);
  CHECK(ids_of(current, "request") == std::set<std::string>{"ok"});
  CHECK(ids_of(current, "exchange") == std::set<std::string>{"lost2", "ok"});
}
