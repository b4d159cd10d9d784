// The flow table: roles, idle eviction (idle = no packet), the connection cap, 4-tuple reuse.
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <vector>

#include "chatcap/flow_table.hpp"

using namespace chatcap;

namespace {

struct Ends : ExchangeSink {
  std::vector<Exchange> ended;
  void on_request_complete(Exchange&) override {}
  void on_exchange_end(Exchange& ex) override { ended.push_back(ex); }
};

const Endpoint kServer{IpAddress::v4(127, 0, 0, 1), 8077};

TcpSegment seg(const Endpoint& src, const Endpoint& dst, std::uint32_t seq, std::uint8_t flags, std::string_view data,
               timestamp_us ts) {
  TcpSegment s;
  s.src = src;
  s.dst = dst;
  s.seq = seq;
  s.flags = flags;
  s.payload = data;
  s.ts = ts;
  return s;
}

const std::string kRequest = "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";

FlowTableConfig config() {
  FlowTableConfig c;
  c.server_ports = {8077};
  c.http.scope.endpoints = {"/"};
  c.idle_timeout = 60 * kMicrosPerSecond;
  c.idle_timeout_no_exchange = 5 * kMicrosPerSecond;
  return c;
}

}  // namespace

TEST_CASE("flow table: without a handshake the configured port is the server", "[flow_table]") {
  Ends ends;
  FlowTable flows(ends, config());
  Endpoint client{IpAddress::v4(127, 0, 0, 1), 1000};  // a lower port than the server's
  flows.on_segment(seg(client, kServer, 1, tcp_flag::ack, kRequest, 1'000'000));
  flows.finish(2'000'000, ExchangeState::capture_stopped, "end");
  REQUIRE(ends.ended.size() == 1);
  CHECK(ends.ended[0].server == kServer);
  CHECK(ends.ended[0].request.complete);
}

TEST_CASE("flow table: a silent connection with a request in flight ends as timeout", "[flow_table]") {
  Ends ends;
  FlowTable flows(ends, config());
  Endpoint client{IpAddress::v4(127, 0, 0, 1), 40000};
  flows.on_segment(seg(client, kServer, 1, tcp_flag::syn, "", 1'000'000));
  flows.on_segment(seg(client, kServer, 2, tcp_flag::ack, kRequest, 1'000'100));
  // Long thinking without a packet is not idleness of the exchange... until the limit.
  flows.tick(30 * kMicrosPerSecond);
  CHECK(ends.ended.empty());
  CHECK(flows.size() == 1);
  flows.tick(62 * kMicrosPerSecond);
  REQUIRE(ends.ended.size() == 1);
  CHECK(ends.ended[0].state == ExchangeState::timeout);
  CHECK(flows.size() == 0);
  CHECK(flows.evicted_idle() == 1);
}

TEST_CASE("flow table: an idle keep-alive connection goes sooner, and nothing is recorded", "[flow_table]") {
  Ends ends;
  FlowTable flows(ends, config());
  Endpoint client{IpAddress::v4(127, 0, 0, 1), 40001};
  flows.on_segment(seg(client, kServer, 1, tcp_flag::ack, "", 1'000'000));
  flows.tick(7 * kMicrosPerSecond);
  CHECK(flows.size() == 0);
  CHECK(ends.ended.empty());
}

TEST_CASE("flow table: past max_connections the least recently seen is evicted", "[flow_table]") {
  Ends ends;
  FlowTableConfig c = config();
  c.max_connections = 3;
  FlowTable flows(ends, c);
  for (std::uint16_t i = 0; i < 5; ++i) {
    Endpoint client{IpAddress::v4(127, 0, 0, 1), static_cast<std::uint16_t>(41000 + i)};
    flows.on_segment(seg(client, kServer, 1, tcp_flag::ack, kRequest, 1'000'000 + i));
  }
  CHECK(flows.size() == 3);
  CHECK(flows.evicted_full() == 2);
  REQUIRE(ends.ended.size() == 2);
  CHECK(ends.ended[0].client.port == 41000);  // the oldest first
  CHECK(ends.ended[0].state == ExchangeState::timeout);
}

TEST_CASE("flow table: a new SYN on a closed 4-tuple is a new connection", "[flow_table]") {
  Ends ends;
  FlowTable flows(ends, config());
  Endpoint client{IpAddress::v4(127, 0, 0, 1), 42000};
  const std::string ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  flows.on_segment(seg(client, kServer, 100, tcp_flag::syn, "", 1'000'000));
  flows.on_segment(seg(kServer, client, 500, tcp_flag::syn | tcp_flag::ack, "", 1'000'010));
  flows.on_segment(seg(client, kServer, 101, tcp_flag::ack, kRequest, 1'000'020));
  flows.on_segment(seg(kServer, client, 501, tcp_flag::ack | tcp_flag::fin, ok, 1'000'030));
  flows.on_segment(seg(client, kServer, 101 + static_cast<std::uint32_t>(kRequest.size()), tcp_flag::ack | tcp_flag::fin,
                       "", 1'000'040));
  REQUIRE(ends.ended.size() == 1);
  // The same ports again, a different ISN, shortly after.
  flows.on_segment(seg(client, kServer, 9000, tcp_flag::syn, "", 1'100'000));
  flows.on_segment(seg(kServer, client, 7000, tcp_flag::syn | tcp_flag::ack, "", 1'100'010));
  flows.on_segment(seg(client, kServer, 9001, tcp_flag::ack, kRequest, 1'100'020));
  flows.on_segment(seg(kServer, client, 7001, tcp_flag::ack, ok, 1'100'030));
  REQUIRE(ends.ended.size() == 2);
  CHECK(ends.ended[1].state == ExchangeState::complete);
  CHECK(flows.connections_seen() == 2);
}

TEST_CASE("flow table: thousands of interleaved connections, each found again by every packet", "[flow_table]") {
  // Connections open and close in a random interleaving, ports are reused once their 4-tuple
  // closed, the index grows and shrinks: any lookup that missed would start a second,
  // SYN-less connection and split an exchange.
  Ends ends;
  FlowTableConfig c = config();
  c.closed_linger = 1'000;  // swept soon after closing: the index erases as much as it inserts
  FlowTable flows(ends, c);
  const std::string ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  const std::string head = kRequest.substr(0, 20);
  const std::string rest = kRequest.substr(20);
  struct Open {
    Endpoint client;
    int step = 0;
  };
  std::mt19937 random(20261126);
  std::vector<Open> open;
  timestamp_us ts = 1'000'000;
  int started = 0;
  constexpr int kConnections = 3000;
  while (started < kConnections || !open.empty()) {
    ts += 700;  // a sweep every ~1400 packets
    if (started < kConnections && (open.size() < 300 && random() % 3 == 0)) {
      // Ports from a small pool: a closed tuple comes back; every fifth client is IPv6.
      IpAddress address = started % 5 == 0 ? IpAddress::v6_loopback() : IpAddress::v4(127, 0, 0, 1);
      Open fresh{{address, static_cast<std::uint16_t>(30000 + random() % 600)}, 0};
      bool busy = std::any_of(open.begin(), open.end(), [&](const Open& o) { return o.client == fresh.client; });
      if (!busy) {
        open.push_back(fresh);
        ++started;
      }
      continue;
    }
    if (open.empty()) continue;
    std::size_t pick = random() % open.size();
    Open& o = open[pick];
    const Endpoint server{o.client.address, 8077};
    switch (o.step++) {
      case 0: flows.on_segment(seg(o.client, server, 100, tcp_flag::syn, "", ts)); break;
      case 1: flows.on_segment(seg(server, o.client, 500, tcp_flag::syn | tcp_flag::ack, "", ts)); break;
      case 2: flows.on_segment(seg(o.client, server, 101, tcp_flag::ack, head, ts)); break;
      case 3:
        flows.on_segment(seg(o.client, server, 101 + static_cast<std::uint32_t>(head.size()), tcp_flag::ack, rest, ts));
        break;
      case 4: flows.on_segment(seg(server, o.client, 501, tcp_flag::ack | tcp_flag::fin, ok, ts)); break;
      default:
        flows.on_segment(seg(o.client, server, 101 + static_cast<std::uint32_t>(kRequest.size()),
                             tcp_flag::ack | tcp_flag::fin, "", ts));
        open.erase(open.begin() + static_cast<std::ptrdiff_t>(pick));
        break;
    }
  }
  flows.finish(ts + 10 * kMicrosPerSecond, ExchangeState::capture_stopped, "end");
  CHECK(flows.connections_seen() == kConnections);
  REQUIRE(ends.ended.size() == kConnections);
  std::size_t complete = 0;
  for (const Exchange& ex : ends.ended) complete += ex.state == ExchangeState::complete && ex.request.complete;
  CHECK(complete == kConnections);
  CHECK(flows.size() == 0);
}
