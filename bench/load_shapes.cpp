#include "load_shapes.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <ctime>
#include <memory>
#include <queue>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace bench {
namespace {

using json = nlohmann::ordered_json;  // expectation lines keep a readable field order

constexpr micros kMs = 1000, kSecond = 1000 * kMs;
constexpr micros kEpoch = 1795000000 * kSecond;  // 2026-11-18: captures start here
constexpr std::string_view kModel = "gpt-oss-120b";
constexpr std::string_view kTarget = "/v1/chat/completions";

// splitmix64: small, fast, and the same sequence on every platform and standard library
// (std::uniform_*_distribution is not), so a seed names one capture everywhere.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  std::int64_t range(std::int64_t lo, std::int64_t hi) {  // inclusive
    return lo + static_cast<std::int64_t>(next() % static_cast<std::uint64_t>(hi - lo + 1));
  }
  bool chance(double p) { return static_cast<double>(next() >> 11) * 0x1.0p-53 < p; }
  std::string hex(int digits) {
    std::string out;
    while (static_cast<int>(out.size()) < digits) out += fmt::format("{:016x}", next());
    out.resize(static_cast<std::size_t>(digits));
    return out;
  }

 private:
  std::uint64_t state_;
};

// Most tokens are plain words; a few are what breaks naive decoders: JSON escapes, control
// characters, raw multi-byte UTF-8, text that looks like SSE or shell.
constexpr std::string_view kWords[] = {
    "the",    "model",  "streams", "tokens", "over",   "a",       "loopback", "server",  "and",     "request",
    "answer", "of",     "to",      "in",     "is",     "that",    "it",       "for",     "with",    "as",
    "on",     "was",    "this",    "by",     "be",     "are",     "from",     "at",      "or",      "which",
    "we",     "can",    "data",    "time",   "first",  "each",    "when",     "one",     "also",    "has",
    "new",    "more",   "will",    "token",  "batch",  "cache",   "prefix",   "engine",  "GPU",     "kernel",
    "memory", "latency", "schedule", "decode", "prefill", "attention", "layer", "weights", "vLLM", "output"};
constexpr std::string_view kAwkward[] = {
    "café", "naïve", "日本語", "—", "🚀", "Ωmega", "ß", "\"quoted\"", "back\\slash", "C:\\path\\to",
    "line\nbreak", "tab\there", "$(id)", "<b>bold</b>", "&amp;", "100%", "{brace}", "[bracket]",
    "data: not-an-event", "\r\n", "\x01" "ctl", "end."};
constexpr std::string_view kReasoningWords[] = {"Let", "me", "think", "about", "this", "carefully", "the",
                                                "user", "wants", "a", "tool", "call", "so", "première", "étape",
                                                "—", "check", "weather", "first", "then", "answer"};

template <std::size_t N>
std::string_view pick(Rng& rng, const std::string_view (&list)[N]) {
  return list[rng.next() % N];
}

// One BPE-like token of running text: a leading space except at the start.
std::string token(Rng& rng, bool first, bool reasoning = false) {
  std::string_view word = reasoning ? pick(rng, kReasoningWords) : rng.chance(0.08) ? pick(rng, kAwkward) : pick(rng, kWords);
  return first ? std::string(word) : " " + std::string(word);
}

// A JSON string literal, the way vLLM (pydantic) writes it: raw UTF-8, escapes only where
// JSON requires them.
void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          out += fmt::format("\\u{:04x}", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}
std::string json_string(std::string_view s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

std::string sha256_hex(std::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha256(), nullptr);
  std::string out;
  for (unsigned int i = 0; i < length; ++i) out += fmt::format("{:02x}", digest[i]);
  return out;
}

std::string http_date(micros ts) {
  std::time_t seconds = static_cast<std::time_t>(ts / kSecond);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return buf;
}

std::string endpoint_text(const Endpoint& e) {
  return fmt::format("{}.{}.{}.{}:{}", e.ip >> 24, (e.ip >> 16) & 0xff, (e.ip >> 8) & 0xff, e.ip & 0xff, e.port);
}

// Cuts text into pieces of 1–8 code points, never inside a UTF-8 sequence (each piece must
// be valid UTF-8 to travel as a JSON string), as a model emits tool-call arguments.
std::vector<std::string> fragments(Rng& rng, std::string_view text) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t start = i;
    for (std::int64_t points = rng.range(1, 8); points > 0 && i < text.size(); --points) {
      ++i;
      while (i < text.size() && (static_cast<unsigned char>(text[i]) & 0xc0) == 0x80) ++i;
    }
    out.emplace_back(text.substr(start, i - start));
  }
  return out;
}

struct ToolCallPlan {
  int index = 0;
  std::string id, name, arguments;
};

// The answer a request gets, and what a recorder must assemble from it.
struct AnswerPlan {
  bool stream = true;
  std::string reasoning_field = "reasoning_content";  // vLLM's older name; newer ones say "reasoning"
  std::vector<std::string> reasoning, content;        // tokens
  std::vector<ToolCallPlan> tool_calls;
  std::vector<std::vector<std::string>> argument_fragments;  // per tool call
  std::string finish_reason = "stop";
  bool usage = true;
  int prompt_tokens = 0;

  int completion_tokens() const {
    std::size_t n = reasoning.size() + content.size();
    for (const auto& f : argument_fragments) n += f.size();
    return static_cast<int>(n);
  }
  std::string usage_json() const {
    return fmt::format(R"({{"prompt_tokens":{},"total_tokens":{},"completion_tokens":{}}})", prompt_tokens,
                       prompt_tokens + completion_tokens(), completion_tokens());
  }
};

std::string joined(const std::vector<std::string>& tokens) {
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

// How a shape's traffic is paced.
struct Pace {
  micros start_spread;          // connections open uniformly over this
  micros ttft_min, ttft_max;    // request → first event (or → non-streamed answer)
  micros gap_min, gap_max;      // between events: per-connection speed, ±50% jitter per event
  micros think_min, think_max;  // end of an answer → next request on the connection
};

Pace pace_for(Shape shape) {
  switch (shape) {
    case Shape::idle_inflight: return {10 * kSecond, 0, 0, 0, 0, 50 * kMs, 200 * kMs};
    case Shape::big_body: return {0, 200 * kMs, 400 * kMs, 10 * kMs, 30 * kMs, 100 * kMs, 200 * kMs};
    case Shape::small_nonstream: return {1 * kSecond, 5 * kMs, 80 * kMs, 0, 0, 1 * kMs, 20 * kMs};
    case Shape::standard:
    case Shape::reasoning_tools: break;
  }
  return {2 * kSecond, 20 * kMs, 400 * kMs, 10 * kMs, 40 * kMs, 5 * kMs, 300 * kMs};
}

class Generator {
 public:
  Generator(const LoadConfig& config, PcapWriter& out, std::ostream& expect)
      : config_(config), pace_(pace_for(config.shape)), rng_(config.seed), out_(out), expect_(expect) {}

  LoadSummary run();

 private:
  // One connection slot: runs `scale` connections one after another.
  struct Slot {
    std::unique_ptr<TcpConnection> conn;
    int connections_left = 0;
    int exchanges_left = 0;
    micros t = 0;          // when the slot's next action starts
    micros token_gap = 0;  // this connection's decoding speed
    bool closed = false;   // its FIN exchange is queued
  };

  void refill(Slot& slot);  // queues the slot's next exchange / close / connection
  void open_connection(Slot& slot);
  void exchange(Slot& slot);
  std::string request_body(const AnswerPlan& plan, std::size_t size, bool tools);
  std::string request_headers(const std::string& key, std::size_t body_bytes) const;
  AnswerPlan plan_answer(std::uint64_t number);
  std::vector<std::string> sse_events(const AnswerPlan& plan, const std::string& id, micros created) const;
  std::string completion_body(const AnswerPlan& plan, const std::string& id, micros created) const;

  LoadConfig config_;
  Pace pace_;
  Rng rng_;
  PcapWriter& out_;
  std::ostream& expect_;
  std::vector<Slot> slots_;
  std::uint64_t connections_opened_ = 0;
  std::uint64_t exchanges_ = 0;
};

LoadSummary Generator::run() {
  slots_.resize(static_cast<std::size_t>(config_.connections));
  // Ready slots by the time of their next packet: popping the earliest interleaves every
  // connection's packets into one time-ordered capture.
  using Entry = std::pair<micros, std::size_t>;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> ready;
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    Slot& slot = slots_[i];
    slot.connections_left = config_.scale;
    slot.t = kEpoch + (pace_.start_spread > 0 ? rng_.range(0, pace_.start_spread) : 0);
    refill(slot);
    if (slot.conn && !slot.conn->pending().empty()) ready.emplace(slot.conn->pending().front().ts, i);
  }
  LoadSummary summary;
  bool first = true;
  while (!ready.empty()) {
    auto [ts, i] = ready.top();
    ready.pop();
    Slot& slot = slots_[i];
    auto& pending = slot.conn->pending();
    out_.write(pending.front());
    if (first) summary.first_ts = ts;
    first = false;
    summary.last_ts = std::max(summary.last_ts, ts);
    pending.pop_front();
    if (pending.empty()) refill(slot);
    if (slot.conn && !slot.conn->pending().empty()) ready.emplace(slot.conn->pending().front().ts, i);
  }
  summary.connections = connections_opened_;
  summary.exchanges = exchanges_;
  return summary;
}

void Generator::refill(Slot& slot) {
  if (slot.conn && !slot.closed && slot.exchanges_left > 0) {
    exchange(slot);
    return;
  }
  if (slot.conn && !slot.closed) {
    --slot.connections_left;
    // An idle in-flight connection stays open (its request never gets an answer); the
    // others close once their exchanges are done, and the slot's next connection follows.
    if (config_.shape != Shape::idle_inflight) {
      slot.t = slot.conn->close(slot.t) + rng_.range(1 * kMs, 20 * kMs);
      slot.closed = true;
      return;
    }
  }
  slot.conn.reset();
  slot.closed = false;
  if (slot.connections_left > 0) open_connection(slot);
}

void Generator::open_connection(Slot& slot) {
  // Ephemeral ports as Linux hands them out; past 28,232 connections (the default port
  // range) another loopback source address, so no two live connections share a 4-tuple.
  constexpr std::uint64_t kPorts = 60999 - 32768 + 1;
  std::uint64_t n = connections_opened_++;
  Endpoint client{static_cast<std::uint32_t>(kLoopback + n / kPorts), static_cast<std::uint16_t>(32768 + n % kPorts)};
  Endpoint server{kLoopback, config_.port};
  slot.conn = std::make_unique<TcpConnection>(client, server, static_cast<std::uint32_t>(rng_.next()),
                                              static_cast<std::uint32_t>(rng_.next()), config_.ack_every);
  slot.t = slot.conn->handshake(slot.t) + rng_.range(50, 500);
  slot.exchanges_left = config_.exchanges_per_connection;
  slot.token_gap = pace_.gap_max > 0 ? rng_.range(pace_.gap_min, pace_.gap_max) : 0;
  exchange(slot);
}

AnswerPlan Generator::plan_answer(std::uint64_t number) {
  AnswerPlan plan;
  int events = config_.events_per_exchange;
  events = std::max(6, static_cast<int>(rng_.range(events * 3 / 4, events * 5 / 4)));
  switch (config_.shape) {
    case Shape::standard: {
      plan.usage = rng_.chance(0.5);  // stream_options.include_usage
      // role, content deltas, finish, [usage], [DONE]
      int content = events - 3 - (plan.usage ? 1 : 0);
      for (int i = 0; i < content; ++i) plan.content.push_back(token(rng_, i == 0));
      if (rng_.chance(0.1)) plan.finish_reason = "length";
      break;
    }
    case Shape::reasoning_tools: {
      plan.usage = true;
      if (number % 4 == 3) plan.reasoning_field = "reasoning";
      int reasoning = events * 2 / 5;
      for (int i = 0; i < reasoning; ++i) plan.reasoning.push_back(token(rng_, i == 0, true));
      int content = rng_.chance(0.5) ? events / 10 : 0;  // some models say a word before calling
      for (int i = 0; i < content; ++i) plan.content.push_back(token(rng_, i == 0));
      int calls = rng_.chance(1.0 / 3) ? 2 : 1;
      // role + reasoning + content + per call (header + fragments) + finish + usage + [DONE]
      int fragment_budget = std::max(calls, events - 1 - reasoning - content - calls - 3);
      for (int c = 0; c < calls; ++c) {
        ToolCallPlan call;
        call.index = c;
        call.id = "chatcmpl-tool-" + rng_.hex(32);
        call.name = c == 0 ? "get_weather" : "search_documents";
        // Arguments grow word by word until their fragments use this call's budget.
        std::string query;
        std::vector<std::string> pieces;
        for (int w = 0;; ++w) {
          query += token(rng_, w == 0);
          call.arguments = "{\"city\": \"São Paulo\", \"query\": " + json_string(query) + ", \"days\": " +
                           std::to_string(w % 7 + 1) + ", \"metric\": true}";
          if (static_cast<int>(call.arguments.size()) >= fragment_budget / calls * 4) break;
        }
        plan.argument_fragments.push_back(fragments(rng_, call.arguments));
        plan.tool_calls.push_back(std::move(call));
      }
      plan.finish_reason = "tool_calls";
      break;
    }
    case Shape::small_nonstream:
    case Shape::big_body: {
      plan.stream = false;
      int content = static_cast<int>(rng_.range(10, 60));
      for (int i = 0; i < content; ++i) plan.content.push_back(token(rng_, i == 0));
      break;
    }
    case Shape::idle_inflight: break;
  }
  return plan;
}

std::string Generator::request_body(const AnswerPlan& plan, std::size_t size, bool tools) {
  std::string prefix = fmt::format(
      R"({{"model":"{}","messages":[{{"role":"system","content":"You are a helpful assistant."}},)"
      R"({{"role":"user","content":)",
      kModel);
  std::string suffix = "}]";
  if (tools) {
    suffix +=
        R"(,"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather forecast for a city",)"
        R"("parameters":{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}},)"
        R"("required":["city"]}}},{"type":"function","function":{"name":"search_documents",)"
        R"("parameters":{"type":"object","properties":{"query":{"type":"string"}}}}}],"tool_choice":"auto")";
  }
  suffix += plan.stream ? R"(,"stream":true)" : R"(,"stream":false)";
  if (plan.stream && plan.usage) suffix += R"(,"stream_options":{"include_usage":true})";
  suffix += fmt::format(R"(,"max_tokens":{},"temperature":0.7}})", plan.finish_reason == "length"
                                                                        ? plan.content.size()
                                                                        : 4096);
  // The user's message fills the body to `size` bytes exactly (or as small as it gets).
  std::string body = prefix;
  body.reserve(size + 64);
  body += '"';
  std::size_t room = size > prefix.size() + suffix.size() + 2 ? size - prefix.size() - suffix.size() - 2 : 0;
  std::size_t limit = body.size() + room;
  std::string piece;
  for (bool first = true;; first = false) {
    piece.clear();
    std::string t = token(rng_, first);
    append_json_string(piece, t);
    std::string_view escaped(piece);
    escaped = escaped.substr(1, escaped.size() - 2);  // without the quotes
    if (body.size() + escaped.size() > limit) break;
    body += escaped;
  }
  body.append(limit - body.size(), '.');
  body += '"';
  body += suffix;
  return body;
}

std::string Generator::request_headers(const std::string& key, std::size_t body_bytes) const {
  return fmt::format(
      "POST {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n"
      "Accept: application/json\r\nContent-Type: application/json\r\nUser-Agent: OpenAI/Python 1.54.4\r\n"
      "X-Stainless-Lang: python\r\nX-Stainless-Package-Version: 1.54.4\r\nAuthorization: Bearer sk-bench-{:016x}\r\n"
      "X-Request-Id: {}\r\nContent-Length: {}\r\n\r\n",
      kTarget, config_.port, config_.seed, key, body_bytes);
}

std::vector<std::string> Generator::sse_events(const AnswerPlan& plan, const std::string& id, micros created) const {
  std::string head = fmt::format(R"({{"id":"{}","object":"chat.completion.chunk","created":{},"model":"{}","choices":)", id,
                                 created / kSecond, kModel);
  auto chunk = [&](const std::string& delta, std::string_view finish = "null", std::string_view extra = "") {
    return fmt::format("data: {}[{{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":{}{}}}]}}\n\n", head,
                       delta, finish, extra);
  };
  std::vector<std::string> events;
  events.push_back(chunk(R"({"role":"assistant","content":""})"));
  for (const std::string& t : plan.reasoning) events.push_back(chunk("{\"" + plan.reasoning_field + "\":" + json_string(t) + "}"));
  for (const std::string& t : plan.content) events.push_back(chunk("{\"content\":" + json_string(t) + "}"));
  for (std::size_t c = 0; c < plan.tool_calls.size(); ++c) {
    const ToolCallPlan& call = plan.tool_calls[c];
    events.push_back(chunk(fmt::format(
        R"({{"tool_calls":[{{"id":"{}","type":"function","index":{},"function":{{"name":"{}","arguments":""}}}}]}})", call.id,
        call.index, call.name)));
    for (const std::string& piece : plan.argument_fragments[c]) {
      events.push_back(chunk(fmt::format(R"({{"tool_calls":[{{"index":{},"function":{{"arguments":{}}}}}]}})", call.index,
                                         json_string(piece))));
    }
  }
  events.push_back(chunk(R"({"content":""})", json_string(plan.finish_reason), R"(,"stop_reason":null)"));
  if (plan.usage) {
    events.push_back(fmt::format("data: {}[],\"usage\":{}}}\n\n", head, plan.usage_json()));
  }
  events.push_back("data: [DONE]\n\n");
  return events;
}

std::string Generator::completion_body(const AnswerPlan& plan, const std::string& id, micros created) const {
  return fmt::format(
      R"({{"id":"{}","object":"chat.completion","created":{},"model":"{}","choices":[{{"index":0,"message":)"
      R"({{"role":"assistant","reasoning_content":null,"content":{},"tool_calls":[]}},"logprobs":null,)"
      R"("finish_reason":{},"stop_reason":null}}],"usage":{},"prompt_logprobs":null,"kv_transfer_params":null}})",
      id, created / kSecond, kModel, json_string(joined(plan.content)), json_string(plan.finish_reason),
      plan.usage_json());
}

void Generator::exchange(Slot& slot) {
  TcpConnection& conn = *slot.conn;
  std::uint64_t number = ++exchanges_;
  --slot.exchanges_left;
  std::string key = fmt::format("bench-{:08d}", number);

  AnswerPlan plan = plan_answer(number);
  std::size_t size = config_.shape == Shape::big_body
                         ? config_.request_bytes
                         : static_cast<std::size_t>(rng_.range(static_cast<std::int64_t>(config_.request_bytes),
                                                                static_cast<std::int64_t>(2 * config_.request_bytes)));
  std::string body = request_body(plan, size, config_.shape == Shape::reasoning_tools);
  plan.prompt_tokens = static_cast<int>(body.size() / 4);

  json expect;
  expect["key"] = key;
  expect["shape"] = to_string(config_.shape);
  expect["client"] = endpoint_text(conn.client());
  expect["request"] = {{"body_sha256", sha256_hex(body)}, {"body_bytes", body.size()}};
  // When the exchange is on the wire (capture clock, µs): a partial replay knows from these
  // which exchanges it sent in full.
  expect["first_ts_us"] = slot.t;

  // httpx writes the headers, then the body; the server ACKs at once (quick-ACK mode).
  micros t = conn.send(Side::client, slot.t, request_headers(key, body.size()));
  t = conn.send(Side::client, t + 15, body, 20);
  conn.ack(Side::server, t + 25);

  if (config_.shape == Shape::idle_inflight) {
    expect["state"] = "capture_stopped";  // no answer by the end of the capture
    expect["last_ts_us"] = conn.pending().back().ts;
    expect_ << expect.dump() << '\n';
    slot.t = t + rng_.range(pace_.think_min, pace_.think_max);
    return;
  }

  std::string id = "chatcmpl-" + rng_.hex(32);
  micros created = t;
  std::string response_body;
  std::size_t event_count = 0;
  if (plan.stream) {
    // Starlette sends the 200 and its headers before the first token exists.
    t += rng_.range(300, 3 * kMs);
    conn.send(Side::server, t,
              fmt::format("HTTP/1.1 200 OK\r\ndate: {}\r\nserver: uvicorn\r\ncontent-type: text/event-stream; "
                          "charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n",
                          http_date(t)));
    t += rng_.range(pace_.ttft_min, pace_.ttft_max);
    std::vector<std::string> events = sse_events(plan, id, created);
    event_count = events.size();
    for (std::size_t i = 0; i < events.size(); ++i) {
      // Tokens come at the connection's pace; finish, usage and [DONE] right after the last.
      bool trailer = i + (plan.usage ? 3 : 2) >= events.size();
      if (i > 0) t += trailer ? rng_.range(50, 300) : slot.token_gap * rng_.range(50, 150) / 100;
      conn.send(Side::server, t, fmt::format("{:x}\r\n{}\r\n", events[i].size(), events[i]));
      response_body += events[i];
    }
    t = conn.send(Side::server, t + 40, "0\r\n\r\n");
  } else {
    t += rng_.range(pace_.ttft_min, pace_.ttft_max);
    response_body = completion_body(plan, id, created);
    conn.send(Side::server, t,
              fmt::format("HTTP/1.1 200 OK\r\ndate: {}\r\nserver: uvicorn\r\ncontent-length: {}\r\ncontent-type: "
                          "application/json\r\n\r\n",
                          http_date(t), response_body.size()));
    t = conn.send(Side::server, t + 30, response_body);
  }
  expect["last_ts_us"] = conn.pending().back().ts;

  micros think = rng_.range(pace_.think_min, pace_.think_max);
  if (think > 40 * kMs) conn.ack(Side::client, t + 40 * kMs);  // the delayed ACK fires before the next request
  slot.t = t + think;

  json tool_calls = json::array();
  for (const ToolCallPlan& call : plan.tool_calls) {
    tool_calls.push_back({{"index", call.index}, {"id", call.id}, {"type", "function"}, {"name", call.name},
                          {"arguments", call.arguments}});
  }
  expect["state"] = "complete";
  expect["status"] = 200;
  expect["stream"] = plan.stream;
  if (plan.stream) expect["events"] = event_count;  // [DONE] included: it is an SSE event too
  expect["answer"] = {{"content", joined(plan.content)},
                      {"reasoning", joined(plan.reasoning)},
                      {"tool_calls", tool_calls},
                      {"finish_reason", plan.finish_reason},
                      {"usage", plan.usage ? json::parse(plan.usage_json()) : json(nullptr)}};
  expect["response"] = {{"body_sha256", sha256_hex(response_body)}, {"body_bytes", response_body.size()}};
  expect_ << expect.dump() << '\n';
}

}  // namespace

bool parse_shape(const std::string& name, Shape& shape) {
  for (Shape s : {Shape::standard, Shape::idle_inflight, Shape::big_body, Shape::small_nonstream,
                  Shape::reasoning_tools}) {
    if (to_string(s) == name) {
      shape = s;
      return true;
    }
  }
  return false;
}

std::string to_string(Shape shape) {
  switch (shape) {
    case Shape::standard: return "standard";
    case Shape::idle_inflight: return "idle_inflight";
    case Shape::big_body: return "big_body";
    case Shape::small_nonstream: return "small_nonstream";
    case Shape::reasoning_tools: return "reasoning_tools";
  }
  return "?";
}

LoadConfig defaults_for(Shape shape) {
  LoadConfig c;
  c.shape = shape;
  switch (shape) {
    case Shape::standard: break;
    case Shape::idle_inflight:
      c.connections = 10000;
      c.exchanges_per_connection = 1;
      break;
    case Shape::big_body:
      c.connections = 1;
      c.exchanges_per_connection = 1;
      c.request_bytes = 16u << 20;
      break;
    case Shape::small_nonstream:
      c.exchanges_per_connection = 100;
      c.request_bytes = 256;
      break;
    case Shape::reasoning_tools:
      c.connections = 100;
      c.exchanges_per_connection = 5;
      break;
  }
  return c;
}

LoadSummary generate(const LoadConfig& config, PcapWriter& out, std::ostream& expect) {
  return Generator(config, out, expect).run();
}

}  // namespace bench
