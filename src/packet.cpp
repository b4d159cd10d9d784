#include "chatcap/packet.hpp"

#include <pcap/dlt.h>

#include <algorithm>

namespace chatcap {
namespace {

constexpr std::uint16_t kEtherTypeIpv4 = 0x0800;
constexpr std::uint16_t kEtherTypeIpv6 = 0x86DD;
constexpr std::uint16_t kEtherTypeVlan = 0x8100;
constexpr std::uint16_t kEtherTypeQinQ = 0x88A8;
constexpr std::uint8_t kProtoTcp = 6;
constexpr int kDltLinuxSll2 = 276;  // not in older pcap headers

std::uint16_t be16(const std::uint8_t* p) { return static_cast<std::uint16_t>((p[0] << 8) | p[1]); }
std::uint32_t be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}

// Where the IP packet starts in a frame and which version the link layer says it is
// (0 = look at the version nibble).
struct LinkResult {
  DecodeOutcome failure = DecodeOutcome::tcp;  // tcp = no failure
  std::size_t ip_offset = 0;
  int ip_version = 0;
};

LinkResult ethertype_to_version(std::uint16_t ethertype, std::size_t offset) {
  if (ethertype == kEtherTypeIpv4) return {DecodeOutcome::tcp, offset, 4};
  if (ethertype == kEtherTypeIpv6) return {DecodeOutcome::tcp, offset, 6};
  return {DecodeOutcome::not_ip, 0, 0};
}

LinkResult strip_ethernet(std::span<const std::uint8_t> f) {
  std::size_t offset = 12;
  if (f.size() < offset + 2) return {DecodeOutcome::truncated};
  std::uint16_t ethertype = be16(&f[offset]);
  // 802.1Q and 802.1ad tags: each adds 4 bytes before the real ethertype.
  while (ethertype == kEtherTypeVlan || ethertype == kEtherTypeQinQ) {
    offset += 4;
    if (f.size() < offset + 2) return {DecodeOutcome::truncated};
    ethertype = be16(&f[offset]);
  }
  return ethertype_to_version(ethertype, offset + 2);
}

LinkResult strip_null(std::span<const std::uint8_t> f, bool network_order) {
  if (f.size() < 4) return {DecodeOutcome::truncated};
  // DLT_NULL stores the BSD address family in the capturing host's byte order, which may not
  // be ours: accept either order. AF_INET is 2 everywhere; AF_INET6 is 24, 28 or 30.
  std::uint32_t le = std::uint32_t{f[0]} | (std::uint32_t{f[1]} << 8) | (std::uint32_t{f[2]} << 16) |
                     (std::uint32_t{f[3]} << 24);
  std::uint32_t family = network_order ? be32(f.data()) : (le > 0xFFFF ? be32(f.data()) : le);
  if (family == 2) return {DecodeOutcome::tcp, 4, 4};
  if (family == 24 || family == 28 || family == 30 || family == 10) return {DecodeOutcome::tcp, 4, 6};
  return {DecodeOutcome::not_ip};
}

LinkResult strip_link(int linktype, std::span<const std::uint8_t> f) {
  switch (linktype) {
    case DLT_EN10MB:
      return strip_ethernet(f);
    case DLT_LINUX_SLL:
      if (f.size() < 16) return {DecodeOutcome::truncated};
      return ethertype_to_version(be16(&f[14]), 16);
    case kDltLinuxSll2:
      if (f.size() < 20) return {DecodeOutcome::truncated};
      return ethertype_to_version(be16(&f[0]), 20);
    case DLT_NULL:
      return strip_null(f, false);
    case DLT_LOOP:
      return strip_null(f, true);
    case DLT_RAW:
    case DLT_IPV4:
    case DLT_IPV6:
      return {DecodeOutcome::tcp, 0, 0};
    default:
      return {DecodeOutcome::unsupported_link};
  }
}

// The TCP header and payload located inside the IP packet.
struct IpResult {
  DecodeOutcome failure = DecodeOutcome::tcp;
  std::size_t tcp_offset = 0;         // from the start of the frame
  std::uint64_t tcp_wire_length = 0;  // TCP header + payload as sent
};

// `ip_wire_bytes` is what the wire carried from the IP header on; a length field of 0 (GSO /
// BIG TCP super-packets on loopback) falls back to it.
IpResult parse_ipv4(std::span<const std::uint8_t> f, std::size_t at, std::uint64_t ip_wire_bytes, TcpSegment& out) {
  if (f.size() < at + 20) return {DecodeOutcome::truncated};
  const std::uint8_t* ip = &f[at];
  std::size_t header_length = std::size_t{static_cast<std::uint8_t>(ip[0] & 0x0F)} * 4;
  if (header_length < 20) return {DecodeOutcome::malformed};
  if (f.size() < at + header_length) return {DecodeOutcome::truncated};
  std::uint64_t total_length = be16(&ip[2]);
  if (total_length == 0) total_length = ip_wire_bytes;
  if (total_length < header_length) return {DecodeOutcome::malformed};
  std::uint16_t fragment = be16(&ip[6]);
  bool more_fragments = (fragment & 0x2000) != 0;
  if (more_fragments || (fragment & 0x1FFF) != 0) return {DecodeOutcome::ip_fragment};
  if (ip[9] != kProtoTcp) return {DecodeOutcome::not_tcp};
  out.src.address = IpAddress::v4(ip[12], ip[13], ip[14], ip[15]);
  out.dst.address = IpAddress::v4(ip[16], ip[17], ip[18], ip[19]);
  return {DecodeOutcome::tcp, at + header_length, total_length - header_length};
}

bool is_ipv6_extension(std::uint8_t next) {
  return next == 0 || next == 43 || next == 60 || next == 51 || next == 135 || next == 139 || next == 140;
}

IpResult parse_ipv6(std::span<const std::uint8_t> f, std::size_t at, std::uint64_t ip_wire_bytes, TcpSegment& out) {
  if (f.size() < at + 40) return {DecodeOutcome::truncated};
  const std::uint8_t* ip = &f[at];
  std::uint64_t payload_length = be16(&ip[4]);
  if (payload_length == 0 && ip_wire_bytes > 40) payload_length = ip_wire_bytes - 40;  // jumbogram / BIG TCP
  out.src.address.family = 6;
  out.dst.address.family = 6;
  std::copy(ip + 8, ip + 24, out.src.address.bytes.begin());
  std::copy(ip + 24, ip + 40, out.dst.address.bytes.begin());

  std::uint8_t next = ip[6];
  std::size_t offset = at + 40;
  std::uint64_t remaining = payload_length;
  while (is_ipv6_extension(next)) {
    if (f.size() < offset + 2) return {DecodeOutcome::truncated};
    std::size_t ext_length = next == 51 ? (std::size_t{f[offset + 1]} + 2) * 4   // AH counts 4-byte words
                                        : (std::size_t{f[offset + 1]} + 1) * 8;
    if (ext_length > remaining) return {DecodeOutcome::malformed};
    next = f[offset];
    offset += ext_length;
    remaining -= ext_length;
  }
  if (next == 44) return {DecodeOutcome::ip_fragment};
  if (next != kProtoTcp) return {DecodeOutcome::not_tcp};
  return {DecodeOutcome::tcp, offset, remaining};
}

}  // namespace

std::string_view to_string(DecodeOutcome outcome) {
  switch (outcome) {
    case DecodeOutcome::tcp: return "tcp";
    case DecodeOutcome::not_ip: return "not_ip";
    case DecodeOutcome::not_tcp: return "not_tcp";
    case DecodeOutcome::ip_fragment: return "ip_fragment";
    case DecodeOutcome::truncated: return "truncated";
    case DecodeOutcome::malformed: return "malformed";
    case DecodeOutcome::unsupported_link: return "unsupported_link";
  }
  return "unknown";
}

bool is_supported_linktype(int linktype) {
  switch (linktype) {
    case DLT_EN10MB:
    case DLT_LINUX_SLL:
    case kDltLinuxSll2:
    case DLT_NULL:
    case DLT_LOOP:
    case DLT_RAW:
    case DLT_IPV4:
    case DLT_IPV6:
      return true;
    default:
      return false;
  }
}

DecodeOutcome PacketDecoder::decode(timestamp_us ts, std::span<const std::uint8_t> frame, std::uint32_t wire_length,
                                    TcpSegment& out) {
  out = TcpSegment{};
  out.ts = ts;
  DecodeOutcome outcome = decode_frame(frame, wire_length, out);
  ++counts_[static_cast<std::size_t>(outcome)];
  return outcome;
}

DecodeOutcome PacketDecoder::decode_frame(std::span<const std::uint8_t> frame, std::uint32_t wire_length,
                                          TcpSegment& out) {
  LinkResult link = strip_link(linktype_, frame);
  if (link.failure != DecodeOutcome::tcp) return link.failure;
  if (frame.size() <= link.ip_offset) return DecodeOutcome::truncated;
  int version = link.ip_version != 0 ? link.ip_version : frame[link.ip_offset] >> 4;
  if (version != (frame[link.ip_offset] >> 4)) return DecodeOutcome::malformed;
  std::uint64_t ip_wire_bytes = wire_length > link.ip_offset ? wire_length - link.ip_offset : 0;

  IpResult ip;
  if (version == 4) {
    ip = parse_ipv4(frame, link.ip_offset, ip_wire_bytes, out);
  } else if (version == 6) {
    ip = parse_ipv6(frame, link.ip_offset, ip_wire_bytes, out);
  } else {
    return DecodeOutcome::not_ip;
  }
  if (ip.failure != DecodeOutcome::tcp) return ip.failure;

  if (frame.size() < ip.tcp_offset + 20) return DecodeOutcome::truncated;
  const std::uint8_t* tcp = &frame[ip.tcp_offset];
  std::size_t header_length = std::size_t{static_cast<std::uint8_t>(tcp[12] >> 4)} * 4;
  if (header_length < 20 || header_length > ip.tcp_wire_length) return DecodeOutcome::malformed;
  if (frame.size() < ip.tcp_offset + header_length) return DecodeOutcome::truncated;

  out.src.port = be16(&tcp[0]);
  out.dst.port = be16(&tcp[2]);
  out.seq = be32(&tcp[4]);
  out.ack = be32(&tcp[8]);
  out.flags = tcp[13];

  std::size_t payload_offset = ip.tcp_offset + header_length;
  std::uint64_t payload_on_wire = ip.tcp_wire_length - header_length;
  std::uint64_t payload_captured = std::min<std::uint64_t>(payload_on_wire, frame.size() - payload_offset);
  bool cut_by_snaplen = frame.size() < wire_length;
  // A header that claims more bytes than a complete (uncut) frame holds is lying, not cut.
  if (payload_captured < payload_on_wire && !cut_by_snaplen) return DecodeOutcome::malformed;
  out.payload = std::string_view(reinterpret_cast<const char*>(&frame[payload_offset]), payload_captured);
  out.payload_missing = static_cast<std::uint32_t>(payload_on_wire - payload_captured);
  return DecodeOutcome::tcp;
}

}  // namespace chatcap
