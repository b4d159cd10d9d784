#include "chatcap/types.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <ctime>
#include <vector>

#include <fmt/format.h>

namespace chatcap {

std::string_view path_of(std::string_view target) {
  // absolute-form ("http://host:port/path?q") → "/path"; origin-form starts with '/'.
  if (!target.starts_with('/')) {
    if (std::size_t scheme = target.substr(0, 16).find("://"); scheme != std::string_view::npos && scheme < 8) {
      std::size_t slash = target.find('/', scheme + 3);
      target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
    }
  }
  for (std::size_t i = 0; i < target.size(); ++i) {
    if (target[i] == '?' || target[i] == '#') return target.substr(0, i);
  }
  return target;
}

bool target_matches(std::string_view target, const std::vector<std::string>& endpoints) {
  std::string_view path = path_of(target);
  for (const std::string& prefix : endpoints) {
    if (prefix == "/" || prefix.empty()) return true;
    if (!path.starts_with(prefix)) continue;
    // "/v1/chat/completions" covers "/v1/chat/completions/x", not "/v1/chat/completionsX".
    if (path.size() == prefix.size() || prefix.back() == '/' || path[prefix.size()] == '/') return true;
  }
  return false;
}


IpAddress IpAddress::v6_loopback() {
  IpAddress ip;
  ip.family = 6;
  ip.bytes[15] = 1;
  return ip;
}

bool IpAddress::parse(std::string_view text, IpAddress& out) {
  std::string s(text);
  IpAddress ip;
  if (inet_pton(AF_INET, s.c_str(), ip.bytes.data()) == 1) {
    ip.family = 4;
    out = ip;
    return true;
  }
  if (inet_pton(AF_INET6, s.c_str(), ip.bytes.data()) == 1) {
    ip.family = 6;
    out = ip;
    return true;
  }
  return false;
}

std::string IpAddress::to_string() const {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(family == 6 ? AF_INET6 : AF_INET, bytes.data(), buf, sizeof buf);
  return buf;
}

namespace {

template <std::size_t Capacity>
void append_decimal(FixedText<Capacity>& out, unsigned value) {
  char digits[10];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value != 0);
  while (n > 0) out.push_back(digits[--n]);
}

}  // namespace

Endpoint::Text Endpoint::text() const {
  // Written twice for every record: no printf (inet_ntop's IPv4 path), no format parsing,
  // no allocation.
  Text out;
  if (address.family == 6) {
    char buf[INET6_ADDRSTRLEN] = {};
    inet_ntop(AF_INET6, address.bytes.data(), buf, sizeof buf);
    out.push_back('[');
    out.append(buf);
    out.append("]:");
  } else {
    for (int i = 0; i < 4; ++i) {
      if (i > 0) out.push_back('.');
      append_decimal(out, address.bytes[static_cast<std::size_t>(i)]);
    }
    out.push_back(':');
  }
  append_decimal(out, port);
  return out;
}

std::string Endpoint::to_string() const { return std::string(text().view()); }

TimestampText timestamp_text(timestamp_us ts) {
  std::time_t seconds = static_cast<std::time_t>(ts / kMicrosPerSecond);
  long micros = static_cast<long>(ts % kMicrosPerSecond);
  if (micros < 0) {
    micros += kMicrosPerSecond;
    --seconds;
  }
  // Records of one second share "2026-11-24T15:21:53": compute it once per second.
  thread_local std::time_t cached_second = -1;
  thread_local TimestampText cached_prefix;
  if (seconds != cached_second) {
    std::tm utc{};
    gmtime_r(&seconds, &utc);
    // Years beyond 9999 (a corrupt timestamp) are cut to fit, never written past the end.
    const auto written = fmt::format_to_n(cached_prefix.bytes.data(), cached_prefix.bytes.size() - 8,
                                          "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.", utc.tm_year + 1900,
                                          utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec);
    cached_prefix.size = std::min(written.size, cached_prefix.bytes.size() - 8);
    cached_second = seconds;
  }
  TimestampText out = cached_prefix;
  char fraction[6];
  for (int i = 5; i >= 0; --i, micros /= 10) fraction[i] = static_cast<char>('0' + micros % 10);
  out.append(std::string_view(fraction, 6));
  out.push_back('Z');
  return out;
}

std::string format_timestamp(timestamp_us ts) { return std::string(timestamp_text(ts).view()); }

}  // namespace chatcap
