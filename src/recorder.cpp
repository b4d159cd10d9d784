#include "chatcap/recorder.hpp"

#include <openssl/evp.h>

#include <algorithm>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <simdjson.h>

namespace chatcap {
namespace {

using json = nlohmann::ordered_json;

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return (x | 0x20) == (y | 0x20); });
}

std::string_view path_of(std::string_view target) {
  // absolute-form ("http://host:port/path?q") → "/path"
  if (std::size_t scheme = target.find("://"); scheme != std::string_view::npos && scheme < 8) {
    std::size_t slash = target.find('/', scheme + 3);
    target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
  }
  std::size_t query = target.find_first_of("?#");
  return query == std::string_view::npos ? target : target.substr(0, query);
}

std::string base64(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::string sha256_hex(std::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha256(), nullptr);
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) hex += fmt::format("{:02x}", digest[i]);
  return hex;
}

json headers_json(const std::vector<Header>& headers, bool redact) {
  json out = json::array();
  for (const Header& h : headers) {
    bool hide = redact && is_credential_header(h.name);
    out.push_back(json::array({h.name, hide ? redact_value(h.value) : h.value}));
  }
  return out;
}

// Body as the record keeps it: byte-exact text, or base64 when it is not UTF-8.
void put_body(json& record, const Body& body) {
  if (simdjson::validate_utf8(body.bytes.data(), body.bytes.size())) {
    record["body"] = body.bytes;
  } else {
    record["body"] = base64(body.bytes);
    record["body_encoding"] = "base64";
  }
  record["body_bytes"] = body.total;
  if (body.truncated) record["body_truncated"] = true;
}

json anomalies_json(const Exchange& ex) {
  std::uint32_t anomalies = ex.anomalies;
  if (ex.request.body.truncated || ex.response.body.truncated) anomalies |= bit(Anomaly::body_truncated);
  json out = json::array();
  for (std::string_view name : anomaly_names(anomalies)) out.push_back(name);
  return out;
}

// Raw JSON text (from simdjson) embedded as a value; text that does not parse is kept as a string.
json embed_raw(const std::string& text) {
  if (text.empty()) return nullptr;
  json value = json::parse(text, nullptr, false);
  return value.is_discarded() ? json(text) : value;
}

json summary_json(const RequestSummary& s) {
  json out = json::object();
  if (!s.model.empty()) out["model"] = s.model;
  if (s.stream) out["stream"] = *s.stream;
  if (s.max_tokens) out["max_tokens"] = *s.max_tokens;
  out["messages"] = s.messages;
  if (s.n) out["n"] = *s.n;
  out["tools"] = s.tools;
  if (!s.structured_output_json.empty()) out["structured_output"] = embed_raw(s.structured_output_json);
  return out;
}

json tool_calls_json(const std::vector<ToolCallDelta>& calls) {
  json out = json::array();
  for (const ToolCallDelta& call : calls) {
    json c = {{"index", call.index}, {"id", call.id}, {"type", call.type}, {"name", call.name},
              {"arguments", call.arguments}};
    out.push_back(std::move(c));
  }
  return out;
}

json answer_json(const ChatAnswer& a, bool streamed) {
  json out = json::object();
  if (streamed) {
    out["events"] = a.events;
    out["done"] = a.done;
  }
  out["content"] = a.content;
  out["reasoning"] = a.reasoning;
  out["tool_calls"] = tool_calls_json(a.tool_calls);
  out["finish_reason"] = a.finish_reason.empty() ? json(nullptr) : json(a.finish_reason);
  out["usage"] = embed_raw(a.usage_json);
  out["error"] = embed_raw(a.error_json);
  if (!a.model.empty()) out["model"] = a.model;
  if (a.bad_events > 0) out["bad_events"] = a.bad_events;
  if (a.text_truncated) out["text_truncated"] = true;
  return out;
}

bool answer_has_something(const ChatAnswer& a) {
  return !a.content.empty() || !a.reasoning.empty() || !a.tool_calls.empty() || !a.finish_reason.empty() ||
         !a.error_json.empty() || !a.usage_json.empty();
}

json optional_ms(timestamp_us from, timestamp_us to) {
  if (from == 0 || to == 0) return nullptr;
  return millis_between(from, to);
}

json timing_json(const Exchange& ex) {
  const ExchangeTimes& t = ex.times;
  timestamp_us origin = t.request_end != 0 ? t.request_end : t.request_start;
  json out = json::object();
  out["request_ms"] = optional_ms(t.request_start, t.request_end);
  out["ttfb_ms"] = optional_ms(origin, t.response_start);
  out["ttft_ms"] = optional_ms(origin, ex.answer.first_token_ts);
  out["duration_ms"] = optional_ms(t.request_start, t.response_end);
  auto p50 = ex.answer.gap_percentile_ms(50);
  auto p99 = ex.answer.gap_percentile_ms(99);
  out["itl_ms_p50"] = p50 ? json(*p50) : json(nullptr);
  out["itl_ms_p99"] = p99 ? json(*p99) : json(nullptr);
  return out;
}

std::string finish_line(const json& record) {
  // Headers and targets may hold bytes that are not UTF-8; bodies were already made safe.
  std::string line = record.dump(-1, ' ', false, json::error_handler_t::replace);
  line += '\n';
  return line;
}

}  // namespace

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

bool is_credential_header(std::string_view name) {
  static constexpr std::string_view kCredentials[] = {"authorization", "proxy-authorization", "cookie",
                                                      "set-cookie",    "x-api-key",           "api-key"};
  return std::any_of(std::begin(kCredentials), std::end(kCredentials),
                     [&](std::string_view c) { return iequals(name, c); });
}

std::string redact_value(std::string_view value) {
  return fmt::format("<redacted sha256:{}>", sha256_hex(value).substr(0, 8));
}

std::string format_request_record(const Exchange& ex, bool redact) {
  json r = json::object();
  r["type"] = "request";
  r["id"] = ex.id;
  r["seq"] = ex.seq;
  r["ts"] = format_timestamp(ex.times.request_start);
  r["client"] = ex.client.to_string();
  r["server"] = ex.server.to_string();
  r["method"] = ex.request.method;
  r["target"] = ex.request.target;
  r["version"] = ex.request.version;
  r["complete"] = ex.request.complete;
  r["headers"] = headers_json(ex.request.headers, redact);
  put_body(r, ex.request.body);
  if (ex.request.complete && !ex.request.body.truncated) {
    RequestSummary summary = summarize_chat_request(ex.request.body.bytes);
    if (summary.json_valid) r["summary"] = summary_json(summary);
  }
  r["anomalies"] = anomalies_json(ex);
  if (!ex.error.empty()) r["error"] = ex.error;
  return finish_line(r);
}

std::string format_exchange_record(const Exchange& ex, bool redact) {
  json r = json::object();
  r["type"] = "exchange";
  r["id"] = ex.id;
  r["seq"] = ex.seq;
  r["ts"] = format_timestamp(ex.times.response_end != 0 ? ex.times.response_end : ex.times.request_start);
  r["client"] = ex.client.to_string();
  r["server"] = ex.server.to_string();
  r["method"] = ex.request.method;
  r["target"] = ex.request.target;
  r["state"] = to_string(ex.state);
  r["status"] = ex.response.status;
  if (!ex.response.reason.empty()) r["reason"] = ex.response.reason;
  if (!ex.response.interim_statuses.empty()) r["interim"] = ex.response.interim_statuses;
  r["response_headers"] = headers_json(ex.response.headers, redact);
  put_body(r, ex.response.body);
  bool streamed = ex.response.event_stream;
  if (streamed) {
    r["sse"] = answer_json(ex.answer, true);
  } else if (answer_has_something(ex.answer)) {
    r["answer"] = answer_json(ex.answer, false);
  }
  r["timing"] = timing_json(ex);
  r["anomalies"] = anomalies_json(ex);
  if (ex.close_reason != CloseReason::none) r["close"] = to_string(ex.close_reason);
  if (ex.gap_bytes > 0) r["gap_bytes"] = ex.gap_bytes;
  if (!ex.error.empty()) r["error"] = ex.error;
  return finish_line(r);
}

std::string format_server_down_record(const ServerDown& down) {
  json r = json::object();
  r["type"] = "server_down";
  r["ts"] = format_timestamp(down.ts);
  r["server"] = down.server.to_string();
  r["kind"] = down.kind;
  r["evidence"] = down.evidence;
  json suspects = json::array();
  for (const Suspect& s : down.suspects) {
    suspects.push_back(json{{"id", s.id},
                            {"seq", s.seq},
                            {"client", s.client},
                            {"request_ts", format_timestamp(s.request_end)},
                            {"token_events", s.token_events},
                            {"in_flight", s.still_in_flight},
                            {"why", s.why}});
  }
  r["suspects"] = std::move(suspects);
  return finish_line(r);
}

Recorder::Recorder(RecorderConfig config, RecordSink& sink) : config_(std::move(config)), sink_(sink) {
  filter_ = [this](std::string_view target) { return target_matches(target, config_.endpoints); };
}

void Recorder::on_request_complete(Exchange& exchange) {
  if (!exchange.recorded) return;
  sink_.write_record(RecordType::request, exchange.id, format_request_record(exchange, config_.redact));
  ++requests_written_;
}

void Recorder::on_exchange_end(Exchange& exchange) {
  ++by_state_[static_cast<std::size_t>(exchange.state)];
  if (!exchange.recorded) {
    ++exchanges_filtered_;
    return;
  }
  sink_.write_record(RecordType::exchange, exchange.id, format_exchange_record(exchange, config_.redact));
  ++exchanges_written_;
}

}  // namespace chatcap

namespace chatcap {

void Recorder::on_server_down(const ServerDown& down) {
  sink_.write_record(RecordType::server_down, "", format_server_down_record(down));
  ++server_downs_written_;
}

}  // namespace chatcap
