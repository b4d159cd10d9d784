// Value types every stage shares: packet time and TCP endpoints.
//
// Time is always the packet's pcap timestamp, in microseconds since the Unix epoch; no stage
// between capture and the log writer reads a clock, so the same capture yields the same
// records on every run.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace chatcap {

using timestamp_us = std::int64_t;

// ASCII case-insensitive equality, as HTTP compares header names and tokens. Inline: every
// header of every record goes through it (credential names, content type).
inline bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return static_cast<unsigned char>(c - 'A') < 26 ? static_cast<char>(c + 32) : c; };
    if (a[i] != b[i] && lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

constexpr timestamp_us kMicrosPerSecond = 1'000'000;

// The path of a request target: origin-form or absolute-form ("http://host/p?q" → "/p"),
// query and fragment cut.
std::string_view path_of(std::string_view target);
// True when the path of `target` is one of the endpoints or below one of them ("/" = all).
bool target_matches(std::string_view target, const std::vector<std::string>& endpoints);

struct IpAddress {
  std::uint8_t family = 4;               // 4 or 6
  std::array<std::uint8_t, 16> bytes{};  // IPv4 uses the first 4

  // Compared for every packet (flow lookup): two 64-bit compares, not a memcmp call.
  friend bool operator==(const IpAddress& a, const IpAddress& b) {
    return a.family == b.family && a.word(0) == b.word(0) && a.word(1) == b.word(1);
  }
  std::uint64_t word(int i) const {
    std::uint64_t w;
    std::memcpy(&w, bytes.data() + 8 * i, sizeof w);
    return w;
  }
  std::string to_string() const;
  // Inline: the decoder builds two for every packet.
  static IpAddress v4(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d) {
    IpAddress ip;
    ip.family = 4;
    ip.bytes[0] = a;
    ip.bytes[1] = b;
    ip.bytes[2] = c;
    ip.bytes[3] = d;
    return ip;
  }
  static IpAddress v6_loopback();
  // Parses a textual IPv4 or IPv6 address; false when it is neither.
  static bool parse(std::string_view text, IpAddress& out);
};

// Short text built in place, for the fields every record writes: no heap allocation.
template <std::size_t Capacity>
struct FixedText {
  std::array<char, Capacity> bytes{};
  std::size_t size = 0;

  std::string_view view() const { return std::string_view(bytes.data(), size); }
  void append(std::string_view text) {
    std::memcpy(bytes.data() + size, text.data(), text.size());
    size += text.size();
  }
  void push_back(char c) { bytes[size++] = c; }
};

struct Endpoint {
  IpAddress address;
  std::uint16_t port = 0;

  friend bool operator==(const Endpoint&, const Endpoint&) = default;
  // "127.0.0.1:8077" or "[::1]:8077".
  std::string to_string() const;
  // The same text, without an allocation (two per record).
  using Text = FixedText<56>;  // "[" + the longest IPv6 text (45) + "]:" + 5 digits
  Text text() const;
};

// "2026-11-24T15:21:53.758382Z" (RFC 3339, UTC, microseconds).
std::string format_timestamp(timestamp_us ts);
using TimestampText = FixedText<32>;
TimestampText timestamp_text(timestamp_us ts);  // the same, without an allocation

}  // namespace chatcap
