// Test support: builds TCP conversations packet by packet and writes them as pcap files, so
// every hard capture case is generated at run time and no pcap blob is committed.
//
//   TcpConversation c(client, server, 0xFFFFFF00, 1000, start);
//   c.handshake();
//   auto req = c.client_send("POST /v1/chat/completions HTTP/1.1\r\n...", 100);  // 100-byte MSS
//   c.server_send("HTTP/1.1 200 OK\r\n...");
//   c.client_fin(); c.server_fin();
//   auto segs = c.segments();               // logical segments: edit freely
//   drop(segs, req[1]);                     // a lost segment...
//   retransmit(segs, req[1], segs.size());  // (before the drop) ...or a late copy
//   write_pcap(path, Link::linux_sll2, render_as_any(segs, Link::linux_sll2));
//
// Two layers, because tests perturb what TCP sent, not bytes: TcpSegmentSpec is the logical
// segment (endpoints, seq, ack, flags, payload, time) that the perturbation functions
// reorder, duplicate, drop, retransmit and split; render() turns one into a finished
// link-layer frame with correct lengths and checksums (IPv4 header, TCP/UDP/ICMPv6 with the
// pseudo-header), so a decoder under test and tshark both see well-formed packets unless a
// test asks otherwise. Sequence numbers are uint32 and wrap like TCP's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "chatcap/types.hpp"

namespace chatcap::testing {

// TCP header flag bits as on the wire.
namespace tcp_flag {
constexpr std::uint8_t fin = 0x01, syn = 0x02, rst = 0x04, psh = 0x08, ack = 0x10;
}

enum class Direction { client_to_server, server_to_client };

// One logical TCP segment. `options` are raw TCP option bytes (padded with EOL to 4 when
// rendered); `ack` is sent as given even when the ACK flag is clear.
struct TcpSegmentSpec {
  Direction direction = Direction::client_to_server;
  Endpoint src, dst;
  std::uint32_t seq = 0, ack = 0;
  std::uint8_t flags = 0;
  std::uint16_t window = 65535;
  std::vector<std::uint8_t> options;
  std::string payload;
  timestamp_us ts = 0;
};

// A finished link-layer frame. wire_len is the length on the wire; a test may shorten
// `frame` below wire_len to make one truncated packet (write_pcap's snaplen does it to all).
struct Packet {
  timestamp_us ts = 0;
  std::vector<std::uint8_t> frame;
  std::uint32_t wire_len = 0;
};

// ethernet: zero MACs, as `lo` reports. ethernet_vlan: one 802.1Q tag. linux_sll/_sll2:
// `-i any` (ARPHRD_LOOPBACK, interface index 1). null_loopback: DLT_NULL, 4-byte address
// family in host byte order. raw_ip: DLT_RAW, the IP header first.
enum class Link { ethernet, ethernet_vlan, linux_sll, linux_sll2, null_loopback, raw_ip };

int dlt_of(Link link);  // the DLT_* value write_pcap hands to pcap_open_dead

// Linux packet types in SLL/SLL2 headers.
constexpr std::uint8_t kSllHost = 0, kSllOutgoing = 4;

struct RenderOptions {
  std::vector<std::uint8_t> ipv4_options;  // raw bytes after the 20-byte header, EOL-padded; <= 40
  // IPv6 extension headers before the upper layer, in order: 0 (hop-by-hop) or 60
  // (destination options); each is 16 bytes (hdr ext len 1) of PadN, so decoders must
  // honour the length field.
  std::vector<std::uint8_t> ipv6_ext_headers;
  std::uint16_t vlan_id = 100;             // ethernet_vlan
  std::uint8_t sll_packet_type = kSllHost;  // linux_sll, linux_sll2
  // DLT_NULL's AF_INET6 differs by BSD: 24 (NetBSD/OpenBSD, the default), 28 (FreeBSD), 30
  // (macOS). AF_INET is 2 everywhere.
  std::uint32_t null_af_inet6 = 24;
  std::uint16_t ip_id = 1;  // IPv4 identification, IPv6 fragment identification
  std::uint8_t ttl = 64;
  // Leave the TCP checksum as the kernel does on lo with checksum offload (the folded
  // pseudo-header sum, not the real checksum): decoders must not drop such packets.
  bool offloaded_tcp_checksum = false;
};

// One connection that emits realistic segments: PSH|ACK data with the peer's ACK after each
// (unless disabled), Linux-like TCP options (MSS on SYNs, timestamps on everything), and a
// clock that moves kStep per packet. Without handshake() the capture starts mid-connection
// (SYN-less pickup): the ISNs were consumed by a SYN nobody captured.
class TcpConversation {
 public:
  static constexpr std::size_t kLoopbackMss = 65483;  // lo MTU 65536 - IPv4 20 - TCP 32
  static constexpr timestamp_us kStep = 10;

  TcpConversation(Endpoint client, Endpoint server, std::uint32_t client_isn,
                  std::uint32_t server_isn, timestamp_us start);

  void handshake();  // SYN, SYN-ACK, ACK; only before anything else
  // Data in segments of at most mss bytes (PSH on the last); returns their indices in
  // segments(). Empty bytes send nothing.
  std::vector<std::size_t> client_send(std::string_view bytes, std::size_t mss = kLoopbackMss) {
    return send(Direction::client_to_server, bytes, mss);
  }
  std::vector<std::size_t> server_send(std::string_view bytes, std::size_t mss = kLoopbackMss) {
    return send(Direction::server_to_client, bytes, mss);
  }
  // FIN|ACK (acknowledged by the peer when auto-ack is on), RST|ACK (never acknowledged), and
  // a pure ACK of everything the peer sent so far. Each returns the segment's index.
  std::size_t client_fin() { return fin(Direction::client_to_server); }
  std::size_t server_fin() { return fin(Direction::server_to_client); }
  std::size_t client_rst() { return emit(Direction::client_to_server, tcp_flag::rst | tcp_flag::ack, {}); }
  std::size_t server_rst() { return emit(Direction::server_to_client, tcp_flag::rst | tcp_flag::ack, {}); }
  std::size_t client_ack() { return emit(Direction::client_to_server, tcp_flag::ack, {}); }
  std::size_t server_ack() { return emit(Direction::server_to_client, tcp_flag::ack, {}); }
  void advance(timestamp_us dt) { now_ += dt; }
  // Reordering data across the peer's ACKs makes those ACKs cover bytes not yet captured,
  // which real captures never show (tshark then declares the bytes lost). To reorder a
  // burst, turn auto-ack off, send, ack explicitly, and shuffle only the data segments.
  void set_auto_ack(bool on) { auto_ack_ = on; }

  timestamp_us now() const { return now_; }
  std::uint32_t next_seq(Direction d) const;
  std::vector<TcpSegmentSpec>& segments() { return segs_; }
  const std::vector<TcpSegmentSpec>& segments() const { return segs_; }

 private:
  struct Side {
    Endpoint endpoint;
    std::uint32_t next;  // next sequence number this side sends
  };
  std::vector<std::size_t> send(Direction d, std::string_view bytes, std::size_t mss);
  std::size_t fin(Direction d);
  std::size_t emit(Direction d, std::uint8_t flags, std::string_view payload);

  Side client_, server_;
  timestamp_us now_;
  bool auto_ack_ = true;
  std::vector<TcpSegmentSpec> segs_;
};

// Perturbations. Reordering keeps each position's timestamp (a capture's times only grow);
// inserted copies take the timestamp of the packet before them. Indices shift after drop,
// retransmit and split: apply them from the highest index down.
void duplicate_all(std::vector<TcpSegmentSpec>& segs);  // each twice, back to back
void swap_segments(std::vector<TcpSegmentSpec>& segs, std::size_t i, std::size_t j);
// Fisher-Yates over [first, last) with std::mt19937(seed): the same order on every platform.
void shuffle_segments(std::vector<TcpSegmentSpec>& segs, std::size_t first, std::size_t last,
                      std::uint32_t seed);
void drop(std::vector<TcpSegmentSpec>& segs, std::size_t index);
// Inserts a copy of segs[index] before position insert_at (segs.size() appends).
void retransmit(std::vector<TcpSegmentSpec>& segs, std::size_t index, std::size_t insert_at);
// Splits segs[index]'s payload at byte `at` (0 < at < size) into two segments, the first
// without FIN/PSH.
void split(std::vector<TcpSegmentSpec>& segs, std::size_t index, std::size_t at);

// Rendering.
Packet render(const TcpSegmentSpec& seg, Link link, const RenderOptions& opts = {});
std::vector<Packet> render_all(const std::vector<TcpSegmentSpec>& segs, Link link,
                               const RenderOptions& opts = {});
// What `-i any` shows for loopback: every packet twice, outgoing then host (SLL/SLL2 only).
std::vector<Packet> render_as_any(const std::vector<TcpSegmentSpec>& segs, Link link,
                                  const RenderOptions& opts = {});
// The segment as IP fragments (IPv4 MF/offset, IPv6 fragment header): the first carries
// first_bytes of the TCP header+payload (rounded down to 8), the second the rest.
std::vector<Packet> render_fragments(const TcpSegmentSpec& seg, Link link, std::size_t first_bytes,
                                     const RenderOptions& opts = {});
// Noise for decoder tests.
Packet render_udp(const Endpoint& src, const Endpoint& dst, std::string_view payload,
                  timestamp_us ts, Link link, const RenderOptions& opts = {});
Packet render_icmp_echo(const IpAddress& src, const IpAddress& dst, timestamp_us ts, Link link,
                        const RenderOptions& opts = {});  // ICMP or ICMPv6 echo request
// Any upper layer as given (its checksum is the caller's business).
Packet render_ip(const IpAddress& src, const IpAddress& dst, std::uint8_t protocol,
                 std::span<const std::uint8_t> upper, timestamp_us ts, Link link,
                 const RenderOptions& opts = {});

// Writes a pcap with libpcap's dump API; caplen = min(frame size, snaplen), len = wire_len.
// Throws std::runtime_error when the file cannot be written.
constexpr std::uint32_t kDefaultSnaplen = 262144;
void write_pcap(const std::string& path, Link link, const std::vector<Packet>& packets,
                std::uint32_t snaplen = kDefaultSnaplen);

}  // namespace chatcap::testing
