// Decode: link layer → IPv4/IPv6 → TCP, without copying.
//
// Given one captured frame (the bytes pcap kept, caplen, and the length it had on the wire),
// the decoder fills a TcpSegment whose payload is a view into the frame. It never reads past
// caplen: a packet cut by the snaplen yields the bytes that were captured plus
// `payload_missing`, the number of payload bytes the IP header says were sent but not
// captured, which the reassembler turns into a gap.
//
// Link types: EN10MB (what `lo` reports; 802.1Q/802.1ad tags are skipped), LINUX_SLL and
// LINUX_SLL2 (`-i any`), NULL/LOOP (BSD loopback, either byte order), RAW / IPV4 / IPV6.
// IPv4 options are skipped by IHL; IPv6 extension headers (hop-by-hop, routing, destination
// options, AH) are walked. Fragments and anything that is not TCP are counted and skipped:
// every frame gets exactly one DecodeOutcome, and the counters are derived from them.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "chatcap/types.hpp"

namespace chatcap {

namespace tcp_flag {
constexpr std::uint8_t fin = 0x01;
constexpr std::uint8_t syn = 0x02;
constexpr std::uint8_t rst = 0x04;
constexpr std::uint8_t psh = 0x08;
constexpr std::uint8_t ack = 0x10;
}  // namespace tcp_flag

struct TcpSegment {
  timestamp_us ts = 0;
  Endpoint src;
  Endpoint dst;
  std::uint32_t seq = 0;
  std::uint32_t ack = 0;
  std::uint8_t flags = 0;
  std::string_view payload;            // view into the captured frame
  std::uint32_t payload_missing = 0;   // payload bytes sent but cut by the snaplen

  bool has(std::uint8_t flag) const { return (flags & flag) != 0; }
};

enum class DecodeOutcome : std::uint8_t {
  tcp,               // a TcpSegment was produced (payload may be partly missing)
  not_ip,            // ARP, LLDP, ...
  not_tcp,           // UDP, ICMP, ...
  ip_fragment,       // IPv4 fragment or IPv6 fragment header: skipped, never reassembled
  truncated,         // headers cut by the snaplen: nothing usable
  malformed,         // lengths that contradict each other
  unsupported_link,  // a link type this decoder does not know
};
constexpr std::size_t kDecodeOutcomeCount = 7;
std::string_view to_string(DecodeOutcome outcome);

// True for the pcap link types (DLT_*) decode() understands.
bool is_supported_linktype(int linktype);

class PacketDecoder {
 public:
  explicit PacketDecoder(int linktype) : linktype_(linktype) {}

  // `frame` is the captured bytes (caplen); `wire_length` is the length on the wire.
  DecodeOutcome decode(timestamp_us ts, std::span<const std::uint8_t> frame, std::uint32_t wire_length,
                       TcpSegment& out);

  std::uint64_t count(DecodeOutcome outcome) const { return counts_[static_cast<std::size_t>(outcome)]; }
  int linktype() const { return linktype_; }

 private:
  DecodeOutcome decode_frame(std::span<const std::uint8_t> frame, std::uint32_t wire_length, TcpSegment& out);

  int linktype_;
  std::array<std::uint64_t, kDecodeOutcomeCount> counts_{};
};

}  // namespace chatcap
