#include "chatcap/report.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <ctime>
#include <iterator>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "chatcap/errors.hpp"
#include "chatcap/types.hpp"

namespace chatcap {
namespace {

using json = nlohmann::json;

// ---- small JSON accessors: records may come from another writer version, never throw ----

const json* field(const json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

std::string text_of(const json& object, const char* key) {
  const json* value = field(object, key);
  if (value == nullptr) return {};
  return value->is_string() ? value->get<std::string>() : value->dump();
}

// Dumps never throw on strings that are not UTF-8 (there are none in parsed records, but
// rendering must not be where that assumption breaks).
std::string dump(const json& value, int indent = -1) {
  return value.dump(indent, ' ', false, json::error_handler_t::replace);
}

bool is_true(const json& object, const char* key) {
  const json* value = field(object, key);
  return value != nullptr && value->is_boolean() && value->get<bool>();
}

std::string milliseconds(double ms) {
  return ms >= 1000.0 ? fmt::format("{:.2f} s", ms / 1000.0) : fmt::format("{:.1f} ms", ms);
}

// ---- UTF-8 ----

bool is_continuation(unsigned char b) { return (b & 0xC0) == 0x80; }

// Length of the valid UTF-8 sequence at text[i] and its code point; 0 when invalid.
std::size_t utf8_sequence(std::string_view text, std::size_t i, char32_t& cp) {
  auto b = static_cast<unsigned char>(text[i]);
  std::size_t length = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
  if (length == 0 || i + length > text.size()) return 0;
  cp = length == 1 ? b : length == 2 ? (b & 0x1F) : length == 3 ? (b & 0x0F) : (b & 0x07);
  for (std::size_t k = 1; k < length; ++k) {
    auto c = static_cast<unsigned char>(text[i + k]);
    if (!is_continuation(c)) return 0;
    cp = (cp << 6) | (c & 0x3F);
  }
  static constexpr char32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[length] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;  // overlong, surrogate
  return length;
}

// Code points a terminal acts on or that reorder what is displayed (Trojan Source).
bool is_dangerous(char32_t cp) {
  return (cp >= 0x80 && cp <= 0x9F)                         // C1 controls (0x9B is CSI)
         || cp == 0x061C || cp == 0x200E || cp == 0x200F    // bidi marks
         || (cp >= 0x202A && cp <= 0x202E)                  // bidi embeddings, overrides
         || (cp >= 0x2066 && cp <= 0x2069)                  // bidi isolates
         || cp == 0x2028 || cp == 0x2029;                   // line/paragraph separators
}

void escape_byte(std::string& out, unsigned char b) {
  switch (b) {
    case '\n': out += "\\n"; break;
    case '\r': out += "\\r"; break;
    default: fmt::format_to(std::back_inserter(out), "\\x{:02x}", b);
  }
}

// ---- output with optional colour ----

namespace sgr {
constexpr std::string_view bold = "1", dim = "2", red = "31", green = "32", yellow = "33", magenta = "35",
                           cyan = "36", bold_red = "1;31", bold_yellow = "1;33", bold_magenta = "1;35";
}

class Out {
 public:
  Out(const RenderStyle& style, std::string id) : style_(style), id_(std::move(id)) {}

  // `text` must already be escaped.
  std::string paint(std::string_view code, std::string_view text) const {
    if (!style_.color || text.empty()) return std::string(text);
    return fmt::format("\x1b[{}m{}\x1b[0m", code, text);
  }
  void line(std::string_view text) {
    out_ += text;
    out_ += '\n';
  }
  // A labelled one-line field: "  label  value". The value must already be escaped.
  void labelled(std::string_view label, std::string_view value, std::string_view code = {}) {
    if (value.empty()) {
      line(fmt::format("  {}", paint(code.empty() ? sgr::dim : code, label)));
      return;
    }
    line(fmt::format("  {}  {}", paint(sgr::dim, label), code.empty() ? std::string(value) : paint(code, value)));
  }
  // Captured multi-line text, indented; clipped unless `full`, with a note saying how to
  // see the rest.
  void block(std::string_view text, bool full) {
    Clipped clipped{std::string(text), 0, 0};
    if (!full) clipped = clip_lines(text, kBriefLines, kBriefLineBytes);
    std::string_view rest = clipped.text;
    while (true) {
      std::size_t nl = rest.find('\n');
      line(fmt::format("    {}", escape_control(rest.substr(0, nl))));
      if (nl == std::string_view::npos) break;
      rest.remove_prefix(nl + 1);
    }
    if (clipped.hidden_lines > 0) {
      line(paint(sgr::dim, fmt::format("    … {} more lines (chatcap show {})", clipped.hidden_lines, id_)));
    } else if (clipped.cut_lines > 0) {
      line(paint(sgr::dim, fmt::format("    … long lines cut at {} bytes (chatcap show {})", kBriefLineBytes, id_)));
    }
  }
  std::string take() { return std::move(out_); }

 private:
  const RenderStyle& style_;
  std::string id_;
  std::string out_;
};

// ---- pieces of an exchange block ----

// The record that says where and when: the request, or the exchange record when the request
// record was rotated away.
const json& origin_of(const LoggedExchange& e) { return e.request.is_null() ? e.exchange : e.request; }

void put_header_line(Out& out, const LoggedExchange& e) {
  const json& origin = origin_of(e);
  std::string line = out.paint(sgr::bold, fmt::format("━━ {}  {} → {}  id {}", display_time(text_of(origin, "ts")),
                                                     escape_control(text_of(origin, "client")),
                                                     escape_control(text_of(origin, "server")), escape_control(e.id)));
  if (is_true(origin, "watched_only")) line += "  " + out.paint(sgr::dim, "(watched: a POST outside --endpoint)");
  out.line(line);
}

std::string state_text(const Out& out, const json& exchange) {
  if (exchange.is_null()) return out.paint(sgr::bold_yellow, "IN FLIGHT");
  std::string state = escape_control(text_of(exchange, "state"));
  if (const json* close = field(exchange, "close"); close != nullptr && state != "complete") {
    state += fmt::format(" ({})", escape_control(text_of(exchange, "close")));
  }
  return out.paint(state == "complete" ? sgr::green : sgr::bold_red, state);
}

std::string status_text(const Out& out, const json& exchange) {
  if (exchange.is_null()) return {};
  const json* status = field(exchange, "status");
  if (status == nullptr || !status->is_number_integer() || status->get<int>() == 0) {
    return out.paint(sgr::red, "no response");
  }
  int code = status->get<int>();
  std::string text = fmt::format("{} {}", code, escape_control(text_of(exchange, "reason")));
  if (const json* interim = field(exchange, "interim"); interim != nullptr && interim->is_array()) {
    for (const json& s : *interim) text += fmt::format(" (after interim {})", escape_control(dump(s)));
  }
  return out.paint(code < 400 ? sgr::green : sgr::bold_red, text);
}

void put_request_line(Out& out, const LoggedExchange& e, Detail detail) {
  const json& origin = origin_of(e);
  std::string line = fmt::format("  {} {}  {}", escape_control(text_of(origin, "method")),
                                 escape_control(text_of(origin, "target")), state_text(out, e.exchange));
  std::string status = status_text(out, e.exchange);
  if (!status.empty()) line += "  " + status;
  // (`tail` just did not see it: it was written before tail started.)
  if (e.request.is_null() && detail != Detail::ended) {
    line += out.paint(sgr::dim, "  (request record rotated out of the log)");
  }
  out.line(line);
}

// "model m  stream yes  max_tokens 400  messages 3  tools 0", from the request summary.
std::string summary_text(const json& request) {
  const json* summary = field(request, "summary");
  if (summary == nullptr || !summary->is_object()) return {};
  std::string text;
  auto add = [&](std::string_view label, const char* key) {
    const json* value = field(*summary, key);
    if (value == nullptr) return;
    std::string shown = value->is_boolean() ? (value->get<bool>() ? "yes" : "no") : text_of(*summary, key);
    fmt::format_to(std::back_inserter(text), "{}{} {}", text.empty() ? "" : "  ", label, escape_control(shown));
  };
  add("model", "model");
  add("stream", "stream");
  add("max_tokens", "max_tokens");
  add("n", "n");
  add("messages", "messages");
  add("input items", "input_items");
  add("prompts", "prompts");
  add("tools", "tools");
  return text;
}

void put_summary(Out& out, const LoggedExchange& e) {
  std::string summary = summary_text(e.request);
  if (summary.empty() && !e.exchange.is_null()) {
    // No request summary (body not JSON, cut, or rotated away): the model the answer named.
    const json* answer = field(e.exchange, "sse") != nullptr ? field(e.exchange, "sse") : field(e.exchange, "answer");
    if (answer != nullptr && field(*answer, "model") != nullptr) {
      summary = "model " + escape_control(text_of(*answer, "model"));
    }
  }
  if (!summary.empty()) out.line("  " + summary);
}

// "structured_output_without_constraint, too_many_logit_bias": the ids of a request's risks.
std::string risk_ids_text(const json& request) {
  const json* risks = field(request, "risks");
  if (risks == nullptr || !risks->is_array()) return {};
  std::string text;
  for (const json& r : *risks) {
    std::string id = r.is_object() ? text_of(r, "id") : std::string();
    if (!id.empty()) text += (text.empty() ? "" : ", ") + escape_control(id);
  }
  return text;
}

// One line per known engine killer the request carries: what it is and where it is known.
void put_risks(Out& out, const json& request) {
  const json* risks = field(request, "risks");
  if (risks == nullptr || !risks->is_array()) return;
  for (const json& r : *risks) {
    if (!r.is_object()) continue;
    out.line("  " + out.paint(sgr::bold_red, fmt::format("⚠ known engine killer {}: {} ({})",
                                                          escape_control(text_of(r, "id")),
                                                          escape_control(text_of(r, "why")),
                                                          escape_control(text_of(r, "ref")))));
  }
}

void put_timing(Out& out, const json& exchange) {
  const json* timing = field(exchange, "timing");
  if (timing == nullptr) return;
  std::string text;
  auto add = [&](std::string_view label, const char* key) {
    const json* value = field(*timing, key);
    if (value == nullptr || !value->is_number()) return;
    fmt::format_to(std::back_inserter(text), "{}{} {}", text.empty() ? "" : "  ", label,
                   milliseconds(value->get<double>()));
  };
  add("ttfb", "ttfb_ms");
  add("ttft", "ttft_ms");
  add("duration", "duration_ms");
  add("itl p50", "itl_ms_p50");
  add("p99", "itl_ms_p99");
  if (!text.empty()) out.labelled("timing", text);
}

void add_names(std::vector<std::string>& names, const json& record) {
  const json* anomalies = field(record, "anomalies");
  if (anomalies == nullptr || !anomalies->is_array()) return;
  for (const json& a : *anomalies) {
    std::string name = a.is_string() ? a.get<std::string>() : dump(a);
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  }
}

void put_anomalies_and_errors(Out& out, const LoggedExchange& e) {
  std::vector<std::string> names;
  add_names(names, e.request);
  add_names(names, e.exchange);
  if (!names.empty()) {
    std::string text;
    for (const std::string& n : names) text += (text.empty() ? "" : ", ") + escape_control(n);
    if (const json* gap = field(e.exchange, "gap_bytes")) text += fmt::format(" ({} bytes lost)", dump(*gap));
    out.labelled("anomalies", text, sgr::yellow);
  }
  for (const json* record : {&e.request, &e.exchange}) {
    if (field(*record, "error") != nullptr) out.labelled("error", escape_control(text_of(*record, "error")), sgr::red);
  }
}

void put_structured_output(Out& out, const json& request, bool full) {
  const json* summary = field(request, "summary");
  const json* so = summary == nullptr ? nullptr : field(*summary, "structured_output");
  if (so == nullptr) return;
  out.line("  " + out.paint(sgr::bold_magenta, "STRUCTURED OUTPUT"));
  if (so->is_object()) {
    for (const auto& [key, value] : so->items()) {
      std::string compact = dump(value);
      std::string name = out.paint(sgr::magenta, escape_control(key));
      if (!value.is_structured() || (compact.size() <= kBriefLineBytes && !full)) {
        // A scalar or a small object reads best on the line of its key.
        out.line(fmt::format("    {}: {}", name, escape_control(compact)));
        continue;
      }
      out.line(fmt::format("    {}:", name));
      out.block(full ? dump(value, 2) : compact, full);
    }
  } else {
    out.block(dump(*so, full ? 2 : -1), full);
  }
}

void put_headers(Out& out, std::string_view label, const json& record, const char* key) {
  const json* headers = field(record, key);
  if (headers == nullptr || !headers->is_array()) return;
  out.line(fmt::format("  {}", out.paint(sgr::dim, label)));
  for (const json& h : *headers) {
    if (!h.is_array() || h.size() != 2) continue;
    std::string name = h[0].is_string() ? h[0].get<std::string>() : dump(h[0]);
    std::string value = h[1].is_string() ? h[1].get<std::string>() : dump(h[1]);
    out.line(fmt::format("    {}: {}", out.paint(sgr::cyan, escape_control(name)), escape_control(value)));
  }
}

// A body as people read it: pretty JSON when it parses (key order kept), else the text.
std::string readable_body(const std::string& body) {
  nlohmann::ordered_json parsed = nlohmann::ordered_json::parse(body, nullptr, false);
  if (parsed.is_discarded()) return body;
  return parsed.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

// Bytes the record keeps of a body: base64 text is 4 characters per 3 bytes, minus padding.
std::size_t kept_bytes(const std::string& body, bool base64) {
  if (!base64) return body.size();
  std::size_t padding = body.ends_with("==") ? 2 : body.ends_with('=') ? 1 : 0;
  return body.size() / 4 * 3 - std::min(padding, body.size() / 4 * 3);
}

void put_body(Out& out, std::string_view label, const json& record, bool full) {
  const json* body = field(record, "body");
  if (body == nullptr || !body->is_string()) return;
  const std::string& bytes = body->get_ref<const std::string&>();
  bool base64 = text_of(record, "body_encoding") == "base64";
  std::size_t kept = kept_bytes(bytes, base64);
  std::string total = field(record, "body_bytes") != nullptr ? escape_control(text_of(record, "body_bytes"))
                                                             : std::to_string(kept);
  std::string heading = fmt::format("{} bytes", total);
  if (is_true(record, "body_truncated")) heading += fmt::format(", first {} kept (--max-body)", kept);
  out.labelled(label, heading);
  if (base64) {
    out.line(fmt::format("    (binary body, {} bytes, base64 in --json)", total));
    return;
  }
  if (!bytes.empty()) out.block(readable_body(bytes), full);
}

const json* answer_of(const json& exchange) {
  const json* sse = field(exchange, "sse");
  return sse != nullptr ? sse : field(exchange, "answer");
}

std::string answer_heading(const json& exchange, const json& answer) {
  std::string text;
  // Every dialect's answer reads the same: its dialect named, its end and its tokens
  // normalised (the dialect's own word for the end beside it).
  const std::string dialect = text_of(answer, "dialect");
  if (!dialect.empty()) text = escape_control(dialect) + ", ";
  if (field(exchange, "sse") != nullptr) {
    text += fmt::format("streamed, {} events, {}", text_of(answer, "events"),
                        is_true(answer, "done") ? "ended" : "no end seen");
  } else {
    text += "not streamed";
  }
  if (field(answer, "finish_reason") != nullptr) {
    text += fmt::format("  finish_reason {}", escape_control(text_of(answer, "finish_reason")));
    if (field(answer, "native_finish_reason") != nullptr) {
      text += fmt::format(" ({})", escape_control(text_of(answer, "native_finish_reason")));
    }
  }
  const json* usage = field(answer, "usage");
  auto tokens = [&](const char* normalised, const char* chat_name) {
    if (const json* n = field(answer, normalised)) return escape_control(dump(*n));
    return usage != nullptr && usage->is_object() ? escape_control(text_of(*usage, chat_name)) : std::string();
  };
  const std::string in = tokens("input_tokens", "prompt_tokens");
  const std::string out = tokens("output_tokens", "completion_tokens");
  if (!in.empty() || !out.empty()) {
    text += fmt::format("  usage {} in + {} out tokens", in.empty() ? "?" : in, out.empty() ? "?" : out);
  }
  if (is_true(answer, "text_truncated")) text += "  (text cut at the cap)";
  if (const json* bad = field(answer, "bad_events")) text += fmt::format("  {} unreadable events", dump(*bad));
  return text;
}

void put_tool_calls(Out& out, const json& answer, bool full) {
  const json* calls = field(answer, "tool_calls");
  if (calls == nullptr || !calls->is_array()) return;
  for (const json& call : *calls) {
    // OpenAI's message shape, {"function": {"name", "arguments"}}; older records had them flat.
    const json* function = field(call, "function");
    const json& named = function != nullptr && function->is_object() ? *function : call;
    out.labelled(fmt::format("tool call #{}", escape_control(text_of(call, "index"))),
                 fmt::format("{}  id {}", escape_control(text_of(named, "name")), escape_control(text_of(call, "id"))),
                 sgr::cyan);
    std::string arguments = text_of(named, "arguments");
    if (!arguments.empty()) out.block(readable_body(arguments), full);
  }
}

void put_answer(Out& out, const json& exchange, const json& answer, bool full) {
  out.labelled("answer", answer_heading(exchange, answer));
  for (const char* part : {"reasoning", "content"}) {
    std::string text = text_of(answer, part);
    if (text.empty()) continue;
    out.labelled(part, "");
    out.block(text, full);
  }
  put_tool_calls(out, answer, full);
  if (const json* error = field(answer, "error")) {
    out.labelled("answer error", "", sgr::red);
    out.block(error->is_string() ? error->get<std::string>() : dump(*error, 2), full);
  }
}

void put_response(Out& out, const LoggedExchange& e, Detail detail) {
  if (e.exchange.is_null()) return;
  bool full = detail == Detail::full;
  if (full) put_headers(out, "response headers", e.exchange, "response_headers");
  const json* answer = answer_of(e.exchange);
  if (answer != nullptr) put_answer(out, e.exchange, *answer, full);
  if (answer == nullptr) {
    put_body(out, "response body", e.exchange, full);
  } else if (full && field(e.exchange, "body") != nullptr) {
    std::string total = escape_control(text_of(e.exchange, "body_bytes"));
    out.labelled("response body", fmt::format("{} bytes (raw, in --json)", total));
  }
}

// ---- `chatcap suspects` ----

std::string kind_text(std::string_view kind) {
  if (kind == "process_exit") return "the server process exited (process_exit)";
  if (kind == "engine_dead") return "the engine died, requests answered 500 (engine_dead)";
  return escape_control(kind);
}

// The structured-output request of a suspect on a line of its own: what kills servers.
void put_structured_output_line(Out& out, const LoggedExchange& e, std::string_view id) {
  const json* summary = field(e.request, "summary");
  if (summary == nullptr) {
    out.line("  " + out.paint(sgr::dim, "structured_output: unknown (no request summary: the body is not JSON, "
                                        "was cut, or its record is gone)"));
    return;
  }
  const json* so = field(*summary, "structured_output");
  if (so == nullptr) {
    out.line("  " + out.paint(sgr::dim, "structured_output: none"));
    return;
  }
  Clipped clipped = clip_lines(dump(*so), 1, 2 * kBriefLineBytes);
  out.line("  " + out.paint(sgr::bold_magenta, "structured_output: " + escape_control(clipped.text)));
  if (clipped.cut_lines > 0) {
    out.line(out.paint(sgr::dim, fmt::format("    … cut at {} bytes (chatcap show {})", 2 * kBriefLineBytes, id)));
  }
}

std::string suspect_block(const json& s, const LoggedExchange* e, std::size_t rank, std::size_t count,
                          const RenderStyle& style) {
  std::string id = escape_control(text_of(s, "id"));
  Out out(style, id);
  std::string why = escape_control(text_of(s, "why"));
  out.line(out.paint(sgr::bold, fmt::format("#{} of {}  id {}", rank, count, id.empty() ? "?" : id)) + "  " +
           out.paint(sgr::bold_yellow, why));
  std::string where;
  if (field(s, "client") != nullptr) where += fmt::format("client {}", escape_control(text_of(s, "client")));
  std::string sent = e != nullptr ? text_of(e->request, "ts") : std::string();
  if (!sent.empty()) {
    where += fmt::format("{}request sent {}", where.empty() ? "" : "  ", display_time(sent));
  } else if (field(s, "request_ts") != nullptr) {
    where += fmt::format("{}request complete {}", where.empty() ? "" : "  ", display_time(text_of(s, "request_ts")));
  }
  if (const json* tokens = field(s, "token_events")) {
    where += fmt::format("{}{} token events before the death", where.empty() ? "" : "  ", escape_control(dump(*tokens)));
  }
  if (is_true(s, "in_flight")) where += fmt::format("{}still in flight then", where.empty() ? "" : "  ");
  if (!where.empty()) out.line("  " + where);
  if (e == nullptr) {
    out.line("  " + out.paint(sgr::dim, "no record of this request in the log any more (rotated out)"));
    return out.take();
  }
  put_request_line(out, *e, Detail::brief);
  put_risks(out, e->request);
  put_summary(out, *e);
  put_structured_output_line(out, *e, id);
  put_timing(out, e->exchange);
  put_anomalies_and_errors(out, *e);
  put_body(out, "request body", e->request, false);
  put_response(out, *e, Detail::brief);
  return out.take();
}

// ---- `chatcap show ID --curl` ----

std::string base64_lines(std::string_view bytes, std::size_t line_chars = 76) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string encoded;
  encoded.reserve((bytes.size() + 2) / 3 * 4);
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    std::uint32_t n = static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16;
    if (i + 1 < bytes.size()) n |= static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
    if (i + 2 < bytes.size()) n |= static_cast<unsigned char>(bytes[i + 2]);
    encoded += kAlphabet[(n >> 18) & 63];
    encoded += kAlphabet[(n >> 12) & 63];
    encoded += i + 1 < bytes.size() ? kAlphabet[(n >> 6) & 63] : '=';
    encoded += i + 2 < bytes.size() ? kAlphabet[n & 63] : '=';
  }
  std::string out;
  for (std::size_t i = 0; i < encoded.size(); i += line_chars) {
    out.append(encoded, i, line_chars);
    out += '\n';
  }
  return out;
}

bool is_token(std::string_view text) {
  if (text.empty()) return false;
  return std::all_of(text.begin(), text.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  });
}

// What `Connection:` and the like name: headers for one hop, which curl manages itself.
bool is_hop_by_hop(std::string_view name, const std::vector<std::string>& nominated) {
  static constexpr std::string_view kHopByHop[] = {"connection", "keep-alive",       "transfer-encoding",
                                                   "te",         "trailer",          "upgrade",
                                                   "proxy-connection", "content-length"};
  for (std::string_view h : kHopByHop) {
    if (iequals(name, h)) return true;
  }
  return std::any_of(nominated.begin(), nominated.end(), [&](const std::string& n) { return iequals(name, n); });
}

// "<redacted sha256:1a2b3c4d>", what the recorder writes in place of a credential.
bool is_redacted(std::string_view value) {
  constexpr std::string_view kPrefix = "<redacted sha256:";
  if (!value.starts_with(kPrefix) || !value.ends_with('>') || value.size() == kPrefix.size() + 1) return false;
  std::string_view hex = value.substr(kPrefix.size(), value.size() - kPrefix.size() - 1);
  return std::all_of(hex.begin(), hex.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
}

// CHATCAP_AUTHORIZATION for "Authorization"; unique among `taken`.
std::string variable_for(std::string_view header, std::vector<std::string>& taken) {
  std::string name = "CHATCAP_";
  for (char c : header) name += std::isalnum(static_cast<unsigned char>(c)) ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : '_';
  std::string unique = name;
  for (int n = 2; std::find(taken.begin(), taken.end(), unique) != taken.end(); ++n) unique = fmt::format("{}_{}", name, n);
  taken.push_back(unique);
  return unique;
}

// A server address as the recorder writes it: "127.0.0.1:8077", "[::1]:8077", a host name.
bool is_authority(std::string_view server) {
  return !server.empty() && std::all_of(server.begin(), server.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::string_view(".:-[]").find(c) != std::string_view::npos;
  });
}

// A target curl sends exactly as written in the URL (with --globoff --path-as-is): origin
// form, printable ASCII, no '#' (curl would cut a fragment off).
bool url_safe_target(std::string_view target) {
  return target.starts_with('/') && std::all_of(target.begin(), target.end(), [](char c) {
           auto b = static_cast<unsigned char>(c);
           return b > 0x20 && b < 0x7F && c != '#';
         });
}

[[noreturn]] void cannot_replay(const std::string& id, std::string_view why) {
  throw LogError(fmt::format("exchange {} cannot be replayed with curl: {} — use `chatcap show {} --body` for the "
                             "body bytes",
                             escape_control(id), why, escape_control(id)));
}

}  // namespace

RenderStyle RenderStyle::for_stdout() {
  const char* term = std::getenv("TERM");
  bool dumb = term != nullptr && std::string_view(term) == "dumb";
  return RenderStyle{::isatty(STDOUT_FILENO) == 1 && std::getenv("NO_COLOR") == nullptr && !dumb};
}

std::string escape_control(std::string_view text, bool keep_newlines) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    auto b = static_cast<unsigned char>(text[i]);
    if (b < 0x20 || b == 0x7F) {
      if (b == '\t' || (b == '\n' && keep_newlines)) {
        out += static_cast<char>(b);
      } else {
        escape_byte(out, b);
      }
      ++i;
      continue;
    }
    char32_t cp = 0;
    std::size_t length = utf8_sequence(text, i, cp);
    if (length == 0) {
      escape_byte(out, b);  // not UTF-8: show the byte, do not let the terminal guess
      ++i;
    } else if (is_dangerous(cp)) {
      fmt::format_to(std::back_inserter(out), "\\u{:04x}", static_cast<std::uint32_t>(cp));
      i += length;
    } else {
      out.append(text.substr(i, length));
      i += length;
    }
  }
  return out;
}

Clipped clip_lines(std::string_view text, std::size_t max_lines, std::size_t max_line_bytes) {
  Clipped result;
  if (!text.empty() && text.back() == '\n') text.remove_suffix(1);  // a final newline is no extra line
  std::size_t shown = 0;
  while (true) {
    std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    if (shown == max_lines) {
      result.hidden_lines = 1 + static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
      break;
    }
    if (shown > 0) result.text += '\n';
    if (line.size() > max_line_bytes) {
      std::size_t cut = max_line_bytes;
      while (cut > 0 && is_continuation(static_cast<unsigned char>(line[cut]))) --cut;
      result.text.append(line.substr(0, cut));
      result.text += "…";
      ++result.cut_lines;
    } else {
      result.text.append(line);
    }
    ++shown;
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return result;
}

std::string display_time(std::string_view ts) {
  // "2026-11-24T15:21:53.758382Z": keep milliseconds, say UTC in words.
  if (ts.size() >= 23 && ts[10] == 'T' && ts[19] == '.' && ts.back() == 'Z') {
    return fmt::format("{} {} UTC", escape_control(ts.substr(0, 10)), escape_control(ts.substr(11, 12)));
  }
  return escape_control(ts);
}

// ---- `last`, one line per exchange ----

namespace {

// Characters (not bytes) of UTF-8 text: what a terminal column count is, near enough.
std::size_t columns(std::string_view text) {
  std::size_t n = 0;
  for (unsigned char c : text) n += (c & 0xC0) != 0x80;
  return n;
}

// `text` cut to `width` characters, "…" marking a cut; padded with spaces to `width` when
// `pad`. Never splits a UTF-8 sequence.
std::string fit(std::string_view text, std::size_t width, bool pad = true) {
  std::string out;
  std::size_t used = 0;
  for (std::size_t i = 0; i < text.size();) {
    std::size_t len = 1;
    const auto b = static_cast<unsigned char>(text[i]);
    if (b >= 0xF0) len = 4; else if (b >= 0xE0) len = 3; else if (b >= 0xC0) len = 2;
    if (used + 1 > width || (used + 1 == width && i + len < text.size())) {
      if (width > 0) out += "…";
      ++used;
      break;
    }
    out.append(text.substr(i, len));
    ++used;
    i += len;
  }
  if (pad) out.append(width > used ? width - used : 0, ' ');
  return out;
}

// Folds runs of whitespace (newlines included) into one space, escapes the rest.
std::string one_line(std::string_view text) {
  std::string folded;
  bool space = false;
  for (char c : text) {
    if (c == '\n' || c == '\r' || c == '\t' || c == ' ') {
      space = !folded.empty();
      continue;
    }
    if (space) folded += ' ';
    space = false;
    folded += c;
  }
  return escape_control(folded);
}

// Text of a message content: a string, or the text parts of a list (OpenAI and Anthropic).
std::string content_text(const json& content) {
  if (content.is_string()) return content.get<std::string>();
  std::string text;
  if (!content.is_array()) return text;
  for (const json& part : content) {
    if (!part.is_object()) continue;
    const json* t = field(part, "text");
    if (t != nullptr && t->is_string()) text += (text.empty() ? "" : " ") + t->get<std::string>();
  }
  return text;
}

json request_body_json(const json& request) {
  const json* body = field(request, "body");
  if (body == nullptr || !body->is_string() || text_of(request, "body_encoding") == "base64") return json();
  return json::parse(body->get<std::string>(), nullptr, false);
}

const json* answer_in(const json& exchange) {
  const json* a = field(exchange, "sse");
  return a != nullptr ? a : field(exchange, "answer");
}

}  // namespace

std::string last_user_text(const json& request) {
  const json body = request_body_json(request);
  if (!body.is_object()) return {};
  if (const json* messages = field(body, "messages"); messages != nullptr && messages->is_array()) {
    for (auto it = messages->rbegin(); it != messages->rend(); ++it) {
      if (it->is_object() && text_of(*it, "role") == "user") return content_text(it->value("content", json()));
    }
    return {};
  }
  if (const json* input = field(body, "input")) {
    if (input->is_string()) return input->get<std::string>();
    if (input->is_array()) {
      for (auto it = input->rbegin(); it != input->rend(); ++it) {
        if (!it->is_object()) continue;
        if (it->contains("content")) return content_text((*it)["content"]);
        if (const json* t = field(*it, "text"); t != nullptr && t->is_string()) return t->get<std::string>();
      }
    }
    return {};
  }
  if (const json* prompt = field(body, "prompt")) {
    if (prompt->is_string()) return prompt->get<std::string>();
    if (prompt->is_array() && !prompt->empty() && prompt->back().is_string()) return prompt->back().get<std::string>();
  }
  return {};
}

std::string local_clock(std::string_view ts) {
  std::tm utc{};
  if (ts.size() < 19 || std::sscanf(std::string(ts.substr(0, 19)).c_str(), "%d-%d-%dT%d:%d:%d", &utc.tm_year,
                                    &utc.tm_mon, &utc.tm_mday, &utc.tm_hour, &utc.tm_min, &utc.tm_sec) != 6) {
    return escape_control(ts.substr(0, 19));
  }
  utc.tm_year -= 1900;
  utc.tm_mon -= 1;
  const std::time_t when = timegm(&utc);
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  std::tm today{};
  localtime_r(&when, &local);
  localtime_r(&now, &today);
  char text[32];
  const bool same_day = local.tm_year == today.tm_year && local.tm_yday == today.tm_yday;
  std::strftime(text, sizeof text, same_day ? "%H:%M:%S" : "%m-%d %H:%M:%S", &local);
  return text;
}

namespace {

constexpr std::size_t kTimeColumn = 14, kIdColumn = 12, kWhatColumn = 11, kModelColumn = 14, kStateColumn = 13,
                      kTtftColumn = 7, kTokensColumn = 9;

std::string line_of(const std::vector<std::string>& cells) {
  std::string line;
  for (const std::string& cell : cells) line += (line.empty() ? "" : " ") + cell;
  return line;
}

}  // namespace

std::string render_exchange_line_header(const RenderStyle& style, std::size_t width) {
  Out out(style, "");
  std::string line = line_of({fit("TIME", kTimeColumn), fit("ID", kIdColumn), fit("DIALECT", kWhatColumn),
                              fit("MODEL", kModelColumn), fit("STATUS", kStateColumn), fit("TTFT", kTtftColumn),
                              fit("TOKENS", kTokensColumn), "LAST USER MESSAGE"});
  return out.paint(sgr::bold, fit(line, width, false)) + "\n";
}

std::string render_exchange_line(const LoggedExchange& e, const RenderStyle& style, std::size_t width) {
  Out out(style, "");
  const json& origin = origin_of(e);
  const json* answer = answer_in(e.exchange);
  // What: the dialect the answer was read in, else the request's path.
  std::string what = answer != nullptr ? text_of(*answer, "dialect") : std::string();
  if (what.empty()) what = text_of(origin, "target");
  std::string model;
  if (const json* summary = field(e.request, "summary"); summary != nullptr) model = text_of(*summary, "model");
  if (model.empty() && answer != nullptr) model = text_of(*answer, "model");
  std::string status;
  std::string_view paint_state = sgr::green;
  if (e.exchange.is_null()) {
    status = "in flight";
    paint_state = sgr::bold_yellow;
  } else {
    const std::string state = text_of(e.exchange, "state");
    const std::string code = text_of(e.exchange, "status");
    status = (code.empty() || code == "0" ? "-" : code) + " " + state;
    if (state != "complete" || (code.size() == 3 && code[0] >= '4')) paint_state = sgr::bold_red;
  }
  std::string ttft = "-";
  if (const json* timing = field(e.exchange, "timing"); timing != nullptr) {
    if (const json* t = field(*timing, "ttft_ms"); t != nullptr && t->is_number()) ttft = milliseconds(t->get<double>());
  }
  std::string tokens = "-";
  if (answer != nullptr) {
    const std::string in = text_of(*answer, "input_tokens");
    const std::string outt = text_of(*answer, "output_tokens");
    if (!in.empty() || !outt.empty()) tokens = (in.empty() ? "?" : in) + "→" + (outt.empty() ? "?" : outt);
  }
  const std::string status_cell = fit(escape_control(status), kStateColumn);
  std::vector<std::string> cells = {fit(local_clock(text_of(origin, "ts")), kTimeColumn),
                                    fit(escape_control(e.id), kIdColumn),
                                    fit(escape_control(what), kWhatColumn),
                                    fit(escape_control(model), kModelColumn),
                                    status_cell,
                                    fit(ttft, kTtftColumn),
                                    fit(tokens, kTokensColumn)};
  // The rest of the width: the risk marker, then what the user asked, cut to fit.
  const std::size_t used = columns(line_of(cells)) + 1;
  const std::size_t room = width > used ? width - used : 0;
  const std::string risks = risk_ids_text(e.request);
  std::string marker = risks.empty() ? std::string() : "⚠ " + risks + " ";
  if (is_true(origin, "watched_only")) marker = "(watched) " + marker;
  const std::string text = fit(marker + one_line(last_user_text(e.request)), room, false);
  const std::size_t marker_bytes = std::min(text.size(), fit(marker, room, false).size());
  cells[4] = out.paint(paint_state, status_cell);
  cells.push_back((risks.empty() ? text.substr(0, marker_bytes) : out.paint(sgr::bold_red, text.substr(0, marker_bytes))) +
                  text.substr(marker_bytes));
  return line_of(cells) + "\n";
}

std::string render_server_down_line(const json& record, const RenderStyle& style, std::size_t width) {
  Out out(style, "");
  std::string first;
  if (const json* suspects = field(record, "suspects"); suspects != nullptr && suspects->is_array() && !suspects->empty()) {
    first = text_of((*suspects)[0], "id");
  }
  std::string text = fmt::format("{} ✖ server {} down ({}){}", fit(local_clock(text_of(record, "ts")), kTimeColumn),
                                 escape_control(text_of(record, "server")), escape_control(text_of(record, "kind")),
                                 first.empty() ? std::string() : "  suspect #1 " + escape_control(first) +
                                                                     " — chatcap suspects");
  return out.paint(sgr::bold_red, fit(text, width, false)) + "\n";
}

std::string render_exchange(const LoggedExchange& e, Detail detail, const RenderStyle& style) {
  Out out(style, escape_control(e.id));
  bool full = detail == Detail::full;
  put_header_line(out, e);
  put_request_line(out, e, detail);
  put_risks(out, e.request);
  put_summary(out, e);
  put_timing(out, e.exchange);
  put_anomalies_and_errors(out, e);
  if (detail != Detail::ended) {
    put_structured_output(out, e.request, full);
    if (full) put_headers(out, "request headers", e.request, "headers");
    put_body(out, "request body", e.request, full);
  }
  put_response(out, e, detail);
  return out.take();
}

std::string render_request_line(const json& request, const RenderStyle& style) {
  Out out(style, "");
  std::string ts = text_of(request, "ts");
  std::string clock = ts.size() >= 23 && ts[10] == 'T' ? ts.substr(11, 12) : ts;
  std::string line = fmt::format("{} → {} {}", escape_control(clock), escape_control(text_of(request, "method")),
                                 escape_control(text_of(request, "target")));
  if (std::string summary = summary_text(request); !summary.empty()) line += "  " + summary;
  const json* summary = field(request, "summary");
  if (summary != nullptr && field(*summary, "structured_output") != nullptr) {
    line += "  " + out.paint(sgr::magenta, "structured output");
  }
  if (std::string risks = risk_ids_text(request); !risks.empty()) {
    line += "  " + out.paint(sgr::bold_red, "⚠ known engine killer: " + risks);
  }
  line += fmt::format("  {}  (id {})", escape_control(text_of(request, "client")),
                      out.paint(sgr::bold, escape_control(text_of(request, "id"))));
  out.line(line);
  return out.take();
}

std::string render_server_down(const json& record, const RenderStyle& style) {
  Out out(style, "");
  out.line(out.paint(sgr::bold_red, fmt::format("✖ server {} down at {}", escape_control(text_of(record, "server")),
                                                display_time(text_of(record, "ts")))));
  if (const json* evidence = field(record, "evidence"); evidence != nullptr && evidence->is_array()) {
    for (const json& item : *evidence) {
      out.labelled("evidence", escape_control(item.is_string() ? item.get<std::string>() : dump(item)));
    }
  }
  if (const json* suspects = field(record, "suspects"); suspects != nullptr && suspects->is_array()) {
    for (const json& s : *suspects) {
      out.labelled("suspect", fmt::format("{}  {}", out.paint(sgr::bold, escape_control(text_of(s, "id"))),
                                          escape_control(text_of(s, "why"))));
    }
  }
  return out.take();
}


std::string render_suspects(const json& down, const std::vector<const LoggedExchange*>& joined,
                            const RenderStyle& style) {
  Out out(style, "");
  std::string head = fmt::format("✖ server {} down at {}", escape_control(text_of(down, "server")),
                                 display_time(text_of(down, "ts")));
  if (field(down, "kind") != nullptr) head += " — " + kind_text(text_of(down, "kind"));
  out.line(out.paint(sgr::bold_red, head));
  if (const json* evidence = field(down, "evidence"); evidence != nullptr && evidence->is_array()) {
    for (const json& item : *evidence) {
      out.labelled("evidence", escape_control(item.is_string() ? item.get<std::string>() : dump(item)));
    }
  }
  const json* suspects = field(down, "suspects");
  std::size_t count = suspects != nullptr && suspects->is_array() ? suspects->size() : 0;
  if (count == 0) {
    out.line("  no suspects: no request was in flight at the death");
    return out.take();
  }
  out.line(fmt::format("  {} suspect{}, likeliest first ({}).", count, count == 1 ? "" : "s",
                       out.paint(sgr::dim, "`chatcap show ID` shows one in full, `chatcap show ID --curl` replays it")));
  std::string text = out.take();
  for (std::size_t i = 0; i < count; ++i) {
    text += '\n';
    text += suspect_block((*suspects)[i], i < joined.size() ? joined[i] : nullptr, i + 1, count, style);
  }
  return text;
}

std::string shell_quote(std::string_view text) {
  if (text.find('\0') != std::string_view::npos) {
    throw std::invalid_argument("a NUL byte cannot be part of a shell word");
  }
  if (escape_control(text) == text) {
    // Printable text (UTF-8 included): single quotes, inside which nothing is special.
    std::string out = "'";
    for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
  }
  // Control characters, bytes that are not UTF-8, bidi overrides: bash's $'...' with every
  // byte that is not printable ASCII written \xHH ('!' too, for interactive history).
  std::string out = "$'";
  for (char c : text) {
    auto b = static_cast<unsigned char>(c);
    if (c == '\\' || c == '\'') {
      out += '\\';
      out += c;
    } else if (b >= 0x20 && b < 0x7F && c != '!') {
      out += c;
    } else {
      fmt::format_to(std::back_inserter(out), "\\x{:02x}", b);
    }
  }
  return out + "'";
}

std::string curl_command(const LoggedExchange& e) {
  const std::string body = exact_request_body(e);  // throws when the exact bytes are not on disk
  const json& r = e.request;
  const std::string method = text_of(r, "method");
  const std::string server = text_of(r, "server");
  const std::string target = text_of(r, "target");
  if (!is_token(method)) cannot_replay(e.id, fmt::format("its method \"{}\" is not an HTTP method", escape_control(method)));
  if (!is_authority(server)) cannot_replay(e.id, fmt::format("its server \"{}\" is not an address", escape_control(server)));
  if (target.empty() || target.find_first_of(std::string_view("\0\r\n", 3)) != std::string::npos) {
    cannot_replay(e.id, "its request target is empty or holds a NUL or a line break");
  }

  // The headers to send, in their order; credentials the log redacted become variables.
  struct Credential {
    std::string header, variable, placeholder;
  };
  std::vector<Credential> credentials;
  std::vector<std::string> variables;
  std::vector<std::string> header_args;
  std::vector<std::string> nominated;  // headers named by Connection: (hop-by-hop too)
  bool has_host = false, has_user_agent = false, has_accept = false, has_content_type = false, has_expect = false,
       has_accept_encoding = false;
  bool declared_body = false, chunked = false;
  const json* headers = field(r, "headers");
  if (headers != nullptr && headers->is_array()) {
    for (const json& h : *headers) {
      if (h.is_array() && h.size() == 2 && h[0].is_string() && h[1].is_string() && iequals(h[0].get<std::string>(), "connection")) {
        std::string value = h[1].get<std::string>();
        for (std::size_t start = 0; start <= value.size();) {
          std::size_t comma = value.find(',', start);
          std::string item = value.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
          item.erase(0, item.find_first_not_of(" \t"));
          item.erase(item.find_last_not_of(" \t") + 1);
          if (!item.empty()) nominated.push_back(item);
          if (comma == std::string::npos) break;
          start = comma + 1;
        }
      }
    }
    for (const json& h : *headers) {
      if (!h.is_array() || h.size() != 2 || !h[0].is_string() || !h[1].is_string()) {
        cannot_replay(e.id, "a request header in the log is not a [name, value] pair");
      }
      const std::string name = h[0].get<std::string>();
      const std::string value = h[1].get<std::string>();
      if (!is_token(name)) cannot_replay(e.id, fmt::format("its header name \"{}\" is not a token", escape_control(name)));
      if (value.find_first_of(std::string_view("\0\r\n", 3)) != std::string::npos) {
        cannot_replay(e.id, fmt::format("its header {} holds a NUL or a line break", escape_control(name)));
      }
      if (iequals(name, "content-length")) declared_body = true;
      if (iequals(name, "transfer-encoding")) declared_body = chunked = true;
      if (is_hop_by_hop(name, nominated)) continue;
      if (iequals(name, "host")) {
        has_host = true;
        if (iequals(value, server)) continue;  // what curl sends for the URL anyway
      }
      has_user_agent |= iequals(name, "user-agent");
      has_accept |= iequals(name, "accept");
      has_content_type |= iequals(name, "content-type");
      has_expect |= iequals(name, "expect");
      has_accept_encoding |= iequals(name, "accept-encoding");
      if (is_redacted(value)) {
        Credential c{name, variable_for(name, variables), value};
        // "Name:" alone makes curl send no such header: the credential is left out while
        // the variable is unset.
        header_args.push_back(fmt::format("-H {}\"${{{}:+ ${{{}}}}}\"", shell_quote(name + ":"), c.variable, c.variable));
        credentials.push_back(std::move(c));
      } else if (value.empty()) {
        header_args.push_back("-H " + shell_quote(name + ";"));  // curl's way to send "Name:"
      } else {
        header_args.push_back("-H " + shell_quote(name + ": " + value));
      }
    }
  }
  const bool send_body = !body.empty() || declared_body;
  // Headers curl adds on its own that the original request did not have.
  if (!has_host) header_args.push_back("-H 'Host:'");
  if (!has_user_agent) header_args.push_back("-H 'User-Agent:'");
  if (!has_accept) header_args.push_back("-H 'Accept:'");
  if (send_body && !has_content_type) header_args.push_back("-H 'Content-Type:'");
  if (send_body && !has_expect) header_args.push_back("-H 'Expect:'");

  std::string out;
  auto comment = [&out](std::string_view text) { out += "# " + escape_control(text) + "\n"; };
  comment(fmt::format("chatcap: replay of exchange {}: {} {} to {}, sent by {} at {}, {} body bytes", e.id, method,
                      target, server, text_of(r, "client"), text_of(r, "ts"), body.size()));
  comment("The body is base64 of the exact bytes in a quoted here-document: nothing in it is shell text.");
  if (chunked) comment("The original body was sent chunked; curl sends it with a Content-Length.");
  for (const Credential& c : credentials) {
    comment(fmt::format("{} was redacted in the log ({}); to send it, first: export {}='<the credential>'", c.header,
                        c.placeholder, c.variable));
  }
  for (const Credential& c : credentials) {
    out += fmt::format("[ -n \"${{{}-}}\" ] || echo {} >&2\n", c.variable,
                       shell_quote(fmt::format("chatcap replay: {} is not set: sending the request without its {} "
                                               "header",
                                               c.variable, c.header)));
  }
  constexpr std::string_view kDelimiter = "CHATCAP_BODY_EOF";  // '_' never occurs in base64
  if (!body.empty()) out += fmt::format("base64 -d <<'{}' | ", kDelimiter);
  out += "curl -q --silent --show-error --no-buffer --globoff --path-as-is --noproxy '*'";
  if (text_of(r, "version") == "1.0") out += " --http1.0";
  // The header is sent as recorded; --compressed only makes curl decode the answer.
  if (has_accept_encoding) out += " --compressed";
  out += " \\\n  ";
  out += method == "HEAD" ? std::string("--head") : "-X " + shell_quote(method);
  if (url_safe_target(target)) {
    out += " " + shell_quote("http://" + server + target);
  } else {
    out += " " + shell_quote("http://" + server + "/") + " --request-target " + shell_quote(target);
  }
  for (const std::string& arg : header_args) out += " \\\n  " + arg;
  if (!body.empty()) {
    out += " \\\n  --data-binary @-\n";
    out += base64_lines(body);
    out += kDelimiter;
    out += '\n';
  } else if (send_body) {
    out += " \\\n  --data-binary ''\n";
  } else {
    out += '\n';
  }
  return out;
}

}  // namespace chatcap
