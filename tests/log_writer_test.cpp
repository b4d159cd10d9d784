// The log writer on a real directory: one line per record, rotation by exchanges, requests
// carried across rotation, torn lines repaired, permissions.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "chatcap/log_reader.hpp"
#include "chatcap/log_writer.hpp"
#include "chatcap/pipeline.hpp"
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

TEST_CASE("log files: watched-only records in watched.jsonl on their own bound; pinned copies in the ring, uncounted",
          "[log_writer]") {
  TempDir dir;
  LogWriterConfig config;
  config.dir = dir.file("log");
  config.keep = 3;
  LogFiles files(config, 2);
  auto watched_request = [](const std::string& id) {
    return nlohmann::ordered_json{{"type", "request"}, {"id", id}, {"watched_only", true}}.dump() + "\n";
  };
  for (int i = 0; i < 3; ++i) {
    std::string id = "c" + std::to_string(i);
    files.write_record(RecordType::request, id, request_line(id));
    files.write_record(RecordType::exchange, id, exchange_line(id));
  }
  // A flood of other requests: the ring does not move.
  for (int i = 0; i < 50; ++i) {
    std::string id = "w" + std::to_string(i);
    files.write_record(RecordType::watched_request, id, watched_request(id));
    files.write_record(RecordType::watched_exchange, id, exchange_line(id));
  }
  // As the recorder writes it beside a server_down record.
  const std::string pinned =
      nlohmann::ordered_json{{"type", "request"}, {"id", "w7"}, {"watched_only", true}, {"pinned", true}}.dump() + "\n";
  files.write_record(RecordType::pinned_request, "w7", pinned);
  CHECK(files.ring().rotations() == 0);
  CHECK(files.ring().exchanges_in_current() == 3);  // the pinned copy is not an exchange of the ring
  auto ring = lines_of(dir.file("log/exchanges.jsonl"));
  CHECK(ids_of(ring, "request") == std::set<std::string>{"c0", "c1", "c2", "w7"});
  // The watched log keeps 2..4 of its own.
  auto watched = lines_of(dir.file("log/watched.jsonl"));
  auto watched_previous = lines_of(dir.file("log/watched.jsonl.1"));
  CHECK(ids_of(watched, "request") == std::set<std::string>{"w48", "w49"});
  CHECK(ids_of(watched_previous, "request") == std::set<std::string>{"w46", "w47"});
  REQUIRE(files.watched() != nullptr);
  CHECK(files.watched()->rotations() == 24);
  {
    // A restart on the same directory counts the ring's exchanges: still not the pinned copy.
    LogFiles again(config, 2);
    CHECK(again.ring().exchanges_in_current() == 3);
  }
  // A new chat exchange rotates the ring by its own count.
  files.write_record(RecordType::request, "c3", request_line("c3"));
  CHECK(files.ring().rotations() == 1);

  // --keep-watched 0: nothing of them is written.
  TempDir other;
  config.dir = other.file("log");
  LogFiles none(config, 0);
  none.write_record(RecordType::watched_request, "w", watched_request("w"));
  CHECK(none.watched() == nullptr);
  CHECK_FALSE(std::filesystem::exists(other.file("log/watched.jsonl")));
}

namespace {

// Feeds a conversation's segments so far into the pipeline and forgets them (a flood of
// 100,000 exchanges is not held in memory).
void feed(chatcap::testing::TcpConversation& c, Pipeline& pipeline) {
  for (const auto& seg : c.segments()) {
    chatcap::testing::Packet p = chatcap::testing::render(seg, chatcap::testing::Link::ethernet);
    pipeline.on_packet(p.ts, std::span<const std::uint8_t>(p.frame.data(), p.frame.size()), p.wire_len);
  }
  c.segments().clear();
}

std::string http_request(const std::string& target, const std::string& body) {
  return "POST " + target + " HTTP/1.1\r\nHost: 127.0.0.1:8077\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

std::string http_response(const std::string& body) {
  return "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: " + std::to_string(body.size()) +
         "\r\n\r\n" + body;
}

std::uint64_t bytes_in(const std::string& dir) {
  std::uint64_t total = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) total += entry.file_size();
  return total;
}

}  // namespace

TEST_CASE("log files: a flood of 100,000 embeddings requests leaves the last N chat exchanges, on bounded disk",
          "[log_writer][flood]") {
  using chatcap::testing::TcpConversation;
  TempDir dir;
  LogWriterConfig log_config;
  log_config.dir = dir.file("log");
  log_config.keep = 20;
  constexpr std::size_t kKeepWatched = 100;
  LogFiles files(log_config, kKeepWatched);
  PipelineConfig config;
  config.flows.server_ports = {8077};  // default scope: the ring holds /v1/chat/completions
  Pipeline pipeline(chatcap::testing::dlt_of(chatcap::testing::Link::ethernet), config, files);

  const Endpoint server{IpAddress::v4(127, 0, 0, 1), 8077};
  constexpr timestamp_us kStart = 1'795'600'000'000'000;
  TcpConversation chat({IpAddress::v4(127, 0, 0, 1), 40000}, server, 1000, 2000, kStart);
  std::vector<TcpConversation> flooders;
  for (std::uint16_t i = 0; i < 4; ++i) flooders.emplace_back(Endpoint{IpAddress::v4(127, 0, 0, 1), static_cast<std::uint16_t>(41000 + i)}, server, 5000u + i, 9000u + i, kStart);
  chat.handshake();
  for (auto& f : flooders) f.handshake();
  timestamp_us now = kStart;
  auto catch_up = [&](TcpConversation& c) {
    if (c.now() < now) c.advance(now - c.now());
  };
  const std::string embedding = R"({"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2,0.3,0.4]}],"model":"e5","usage":{"prompt_tokens":3,"total_tokens":3}})";
  constexpr int kChats = 40;
  constexpr int kFlood = 100'000;
  int sent = 0;
  for (int round = 0; round < kChats; ++round) {
    catch_up(chat);
    std::string body = R"({"model":"gpt-oss-120b","messages":[{"role":"user","content":"chat )" + std::to_string(round) + "\"}]}";
    chat.client_send(http_request("/v1/chat/completions", body));
    chat.server_send(http_response(R"({"choices":[{"index":0,"message":{"content":"answer )" + std::to_string(round) +
                                   R"("},"finish_reason":"stop"}]})"));
    now = chat.now();
    feed(chat, pipeline);
    for (int n = 0; n < kFlood / kChats; ++n, ++sent) {
      TcpConversation& f = flooders[static_cast<std::size_t>(sent) % flooders.size()];
      catch_up(f);
      f.client_send(http_request("/v1/embeddings", R"({"model":"e5","input":"flood )" + std::to_string(sent) + "\"}"));
      f.server_send(http_response(embedding));
      now = f.now();
      feed(f, pipeline);
    }
  }
  pipeline.finish(now, ExchangeState::capture_stopped, "end");
  REQUIRE(sent == kFlood);
  CHECK(pipeline.stats().watched_requests == static_cast<std::uint64_t>(kFlood));

  LogContents log = read_log(log_config.dir);
  // The ring: the last chat exchanges, each whole, none pushed out by the flood.
  REQUIRE(log.exchanges.size() >= 20);
  CHECK(log.exchanges.size() <= 40);
  for (std::size_t i = 0; i < log.exchanges.size(); ++i) {
    const LoggedExchange& e = log.exchanges[i];
    CHECK(e.request["target"] == "/v1/chat/completions");
    CHECK(e.exchange["state"] == "complete");
  }
  CHECK_THAT(log.exchanges.back().request["body"].get<std::string>(), Catch::Contains("chat 39"));
  // The watched log: the newest of the flood, kKeepWatched to 2×kKeepWatched of them.
  CHECK(log.watched.size() >= kKeepWatched);
  CHECK(log.watched.size() <= 2 * kKeepWatched);
  CHECK_THAT(log.watched.back().request["body"].get<std::string>(), Catch::Contains("flood 99999"));
  // Disk: 220 small exchanges' worth (~500 bytes of records each), not 100,000.
  INFO("bytes on disk " << bytes_in(log_config.dir));
  CHECK(bytes_in(log_config.dir) < 400'000);
}
