#include "chatcap/exchange.hpp"

#include <algorithm>

namespace chatcap {

std::string_view find_header(const std::vector<Header>& headers, std::string_view name) {
  for (const Header& h : headers) {
    if (iequals(h.name, name)) return h.value;
  }
  return {};
}

std::string_view to_string(ExchangeState state) {
  switch (state) {
    case ExchangeState::in_flight: return "in_flight";
    case ExchangeState::complete: return "complete";
    case ExchangeState::aborted: return "aborted";
    case ExchangeState::timeout: return "timeout";
    case ExchangeState::capture_stopped: return "capture_stopped";
    case ExchangeState::parse_error: return "parse_error";
  }
  return "unknown";
}

std::vector<std::string_view> anomaly_names(std::uint32_t anomalies) {
  static constexpr std::pair<Anomaly, std::string_view> kNames[] = {
      {Anomaly::capture_gap, "capture_gap"},
      {Anomaly::body_truncated, "body_truncated"},
      {Anomaly::request_incomplete, "request_incomplete"},
      {Anomaly::midstream_pickup, "midstream_pickup"},
      {Anomaly::server_error_event, "server_error_event"},
      {Anomaly::unanswered_interim, "unanswered_interim"},
      {Anomaly::packet_truncated, "packet_truncated"},
      {Anomaly::capture_drops, "capture_drops"},
      {Anomaly::sse_incomplete, "sse_incomplete"},
      {Anomaly::server_down, "server_down"},
      {Anomaly::tunnel, "tunnel"},
      {Anomaly::unreadable_events, "unreadable_events"},
  };
  std::vector<std::string_view> names;
  for (const auto& [flag, name] : kNames) {
    if ((anomalies & bit(flag)) != 0) names.push_back(name);
  }
  return names;
}

std::string_view to_string(CloseReason reason) {
  switch (reason) {
    case CloseReason::none: return "none";
    case CloseReason::client_fin: return "client_fin";
    case CloseReason::client_rst: return "client_rst";
    case CloseReason::server_fin: return "server_fin";
    case CloseReason::server_rst: return "server_rst";
  }
  return "unknown";
}

void Body::append(std::string_view data, std::size_t cap) {
  total += data.size();
  std::size_t room = cap > bytes.size() ? cap - bytes.size() : 0;
  if (data.size() > room) truncated = true;
  bytes.append(data.substr(0, room));
}

void Body::clear() {
  bytes.clear();
  total = 0;
  truncated = false;
}

}  // namespace chatcap
