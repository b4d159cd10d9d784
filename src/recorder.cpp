#include "chatcap/recorder.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <array>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <simdjson.h>

#include "chatcap/json_read.hpp"
#include "chatcap/json_writer.hpp"
#include "chatcap/risks.hpp"

namespace chatcap {
namespace {


std::string base64(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::string sha256_hex(std::string_view bytes) {
  // Fetched once: OpenSSL 3 looks the algorithm up in its providers on every implicit fetch.
  static EVP_MD* const kSha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &length, kSha256, nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * length);
  for (unsigned int i = 0; i < length; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 0xF];
  }
  return hex;
}

// A client sends the same key with every request: its redacted form is remembered for the
// last few values seen, not hashed again (OpenSSL's digest call costs more than all the rest
// of a request's headers). Long values (cookies) are not kept.
const std::string& redacted(std::string_view value) {
  struct Recent {
    std::string value;
    std::string redacted;  // empty: unused
  };
  constexpr std::size_t kRemembered = 4;
  constexpr std::size_t kLongest = 512;
  thread_local std::array<Recent, kRemembered> recent;
  thread_local std::size_t next = 0;
  thread_local std::string uncached;
  for (const Recent& r : recent) {
    if (!r.redacted.empty() && r.value == value) return r.redacted;
  }
  if (value.size() > kLongest) {
    uncached = redact_value(value);
    return uncached;
  }
  Recent& slot = recent[next++ % kRemembered];
  slot.value.assign(value);
  slot.redacted = redact_value(value);
  return slot.redacted;
}

void put_headers(JsonWriter& w, const std::vector<Header>& headers, bool redact) {
  w.begin_array();
  for (const Header& h : headers) {
    bool hide = redact && is_credential_header(h.name);
    w.begin_array().string(h.name).string(hide ? std::string_view(redacted(h.value)) : std::string_view(h.value)).end_array();
  }
  w.end_array();
}

// Body as the record keeps it: byte-exact text, or base64 when it is not UTF-8.
void put_body(JsonWriter& w, const Body& body) {
  if (simdjson::validate_utf8(body.bytes.data(), body.bytes.size())) {
    w.field("body", body.bytes);
  } else {
    w.field("body", base64(body.bytes)).field("body_encoding", "base64");
  }
  w.field("body_bytes", body.total);
  if (body.truncated) w.field("body_truncated", true);
}

void put_anomalies(JsonWriter& w, const Exchange& ex) {
  std::uint32_t anomalies = ex.anomalies;
  // A raw event stream kept short (--stream-body) loses nothing: its events are in `sse`.
  bool response_cut = ex.response.body.truncated && !ex.response.event_stream;
  if (ex.request.body.truncated || response_cut) anomalies |= bit(Anomaly::body_truncated);
  w.key("anomalies").begin_array();
  for (std::string_view name : anomaly_names(anomalies)) w.string(name);
  w.end_array();
}

// Raw JSON text read by simdjson's on-demand API, which does not validate what it skips:
// embedded as a value only once it is known to be valid JSON, else kept as a string.
void put_raw_or_null(JsonWriter& w, const std::string& text) {
  if (text.empty()) {
    w.null();
  } else if (json_read::is_valid_json(text)) {
    w.raw(text);
  } else {
    w.string(text);
  }
}

void put_summary(JsonWriter& w, const RequestSummary& s) {
  w.key("summary").begin_object();
  if (!s.model.empty()) w.field("model", s.model);
  if (s.stream) w.field("stream", *s.stream);
  if (s.max_tokens) w.field("max_tokens", *s.max_tokens);
  // What the request holds of the conversation, under its dialect's name.
  if (s.input_items) {
    w.field("input_items", *s.input_items);
  } else if (s.prompts) {
    w.field("prompts", *s.prompts);
  } else {
    w.field("messages", s.messages);
  }
  if (s.n) w.field("n", *s.n);
  w.field("tools", s.tools);
  if (!s.structured_output_json.empty()) {
    w.key("structured_output");
    put_raw_or_null(w, s.structured_output_json);
  }
  w.end_object();
}

void put_risks(JsonWriter& w, std::uint32_t risks) {
  if (risks == 0) return;
  w.key("risks").begin_array();
  for (const RiskEntry* risk : risks_in(risks)) {
    w.begin_object().field("id", risk->id).field("why", risk->why).field("ref", risk->ref).end_object();
  }
  w.end_array();
}

// Usage in tokens, normalised: input_tokens (prompt_tokens in chat and completions) and
// output_tokens (completion_tokens), from what the reader set or else the dialect's object.
struct Tokens {
  std::optional<std::int64_t> input;
  std::optional<std::int64_t> output;
};

Tokens tokens_of(const Answer& a) {
  Tokens t{a.input_tokens, a.output_tokens};
  if ((t.input && t.output) || a.usage_json.empty()) return t;
  thread_local simdjson::dom::parser parser;
  simdjson::dom::object usage;
  if (parser.parse(a.usage_json.data(), a.usage_json.size(), true).get(usage) != simdjson::SUCCESS) return t;
  auto first_of = [&](std::initializer_list<std::string_view> names) -> std::optional<std::int64_t> {
    for (std::string_view name : names) {
      std::int64_t value = 0;
      if (usage[name].get(value) == simdjson::SUCCESS) return value;
    }
    return std::nullopt;
  };
  if (!t.input) t.input = first_of({"input_tokens", "prompt_tokens"});
  if (!t.output) t.output = first_of({"output_tokens", "completion_tokens"});
  return t;
}

// Tool calls in OpenAI's message shape, whatever the dialect: what `jq '.tool_calls[].function'`
// expects.
void put_tool_calls(JsonWriter& w, const std::vector<ToolCall>& calls) {
  w.key("tool_calls").begin_array();
  for (const ToolCall& call : calls) {
    w.begin_object()
        .field("index", call.index)
        .field("id", call.id)
        .field("type", call.type.empty() ? std::string_view("function") : std::string_view(call.type));
    w.key("function").begin_object().field("name", call.name).field("arguments", call.arguments).end_object();
    w.end_object();
  }
  w.end_array();
}

void put_answer(JsonWriter& w, const Answer& a, bool streamed) {
  w.key(streamed ? "sse" : "answer").begin_object();
  if (streamed) w.field("events", a.events).field("done", a.done);
  if (a.dialect != Dialect::unknown) w.field("dialect", to_string(a.dialect));
  w.field("content", a.content).field("reasoning", a.reasoning);
  put_tool_calls(w, a.tool_calls);
  w.key("finish_reason");
  a.finish_reason.empty() ? w.null() : w.string(a.finish_reason);
  if (!a.native_finish_reason.empty() && a.native_finish_reason != a.finish_reason) {
    w.field("native_finish_reason", a.native_finish_reason);
  }
  const Tokens tokens = tokens_of(a);
  if (tokens.input) w.field("input_tokens", *tokens.input);
  if (tokens.output) w.field("output_tokens", *tokens.output);
  w.key("usage");
  put_raw_or_null(w, a.usage_json);
  w.key("error");
  put_raw_or_null(w, a.error_json);
  if (!a.model.empty()) w.field("model", a.model);
  if (a.bad_events > 0) w.field("bad_events", a.bad_events);
  if (a.text_truncated) w.field("text_truncated", true);
  w.end_object();
}

void put_ms(JsonWriter& w, std::string_view name, timestamp_us from, timestamp_us to) {
  w.key(name);
  if (from == 0 || to == 0) {
    w.null();
  } else {
    w.millis(to - from);
  }
}

void put_timing(JsonWriter& w, const Exchange& ex) {
  const ExchangeTimes& t = ex.times;
  timestamp_us origin = t.request_end != 0 ? t.request_end : t.request_start;
  w.key("timing").begin_object();
  put_ms(w, "request_ms", t.request_start, t.request_end);
  put_ms(w, "ttfb_ms", origin, t.response_start);
  put_ms(w, "ttft_ms", origin, ex.answer.first_token_ts);
  put_ms(w, "duration_ms", t.request_start, t.response_end);
  const Answer::GapMedianP99 gaps = ex.answer.gap_p50_p99_us();
  for (auto [name, value] : {std::pair{"itl_ms_p50", gaps.p50_us}, std::pair{"itl_ms_p99", gaps.p99_us}}) {
    w.key(name);
    value ? w.millis(*value) : w.null();
  }
  w.end_object();
}

void put_common(JsonWriter& w, std::string_view type, const Exchange& ex, timestamp_us ts) {
  w.field("type", type)
      .field("id", ex.id)
      .field("seq", ex.seq)
      .field("ts", timestamp_text(ts).view())
      .field("client", ex.client.text().view())
      .field("server", ex.server.text().view())
      .field("method", ex.request.method)
      .field("target", ex.request.target);
}

}  // namespace

bool is_credential_header(std::string_view name) {
  static constexpr std::string_view kCredentials[] = {"authorization", "proxy-authorization", "cookie",
                                                      "set-cookie",    "x-api-key",           "api-key"};
  return std::any_of(std::begin(kCredentials), std::end(kCredentials),
                     [&](std::string_view c) { return iequals(name, c); });
}

std::string redact_value(std::string_view value) {
  return fmt::format("<redacted sha256:{}>", sha256_hex(value).substr(0, 8));
}

void format_request_record(const Exchange& ex, bool redact, std::string& out, const RequestSummary* summary) {
  JsonWriter w(out);
  w.begin_object();
  put_common(w, "request", ex, ex.times.request_start);
  w.field("version", ex.request.version).field("complete", ex.request.complete);
  if (ex.watched_only) w.field("watched_only", true);
  w.key("headers");
  put_headers(w, ex.request.headers, redact);
  put_body(w, ex.request.body);
  if (summary == nullptr) summary = ex.request.summary.get();
  if (summary != nullptr) put_summary(w, *summary);
  put_risks(w, ex.request.risks);
  put_anomalies(w, ex);
  if (!ex.error.empty()) w.field("error", ex.error);
  w.end_object();
  out += '\n';
}

void format_exchange_record(const Exchange& ex, bool redact, std::string& out) {
  JsonWriter w(out);
  w.begin_object();
  put_common(w, "exchange", ex, ex.times.response_end != 0 ? ex.times.response_end : ex.times.request_start);
  if (ex.watched_only) w.field("watched_only", true);
  w.field("state", to_string(ex.state)).field("status", ex.response.status);
  if (!ex.response.reason.empty()) w.field("reason", ex.response.reason);
  if (!ex.response.interim_statuses.empty()) {
    w.key("interim").begin_array();
    for (int status : ex.response.interim_statuses) w.number(static_cast<std::int64_t>(status));
    w.end_array();
  }
  w.key("response_headers");
  put_headers(w, ex.response.headers, redact);
  put_body(w, ex.response.body);
  if (ex.response.event_stream) {
    put_answer(w, ex.answer, true);
  } else if (ex.answer.has_something()) {
    put_answer(w, ex.answer, false);
  }
  put_timing(w, ex);
  put_anomalies(w, ex);
  if (ex.close_reason != CloseReason::none) w.field("close", to_string(ex.close_reason));
  if (ex.gap_bytes > 0) w.field("gap_bytes", ex.gap_bytes);
  if (!ex.error.empty()) w.field("error", ex.error);
  w.end_object();
  out += '\n';
}

std::string format_request_record(const Exchange& ex, bool redact) {
  std::string out;
  format_request_record(ex, redact, out);
  return out;
}

std::string format_exchange_record(const Exchange& ex, bool redact) {
  std::string out;
  format_exchange_record(ex, redact, out);
  return out;
}

std::string format_server_down_record(const ServerDown& down) {
  std::string out;
  JsonWriter w(out);
  w.begin_object()
      .field("type", "server_down")
      .field("ts", format_timestamp(down.ts))
      .field("server", down.server.to_string())
      .field("kind", down.kind);
  w.key("evidence").begin_array();
  for (const std::string& line : down.evidence) w.string(line);
  w.end_array();
  w.key("suspects").begin_array();
  for (const Suspect& s : down.suspects) {
    w.begin_object()
        .field("id", s.id)
        .field("seq", s.seq)
        .field("client", s.client)
        .field("request_ts", format_timestamp(s.request_end))
        .field("target", s.target)
        .field("token_events", s.token_events)
        .field("in_flight", s.still_in_flight);
    if (s.watched_only) w.field("watched_only", true);
    if (!s.retry_of.empty()) w.field("retry_of", s.retry_of);
    w.key("risks").begin_array();
    for (const RiskEntry* risk : risks_in(s.risks)) w.string(risk->id);
    w.end_array();
    w.field("why", s.why).end_object();
  }
  w.end_array().end_object();
  out += '\n';
  return out;
}

namespace {

// Captured text in a sentence for a terminal or the journal: printable ASCII kept, any other
// byte shown as '?', at most `limit` bytes.
std::string printable(std::string_view text, std::size_t limit = 160) {
  std::string out;
  for (char c : text.substr(0, limit)) out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  if (text.size() > limit) out += "...";
  return out;
}

}  // namespace

std::string risk_notice(const Exchange& ex) {
  std::vector<std::string> risks;
  for (const RiskEntry* risk : risks_in(ex.request.risks)) {
    risks.push_back(fmt::format("{} ({}: {}; vLLM {})", risk->id, risk->ref, risk->why, risk->versions));
  }
  return fmt::format("request {} ({} {} from {}) carries a known engine killer: {} — `chatcap show {}`", ex.id,
                     printable(ex.request.method, 16), printable(ex.request.target), ex.client.to_string(),
                     fmt::join(risks, "; "), ex.id);
}

Recorder::Recorder(RecorderConfig config, RecordSink& sink) : config_(std::move(config)), sink_(sink) {}

void Recorder::on_request_complete(Exchange& exchange) {
  if (!exchange.kept()) return;
  line_.clear();
  format_request_record(exchange, config_.redact, line_);
  if (exchange.recorded) {
    sink_.write_record(RecordType::request, exchange.id, line_);
    ++requests_written_;
  } else {
    sink_.write_record(RecordType::watched_request, exchange.id, line_);
    ++watched_requests_written_;
  }
  if (exchange.request.risks != 0) {
    ++risky_requests_;
    sink_.on_risk_notice(risk_notice(exchange));
  }
  // Written: what the summary held is on disk, and an exchange may stay open for minutes
  // (10,000 idle in-flight requests would hold 2.7 MiB of summaries). A pinned copy at a
  // death reads the body again.
  exchange.request.summary.reset();
}

void Recorder::on_exchange_end(Exchange& exchange) {
  ++by_state_[static_cast<std::size_t>(exchange.state)];
  if (!exchange.kept()) {
    ++exchanges_filtered_;
    return;
  }
  line_.clear();
  format_exchange_record(exchange, config_.redact, line_);
  sink_.write_record(exchange.recorded ? RecordType::exchange : RecordType::watched_exchange, exchange.id, line_);
  if (exchange.recorded) ++exchanges_written_;
}

void Recorder::on_server_down(const ServerDown& down) {
  // A watched-only suspect's request is copied next to the death: the watched log rotates on
  // its own (a flood of other requests would push it out), the ring keeps deaths N exchanges.
  for (const Suspect& suspect : down.suspects) {
    if (!suspect.watched_only || suspect.exchange == nullptr) continue;
    const Exchange& ex = *suspect.exchange;
    // The summary, released once the request record was written, read again from the body.
    std::optional<RequestSummary> summary;
    if (!ex.request.summary && ex.request.complete && !ex.request.body.truncated && !ex.request.body.bytes.empty()) {
      summary = summarize_request(ex.request.body.bytes, dialect_of(ex.request.target));
      if (!summary->json_valid) summary.reset();
    }
    line_.clear();
    format_request_record(ex, config_.redact, line_, summary ? &*summary : nullptr);
    line_.insert(line_.size() - 2, ",\"pinned\":true");  // before the closing "}\n"
    sink_.write_record(RecordType::pinned_request, suspect.id, line_);
  }
  sink_.write_record(RecordType::server_down, "", format_server_down_record(down));
  ++server_downs_written_;
}

}  // namespace chatcap
