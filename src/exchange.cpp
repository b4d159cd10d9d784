#include "chatcap/exchange.hpp"

#include <algorithm>

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

std::string_view find_header(const std::vector<Header>& headers, std::string_view name) {
  for (const Header& h : headers) {
    if (iequals(h.name, name)) return h.value;
  }
  return {};
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
