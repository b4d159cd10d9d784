// Reading the daemon's log back: joining request and exchange records across the two files,
// tolerating what a live or damaged log holds, following it through rotations, and
// rendering it for a terminal without letting captured bytes reach the terminal raw.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "chatcap/log_reader.hpp"
#include "chatcap/log_writer.hpp"
#include "chatcap/report.hpp"
#include "support/pcap_builder.hpp"
#include "support/records.hpp"

using namespace chatcap;
using namespace chatcap::testing;
using nlohmann::json;

namespace {

std::string request_line(const std::string& id, const std::string& body = "{\"model\":\"m\"}") {
  json r = {{"type", "request"}, {"id", id}, {"ts", "2026-11-24T15:21:53.758382Z"}, {"client", "127.0.0.1:40000"},
            {"server", "127.0.0.1:8077"}, {"method", "POST"}, {"target", "/v1/chat/completions"},
            {"headers", json::array()}, {"body", body}, {"body_bytes", body.size()}};
  return r.dump() + "\n";
}

std::string exchange_line(const std::string& id, const std::string& content = "hi") {
  json r = {{"type", "exchange"},
            {"id", id},
            {"state", "complete"},
            {"status", 200},
            {"ts", "2026-11-24T15:21:54.000000Z"}, {"response_headers", json::array()},
            {"answer", {{"content", content}, {"reasoning", ""}, {"tool_calls", json::array()},
                        {"finish_reason", "stop"}, {"usage", nullptr}, {"error", nullptr}}}};
  return r.dump() + "\n";
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

void append_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::app) << bytes;
}

std::vector<std::string> ids_of(const LogContents& log) {
  std::vector<std::string> ids;
  for (const LoggedExchange& e : log.exchanges) ids.push_back(e.id);
  return ids;
}

}  // namespace

TEST_CASE("log: request and exchange records join by id, .1 before the current file", "[log_reader]") {
  TempDir dir;
  // A rotation happened while b was in flight: the writer copied b's request forward.
  write_file(dir.file(kPreviousLogName), request_line("a") + exchange_line("a") + request_line("b"));
  write_file(dir.file(kCurrentLogName),
             request_line("b") + request_line("c") + exchange_line("b", "bee") + exchange_line("c") + request_line("d"));
  LogContents log = read_log(dir.path());
  CHECK(ids_of(log) == std::vector<std::string>{"a", "b", "c", "d"});
  CHECK(log.bad_lines == 0);
  REQUIRE(log.exchanges.size() == 4);
  CHECK(log.exchanges[1].request["id"] == "b");
  CHECK(log.exchanges[1].exchange["answer"]["content"] == "bee");
  CHECK(log.exchanges[3].exchange.is_null());  // d is in flight
  CHECK_FALSE(log.exchanges[3].request.is_null());
}

TEST_CASE("log: an exchange whose request was rotated away sits where its exchange record is", "[log_reader]") {
  TempDir dir;
  write_file(dir.file(kCurrentLogName), request_line("y") + exchange_line("x") + exchange_line("y"));
  LogContents log = read_log(dir.path());
  CHECK(ids_of(log) == std::vector<std::string>{"y", "x"});
  CHECK(log.exchanges[1].request.is_null());
  CHECK(log.exchanges[1].exchange["id"] == "x");
}

TEST_CASE("log: a last line still being written is ignored, not counted", "[log_reader]") {
  TempDir dir;
  std::string partial = request_line("z");
  partial.resize(partial.size() / 2);
  write_file(dir.file(kCurrentLogName), request_line("a") + partial);
  LogContents log = read_log(dir.path());
  CHECK(ids_of(log) == std::vector<std::string>{"a"});
  CHECK(log.bad_lines == 0);
}

TEST_CASE("log: garbage lines are skipped and counted; unknown types and fields ignored", "[log_reader]") {
  TempDir dir;
  json future = json::parse(request_line("b"));
  future["a_field_from_the_future"] = {1, 2, 3};
  std::string lines = request_line("a") +
                      "not json at all\n"
                      "[1,2,3]\n"
                      "\"a string\"\n"
                      "{\"type\":\"request\"}\n"             // no id: cannot be joined
                      "{\"type\":\"exchange\",\"id\":42}\n"  // id not a string
                      "{\"type\":\"request\",\"id\":\"trunc\n"
                      "\n"
                      "   \n"                                 // blank: not bad
                      "{\"type\":\"heartbeat\",\"ts\":\"x\"}\n"  // unknown type: ignored
                      "{\"id\":\"no-type\"}\n" +
                      std::string("\x00\xff\xfe{\n", 5) + future.dump() + "\n" + exchange_line("a");
  write_file(dir.file(kCurrentLogName), lines);
  LogContents log = read_log(dir.path());
  CHECK(ids_of(log) == std::vector<std::string>{"a", "b"});
  CHECK(log.bad_lines == 7);
  CHECK(log.exchanges[1].request["a_field_from_the_future"].size() == 3);
  CHECK_FALSE(log.exchanges[0].exchange.is_null());
}

TEST_CASE("log: server_down records are kept in order", "[log_reader]") {
  TempDir dir;
  json down = {{"type", "server_down"}, {"ts", "2026-11-24T15:22:00.000000Z"}, {"server", "127.0.0.1:8077"},
               {"evidence", {"3 responses cut by RST"}}, {"suspects", {{{"id", "a"}, {"why", "no token"}}}}};
  write_file(dir.file(kCurrentLogName), request_line("a") + down.dump() + "\n");
  LogContents log = read_log(dir.path());
  REQUIRE(log.server_downs.size() == 1);
  CHECK(log.server_downs[0]["suspects"][0]["id"] == "a");
  std::string text = render_server_down(log.server_downs[0], RenderStyle{});
  CHECK_THAT(text, Catch::Contains("127.0.0.1:8077") && Catch::Contains("no token") && Catch::Contains("RST"));
}

TEST_CASE("log: a missing or wrong directory is a LogError with the fix; an empty one is an empty log",
          "[log_reader]") {
  TempDir dir;
  try {
    read_log(dir.file("nope"));
    FAIL("no error");
  } catch (const LogError& e) {
    CHECK_THAT(e.what(), Catch::Contains("does not exist") && Catch::Contains("--log-dir") &&
                             Catch::Contains("chatcap run") && Catch::Contains(dir.file("nope")));
  }
  write_file(dir.file("plain"), "x");
  CHECK_THROWS_AS(read_log(dir.file("plain")), LogError);
  CHECK_THROWS_WITH(read_log(dir.file("plain")), Catch::Contains("not a directory"));
  LogContents empty = read_log(dir.path());
  CHECK(empty.exchanges.empty());
  CHECK(empty.bad_lines == 0);
  write_file(dir.file(kCurrentLogName), "");
  CHECK(read_log(dir.path()).exchanges.empty());
}

TEST_CASE("log: an unreadable log file is a LogError naming the permission problem", "[log_reader]") {
  if (::geteuid() == 0) return;  // root reads everything: nothing to check
  TempDir dir;
  write_file(dir.file(kCurrentLogName), request_line("a"));
  std::filesystem::permissions(dir.file(kCurrentLogName), std::filesystem::perms::none);
  CHECK_THROWS_WITH(read_log(dir.path()), Catch::Contains("permission denied"));
}

TEST_CASE("log: find_exchange takes a full id or a unique prefix", "[log_reader]") {
  TempDir dir;
  write_file(dir.file(kCurrentLogName), request_line("abc123") + request_line("abd456") + request_line("abc"));
  LogContents log = read_log(dir.path());
  CHECK(find_exchange(log, "abd", dir.path()).id == "abd456");
  CHECK(find_exchange(log, "abc", dir.path()).id == "abc");  // exact beats prefix
  CHECK(find_exchange(log, "abc1", dir.path()).id == "abc123");
  CHECK_THROWS_WITH(find_exchange(log, "ab", dir.path()), Catch::Contains("ambiguous") && Catch::Contains("3"));
  CHECK_THROWS_WITH(find_exchange(log, "zz", dir.path()),
                    Catch::Contains("no exchange with id zz") && Catch::Contains("chatcap last"));
  json joined = joined_json(log.exchanges[0]);
  CHECK(joined["id"] == "abc123");
  CHECK(joined["exchange"].is_null());
  CHECK(joined["request"]["type"] == "request");
}

TEST_CASE("log: records from the real recorder read back and render", "[log_reader]") {
  const Endpoint client{IpAddress::v4(127, 0, 0, 1), 40000};
  const Endpoint server{IpAddress::v4(127, 0, 0, 1), 8077};
  TcpConversation c(client, server, 1, 2, 1'700'000'000'000'000);
  c.handshake();
  std::string body = R"({"model":"m","max_tokens":7,"response_format":{"type":"json_object"},"messages":[]})";
  c.client_send("POST /v1/chat/completions HTTP/1.1\r\nAuthorization: Bearer sk-x\r\nContent-Length: " +
                std::to_string(body.size()) + "\r\n\r\n" + body);
  std::string answer = R"({"choices":[{"message":{"content":"{\"ok\":true}"},"finish_reason":"stop"}]})";
  c.server_send("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: " +
                std::to_string(answer.size()) + "\r\n\r\n" + answer);
  std::string second = std::string("{\"model\":\"m\",\"bytes\":\"") + "\xff\xfe" + "\"}";  // not UTF-8
  c.client_send("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: " + std::to_string(second.size()) +
                "\r\n\r\n" + second);
  Records records = run_pipeline(Link::ethernet, render_all(c.segments(), Link::ethernet));
  TempDir dir;
  std::string lines;
  for (const json& r : records) {
    // The pipeline ends the capture, closing the second exchange; keep it in flight.
    if (r["type"] == "exchange" && r["seq"] != records.front()["seq"]) continue;
    lines += r.dump() + "\n";
  }
  write_file(dir.file(kCurrentLogName), lines);
  LogContents log = read_log(dir.path());
  REQUIRE(log.exchanges.size() == 2);
  const LoggedExchange& done = log.exchanges[0];
  CHECK(done.exchange["state"] == "complete");
  std::string brief = render_exchange(done, Detail::brief, RenderStyle{});
  CHECK_THAT(brief, Catch::Contains("POST /v1/chat/completions") && Catch::Contains("complete") &&
                        Catch::Contains("200 OK") && Catch::Contains("model m") && Catch::Contains("max_tokens 7") &&
                        Catch::Contains("STRUCTURED OUTPUT") && Catch::Contains("json_object") &&
                        Catch::Contains("{\"ok\":true}") && Catch::Contains("finish_reason stop") &&
                        Catch::Contains("id " + done.id));
  CHECK_THAT(brief, !Catch::Contains("sk-x"));
  std::string full = render_exchange(done, Detail::full, RenderStyle{});
  CHECK_THAT(full, Catch::Contains("request headers") && Catch::Contains("Authorization: <redacted sha256:") &&
                       Catch::Contains("response headers") && Catch::Contains("content-type: application/json"));

  const LoggedExchange& flying = log.exchanges[1];
  CHECK(flying.exchange.is_null());
  CHECK(flying.request["body_encoding"] == "base64");
  std::string shown = render_exchange(flying, Detail::brief, RenderStyle{});
  CHECK_THAT(shown, Catch::Contains("IN FLIGHT") &&
                        Catch::Contains(fmt::format("(binary body, {} bytes, base64 in --json)", second.size())));
}

TEST_CASE("report: control characters in captured text are escaped", "[log_reader]") {
  CHECK(escape_control("plain café 日本語 🚀\ttab") == "plain café 日本語 🚀\ttab");
  CHECK(escape_control("\x1b]0;pwned\x07\x1b[2J") == "\\x1b]0;pwned\\x07\\x1b[2J");
  CHECK(escape_control("a\r\nb") == "a\\r\\nb");
  CHECK(escape_control("a\r\nb", true) == "a\\r\nb");
  CHECK(escape_control("\x7f") == "\\x7f");
  CHECK(escape_control("\xc2\x9b" "31m") == "\\u009b31m");           // C1 CSI
  CHECK(escape_control("abc\xe2\x80\xae" "cba") == "abc\\u202ecba");  // RIGHT-TO-LEFT OVERRIDE
  CHECK(escape_control("\xff\xfe ok") == "\\xff\\xfe ok");            // not UTF-8
  CHECK(escape_control("\xc0\x9b") == "\\xc0\\x9b");                  // overlong encoding of 0x1b
  CHECK(escape_control(std::string("nul\0here", 8)) == "nul\\x00here");
  CHECK(escape_control("cut \xe6\x97") == "cut \\xe6\\x97");          // truncated sequence

  // A body, an answer and a header full of escape sequences: no ESC/BEL/CSI byte survives.
  std::string evil = "\x1b[31mred\x1b]0;title\x07 \x9b" "2J \xc2\x9b" "2J \r overwrite";
  LoggedExchange e;
  e.id = "id\x1b[1m";
  json headers = json::array({json::array({"x-evil", evil})});
  e.request = {{"type", "request"}, {"id", e.id}, {"ts", "2026-11-24T15:21:53.758382Z"}, {"client", "c"},
               {"server", "s"}, {"method", "POST"}, {"target", "/x\x1b[2J"}, {"headers", headers},
               {"body", evil}, {"body_bytes", evil.size()}};
  e.exchange = json::parse(exchange_line("x"));  // (evil is not UTF-8: it cannot be dumped)
  e.exchange["id"] = e.id;
  e.exchange["answer"]["content"] = evil;
  e.exchange["reason"] = evil;
  for (Detail detail : {Detail::brief, Detail::full, Detail::ended}) {
    std::string text = render_exchange(e, detail, RenderStyle{});
    CHECK(text.find('\x1b') == std::string::npos);
    CHECK(text.find('\x07') == std::string::npos);
    CHECK(text.find('\r') == std::string::npos);
    CHECK(text.find("\xc2\x9b") == std::string::npos);
    CHECK_THAT(text, Catch::Contains("\\x1b[31mred"));
  }
  std::string line = render_request_line(e.request, RenderStyle{});
  CHECK(line.find('\x1b') == std::string::npos);
  // With colour on, the only escape sequences are our own SGR codes.
  std::string coloured = render_exchange(e, Detail::full, RenderStyle{true});
  for (std::size_t at = coloured.find('\x1b'); at != std::string::npos; at = coloured.find('\x1b', at + 1)) {
    CHECK(coloured[at + 1] == '[');
    std::size_t m = coloured.find('m', at);
    REQUIRE(m != std::string::npos);
    CHECK(coloured.substr(at + 2, m - at - 2).find_first_not_of("0123456789;") == std::string::npos);
  }
}

TEST_CASE("report: brief output clips long bodies and says how to see them", "[log_reader]") {
  Clipped c = clip_lines("1\n2\n3\n4\n", 2, 100);
  CHECK(c.text == "1\n2");
  CHECK(c.hidden_lines == 2);
  Clipped wide = clip_lines("ab日本", 4, 3);  // the cut falls inside 日: back off to a boundary
  CHECK(wide.text == "ab…");
  CHECK(wide.cut_lines == 1);
  CHECK(clip_lines("", 3, 3).text.empty());

  std::string body = "{\"messages\":[";
  for (int i = 0; i < 50; ++i) body += (i ? "," : "") + std::to_string(i);
  body += "]}";
  LoggedExchange e;
  e.id = "abc";
  e.request = json::parse(request_line("abc", body));
  std::string brief = render_exchange(e, Detail::brief, RenderStyle{});
  CHECK_THAT(brief, Catch::Contains("more lines (chatcap show abc)") && Catch::Contains("IN FLIGHT"));
  std::string full = render_exchange(e, Detail::full, RenderStyle{});
  CHECK_THAT(full, Catch::Contains("    49") && !Catch::Contains("more lines"));
  std::string ended = render_exchange(e, Detail::ended, RenderStyle{});
  CHECK_THAT(ended, !Catch::Contains("request body"));
  CHECK(display_time("2026-11-24T15:21:53.758382Z") == "2026-11-24 15:21:53.758 UTC");
  CHECK(display_time("yesterday") == "yesterday");
}

TEST_CASE("log: the follower yields appended lines and survives rotation and truncation", "[log_reader]") {
  TempDir dir;
  const std::string current = dir.file(kCurrentLogName);
  write_file(current, "old 1\nold 2\nhalf");
  LogFollower follow(dir.path());  // at the end, but before the unfinished line
  CHECK(follow.poll().empty());
  append_file(current, " done\n");
  CHECK(follow.poll() == std::vector<std::string>{"half done"});
  append_file(current, "new 1\nnew ");
  CHECK(follow.poll() == std::vector<std::string>{"new 1"});
  append_file(current, "2\n");
  // Rotation: the last record goes to the old file, which is renamed; a new file appears.
  append_file(current, "last of old\n");
  std::filesystem::rename(current, dir.file(kPreviousLogName));
  CHECK(follow.poll() == std::vector<std::string>{"new 2", "last of old"});  // old file, no new one yet
  append_file(dir.file(kPreviousLogName), "late write to old\n");
  write_file(current, "first of new\n");
  CHECK(follow.poll() == std::vector<std::string>{"late write to old", "first of new"});
  append_file(current, "second of new\n");
  CHECK(follow.poll() == std::vector<std::string>{"second of new"});
  // Truncated in place (copytruncate): read again from the start.
  write_file(current, "after truncate\n");
  CHECK(follow.poll() == std::vector<std::string>{"after truncate"});
  CHECK(follow.poll().empty());
}

TEST_CASE("log: the follower waits for a log file that does not exist yet", "[log_reader]") {
  TempDir dir;
  LogFollower follow(dir.path());
  CHECK(follow.poll().empty());
  write_file(dir.file(kCurrentLogName), "one\ntwo\n");
  CHECK(follow.poll() == std::vector<std::string>{"one", "two"});
  CHECK_THROWS_AS(LogFollower(dir.file("missing")), LogError);
}

TEST_CASE("report: records with unexpected field types render without throwing", "[log_reader]") {
  LoggedExchange e;
  e.id = "odd";
  e.request = json::parse(R"({"type":"request","id":"odd","ts":5,"client":["x"],"method":null,"target":{},
    "headers":[5,["a"],["k",7]],"body":7,"summary":{"model":3,"stream":"yes","structured_output":"json"},
    "anomalies":"capture_gap","error":{"why":1}})");
  e.exchange = json::parse(R"({"type":"exchange","id":"odd","state":3,"status":"200","interim":[{}],
    "close":1,"timing":{"ttfb_ms":"fast","ttft_ms":null},"anomalies":[1,"x"],"gap_bytes":"many",
    "sse":{"events":"n","done":"yes","content":5,"tool_calls":[1,{"index":{}}],"usage":7,"error":"boom",
           "text_truncated":1}})");
  for (Detail detail : {Detail::brief, Detail::full, Detail::ended}) {
    CHECK_NOTHROW(render_exchange(e, detail, RenderStyle{true}));
  }
  e.exchange["sse"] = "not an object";
  e.request["summary"] = json::array();
  CHECK_NOTHROW(render_exchange(e, Detail::full, RenderStyle{}));
  CHECK_NOTHROW(render_request_line(e.request, RenderStyle{}));
  CHECK_NOTHROW(render_server_down(json::parse(R"({"suspects":[1,{"id":2}],"evidence":"x"})"), RenderStyle{}));
}

TEST_CASE("log: what the real log writer leaves through rotations reads back whole", "[log_reader]") {
  TempDir dir;
  LogWriterConfig config;
  config.dir = dir.file("log");
  config.keep = 2;  // rotate every two exchanges
  LogWriter writer(config);
  LogFollower follow(config.dir, LogFollower::Start::at_beginning);
  std::vector<std::string> followed;
  // b and g stay in flight across several rotations; the rest end quickly.
  const std::vector<std::pair<char, std::string>> script = {
      {'q', "a"}, {'q', "b"}, {'x', "a"}, {'q', "c"}, {'x', "c"}, {'q', "d"}, {'x', "d"},
      {'q', "e"}, {'x', "e"}, {'q', "f"}, {'x', "b"}, {'x', "f"}, {'q', "g"}, {'q', "h"}, {'x', "h"}};
  for (const auto& [kind, id] : script) {
    if (kind == 'q') {
      writer.write_record(RecordType::request, id, request_line(id));
    } else {
      writer.write_record(RecordType::exchange, id, exchange_line(id, "answer " + id));
    }
    for (std::string& line : follow.poll()) followed.push_back(std::move(line));
  }
  REQUIRE(writer.rotations() >= 3);

  LogContents log = read_log(config.dir);
  CHECK(log.bad_lines == 0);
  std::vector<std::string> ids = ids_of(log);
  // Every exchange still on disk is whole: the writer copied b's request along.
  for (const LoggedExchange& e : log.exchanges) {
    INFO("id " << e.id);
    CHECK_FALSE(e.request.is_null());
    if (e.id == "g") {
      CHECK(e.exchange.is_null());
    } else {
      REQUIRE_FALSE(e.exchange.is_null());
      CHECK(e.exchange["answer"]["content"] == "answer " + e.id);
    }
  }
  CHECK(std::find(ids.begin(), ids.end(), "b") != ids.end());
  CHECK(std::find(ids.begin(), ids.end(), "g") != ids.end());
  CHECK(ids.back() == "h");

  // The follower saw every original record once, in write order (plus the writer's copies).
  std::vector<std::string> exchange_ids;
  std::set<std::string> request_ids;
  for (const std::string& line : followed) {
    json r = json::parse(line);
    if (r["type"] == "exchange") exchange_ids.push_back(r["id"]);
    if (r["type"] == "request") request_ids.insert(r["id"].get<std::string>());
  }
  CHECK(exchange_ids == std::vector<std::string>{"a", "c", "d", "e", "b", "f", "h"});
  CHECK(request_ids == std::set<std::string>{"a", "b", "c", "d", "e", "f", "g", "h"});
}

TEST_CASE("log reader: watched-only records join apart from the ring, pinned copies with them", "[log_reader]") {
  TempDir dir;
  auto watched = [](std::string line, bool pinned = false) {
    json r = json::parse(line);
    r["watched_only"] = true;
    if (pinned) r["pinned"] = true;
    return r.dump() + "\n";
  };
  write_file(dir.file(kPreviousLogName), request_line("a") + exchange_line("a"));
  write_file(dir.file(kCurrentLogName), request_line("b") + watched(request_line("w2"), true));
  write_file(dir.file(kPreviousWatchedLogName), watched(request_line("w1")) + watched(exchange_line("w1")));
  write_file(dir.file(kWatchedLogName), watched(request_line("w2")) + watched(exchange_line("w2")));
  LogContents log = read_log(dir.path());
  CHECK(ids_of(log) == std::vector<std::string>{"a", "b"});
  REQUIRE(log.watched.size() == 2);
  CHECK(log.watched[0].id == "w2");  // first seen as the pinned copy in the ring
  CHECK(log.watched[0].request.value("pinned", false));  // the first copy wins
  CHECK(log.watched[0].exchange["state"] == "complete");
  CHECK(log.watched[1].id == "w1");
  CHECK(&find_exchange(log, "w1", dir.path()) == &log.watched[1]);
  CHECK(&find_exchange(log, "b", dir.path()) == &log.exchanges[1]);
  CHECK_THROWS_AS(find_exchange(log, "w", dir.path()), LogError);  // ambiguous across both
}
