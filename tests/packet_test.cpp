// Decode on single frames: every link type, IPv4 options, IPv6 extension headers,
// fragments, noise, and frames cut anywhere (never a read past caplen: run under ASan).
#include <catch2/catch.hpp>

#include "chatcap/packet.hpp"
#include "support/pcap_builder.hpp"

using namespace chatcap;
using namespace chatcap::testing;

namespace {

const Endpoint kClient{IpAddress::v4(127, 0, 0, 1), 40000};
const Endpoint kServer{IpAddress::v4(127, 0, 0, 1), 8077};

TcpSegmentSpec data_segment(const Endpoint& src, const Endpoint& dst, std::string payload) {
  TcpSegmentSpec s;
  s.src = src;
  s.dst = dst;
  s.seq = 0xFFFFFFF0u;
  s.ack = 77;
  s.flags = testing::tcp_flag::ack | testing::tcp_flag::psh;
  s.payload = std::move(payload);
  s.ts = 123;
  return s;
}

DecodeOutcome decode(Link link, const Packet& p, chatcap::TcpSegment& out) {
  PacketDecoder decoder(dlt_of(link));
  return decoder.decode(p.ts, std::span<const std::uint8_t>(p.frame.data(), p.frame.size()), p.wire_len, out);
}

}  // namespace

TEST_CASE("decode: every link type, IPv4 and IPv6, gives the same segment", "[packet]") {
  const Endpoint client6{IpAddress::v6_loopback(), 40000};
  const Endpoint server6{IpAddress::v6_loopback(), 8077};
  for (Link link : {Link::ethernet, Link::ethernet_vlan, Link::linux_sll, Link::linux_sll2, Link::null_loopback,
                    Link::raw_ip}) {
    for (bool v6 : {false, true}) {
      INFO("link " << dlt_of(link) << " v6 " << v6);
      Packet p = render(data_segment(v6 ? client6 : kClient, v6 ? server6 : kServer, "hello"), link);
      chatcap::TcpSegment s;
      REQUIRE(decode(link, p, s) == DecodeOutcome::tcp);
      CHECK(s.src.to_string() == (v6 ? "[::1]:40000" : "127.0.0.1:40000"));
      CHECK(s.dst.port == 8077);
      CHECK(s.seq == 0xFFFFFFF0u);
      CHECK(s.ack == 77);
      CHECK(s.has(chatcap::tcp_flag::psh));
      CHECK(s.payload == "hello");
      CHECK(s.payload_missing == 0);
      CHECK(s.ts == 123);
    }
  }
}

TEST_CASE("decode: IPv4 options and IPv6 extension headers are skipped by their lengths", "[packet]") {
  RenderOptions v4;
  v4.ipv4_options = {0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00};
  chatcap::TcpSegment s;  // its payload views the frame: keep each frame alive while it is read
  const Packet with_options = render(data_segment(kClient, kServer, "opts"), Link::ethernet, v4);
  REQUIRE(decode(Link::ethernet, with_options, s) == DecodeOutcome::tcp);
  CHECK(s.payload == "opts");
  RenderOptions v6;
  v6.ipv6_ext_headers = {0, 60, 60};
  const Endpoint c6{IpAddress::v6_loopback(), 1}, s6{IpAddress::v6_loopback(), 2};
  const Packet with_extensions = render(data_segment(c6, s6, "ext"), Link::raw_ip, v6);
  REQUIRE(decode(Link::raw_ip, with_extensions, s) == DecodeOutcome::tcp);
  CHECK(s.payload == "ext");
}

TEST_CASE("decode: fragments and non-TCP packets are named, not decoded", "[packet]") {
  chatcap::TcpSegment s;
  std::vector<Packet> fragments = render_fragments(data_segment(kClient, kServer, std::string(200, 'f')),
                                                   Link::ethernet, 64);
  for (const Packet& f : fragments) CHECK(decode(Link::ethernet, f, s) == DecodeOutcome::ip_fragment);
  CHECK(decode(Link::ethernet, render_udp(kClient, kServer, "u", 1, Link::ethernet), s) == DecodeOutcome::not_tcp);
  CHECK(decode(Link::ethernet, render_icmp_echo(kClient.address, kServer.address, 1, Link::ethernet), s) ==
        DecodeOutcome::not_tcp);
  PacketDecoder unknown(9999);
  std::uint8_t junk[40] = {};
  CHECK(unknown.decode(0, junk, 40, s) == DecodeOutcome::unsupported_link);
}

TEST_CASE("decode: a frame cut at every length is truncated, a gap, or whole — never a crash", "[packet]") {
  Packet whole = render(data_segment(kClient, kServer, std::string(100, 'x')), Link::ethernet_vlan);
  for (std::size_t cut = 0; cut <= whole.frame.size(); ++cut) {
    std::vector<std::uint8_t> frame(whole.frame.begin(), whole.frame.begin() + static_cast<std::ptrdiff_t>(cut));
    PacketDecoder decoder(dlt_of(Link::ethernet_vlan));
    chatcap::TcpSegment s;
    DecodeOutcome outcome = decoder.decode(0, frame, whole.wire_len, s);
    INFO("cut at " << cut);
    if (outcome == DecodeOutcome::tcp) {
      CHECK(s.payload.size() + s.payload_missing == 100);  // what is missing is accounted for
      CHECK(s.payload.size() <= cut);
    } else {
      CHECK(outcome == DecodeOutcome::truncated);
    }
  }
}

TEST_CASE("decode: lengths that lie in an uncut frame are malformed", "[packet]") {
  Packet p = render(data_segment(kClient, kServer, "abc"), Link::raw_ip);
  p.frame[2] = 0x40;  // IPv4 total length far past the frame
  p.frame[3] = 0x00;
  chatcap::TcpSegment s;
  CHECK(decode(Link::raw_ip, p, s) == DecodeOutcome::malformed);
  Packet q = render(data_segment(kClient, kServer, "abc"), Link::raw_ip);
  q.frame[0] = 0x41;  // IHL 1: shorter than a header
  CHECK(decode(Link::raw_ip, q, s) == DecodeOutcome::malformed);
}
