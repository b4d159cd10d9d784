// The HTTP session on hand-fed stream bytes: pairing, bodies, SSE, resync, closes.
#include <catch2/catch.hpp>

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
  HttpLimits limits;
  HttpSession session{Endpoint{IpAddress::v4(127, 0, 0, 1), 40000}, Endpoint{IpAddress::v4(127, 0, 0, 1), 8077},
                      sink, numbering, limits, nullptr};
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
