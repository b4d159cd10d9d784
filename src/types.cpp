#include "chatcap/types.hpp"

#include <arpa/inet.h>

#include <ctime>

#include <fmt/format.h>

namespace chatcap {

IpAddress IpAddress::v4(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d) {
  IpAddress ip;
  ip.family = 4;
  ip.bytes[0] = a;
  ip.bytes[1] = b;
  ip.bytes[2] = c;
  ip.bytes[3] = d;
  return ip;
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

std::string Endpoint::to_string() const {
  if (address.family == 6) return fmt::format("[{}]:{}", address.to_string(), port);
  return fmt::format("{}:{}", address.to_string(), port);
}

std::string format_timestamp(timestamp_us ts) {
  std::time_t seconds = static_cast<std::time_t>(ts / kMicrosPerSecond);
  long micros = static_cast<long>(ts % kMicrosPerSecond);
  if (micros < 0) {
    micros += kMicrosPerSecond;
    --seconds;
  }
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", utc.tm_year + 1900, utc.tm_mon + 1,
                     utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, micros);
}

}  // namespace chatcap
