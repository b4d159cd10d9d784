// The HTTP session on hand-fed stream bytes: pairing, bodies, SSE, resync, closes.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "chatcap/http_session.hpp"

using namespace chatcap;

namespace {

struct Collected : ExchangeSink {
  std::vector<Exchange> requests;  // copies taken at on_request_complete
  std::vector<Exchange> ended;     // copies taken at on_exchange_end
  void on_request_complete(Exchange& ex) override { requests.push_back(ex); }
  void on_exchange_end(Exchange& ex) override { ended.push_back(ex); }
};

struct Fixture {
  Collected sink;
  ExchangeNumbering numbering;
  HttpLimits limits = every_path();
  HttpSession session{Endpoint{IpAddress::v4(127, 0, 0, 1), 40000}, Endpoint{IpAddress::v4(127, 0, 0, 1), 8077},
                      sink, numbering, limits};

  static HttpLimits every_path() {
    HttpLimits l;
    l.scope.endpoints = {"/"};  // these tests are about HTTP, not about which paths are kept
    return l;
  }
  timestamp_us ts = 1'000'000;

  void client(std::string_view bytes) { session.client_stream().on_stream_data(ts += 1000, bytes); }
  void server(std::string_view bytes) { session.server_stream().on_stream_data(ts += 1000, bytes); }
  void client_gap(std::uint64_t n) { session.client_stream().on_stream_gap(ts += 1000, n); }
  void server_gap(std::uint64_t n) { session.server_stream().on_stream_gap(ts += 1000, n); }
  void client_close(CloseKind k) { session.client_stream().on_stream_close(ts += 1000, k); }
  void server_close(CloseKind k) { session.server_stream().on_stream_close(ts += 1000, k); }
};

std::string post(std::string_view target, std::string_view body) {
  return "POST " + std::string(target) + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + std::string(body);
}

std::string ok(std::string_view body, std::string_view type = "application/json") {
  return "HTTP/1.1 200 OK\r\ncontent-type: " + std::string(type) + "\r\ncontent-length: " +
         std::to_string(body.size()) + "\r\n\r\n" + std::string(body);
}

std::string chunk(std::string_view data) {
  char size[32];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  return size + std::string(data) + "\r\n";
}

const std::string kSseHead =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n";

std::string sse_event(std::string_view content) {
  return "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" + std::string(content) + "\"}}]}\n\n";
}

}  // namespace

TEST_CASE("keep-alive: two exchanges on one connection pair in order", "[http]") {
  Fixture f;
  f.client(post("/v1/chat/completions", R"({"model":"a"})"));
  REQUIRE(f.sink.requests.size() == 1);  // written the moment the request is complete
  CHECK(f.sink.ended.empty());
  f.server(ok(R"({"choices":[{"index":0,"message":{"content":"one"}}]})"));
  f.client(post("/v1/chat/completions", R"({"model":"b"})"));
  f.server(ok(R"({"choices":[{"index":0,"message":{"content":"two"}}]})"));
  REQUIRE(f.sink.ended.size() == 2);
  CHECK(f.sink.ended[0].request.body.bytes == R"({"model":"a"})");
  CHECK(f.sink.ended[0].answer.content == "one");
  CHECK(f.sink.ended[1].answer.content == "two");
  CHECK(f.sink.ended[1].state == ExchangeState::complete);
  CHECK(f.sink.ended[0].id != f.sink.ended[1].id);
}

TEST_CASE("pipelined requests in one segment get their responses in FIFO order", "[http]") {
  Fixture f;
  f.client(post("/a", "1") + post("/b", "22") + "GET /c HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(f.sink.requests.size() == 3);
  f.server(ok("A") + ok("BB") + ok("CCC"));
  REQUIRE(f.sink.ended.size() == 3);
  CHECK(f.sink.ended[0].request.target == "/a");
  CHECK(f.sink.ended[0].response.body.bytes == "A");
  CHECK(f.sink.ended[1].response.body.bytes == "BB");
  CHECK(f.sink.ended[2].request.method == "GET");
  CHECK(f.sink.ended[2].response.body.bytes == "CCC");
}

TEST_CASE("Expect: 100-continue — the interim response does not consume the request", "[http]") {
  Fixture f;
  std::string body(2000, 'x');
  f.client("POST /v1/chat/completions HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2000\r\n\r\n");
  f.server("HTTP/1.1 100 Continue\r\n\r\n");
  f.client(body);
  f.server(ok("{}"));
  REQUIRE(f.sink.ended.size() == 1);
  const Exchange& ex = f.sink.ended[0];
  CHECK(ex.response.interim_statuses == std::vector<int>{100});
  CHECK(ex.response.status == 200);
  CHECK(ex.request.body.bytes == body);
  CHECK(ex.state == ExchangeState::complete);
}

TEST_CASE("a HEAD response has no body even with a Content-Length", "[http]") {
  Fixture f;
  f.client("HEAD /x HTTP/1.1\r\nHost: h\r\n\r\nGET /y HTTP/1.1\r\nHost: h\r\n\r\n");
  f.server("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n" + ok("y"));
  REQUIRE(f.sink.ended.size() == 2);
  CHECK(f.sink.ended[0].response.body.total == 0);
  CHECK(f.sink.ended[1].response.body.bytes == "y");
}

TEST_CASE("chunked bodies with extensions and trailers, and close-delimited bodies", "[http]") {
  Fixture f;
  f.client("GET /chunked HTTP/1.1\r\n\r\n");
  f.server("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
  REQUIRE(f.sink.ended.size() == 1);
  CHECK(f.sink.ended[0].response.body.bytes == "hello world");
  f.client("GET /eof HTTP/1.0\r\n\r\n");
  f.server("HTTP/1.0 200 OK\r\n\r\nuntil the end");
  CHECK(f.sink.ended.size() == 1);
  f.server_close(CloseKind::fin);
  REQUIRE(f.sink.ended.size() == 2);
  CHECK(f.sink.ended[1].response.body.bytes == "until the end");
  CHECK(f.sink.ended[1].state == ExchangeState::complete);
}

TEST_CASE("a streamed answer is assembled from SSE events across chunk boundaries", "[http]") {
  Fixture f;
  f.client(post("/v1/chat/completions", R"({"stream":true})"));
  std::string events = sse_event("Hel") + sse_event("lo") + "data: [DONE]\n\n";
  f.server(kSseHead);
  // The SSE events split at arbitrary places inside chunks.
  f.server(chunk(events.substr(0, 30)));
  f.server(chunk(events.substr(30, 41)));
  f.server(chunk(events.substr(71)) + "0\r\n\r\n");
  REQUIRE(f.sink.ended.size() == 1);
  const Exchange& ex = f.sink.ended[0];
  CHECK(ex.response.event_stream);
  CHECK(ex.answer.content == "Hello");
  CHECK(ex.answer.done);
  CHECK(ex.answer.events == 3);
}

TEST_CASE("a bad request is a parse_error and the next request is still parsed", "[http]") {
  Fixture f;
  f.client("BREW /pot HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
  REQUIRE(f.sink.requests.size() == 1);
  CHECK(f.sink.requests[0].state == ExchangeState::parse_error);
  CHECK(f.sink.requests[0].request.method == "BREW");  // from the raw line, for the record
  CHECK_THAT(f.sink.requests[0].error, Catch::Contains("HPE_INVALID_METHOD"));
  f.client(post("/v1/chat/completions", "{}"));
  f.server("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" + ok("{}"));
  REQUIRE(f.sink.ended.size() == 2);
  CHECK(f.sink.ended[0].state == ExchangeState::parse_error);
  CHECK(f.sink.ended[0].response.status == 400);
  CHECK(f.sink.ended[1].state == ExchangeState::complete);
  CHECK(f.sink.ended[1].request.target == "/v1/chat/completions");
}

TEST_CASE("a gap inside a body of known length keeps the parser in step", "[http]") {
  Fixture f;
  f.client("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 10\r\n\r\n012");
  f.client_gap(4);
  f.client("789");
  REQUIRE(f.sink.requests.size() == 1);
  CHECK(f.sink.requests[0].request.complete);
  CHECK(f.sink.requests[0].request.body.bytes == "012789");  // lost bytes are not invented
  CHECK(f.sink.requests[0].request.body.total == 6);
  CHECK(f.sink.requests[0].gap_bytes == 4);
  CHECK(f.sink.requests[0].has(Anomaly::capture_gap));

  // In a chunked SSE stream, a gap inside one chunk is stepped over too.
  f.server(kSseHead + chunk(sse_event("A")));
  std::string second = chunk(sse_event("B"));  // "<size>\r\n<event>\r\n"
  std::size_t data_at = second.find("\r\n") + 2;
  f.server(second.substr(0, data_at + 10));
  f.server_gap(second.size() - 2 - (data_at + 10));  // the rest of this chunk's data
  f.server("\r\n" + chunk(sse_event("C")) + "0\r\n\r\n");
  REQUIRE(f.sink.ended.size() == 1);
  CHECK(f.sink.ended[0].state == ExchangeState::complete);
  CHECK(f.sink.ended[0].answer.content == "AC");
  CHECK(f.sink.ended[0].has(Anomaly::capture_gap));
}

TEST_CASE("a gap across message framing ends that message and resyncs at the next", "[http]") {
  Fixture f;
  f.client(post("/v1/chat/completions", "first"));
  f.server("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
  f.server_gap(100);  // past the chunk: the framing is lost
  f.server("lo\r\n0\r\n\r\n");
  f.client(post("/v1/chat/completions", "second"));
  f.server(ok("fine"));
  REQUIRE(f.sink.ended.size() == 2);
  CHECK(f.sink.ended[0].state == ExchangeState::parse_error);
  CHECK(f.sink.ended[0].has(Anomaly::capture_gap));
  CHECK(f.sink.ended[1].state == ExchangeState::complete);
  CHECK(f.sink.ended[1].request.body.bytes == "second");
  CHECK(f.sink.ended[1].response.body.bytes == "fine");
}

TEST_CASE("a lost request segment: the request is recorded at once, flagged, and the next is clean", "[http]") {
  Fixture f;
  f.client("POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab");
  f.client_gap(50);
  REQUIRE(f.sink.requests.size() == 1);
  CHECK(f.sink.requests[0].has(Anomaly::request_incomplete));
  CHECK(f.sink.requests[0].has(Anomaly::capture_gap));
  f.server(ok("r1"));
  f.client("cd\r\n0\r\n\r\n" + post("/v1/chat/completions", "clean"));
  f.server(ok("r2"));
  REQUIRE(f.sink.ended.size() == 2);
  CHECK(f.sink.ended[0].response.body.bytes == "r1");
  CHECK(f.sink.ended[1].request.body.bytes == "clean");
  CHECK(f.sink.ended[1].anomalies == 0);
}

TEST_CASE("pickup mid-connection: bytes before the first message start are skipped", "[http]") {
  Fixture f;
  f.session.start_midstream(true, true);
  f.client("tail of an earlier body\r\n" + post("/v1/chat/completions", "{}"));
  f.server("rest of an earlier response\n" + ok("{}"));
  REQUIRE(f.sink.ended.size() == 1);
  CHECK(f.sink.ended[0].request.target == "/v1/chat/completions");
  CHECK(f.sink.ended[0].response.status == 200);
}

TEST_CASE("a request line split across segments during resync is still found", "[http]") {
  Fixture f;
  f.session.start_midstream(true, false);
  f.client("xx\nPO");
  f.client("ST /v1/chat/completions HT");
  f.client("TP/1.1\r\nContent-Length: 2\r\n\r\n{}");
  REQUIRE(f.sink.requests.size() == 1);
  CHECK(f.sink.requests[0].request.body.bytes == "{}");
}

TEST_CASE("closes: server cut, client gone first, RST", "[http]") {
  SECTION("the server closes mid-stream: aborted by the server") {
    Fixture f;
    f.client(post("/v1/chat/completions", "{}"));
    f.server(kSseHead + chunk(sse_event("partial")));
    f.server_close(CloseKind::fin);
    REQUIRE(f.sink.ended.size() == 1);
    CHECK(f.sink.ended[0].state == ExchangeState::aborted);
    CHECK(f.sink.ended[0].close_reason == CloseReason::server_fin);
    CHECK(f.sink.ended[0].answer.content == "partial");
  }
  SECTION("the client leaves first: the server's close is not blamed") {
    Fixture f;
    f.client(post("/v1/chat/completions", "{}"));
    f.server(kSseHead + chunk(sse_event("partial")));
    f.client_close(CloseKind::fin);
    CHECK(f.sink.ended.empty());  // half-close: the server may still answer
    f.server_close(CloseKind::fin);
    REQUIRE(f.sink.ended.size() == 1);
    CHECK(f.sink.ended[0].state == ExchangeState::aborted);
    CHECK(f.sink.ended[0].close_reason == CloseReason::client_fin);
  }
  SECTION("a server RST with requests waiting") {
    Fixture f;
    f.client(post("/a", "1") + post("/b", "2"));
    f.server_close(CloseKind::rst);
    REQUIRE(f.sink.ended.size() == 2);
    CHECK(f.sink.ended[1].close_reason == CloseReason::server_rst);
    CHECK(f.session.finished());
  }
}

TEST_CASE("CONNECT accepted turns the connection into a tunnel; refused stays HTTP", "[http]") {
  SECTION("accepted") {
    Fixture f;
    f.client("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01 tls bytes");
    f.server("HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x03 more tls");
    f.client("GET / HTTP/1.1\r\n\r\n");  // inside the tunnel: not a request
    REQUIRE(f.sink.ended.size() == 1);
    CHECK(f.sink.ended[0].has(Anomaly::tunnel));
    CHECK(f.sink.requests.size() == 1);
  }
  SECTION("refused") {
    Fixture f;
    f.client("CONNECT example.com:443 HTTP/1.1\r\n\r\n");
    f.server("HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n");
    f.client(post("/v1/chat/completions", "{}"));
    f.server(ok("{}"));
    REQUIRE(f.sink.ended.size() == 2);
    CHECK(f.sink.ended[1].request.target == "/v1/chat/completions");
  }
}

TEST_CASE("close_all ends open exchanges with the given state and keeps partial answers", "[http]") {
  Fixture f;
  f.client(post("/v1/chat/completions", "{}"));
  f.server(kSseHead + chunk(sse_event("so far")));
  f.session.close_all(f.ts + 1, ExchangeState::capture_stopped, "capture ended");
  REQUIRE(f.sink.ended.size() == 1);
  CHECK(f.sink.ended[0].state == ExchangeState::capture_stopped);
  CHECK(f.sink.ended[0].answer.content == "so far");
}

TEST_CASE("body caps count what they do not keep", "[http]") {
  Fixture f;
  f.limits.max_body_bytes = 4;
  f.client(post("/v1/chat/completions", "0123456789"));
  REQUIRE(f.sink.requests.size() == 1);
  CHECK(f.sink.requests[0].request.body.bytes == "0123");
  CHECK(f.sink.requests[0].request.body.total == 10);
  CHECK(f.sink.requests[0].request.body.truncated);
}

// Whole chunks at a chunk boundary are taken without llhttp (HttpSession::take_whole_chunks).
// Whatever the segmentation, the exchanges must come out as llhttp alone makes them: the
// reference feeds the same bytes one at a time, which never holds a whole chunk.
namespace {

struct Outcome {
  ExchangeState state;
  std::string content;
  std::uint64_t events;
  std::string body;
  std::uint64_t body_total;
  bool done;
};

std::vector<Outcome> run_segments(const std::string& response, const std::vector<std::size_t>& cuts,
                                  std::uint64_t* chunks_taken_whole = nullptr) {
  Fixture f;
  f.limits.max_stream_body_bytes = 1 << 20;  // keep the raw body too: it must match byte for byte
  f.client(post("/v1/chat/completions", R"({"stream":true})") + post("/v1/chat/completions", R"({"stream":true})"));
  std::size_t at = 0;
  for (std::size_t cut : cuts) {
    f.server(std::string_view(response).substr(at, cut - at));
    at = cut;
  }
  f.server(std::string_view(response).substr(at));
  f.session.close_all(f.ts, ExchangeState::capture_stopped, "end of test");
  if (chunks_taken_whole != nullptr) *chunks_taken_whole = f.session.chunks_taken_whole();
  std::vector<Outcome> out;
  for (const Exchange& ex : f.sink.ended) {
    out.push_back({ex.state, ex.answer.content, ex.answer.events, ex.response.body.bytes, ex.response.body.total,
                   ex.answer.done});
  }
  return out;
}

void check_same(const std::vector<Outcome>& got, const std::vector<Outcome>& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("exchange " << i);
    CHECK(got[i].state == want[i].state);
    CHECK(got[i].content == want[i].content);
    CHECK(got[i].events == want[i].events);
    CHECK(got[i].body == want[i].body);
    CHECK(got[i].body_total == want[i].body_total);
    CHECK(got[i].done == want[i].done);
  }
}

std::vector<std::size_t> every_byte(const std::string& s) {
  std::vector<std::size_t> cuts;
  for (std::size_t i = 1; i < s.size(); ++i) cuts.push_back(i);
  return cuts;
}

}  // namespace

TEST_CASE("whole chunks taken at a boundary give what llhttp gives, however the bytes are cut", "[http]") {
  // Size lines as servers write them and as they may: lower and upper case, leading zeros,
  // more digits than the fast path reads, an extension; then the last chunk, and a second
  // streamed response on the same connection.
  std::vector<std::string> chunks = {chunk(sse_event("one")), chunk(sse_event("two"))};
  // CRLF-ended events, sized 0x18 so that its size line cut after the "1" leaves "8\r\n"
  // followed, 8 bytes on, by a CRLF: a fast path that took the cut line for a fresh one
  // would find a well-formed chunk there, and take the wrong bytes.
  chunks.insert(chunks.begin() + 1, chunk("data: ab\r\n\r\ndata: cd\r\n\r\n"));
  REQUIRE(chunks[1].starts_with("18\r\n"));
  const std::string three = sse_event("three");
  char upper[16];
  std::snprintf(upper, sizeof upper, "%zX\r\n", three.size());
  chunks.push_back(upper + three + "\r\n");
  const std::string four = sse_event("four");
  chunks.push_back("000" + chunk(four));
  const std::string five = sse_event("five");
  chunks.push_back("0000000000" + chunk(five));  // 12 digits: llhttp's to read
  const std::string six = sse_event("six");
  char extended[32];
  std::snprintf(extended, sizeof extended, "%zx;ext=1\r\n", six.size());
  chunks.push_back(extended + six + "\r\n");
  chunks.push_back(chunk("data: [DONE]\n\n"));
  chunks.push_back("0\r\n\r\n");
  const std::string first = kSseHead + [&] {
    std::string all;
    for (const std::string& c : chunks) all += c;
    return all;
  }();
  const std::string second = kSseHead + chunk(sse_event("again")) + chunk(sse_event(" and again")) + "0\r\n\r\n";
  const std::string response = first + second;
  std::uint64_t fast = 1;
  const std::vector<Outcome> reference = run_segments(response, every_byte(response), &fast);
  CHECK(fast == 0);  // one byte at a time never holds a whole chunk
  REQUIRE(reference.size() == 2);
  REQUIRE(reference[0].content == "onetwothreefourfivesix");
  REQUIRE(reference[0].events == 9);  // ab and cd are events too (not JSON: no text), and [DONE]
  REQUIRE(reference[0].state == ExchangeState::complete);
  REQUIRE(reference[1].content == "again and again");

  SECTION("one chunk per segment, as uvicorn sends them") {
    std::vector<std::size_t> cuts{kSseHead.size()};
    for (const std::string& c : chunks) cuts.push_back(cuts.back() + c.size());
    cuts.push_back(first.size() + kSseHead.size());
    std::uint64_t fast = 0;
    check_same(run_segments(response, cuts, &fast), reference);
    // The CRLF one, two, THREE, 000four and [DONE]. Left to llhttp: the first (no chunk
    // has ended yet), the 12-digit and the extended size lines, the last chunk, and the
    // second response (one segment, all parsed by one llhttp call).
    CHECK(fast == 5);
  }
  SECTION("many chunks per segment, the last chunk and the next response's head with them") {
    check_same(run_segments(response, {kSseHead.size(), first.size() + kSseHead.size() + 10}), reference);
  }
  SECTION("segments ending inside a size line, at its CR, inside the data, before the final CRLF") {
    const std::size_t second_chunk = kSseHead.size() + chunks[0].size();
    for (std::size_t offset : {std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{10}, chunks[1].size() - 1,
                               chunks[1].size() + 1}) {
      INFO("cut " << offset << " bytes into the second chunk");
      check_same(run_segments(response, {second_chunk, second_chunk + offset}), reference);
    }
  }
  SECTION("random cuts") {
    std::mt19937 random(11);
    for (int round = 0; round < 200; ++round) {
      std::vector<std::size_t> cuts;
      std::uniform_int_distribution<std::size_t> at(1, response.size() - 1);
      for (int i = 0; i < 12; ++i) cuts.push_back(at(random));
      std::sort(cuts.begin(), cuts.end());
      cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
      INFO("round " << round);
      check_same(run_segments(response, cuts), reference);
    }
  }
  SECTION("a chunk whose data is not followed by CRLF: whatever llhttp makes of it") {
    // llhttp, built without its strict mode, skips the two bytes after a chunk's data
    // unchecked; the fast path insists on CRLF and leaves such a chunk to llhttp.
    const std::string broken = kSseHead + chunks[0] + "5\r\nhelloXX" + chunks[1] + "0\r\n\r\n";
    const std::vector<Outcome> want = run_segments(broken, every_byte(broken));
    REQUIRE(want.size() == 2);
    CHECK(want[0].content == "one");  // "hello" runs into the next event's line: that event is lost
    check_same(run_segments(broken, {kSseHead.size(), kSseHead.size() + chunks[0].size()}), want);
    check_same(run_segments(broken, {}), want);
  }
}

TEST_CASE("a stream with an event its dialect cannot read: the rest assembled, the exchange flagged", "[http]") {
  for (const char* target : {"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages"}) {
    INFO(target);
    Fixture f;
    f.client(post(target, R"({"stream":true})"));
    f.server("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n");
    f.server(chunk("data: {not json\n\n"));
    f.server(chunk("data: [DONE]\n\n"));
    f.server("0\r\n\r\n");
    REQUIRE(f.sink.ended.size() == 1);
    const Exchange& ex = f.sink.ended[0];
    CHECK(ex.state == ExchangeState::complete);
    CHECK(ex.answer.bad_events == 1);
    CHECK(ex.answer.dialect == dialect_of(target));
    CHECK(ex.has(Anomaly::unreadable_events));
    CHECK(anomaly_names(ex.anomalies) == std::vector<std::string_view>{"unreadable_events"});
  }
}

TEST_CASE("framings the servers accept (uvicorn's h11) are parsed, whole or a byte at a time", "[http]") {
  const std::string body = R"({"model":"m"})";
  const std::string cl = std::to_string(body.size());
  const std::string rl = "POST /v1/chat/completions HTTP/1.1";
  const std::vector<std::pair<std::string, std::string>> heads = {
      {"bare LF", rl + "\nHost: x\nContent-Length: " + cl + "\n\n"},
      {"mixed line ends", rl + "\r\nHost: x\nContent-Length: " + cl + "\r\n\n"},
      {"LF blank line", rl + "\r\nHost: x\r\nContent-Length: " + cl + "\r\n\n"},
      {"tab after the length", rl + "\r\nContent-Length: " + cl + "\t\r\n\r\n"},
      {"spaces and tabs around it", rl + "\r\nContent-Length:\t  " + cl + " \t \r\n\r\n"},
      {"a list of equal lengths", rl + "\r\nContent-Length: " + cl + ", " + cl + "\r\n\r\n"},
      {"the header twice", rl + "\r\nContent-Length: " + cl + "\r\ncontent-length: " + cl + "\r\n\r\n"},
      {"three times, odd spacing", rl + "\r\nContent-Length:" + cl + "\r\nContent-Length: " + cl + " \r\nCONTENT-LENGTH: " + cl + "," + cl + "\r\n\r\n"},
      {"chunked beside a length", rl + "\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n"},
  };
  for (const auto& [name, head] : heads) {
    const bool chunked = head.find("chunked") != std::string::npos;
    const std::string wire = head + (chunked ? chunk(body) + "0\r\n\r\n" : body) + post("/v1/chat/completions", "next");
    for (bool byte_at_a_time : {false, true}) {
      INFO(name << (byte_at_a_time ? ", a byte at a time" : ", whole"));
      Fixture f;
      if (byte_at_a_time) {
        for (char c : wire) f.client(std::string(1, c));
      } else {
        f.client(wire);
      }
      REQUIRE(f.sink.requests.size() == 2);
      CHECK(f.sink.requests[0].request.complete);
      CHECK(f.sink.requests[0].request.body.bytes == body);
      CHECK(f.sink.requests[0].error.empty());
      CHECK(f.sink.requests[1].request.body.bytes == "next");  // still in step
    }
  }
}

TEST_CASE("what h11 refuses too stays an error: unequal lengths, a length that is no number", "[http]") {
  for (const std::string& head : {std::string("POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n"),
                                  std::string("POST / HTTP/1.1\r\nContent-Length: 2, 3\r\n\r\n"),
                                  std::string("POST / HTTP/1.1\r\nContent-Length: 2x\r\n\r\n")}) {
    INFO(head);
    Fixture f;
    // (A server answers 400 and closes; on the wire, what follows is what resync looks at.)
    f.client(head + post("/v1/chat/completions", "next"));
    REQUIRE(f.sink.requests.size() == 2);
    CHECK(f.sink.requests[0].state == ExchangeState::parse_error);
    CHECK_FALSE(f.sink.requests[0].request.complete);
    CHECK_THAT(f.sink.requests[0].error, Catch::Contains("Content-Length"));
    CHECK(f.sink.requests[1].request.body.bytes == "next");  // resynchronised at the next request
  }
}
