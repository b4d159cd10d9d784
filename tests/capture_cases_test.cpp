// The whole pipeline on generated captures of the hard cases: each capture is built by the
// test (pcap_builder), run through decode → reassembly → HTTP → SSE → records, and the
// records are checked exactly.
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "support/pcap_builder.hpp"
#include "support/records.hpp"

using namespace chatcap;
using namespace chatcap::testing;
using nlohmann::json;

namespace {

const Endpoint kClient4{IpAddress::v4(127, 0, 0, 1), 39866};
const Endpoint kServer4{IpAddress::v4(127, 0, 0, 1), 8077};
const Endpoint kClient6{IpAddress::v6_loopback(), 39866};
const Endpoint kServer6{IpAddress::v6_loopback(), 8077};
constexpr timestamp_us kStart = 1'795'600'000'000'000;  // 2026-11-24

const std::string kRequestBody =
    R"({"model":"gpt-oss-120b","stream":true,"max_tokens":400,"messages":[{"role":"user","content":"Say hi"}],)"
    R"("structured_outputs":{"json":null}})";

std::string chat_request(std::string_view body = kRequestBody, std::string_view extra_headers = "") {
  return "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8077\r\nAuthorization: Bearer sk-secret\r\n"
         "Content-Type: application/json\r\n" +
         std::string(extra_headers) + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
         std::string(body);
}

std::string chunk(std::string_view data) {
  char size[32];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  return size + std::string(data) + "\r\n";
}

std::string delta_event(std::string_view field, std::string_view text) {
  return R"(data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-oss-120b","choices":[{"index":0,"delta":{")" +
         std::string(field) + R"(":")" + std::string(text) + R"("},"finish_reason":null}]})" + "\n\n";
}

const std::string kSseHead =
    "HTTP/1.1 200 OK\r\ndate: Tue, 24 Nov 2026 15:21:53 GMT\r\nserver: uvicorn\r\n"
    "content-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n";

// A vLLM-like streamed answer, one SSE event per chunk (as uvicorn sends them).
std::vector<std::string> sse_chunks() {
  return {chunk(delta_event("reasoning_content", "Thinking")), chunk(delta_event("content", "Hel")),
          chunk(delta_event("content", "lo!")),
          chunk(R"(data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})"
                "\n\n"),
          chunk("data: [DONE]\n\n"), "0\r\n\r\n"};
}

// One streamed exchange on a fresh connection, the server writing one chunk per segment.
TcpConversation streamed_exchange(const Endpoint& client, const Endpoint& server, std::uint32_t client_isn = 1000,
                                  std::uint32_t server_isn = 90000, std::size_t request_mss = 64) {
  TcpConversation c(client, server, client_isn, server_isn, kStart);
  c.handshake();
  c.client_send(chat_request(), request_mss);
  c.advance(12'000);
  c.server_send(kSseHead);
  for (const std::string& piece : sse_chunks()) {
    c.advance(20'000);
    c.server_send(piece);
  }
  c.client_fin();
  c.server_fin();
  return c;
}

void check_streamed_records(const Records& records, const std::string& client, const std::string& server) {
  Records requests = of_type(records, "request");
  Records exchanges = of_type(records, "exchange");
  REQUIRE(requests.size() == 1);
  REQUIRE(exchanges.size() == 1);
  const json& rq = requests[0];
  const json& ex = exchanges[0];
  CHECK(rq["id"] == ex["id"]);
  CHECK(rq["client"] == client);
  CHECK(rq["server"] == server);
  CHECK(rq["method"] == "POST");
  CHECK(rq["target"] == "/v1/chat/completions");
  CHECK(body_of(rq) == kRequestBody);
  CHECK(rq["body_bytes"] == kRequestBody.size());
  CHECK(rq["summary"]["model"] == "gpt-oss-120b");
  CHECK(rq["summary"]["stream"] == true);
  CHECK(rq["summary"]["max_tokens"] == 400);
  CHECK(rq["summary"]["structured_output"] == json::parse(R"({"structured_outputs":{"json":null}})"));
  CHECK(ex["state"] == "complete");
  CHECK(ex["status"] == 200);
  CHECK(ex["sse"]["content"] == "Hello!");
  CHECK(ex["sse"]["reasoning"] == "Thinking");
  CHECK(ex["sse"]["finish_reason"] == "stop");
  CHECK(ex["sse"]["done"] == true);
  CHECK(ex["sse"]["events"] == 5);
  CHECK(ex["anomalies"].empty());
  CHECK(ex["timing"]["ttfb_ms"].get<double>() == Approx(12.01).margin(0.05));
}

// The records with the fields that depend on where packets fell removed (nothing should).
std::string canonical(const Records& records) {
  std::string out;
  for (const json& r : records) out += r.dump() + "\n";
  return out;
}

}  // namespace

TEST_CASE("capture: a clean streamed exchange on lo (Ethernet, IPv4)", "[capture]") {
  TcpConversation c = streamed_exchange(kClient4, kServer4);
  Records records = run_pipeline(Link::ethernet, render_all(c.segments(), Link::ethernet));
  check_streamed_records(records, "127.0.0.1:39866", "127.0.0.1:8077");
  // Credentials are redacted by default.
  CHECK(records[0]["headers"].dump().find("sk-secret") == std::string::npos);
  CHECK(records[0]["headers"].dump().find("<redacted sha256:") != std::string::npos);
}

TEST_CASE("capture: every link type and IPv6 ::1 give the same records", "[capture]") {
  for (Link link : {Link::ethernet, Link::ethernet_vlan, Link::linux_sll, Link::linux_sll2, Link::null_loopback,
                    Link::raw_ip}) {
    INFO("link " << dlt_of(link));
    TcpConversation c4 = streamed_exchange(kClient4, kServer4);
    check_streamed_records(run_pipeline(link, render_all(c4.segments(), link)), "127.0.0.1:39866", "127.0.0.1:8077");
    TcpConversation c6 = streamed_exchange(kClient6, kServer6);
    check_streamed_records(run_pipeline(link, render_all(c6.segments(), link)), "[::1]:39866", "[::1]:8077");
  }
}

TEST_CASE("capture: IPv4 options and IPv6 extension headers are skipped", "[capture]") {
  RenderOptions v4;
  v4.ipv4_options = {0x01, 0x01, 0x01, 0x01, 0x94, 0x04, 0x00, 0x00};  // NOPs + router alert
  TcpConversation c4 = streamed_exchange(kClient4, kServer4);
  check_streamed_records(run_pipeline(Link::ethernet, render_all(c4.segments(), Link::ethernet, v4)),
                         "127.0.0.1:39866", "127.0.0.1:8077");
  RenderOptions v6;
  v6.ipv6_ext_headers = {0, 60};  // hop-by-hop, then destination options: 16 bytes each
  TcpConversation c6 = streamed_exchange(kClient6, kServer6);
  check_streamed_records(run_pipeline(Link::ethernet, render_all(c6.segments(), Link::ethernet, v6)), "[::1]:39866",
                         "[::1]:8077");
}

TEST_CASE("capture: -i any (Linux cooked v1 and v2) shows every packet twice", "[capture]") {
  for (Link link : {Link::linux_sll, Link::linux_sll2}) {
    TcpConversation c = streamed_exchange(kClient4, kServer4);
    Records records = run_pipeline(link, render_as_any(c.segments(), link));
    check_streamed_records(records, "127.0.0.1:39866", "127.0.0.1:8077");
  }
}

TEST_CASE("capture: reordering and retransmission of the request and the stream", "[capture]") {
  TcpConversation c(kClient4, kServer4, 1000, 90000, kStart);
  c.handshake();
  c.set_auto_ack(false);  // reorder data bursts only, never across the ACK that proves them
  std::vector<std::size_t> request = c.client_send(chat_request(), 40);
  c.server_ack();
  c.server_send(kSseHead);
  std::vector<std::size_t> stream;
  for (const std::string& piece : sse_chunks()) {
    std::vector<std::size_t> idx = c.server_send(piece, 50);
    stream.insert(stream.end(), idx.begin(), idx.end());
  }
  c.client_ack();
  c.set_auto_ack(true);
  c.client_fin();
  c.server_fin();
  std::vector<TcpSegmentSpec> segs = c.segments();
  shuffle_segments(segs, stream.front(), stream.back() + 1, 7);
  retransmit(segs, stream[3], stream.back() + 1);
  shuffle_segments(segs, request.front(), request.back() + 1, 3);
  retransmit(segs, request[1], request.back() + 1);
  Records records = run_pipeline(Link::ethernet, render_all(segs, Link::ethernet));
  REQUIRE(of_type(records, "exchange").size() == 1);
  json ex = of_type(records, "exchange")[0];
  CHECK(body_of(of_type(records, "request")[0]) == kRequestBody);
  CHECK(ex["sse"]["content"] == "Hello!");
  CHECK(ex["sse"]["done"] == true);
  CHECK(ex["state"] == "complete");
  CHECK(ex["anomalies"].empty());
}

TEST_CASE("capture: pipelined requests and 100-continue on one keep-alive connection", "[capture]") {
  TcpConversation c(kClient4, kServer4, 1000, 90000, kStart);
  c.handshake();
  // Two pipelined non-streamed requests in one write...
  std::string one = chat_request(R"({"model":"m","messages":[{"role":"user","content":"1"}]})");
  std::string two = chat_request(R"({"model":"m","messages":[{"role":"user","content":"2"}]})");
  c.client_send(one + two);
  std::string answer1 = R"({"choices":[{"index":0,"message":{"content":"first"},"finish_reason":"stop"}]})";
  std::string answer2 = R"({"choices":[{"index":0,"message":{"content":"second"},"finish_reason":"stop"}]})";
  auto ok = [](const std::string& body) {
    return "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: " + std::to_string(body.size()) +
           "\r\n\r\n" + body;
  };
  c.server_send(ok(answer1) + ok(answer2));
  // ...then a large body behind Expect: 100-continue, as curl sends it.
  std::string big(1'500'000, 'x');
  std::string big_body = R"({"model":"m","messages":[{"role":"user","content":")" + big + R"("}]})";
  std::string head = chat_request(big_body, "Expect: 100-continue\r\n");
  head.resize(head.size() - big_body.size());
  c.client_send(head);
  c.server_send("HTTP/1.1 100 Continue\r\n\r\n");
  c.client_send(big_body);
  c.server_send(ok(answer1));
  c.client_fin();
  c.server_fin();
  PipelineConfig config = test_config({"/v1/chat/completions"});
  config.flows.http.max_body_bytes = 2'000'000;
  Records records = run_pipeline(Link::ethernet, render_all(c.segments(), Link::ethernet), config);
  Records requests = of_type(records, "request");
  Records exchanges = of_type(records, "exchange");
  REQUIRE(exchanges.size() == 3);
  CHECK(exchanges[0]["answer"]["content"] == "first");
  CHECK(exchanges[1]["answer"]["content"] == "second");
  CHECK(body_of(requests[2]) == big_body);
  CHECK(exchanges[2]["interim"] == json::array({100}));
  CHECK(exchanges[2]["status"] == 200);
  CHECK(exchanges[2]["answer"]["content"] == "first");
  for (const json& ex : exchanges) CHECK(ex["state"] == "complete");
}

TEST_CASE("capture: SYN-less pickup mid-response, then a clean exchange", "[capture]") {
  TcpConversation c(kClient4, kServer4, 1000, 90000, kStart);
  // No handshake: the daemon started while a response was streaming.
  c.server_send(chunk(delta_event("content", "tail of an old answer")));
  c.server_send("0\r\n\r\n");
  c.client_send(chat_request());
  c.server_send(kSseHead);
  for (const std::string& piece : sse_chunks()) c.server_send(piece);
  Records records = run_pipeline(Link::ethernet, render_all(c.segments(), Link::ethernet));
  Records exchanges = of_type(records, "exchange");
  REQUIRE(exchanges.size() == 1);
  CHECK(exchanges[0]["sse"]["content"] == "Hello!");
  CHECK(exchanges[0]["state"] == "complete");
}

TEST_CASE("capture: a lost request segment, then a clean exchange on the same connection", "[capture]") {
  TcpConversation c(kClient4, kServer4, 1000, 90000, kStart);
  c.handshake();
  std::vector<std::size_t> first = c.client_send(chat_request(), 50);
  c.server_send(kSseHead);
  for (const std::string& piece : sse_chunks()) c.server_send(piece);
  std::string clean_body = R"({"model":"m","messages":[]})";
  c.client_send(chat_request(clean_body));
  std::string answer = R"({"choices":[{"index":0,"message":{"content":"clean"}}]})";
  c.server_send("HTTP/1.1 200 OK\r\ncontent-length: " + std::to_string(answer.size()) + "\r\n\r\n" + answer);
  std::vector<TcpSegmentSpec> segs = c.segments();
  drop(segs, first[3]);  // a segment in the middle of the first request's body
  Records records = run_pipeline(Link::ethernet, render_all(segs, Link::ethernet));
  Records requests = of_type(records, "request");
  Records exchanges = of_type(records, "exchange");
  REQUIRE(requests.size() == 2);
  REQUIRE(exchanges.size() == 2);
  CHECK(requests[0]["anomalies"] == json::array({"capture_gap"}));
  CHECK(exchanges[0]["anomalies"].dump().find("capture_gap") != std::string::npos);
  CHECK(exchanges[0]["gap_bytes"] == 50);
  CHECK(exchanges[0]["sse"]["content"] == "Hello!");  // the answer itself was whole
  CHECK(body_of(requests[1]) == clean_body);
  CHECK(exchanges[1]["answer"]["content"] == "clean");
  CHECK(exchanges[1]["anomalies"].empty());
}

TEST_CASE("capture: RST mid-stream aborts the exchange and keeps what was streamed", "[capture]") {
  TcpConversation c(kClient4, kServer4, 1000, 90000, kStart);
  c.handshake();
  c.client_send(chat_request());
  c.server_send(kSseHead);
  std::vector<std::string> pieces = sse_chunks();
  c.server_send(pieces[0]);
  c.server_send(pieces[1]);
  c.server_rst();
  Records records = run_pipeline(Link::ethernet, render_all(c.segments(), Link::ethernet));
  Records exchanges = of_type(records, "exchange");
  REQUIRE(exchanges.size() == 1);
  CHECK(exchanges[0]["state"] == "aborted");
  CHECK(exchanges[0]["close"] == "server_rst");
  CHECK(exchanges[0]["sse"]["content"] == "Hel");
  CHECK(exchanges[0]["sse"]["done"] == false);
}

TEST_CASE("capture: sequence numbers wrapping past 2^32 in both directions", "[capture]") {
  TcpConversation c = streamed_exchange(kClient4, kServer4, 0xFFFFFF80u, 0xFFFFFFF0u, 16);
  check_streamed_records(run_pipeline(Link::ethernet, render_all(c.segments(), Link::ethernet)), "127.0.0.1:39866",
                         "127.0.0.1:8077");
}

TEST_CASE("capture: odd SSE — CR and CRLF line ends, comments, event names, multi-line data", "[capture]") {
  TcpConversation c(kClient4, kServer4, 1000, 90000, kStart);
  c.handshake();
  c.client_send(chat_request());
  c.server_send(kSseHead);
  std::string events =
      ": keep-alive comment\r\n"
      "event: message\r"
      R"(data: {"choices":[{"index":0,"delta":{"content":"A"}}]})"
      "\r\r"
      "data: {\"choices\":[{\"index\":0,\n"
      "data: \"delta\":{\"content\":\"B\"}}]}\n\n"
      "id: 7\r\n"
      R"(data: {"choices":[{"index":0,"delta":{"content":"C"}}]})"
      "\r\n\r\n"
      "data: [DONE]\n\n";
  // Chunks cut at awkward places: between CR and LF, inside "data:".
  c.server_send(chunk(events.substr(0, 21)));
  c.server_send(chunk(events.substr(21, 40)));
  c.server_send(chunk(events.substr(61)) + "0\r\n\r\n");
  Records records = run_pipeline(Link::ethernet, render_all(c.segments(), Link::ethernet));
  Records exchanges = of_type(records, "exchange");
  REQUIRE(exchanges.size() == 1);
  CHECK(exchanges[0]["sse"]["content"] == "ABC");
  CHECK(exchanges[0]["sse"]["events"] == 4);
  CHECK(exchanges[0]["sse"]["done"] == true);
}

TEST_CASE("capture: a body that is not UTF-8 is kept byte-exact as base64", "[capture]") {
  std::string binary = "{\"model\":\"m\",\"x\":\"\xff\xfe\x00\x80 \xc3\x28\"}";
  binary.push_back('\0');
  TcpConversation c(kClient4, kServer4, 1000, 90000, kStart);
  c.handshake();
  c.client_send(chat_request(binary));
  c.server_send("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
  Records records = run_pipeline(Link::ethernet, render_all(c.segments(), Link::ethernet));
  Records requests = of_type(records, "request");
  REQUIRE(requests.size() == 1);
  CHECK(requests[0]["body_encoding"] == "base64");
  CHECK(body_of(requests[0]) == binary);
  CHECK(of_type(records, "exchange")[0]["status"] == 400);
}

TEST_CASE("capture: the ring holds chat completions only, query strings ignored; other POSTs are watched",
          "[capture]") {
  TcpConversation c(kClient4, kServer4, 1000, 90000, kStart);
  c.handshake();
  const std::string ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
  c.client_send("GET /v1/models HTTP/1.1\r\nHost: h\r\n\r\n");
  c.server_send(ok);
  c.client_send("POST /v1/chat/completions?trace=1 HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}");
  c.server_send(ok);
  c.client_send("POST /v1/chat/completionsX HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}");
  c.server_send(ok);
  c.client_send("POST /v1/completions HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}");
  c.server_send(ok);
  std::vector<Packet> packets = render_all(c.segments(), Link::ethernet);

  auto split = [](const Records& records, const char* type) {
    std::pair<std::vector<std::string>, std::vector<std::string>> ring_and_watched;
    for (const auto& r : of_type(records, type)) {
      (r.value("watched_only", false) ? ring_and_watched.second : ring_and_watched.first).push_back(r["target"]);
    }
    return ring_and_watched;
  };
  using Targets = std::vector<std::string>;
  Records only_chat = run_pipeline(Link::ethernet, packets, test_config({"/v1/chat/completions"}));
  for (const char* type : {"request", "exchange"}) {
    auto [ring, watched] = split(only_chat, type);
    CHECK(ring == Targets{"/v1/chat/completions?trace=1"});
    // Every other POST is watched (a killer can come on any path); the GET is not kept at all.
    CHECK(watched == Targets{"/v1/chat/completionsX", "/v1/completions"});
  }
  Records two = run_pipeline(Link::ethernet, packets, test_config({"/v1/chat/completions", "/v1/completions"}));
  CHECK(split(two, "exchange").first == Targets{"/v1/chat/completions?trace=1", "/v1/completions"});
  CHECK(split(two, "exchange").second == Targets{"/v1/chat/completionsX"});
  Records all = run_pipeline(Link::ethernet, packets, test_config({"/"}));
  CHECK(split(all, "exchange").first.size() == 4);
  CHECK(split(all, "exchange").second.empty());
}

TEST_CASE("capture: truncated packets (snaplen) are gaps, never reads past caplen", "[capture]") {
  TcpConversation c = streamed_exchange(kClient4, kServer4);
  std::vector<Packet> packets = render_all(c.segments(), Link::ethernet);
  for (Packet& p : packets) {
    if (p.frame.size() > 120) p.frame.resize(120);  // every data packet cut
  }
  Records records = run_pipeline(Link::ethernet, packets);
  Records exchanges = of_type(records, "exchange");
  REQUIRE_FALSE(exchanges.empty());
  CHECK(exchanges[0]["anomalies"].dump().find("capture_gap") != std::string::npos);
}

TEST_CASE("capture: non-TCP noise and fragments are skipped", "[capture]") {
  TcpConversation c = streamed_exchange(kClient4, kServer4);
  std::vector<Packet> packets = render_all(c.segments(), Link::ethernet);
  packets.insert(packets.begin() + 2,
                 render_udp(Endpoint{IpAddress::v4(127, 0, 0, 1), 5353}, Endpoint{IpAddress::v4(127, 0, 0, 1), 8077},
                            "udp noise", kStart, Link::ethernet));
  packets.insert(packets.begin() + 4,
                 render_icmp_echo(IpAddress::v4(127, 0, 0, 1), IpAddress::v4(127, 0, 0, 1), kStart, Link::ethernet));
  check_streamed_records(run_pipeline(Link::ethernet, packets), "127.0.0.1:39866", "127.0.0.1:8077");
}

TEST_CASE("capture property: any segmentation and random reorder/duplication give the same records", "[capture]") {
  // The reference: the exchange sent in one segment per write.
  Records reference = run_pipeline(Link::ethernet, render_all(streamed_exchange(kClient4, kServer4).segments(),
                                                              Link::ethernet));
  REQUIRE(of_type(reference, "exchange").size() == 1);

  SECTION("every request segment size") {
    for (std::size_t mss = 1; mss <= chat_request().size(); mss += (mss < 40 ? 1 : 13)) {
      INFO("mss " << mss);
      TcpConversation c = streamed_exchange(kClient4, kServer4, 1000, 90000, mss);
      Records got = run_pipeline(Link::ethernet, render_all(c.segments(), Link::ethernet));
      // Timestamps shift with the number of packets; compare everything else.
      for (json* r : {&got[0], &got[1]}) r->erase("ts");
      Records ref = reference;
      for (json* r : {&ref[0], &ref[1]}) r->erase("ts");
      got[1].erase("timing");
      ref[1].erase("timing");
      CHECK(canonical(got) == canonical(ref));
    }
  }
  SECTION("random reorderings and duplications within each burst") {
    for (std::uint32_t seed = 1; seed <= 40; ++seed) {
      INFO("seed " << seed);
      TcpConversation c(kClient4, kServer4, 1000, 90000, kStart);
      c.handshake();
      c.set_auto_ack(false);
      std::vector<std::size_t> request = c.client_send(chat_request(), 64);
      c.advance(12'000);
      c.server_ack();
      std::vector<std::size_t> stream = c.server_send(kSseHead);
      for (const std::string& piece : sse_chunks()) {
        c.advance(20'000);
        std::vector<std::size_t> idx = c.server_send(piece);
        stream.insert(stream.end(), idx.begin(), idx.end());
      }
      c.client_ack();
      c.set_auto_ack(true);
      c.client_fin();
      c.server_fin();
      std::vector<TcpSegmentSpec> segs = c.segments();
      std::mt19937 rng(seed);
      // Duplicate a few segments of each burst in place, then shuffle each burst.
      for (int k = 0; k < 3; ++k) {
        std::size_t r = request[rng() % request.size()];
        retransmit(segs, r, request.back() + 1);
      }
      shuffle_segments(segs, request.front(), request.back() + 4, seed);
      std::size_t stream_first = stream.front() + 3, stream_last = stream.back() + 3;
      retransmit(segs, stream_first + rng() % (stream_last - stream_first), stream_last + 1);
      shuffle_segments(segs, stream_first, stream_last + 2, seed * 31);
      Records got = run_pipeline(Link::ethernet, render_all(segs, Link::ethernet));
      REQUIRE(of_type(got, "exchange").size() == 1);
      json ex = of_type(got, "exchange")[0];
      CHECK(body_of(of_type(got, "request")[0]) == kRequestBody);
      CHECK(ex["sse"]["content"] == "Hello!");
      CHECK(ex["sse"]["reasoning"] == "Thinking");
      CHECK(ex["sse"]["events"] == 5);
      CHECK(ex["state"] == "complete");
      CHECK(ex["anomalies"].empty());
    }
  }
}

TEST_CASE("capture: a killed client (FIN, then RST to the server's next bytes) aborts as the client's doing",
          "[capture]") {
  TcpConversation c(kClient4, kServer4, 1000, 90000, kStart);
  c.handshake();
  c.client_send(chat_request());
  c.server_send(kSseHead);
  std::vector<std::string> pieces = sse_chunks();
  c.server_send(pieces[0]);
  c.client_fin();            // the client process dies: its kernel closes the socket
  c.server_send(pieces[1]);  // the server writes on...
  c.client_rst();            // ...and the dead socket answers with a reset; the server sends nothing more
  Records records = run_pipeline(Link::ethernet, render_all(c.segments(), Link::ethernet));
  Records exchanges = of_type(records, "exchange");
  REQUIRE(exchanges.size() == 1);
  CHECK(exchanges[0]["state"] == "aborted");
  CHECK(exchanges[0]["close"] == "client_rst");  // the reset ended it; the client's doing either way
  CHECK(exchanges[0]["error"] == "connection closed before the response was complete");
}
