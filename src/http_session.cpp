#include "chatcap/http_session.hpp"

#include <algorithm>
#include <array>
#include <cstring>

#include <fmt/format.h>

namespace chatcap {
namespace {

// "1.1": llhttp's version digits (each 0-9) as the record writes them, once per message.
std::string http_version_text(unsigned major, unsigned minor) {
  if (major > 9 || minor > 9) return fmt::format("{}.{}", major, minor);
  return std::string{static_cast<char>('0' + major), '.', static_cast<char>('0' + minor)};
}

// Stand-in bytes fed to llhttp for a capture gap inside a body of known length, so the parser
// stays in step. They are never stored: on_body drops them (Direction::feeding_filler).
constexpr std::array<char, 16384> kFiller{};

const std::string kNoMethod;

// A body of announced length gets its room at once: no regrowth, no slack per connection.
void reserve_body(Body& body, const llhttp_t* parser, std::size_t cap) {
  if ((parser->flags & F_CONTENT_LENGTH) && !(parser->flags & F_CHUNKED)) {
    body.bytes.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(parser->content_length, cap)));
  }
}

HttpSession* session_of(llhttp_t* parser) { return static_cast<HttpSession*>(parser->data); }

const llhttp_settings_t& parser_settings() {
  static const llhttp_settings_t settings = [] {
    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_message_begin = [](llhttp_t* p) { return session_of(p)->on_message_begin(p); };
    s.on_method = [](llhttp_t* p, const char* at, size_t n) { return session_of(p)->on_method(at, n); };
    s.on_url = [](llhttp_t* p, const char* at, size_t n) { return session_of(p)->on_url(at, n); };
    s.on_url_complete = [](llhttp_t* p) { return session_of(p)->on_url_complete(); };
    s.on_status = [](llhttp_t* p, const char* at, size_t n) { return session_of(p)->on_status(at, n); };
    s.on_header_field = [](llhttp_t* p, const char* at, size_t n) { return session_of(p)->on_header_field(p, at, n); };
    s.on_header_value = [](llhttp_t* p, const char* at, size_t n) { return session_of(p)->on_header_value(p, at, n); };
    s.on_header_field_complete = [](llhttp_t* p) { return session_of(p)->on_header_field_complete(p); };
    s.on_headers_complete = [](llhttp_t* p) { return session_of(p)->on_headers_complete(p); };
    s.on_body = [](llhttp_t* p, const char* at, size_t n) { return session_of(p)->on_body(p, at, n); };
    s.on_chunk_header = [](llhttp_t* p) { return session_of(p)->on_chunk_header(p); };
    s.on_chunk_complete = [](llhttp_t* p) { return session_of(p)->on_chunk_complete(p); };
    s.on_message_complete = [](llhttp_t* p) { return session_of(p)->on_message_complete(p); };
    return s;
  }();
  return settings;
}

bool starts_with_icase(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && iequals(text.substr(0, prefix.size()), prefix);
}

int hex_digit_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_method_char(char c) { return (c >= 'A' && c <= 'Z') || c == '-' || c == '_'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

enum class LineCheck { no, yes, need_more };

// "METHOD SP target SP HTTP/1.x" at the start of `s`.
LineCheck looks_like_request_line(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size() && i < 24 && is_method_char(s[i])) ++i;
  if (i == s.size()) return i < 24 ? LineCheck::need_more : LineCheck::no;
  if (i == 0 || s[i] != ' ') return LineCheck::no;
  std::size_t line_end = s.find('\n', i);
  if (line_end == std::string_view::npos) return s.size() - i < 8192 ? LineCheck::need_more : LineCheck::no;
  std::string_view line = s.substr(0, line_end);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  std::size_t version_at = line.rfind(' ');
  if (version_at == std::string_view::npos || version_at <= i + 1) return LineCheck::no;
  std::string_view version = line.substr(version_at + 1);
  return version.size() == 8 && version.substr(0, 7) == "HTTP/1." ? LineCheck::yes : LineCheck::no;
}

// "HTTP/1.x SP ddd" at the start of `s`.
LineCheck looks_like_status_line(std::string_view s) {
  constexpr std::string_view kPrefix = "HTTP/1.";
  std::size_t n = std::min(s.size(), kPrefix.size());
  if (s.substr(0, n) != kPrefix.substr(0, n)) return LineCheck::no;
  if (s.size() < 12) return LineCheck::need_more;
  bool ok = is_digit(s[7]) && s[8] == ' ' && is_digit(s[9]) && is_digit(s[10]) && is_digit(s[11]);
  return ok ? LineCheck::yes : LineCheck::no;
}

// The line of `bytes` holding `pos`, cut to a readable length, for error messages.
std::string_view line_around(std::string_view bytes, std::size_t pos) {
  pos = std::min(pos, bytes.size());
  std::size_t begin = bytes.rfind('\n', pos == 0 ? 0 : pos - 1);
  begin = (begin == std::string_view::npos || begin >= pos) ? 0 : begin + 1;
  std::size_t end = bytes.find('\n', pos);
  if (end == std::string_view::npos) end = bytes.size();
  std::string_view line = bytes.substr(begin, std::min<std::size_t>(end - begin, 200));
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

std::uint64_t mix64(std::uint64_t x) {  // splitmix64 finaliser
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

bool RecordScope::every_path() const {
  return std::any_of(endpoints.begin(), endpoints.end(), [](const std::string& e) { return e.empty() || e == "/"; });
}

void RecordScope::apply(std::string_view method, std::string_view target, Exchange& exchange) const {
  exchange.recorded = target_matches(target, endpoints);
  exchange.watched_only = !exchange.recorded && watch_other_posts && method == "POST";
}

HttpSession::HttpSession(Endpoint client, Endpoint server, ExchangeSink& sink, ExchangeNumbering& numbering,
                         const HttpLimits& limits)
    : limits_(limits), client_(client), server_(server), sink_(sink), numbering_(numbering) {
  request_.is_request = true;
  response_.is_request = false;
  reset_parser(request_);
  reset_parser(response_);
}

HttpSession::~HttpSession() = default;

void HttpSession::reset_parser(Direction& d) {
  llhttp_init(&d.parser, d.is_request ? HTTP_REQUEST : HTTP_RESPONSE, &parser_settings());
  d.parser.data = this;
  // A passive observer must follow what the peers accepted: keep parsing after
  // "Connection: close" instead of calling later bytes an error.
  llhttp_set_lenient_keep_alive(&d.parser, 1);
  // As lenient as h11, the servers' parser: header values llhttp alone refuses (a bare LF
  // ending a header line is one), and Transfer-Encoding beside Content-Length (chunked
  // wins, as RFC 9112 and h11 have it).
  llhttp_set_lenient_headers(&d.parser, 1);
  llhttp_set_lenient_chunked_length(&d.parser, 1);
  d.in_content_length = false;
  d.content_length_value.clear();
  d.content_length.reset();
  d.in_message = false;
  d.in_known_length_body = false;
  d.chunk_complete_last = false;
  d.at_chunk_boundary = false;
  d.header_field_open = false;
  d.header_bytes = 0;
  d.current = nullptr;
}

void HttpSession::start_midstream(bool client, bool server) {
  if (client) enter_resync(request_);
  if (server) enter_resync(response_);
}

// ---- stream events -------------------------------------------------------------------------

void HttpSession::Side::on_stream_data(timestamp_us ts, std::string_view bytes) {
  session_.data(client_ ? session_.request_ : session_.response_, ts, bytes);
}

void HttpSession::Side::on_stream_gap(timestamp_us ts, std::uint64_t bytes) {
  session_.gap(client_ ? session_.request_ : session_.response_, ts, bytes);
}

void HttpSession::Side::on_stream_close(timestamp_us ts, CloseKind kind) {
  session_.closed(client_ ? session_.request_ : session_.response_, ts, kind);
}

void HttpSession::data(Direction& d, timestamp_us ts, std::string_view bytes) {
  now_ = ts;
  // A new delivery from the stream may start a message (clients write whole requests, so
  // segments often begin one); the rest of a buffer after a parse error does not.
  d.resync_at_boundary = d.resync_at_boundary || d.resyncing;
  // Loop, not recursion: after a parse error the rest of the bytes are scanned again.
  while (!bytes.empty() && !d.tunnel) {
    if (d.awaiting_upgrade_verdict) {
      std::size_t room = limits_.max_resync_scan_bytes - std::min(limits_.max_resync_scan_bytes, d.held.size());
      d.held.append(bytes.substr(0, room));
      break;
    }
    if (d.resyncing) {
      bytes = scan_for_message_start(d, bytes);
      if (bytes.empty()) break;
      d.resyncing = false;
      reset_parser(d);
    }
    if (d.in_content_length) {
      bytes = normalise_content_length(d, bytes);
      continue;  // a value llhttp refused leaves the direction resynchronising: looked at first
    }
    if (d.at_chunk_boundary) {
      bytes = take_whole_chunks(d, bytes);
      if (bytes.empty()) break;
    }
    bytes = execute(d, bytes);
  }
  if (!d.is_request) drain_pending_request_bytes();
}

// A streamed response is one chunk per segment (uvicorn writes each SSE event as a chunk),
// and between chunks llhttp's state is always the same: expecting the next size line, no
// length left. A segment of whole chunks therefore leaves it as it found it, and the chunks
// are taken here — what llhttp would report is their data, which goes where on_body sends
// it. Anything else (a size line with extensions or spaces, the last chunk, a chunk cut by
// the segment's end, a malformed one) is left to llhttp from that byte on.
std::string_view HttpSession::take_whole_chunks(Direction& d, std::string_view bytes) {
  constexpr std::size_t kMaxSizeDigits = 8;  // llhttp's limit is higher; longer ones go to it
  for (;;) {
    std::uint64_t size = 0;
    std::size_t digits = 0;
    for (; digits < bytes.size() && digits <= kMaxSizeDigits; ++digits) {
      const int value = hex_digit_value(bytes[digits]);
      if (value < 0) break;
      size = size * 16 + static_cast<std::uint64_t>(value);
    }
    if (digits == 0 || digits > kMaxSizeDigits || size == 0) return bytes;
    const std::size_t data_at = digits + 2;
    auto crlf_at = [&bytes](std::size_t at) { return bytes[at] == '\r' && bytes[at + 1] == '\n'; };
    if (bytes.size() < data_at + size + 2 || !crlf_at(digits) || !crlf_at(data_at + size)) return bytes;
    take_body(d, bytes.substr(data_at, size));
    ++chunks_taken_whole_;
    bytes.remove_prefix(data_at + size + 2);
    if (bytes.empty()) return bytes;  // still at a boundary
  }
}

std::string_view HttpSession::execute(Direction& d, std::string_view bytes) {
  llhttp_errno_t error = llhttp_execute(&d.parser, bytes.data(), bytes.size());
  // Between chunks only when the last chunk event was a chunk's end and nothing followed
  // it: after on_chunk_complete llhttp consumes nothing without a callback but a partial
  // size line, which never ends in CRLF.
  d.at_chunk_boundary = error == HPE_OK && d.chunk_complete_last && bytes.ends_with("\r\n");
  if (error == HPE_OK) return {};
  const char* pos = llhttp_get_error_pos(&d.parser);
  std::size_t consumed = pos ? static_cast<std::size_t>(pos - bytes.data()) : bytes.size();
  consumed = std::min(consumed, bytes.size());
  if (error == HPE_PAUSED_UPGRADE) {
    handle_upgrade(d, bytes.substr(consumed));
    return {};
  }
  if (error == HPE_PAUSED && d.in_content_length) return bytes.substr(consumed);  // data() reads the value
  handle_parse_error(d, error, bytes, consumed);
  // Look for the next message in what follows the error.
  return consumed < bytes.size() ? bytes.substr(consumed + 1) : std::string_view{};
}

namespace {

constexpr std::size_t kMaxContentLengthValue = 256;  // longer: left to llhttp as sent

bool is_ows(char c) { return c == ' ' || c == '\t'; }

// A Content-Length value as h11 takes it: one number, or a list of equal numbers, with
// whitespace around each; nullopt for anything else (llhttp then says what is wrong).
std::optional<std::uint64_t> content_length_of(std::string_view value) {
  std::optional<std::uint64_t> length;
  for (;;) {
    const std::size_t comma = value.find(',');
    std::string_view item = value.substr(0, comma);
    while (!item.empty() && is_ows(item.front())) item.remove_prefix(1);
    while (!item.empty() && is_ows(item.back())) item.remove_suffix(1);
    if (item.empty() || item.size() > 19) return std::nullopt;
    std::uint64_t n = 0;
    for (char c : item) {
      if (!is_digit(c)) return std::nullopt;
      n = n * 10 + static_cast<std::uint64_t>(c - '0');
    }
    if (length && *length != n) return std::nullopt;
    length = n;
    if (comma == std::string_view::npos) return length;
    value.remove_prefix(comma + 1);
  }
}

}  // namespace

std::string_view HttpSession::normalise_content_length(Direction& d, std::string_view bytes) {
  const std::size_t line_end = bytes.find('\n');
  const std::size_t take = line_end == std::string_view::npos ? bytes.size() : line_end + 1;
  d.content_length_value.append(bytes.substr(0, take));
  bytes.remove_prefix(take);
  if (line_end == std::string_view::npos && d.content_length_value.size() <= kMaxContentLengthValue) return {};
  d.in_content_length = false;
  std::string value = std::move(d.content_length_value);
  d.content_length_value.clear();
  std::string_view text = value;
  if (text.ends_with('\n')) text.remove_suffix(1);
  if (text.ends_with('\r')) text.remove_suffix(1);
  const std::optional<std::uint64_t> length =
      value.ends_with('\n') ? content_length_of(text) : std::nullopt;
  llhttp_resume(&d.parser);
  std::string_view feed = value;
  std::string clean;
  // A plain number, which llhttp reads itself, goes as sent (the record keeps "02" as "02").
  auto plain = [](std::string_view v) {
    while (!v.empty() && is_ows(v.front())) v.remove_prefix(1);
    while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
    return !v.empty() && std::all_of(v.begin(), v.end(), is_digit);
  };
  if (length) {
    const std::uint64_t n = *length;
    const bool first = !d.content_length;
    if (first && plain(text)) {
      d.content_length = n;
    } else if (first || *d.content_length == n) {
      // A repeat of the same length is one length (h11 folds them): llhttp, which refuses a
      // second Content-Length, is told of none so far, and reads the number afresh (its
      // count starts from zero only at the first such header).
      if (!first) {
        d.parser.flags &= static_cast<std::uint16_t>(~F_CONTENT_LENGTH);
        d.parser.content_length = 0;
      }
      d.content_length = n;
      clean = fmt::format(" {}\r\n", n);
      feed = clean;
    }
  }
  // What llhttp makes of the value (an error for a value h11 refuses too) is its own; after
  // an error, the parser resynchronises in the bytes after the line (data()).
  execute(d, feed);
  return bytes;
}

void HttpSession::handle_parse_error(Direction& d, llhttp_errno_t error, std::string_view bytes,
                                     std::size_t error_at) {
  Exchange* ex = d.current;
  if (ex == nullptr) {
    // The error came before on_message_begin could give it an exchange (rare): make one so
    // the error is on record and the answer to it pairs with it.
    ex = d.is_request ? &new_exchange(now_) : response_target();
  }
  if (ex != nullptr) {
    ex->state = ExchangeState::parse_error;
    std::string_view line = line_around(bytes, error_at);
    ex->error = fmt::format("{} ({}) near \"{}\"", llhttp_get_error_reason(&d.parser),
                            llhttp_errno_name(error), line);
    if (d.is_request) {
      // The error is in the request line itself: keep what it said, for the record.
      bool on_request_line = !d.headers_done && (ex->request.method.empty() || line.starts_with(ex->request.method));
      if (on_request_line) fill_request_line_from(*ex, line);
      ex->request.ended = true;
      record_request_now(*ex);
    } else {
      ex->response.ended = true;
      end_stream_answer(*ex);
    }
  }
  d.current = nullptr;
  enter_resync(d);
  finish_front_if_done();
}

void HttpSession::fill_request_line_from(Exchange& ex, std::string_view line) {
  // Best effort for the record: "TOKEN target HTTP/x.y" even when llhttp refused the
  // method. What llhttp matched so far is not kept: "GET/" is not the method GET.
  ex.request.method.clear();
  ex.request.target.clear();
  std::size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos || sp1 == 0 || sp1 > 24) return;
  for (char c : line.substr(0, sp1)) {
    if (!is_method_char(c)) return;
  }
  ex.request.method.assign(line.substr(0, sp1));
  std::string_view rest = line.substr(sp1 + 1);
  std::size_t sp2 = rest.rfind(' ');
  std::string_view last_word = sp2 == std::string_view::npos ? rest : rest.substr(sp2 + 1);
  if (last_word.starts_with("HTTP/")) {  // "GET HTTP/1.1" has a version and no target
    ex.request.version.assign(last_word.substr(5));
    rest = sp2 == std::string_view::npos ? std::string_view{} : rest.substr(0, sp2);
  }
  ex.request.target.assign(rest);
}

void HttpSession::handle_upgrade(Direction& d, std::string_view rest) {
  if (d.is_request) {
    // CONNECT, or a request asking to switch protocols: what follows is HTTP only if the
    // server refuses. Hold it until the answer says which.
    d.awaiting_upgrade_verdict = true;
    d.held.assign(rest.substr(0, limits_.max_resync_scan_bytes));
    return;
  }
  // The server accepted: both directions carry another protocol from here on.
  response_.tunnel = true;
  request_.tunnel = true;
  request_.awaiting_upgrade_verdict = false;
  request_.held.clear();
}

void HttpSession::gap(Direction& d, timestamp_us ts, std::uint64_t bytes) {
  now_ = ts;
  d.at_chunk_boundary = false;  // the lost bytes may hold anything: the parser decides again
  if (d.tunnel) return;
  if (d.awaiting_upgrade_verdict) {
    d.held.clear();
    return;
  }
  if (d.resyncing) {
    d.resync_carry.clear();
    d.resync_at_boundary = true;
    return;
  }
  Exchange* ex = d.in_message ? d.current : nullptr;
  if (ex != nullptr) {
    ex->add(Anomaly::capture_gap);
    ex->gap_bytes += bytes;
    if (d.in_eof_body || (d.in_known_length_body && bytes <= d.parser.content_length)) {
      feed_filler(d, bytes);
      return;
    }
    if (d.is_request) {
      ex->add(Anomaly::request_incomplete);
      ex->request.ended = true;
      ex->error = fmt::format("{} bytes of the request were not captured", bytes);
      record_request_now(*ex);
    } else {
      ex->state = ExchangeState::parse_error;
      ex->error = fmt::format("{} bytes of the response were not captured; its end is unknown", bytes);
      ex->response.ended = true;
      end_stream_answer(*ex);
    }
    d.current = nullptr;
  }
  enter_resync(d);
  d.resync_at_boundary = true;
  finish_front_if_done();
}

void HttpSession::feed_filler(Direction& d, std::uint64_t bytes) {
  d.feeding_filler = true;
  if (!d.is_request && d.current && stream_owner_ == d.current) content_->gap();
  while (bytes > 0 && !d.resyncing) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(bytes, kFiller.size()));
    bytes -= n;
    execute(d, std::string_view(kFiller.data(), n));  // a parse error here resyncs; the rest is dropped
  }
  d.feeding_filler = false;
}

void HttpSession::closed(Direction& d, timestamp_us ts, CloseKind kind) {
  now_ = ts;
  CloseReason reason = close_reason_for(d, kind);  // from who had closed before this
  if (d.is_request) {
    client_closed_ = true;
    client_close_kind_ = kind;
  } else {
    server_closed_ = true;
  }
  if (kind == CloseKind::rst) {
    client_closed_ = true;  // a reset ends both directions
    server_closed_ = true;
  }
  if (kind == CloseKind::fin && d.in_message && !d.tunnel && !d.resyncing) {
    // A body delimited by the close ends here; anything else in progress is cut.
    llhttp_finish(&d.parser);
  }
  if (d.is_request && d.in_message && d.current != nullptr) {
    Exchange& ex = *d.current;
    ex.add(Anomaly::request_incomplete);
    ex.request.ended = true;
    record_request_now(ex);
    d.current = nullptr;
  }
  d.in_message = false;
  d.resyncing = false;

  bool responses_still_possible = d.is_request && kind == CloseKind::fin;
  if (responses_still_possible) {
    finish_front_if_done();  // half-close: the server may still answer
    return;
  }
  // No more responses can come: whatever is still open was cut.
  for (auto& ex : queue_) {
    if (!ex->response.complete && ex->close_reason == CloseReason::none) ex->close_reason = reason;
  }
  abort_open(ts);
}

CloseReason HttpSession::close_reason_for(const Direction& d, CloseKind kind) const {
  if (d.is_request) return kind == CloseKind::rst ? CloseReason::client_rst : CloseReason::client_fin;
  // A client that closed first went away on its own: the server's close that follows is the
  // consequence, not a failure of the server.
  if (client_closed_) return client_close_kind_ == CloseKind::rst ? CloseReason::client_rst : CloseReason::client_fin;
  return kind == CloseKind::rst ? CloseReason::server_rst : CloseReason::server_fin;
}

void HttpSession::abort_open(timestamp_us ts) {
  request_.current = nullptr;
  response_.current = nullptr;
  while (!queue_.empty()) {
    Exchange& ex = *queue_.front();
    if (!ex.response.complete) {
      if (ex.response.status != 0 && !ex.response.ended) end_stream_answer(ex);
      if (ex.times.response_end == 0) ex.times.response_end = ts;
      if (ex.error.empty()) {
        ex.error = ex.response.status != 0 ? "connection closed before the response was complete"
                                           : "connection closed before any response";
      }
    }
    finish(ex, ex.response.complete ? ExchangeState::complete : ExchangeState::aborted);
    pop_front();
  }
}

void HttpSession::close_all(timestamp_us ts, ExchangeState state, std::string_view why) {
  now_ = ts;
  request_.current = nullptr;
  response_.current = nullptr;
  while (!queue_.empty()) {
    Exchange& ex = *queue_.front();
    if (!ex.response.complete) {
      if (ex.response.status != 0 && !ex.response.ended) end_stream_answer(ex);
      if (ex.times.response_end == 0) ex.times.response_end = ts;
      if (ex.error.empty()) ex.error.assign(why);
      if (!ex.request.ended && !ex.request.complete) ex.add(Anomaly::request_incomplete);
    }
    finish(ex, ex.response.complete ? ExchangeState::complete : state);
    pop_front();
  }
  client_closed_ = true;
  server_closed_ = true;
}

void HttpSession::flag_open(Anomaly anomaly) {
  for (auto& ex : queue_) ex->add(anomaly);
}

// ---- resynchronisation ---------------------------------------------------------------------

void HttpSession::enter_resync(Direction& d) {
  reset_parser(d);
  d.resyncing = true;
  d.resync_carry.clear();
  d.resync_at_boundary = false;
}

std::string_view HttpSession::scan_for_message_start(Direction& d, std::string_view bytes) {
  // Only a carried partial line needs a copy; it exists only when the previous call found
  // nothing, so `bytes` is fresh stream data here, never a view into scan_buffer.
  std::string_view all = bytes;
  if (!d.resync_carry.empty()) {
    d.scan_buffer.assign(d.resync_carry);
    d.scan_buffer.append(bytes);
    d.resync_carry.clear();
    all = d.scan_buffer;
  }
  auto check = [&](std::string_view s) { return d.is_request ? looks_like_request_line(s) : looks_like_status_line(s); };

  // Candidates: the first byte after a gap or pickup (a segment often starts a message), and
  // every byte after a line feed.
  std::size_t candidate = 0;
  if (!d.resync_at_boundary) {
    candidate = all.find('\n');
    if (candidate != std::string_view::npos) ++candidate;
  }
  d.resync_at_boundary = false;
  while (candidate != std::string_view::npos && candidate < all.size()) {
    std::string_view rest = all.substr(candidate);
    LineCheck verdict = check(rest);
    if (verdict == LineCheck::yes) return rest;
    if (verdict == LineCheck::need_more) {
      // Keep from here: the rest of the line comes with the next bytes.
      d.resync_carry.assign(rest.substr(0, limits_.max_resync_scan_bytes));
      d.resync_at_boundary = true;
      return {};
    }
    std::size_t nl = all.find('\n', candidate);
    candidate = nl == std::string_view::npos ? nl : nl + 1;
  }
  // The stream ended on a line feed: the next byte starts a line.
  if (candidate == all.size()) d.resync_at_boundary = true;
  return {};
}

// ---- exchanges -----------------------------------------------------------------------------

void HttpSession::pop_front() { queue_.erase(queue_.begin()); }

Exchange& HttpSession::new_exchange(timestamp_us ts) {
  if (queue_.size() >= limits_.max_queued_requests) {
    Exchange& oldest = *queue_.front();
    if (request_.current == &oldest) request_.current = nullptr;
    if (response_.current == &oldest) response_.current = nullptr;
    oldest.error = "too many pipelined requests without a response";
    finish(oldest, ExchangeState::parse_error);
    pop_front();
  }
  auto ex = std::make_unique<Exchange>();
  ex->seq = numbering_.next_seq++;
  ex->id = fmt::format("{:012x}", mix64(numbering_.id_salt ^ (ex->seq * 0x100000001B3ull)) & 0xFFFFFFFFFFFFull);
  ex->client = client_;
  ex->server = server_;
  ex->times.request_start = ts;
  // Decided again from the target once it is known; a request cut before its target is
  // recorded only when every path is.
  ex->recorded = limits_.scope.every_path();
  queue_.push_back(std::move(ex));
  return *queue_.back();
}

Exchange* HttpSession::response_target() {
  for (auto& ex : queue_) {
    if (!ex->response.ended) return ex.get();
  }
  // A response with no request we saw (picked up mid-connection, or the request was lost).
  Exchange& orphan = new_exchange(now_);
  orphan.orphan_response = true;
  orphan.request.ended = true;
  orphan.request_record_written = true;  // there is no request to write
  orphan.add(Anomaly::midstream_pickup);
  orphan.recorded = limits_.scope.every_path();
  return &orphan;
}

void HttpSession::apply_scope(Exchange& ex) { limits_.scope.apply(ex.request.method, ex.request.target, ex); }

void HttpSession::record_request_now(Exchange& ex) {
  if (ex.request_record_written) return;
  ex.request_record_written = true;
  if (ex.times.request_end == 0) ex.times.request_end = now_;
  sink_.on_request_complete(ex);
}

ContentLayer& HttpSession::content() {
  if (!content_) content_ = std::make_unique<ContentLayer>();
  return *content_;
}

void HttpSession::end_stream_answer(Exchange& ex) {
  // Called once when the response ends, however it ends: the answer assembled so far is
  // the exchange's, and the session's decoder is free for the next response.
  if (ex.response.event_stream && stream_owner_ == &ex) {
    if (content_->finish(ex.answer)) ex.add(Anomaly::sse_incomplete);
    stream_owner_ = nullptr;
  } else if (ex.kept() && !ex.response.event_stream && !ex.response.body.truncated &&
             !ex.response.body.bytes.empty()) {
    content().read_body(ex.request.target, ex.response.body.bytes, ex.answer);
  }
  if (ex.answer.bad_events > 0) ex.add(Anomaly::unreadable_events);
  if (!ex.answer.error_json.empty() && ex.response.event_stream) ex.add(Anomaly::server_error_event);
}

void HttpSession::finish(Exchange& ex, ExchangeState state) {
  if (stream_owner_ == &ex) end_stream_answer(ex);
  if (ex.state != ExchangeState::parse_error) ex.state = state;
  if (!ex.request_record_written) {
    if (!ex.request.complete) ex.add(Anomaly::request_incomplete);
    record_request_now(ex);
  }
  sink_.on_exchange_end(ex);
}

void HttpSession::finish_front_if_done() {
  while (!queue_.empty()) {
    Exchange& ex = *queue_.front();
    bool request_side_done = ex.request.complete || ex.request.ended;
    bool response_side_done = ex.response.complete || ex.response.ended;
    if (!request_side_done || !response_side_done) return;
    if (request_.current == &ex || response_.current == &ex) return;
    finish(ex, ex.response.complete ? ExchangeState::complete : ExchangeState::parse_error);
    pop_front();
  }
}

// ---- llhttp callbacks ----------------------------------------------------------------------

int HttpSession::on_message_begin(llhttp_t* parser) {
  Direction& d = direction_of(parser);
  d.in_message = true;
  d.content_length.reset();
  d.chunk_complete_last = false;
  d.headers_done = false;
  d.header_field_open = false;
  d.header_bytes = 0;
  if (d.is_request) {
    d.current = &new_exchange(now_);
    return 0;
  }
  Exchange* ex = response_target();
  d.current = ex;
  // Each response message (a 1xx, then the final one) starts afresh.
  ex->response.headers.clear();
  ex->response.reason.clear();
  ex->times.response_start = now_;
  return 0;
}

int HttpSession::on_method(const char* at, std::size_t length) {
  // As sent, so a request cut right after its method still says what it was.
  if (request_.current != nullptr && request_.current->request.method.size() < 32) {
    request_.current->request.method.append(at, std::min<std::size_t>(length, 32));
  }
  return 0;
}

bool HttpSession::within_header_limit(Direction& d, std::size_t length) {
  d.header_bytes += length;
  return d.header_bytes <= limits_.max_header_bytes;  // past it: a parse error, not unbounded memory
}

int HttpSession::on_url(const char* at, std::size_t length) {
  Exchange* ex = request_.current;
  if (ex == nullptr) return 0;
  if (!within_header_limit(request_, length)) return -1;
  ex->request.target.append(at, length);
  return 0;
}

int HttpSession::on_url_complete() {
  Exchange* ex = request_.current;
  if (ex == nullptr) return 0;
  // The method is known from here on: keep it even if the headers never complete.
  ex->request.method = llhttp_method_name(static_cast<llhttp_method_t>(request_.parser.method));
  // Known before any header or body byte: exchanges without a record keep nothing.
  apply_scope(*ex);
  return 0;
}

int HttpSession::on_status(const char* at, std::size_t length) {
  Exchange* ex = response_.current;
  if (ex == nullptr) return 0;
  if (!within_header_limit(response_, length)) return -1;
  ex->response.reason.append(at, length);
  return 0;
}

int HttpSession::on_header_field(llhttp_t* parser, const char* at, std::size_t length) {
  Direction& d = direction_of(parser);
  if (d.current == nullptr) return 0;
  if (!within_header_limit(d, length)) return -1;
  auto& headers = d.is_request ? d.current->request.headers : d.current->response.headers;
  if (!d.header_field_open) {
    // Room for a typical message's headers at once (clients send 5-11, servers 4-6) rather
    // than growing 1, 2, 4, 8: each regrowth is an allocation and a move of every header.
    if (headers.capacity() == 0) headers.reserve(8);
    headers.emplace_back();
  }
  headers.back().name.append(at, length);
  d.header_field_open = true;
  return 0;
}

int HttpSession::on_header_field_complete(llhttp_t* parser) {
  Direction& d = direction_of(parser);
  if (d.current == nullptr) return 0;
  const auto& headers = d.is_request ? d.current->request.headers : d.current->response.headers;
  if (headers.empty() || !iequals(headers.back().name, "content-length")) return 0;
  // llhttp is strict about this value where h11 is not: read it here (data()).
  d.in_content_length = true;
  d.content_length_value.clear();
  return HPE_PAUSED;
}

int HttpSession::on_header_value(llhttp_t* parser, const char* at, std::size_t length) {
  Direction& d = direction_of(parser);
  if (d.current == nullptr) return 0;
  if (!within_header_limit(d, length)) return -1;
  auto& headers = d.is_request ? d.current->request.headers : d.current->response.headers;
  if (headers.empty()) headers.emplace_back();
  headers.back().value.append(at, length);
  d.header_field_open = false;
  return 0;
}

int HttpSession::on_headers_complete(llhttp_t* parser) {
  Direction& d = direction_of(parser);
  Exchange* ex = d.current;
  d.headers_done = true;
  if (ex == nullptr) return 0;
  std::string version = http_version_text(parser->http_major, parser->http_minor);
  if (d.is_request) {
    ex->request.method = llhttp_method_name(static_cast<llhttp_method_t>(parser->method));
    ex->request.version = std::move(version);
    apply_scope(*ex);
    d.in_known_length_body = (parser->flags & F_CONTENT_LENGTH) && !(parser->flags & F_CHUNKED);
    d.in_eof_body = false;
    reserve_body(ex->request.body, parser, request_body_cap(*ex));
    return 0;
  }
  ResponsePart& response = ex->response;
  response.status = parser->status_code;
  response.version = std::move(version);
  if (response.status / 100 == 1 && response.status != 101) return 0;  // interim: noted at its end

  // The method shapes the response only if the server understood the request: a broken
  // "HEAD ..." gets a 400 with a body like any other, while a success says it understood
  // even where llhttp did not.
  bool server_understood = ex->request.complete || response.status < 400;
  const std::string& method = server_understood ? ex->request.method : kNoMethod;
  bool accepted_tunnel = response.status == 101 || (method == "CONNECT" && response.status / 100 == 2);
  if (accepted_tunnel) {
    ex->add(Anomaly::tunnel);
    return 2;  // no body; llhttp_execute returns HPE_PAUSED_UPGRADE
  }
  if (method == "HEAD") return 1;  // the headers describe a body that is not sent
  response.event_stream = starts_with_icase(find_header(response.headers, "content-type"), "text/event-stream");
  if (response.event_stream && ex->kept()) {
    content().begin(ex->request.target, true);
    stream_owner_ = ex;
  }
  d.in_known_length_body = (parser->flags & F_CONTENT_LENGTH) && !(parser->flags & F_CHUNKED);
  d.in_eof_body = llhttp_message_needs_eof(parser) != 0;
  reserve_body(response.body, parser, response_body_cap(*ex));
  return 0;
}

int HttpSession::on_body(llhttp_t* parser, const char* at, std::size_t length) {
  take_body(direction_of(parser), std::string_view(at, length));
  return 0;
}

void HttpSession::take_body(Direction& d, std::string_view bytes) {
  Exchange* ex = d.current;
  if (ex == nullptr || d.feeding_filler) return;
  if (d.is_request) {
    ex->request.body.append(bytes, request_body_cap(*ex));
    return;
  }
  ex->response.body.append(bytes, response_body_cap(*ex));
  if (stream_owner_ == ex) content_->feed(now_, bytes);
}

int HttpSession::on_chunk_header(llhttp_t* parser) {
  Direction& d = direction_of(parser);
  d.in_known_length_body = parser->content_length > 0;
  d.chunk_complete_last = false;
  return 0;
}

int HttpSession::on_chunk_complete(llhttp_t* parser) {
  Direction& d = direction_of(parser);
  d.in_known_length_body = false;
  d.chunk_complete_last = true;
  return 0;
}

int HttpSession::on_message_complete(llhttp_t* parser) {
  Direction& d = direction_of(parser);
  Exchange* ex = d.current;
  d.chunk_complete_last = false;
  d.in_message = false;
  d.in_known_length_body = false;
  d.in_eof_body = false;
  d.current = nullptr;
  if (ex == nullptr) return 0;
  if (d.is_request) {
    ex->request.complete = true;
    ex->request.ended = true;
    ex->times.request_end = now_;
    record_request_now(*ex);
    finish_front_if_done();
    return 0;
  }
  ResponsePart& response = ex->response;
  if (response.status / 100 == 1 && response.status != 101) {
    response.interim_statuses.push_back(response.status);
    response.status = 0;
    response.headers.clear();
    response.reason.clear();
    ex->times.response_start = 0;
    return 0;
  }
  response.complete = true;
  response.ended = true;
  ex->times.response_end = now_;
  end_stream_answer(*ex);
  release_held_upgrade_bytes(*ex);
  finish_front_if_done();
  return 0;
}

void HttpSession::release_held_upgrade_bytes(const Exchange& ex) {
  // The server answered an upgrade request without switching: the held bytes are HTTP.
  if (!request_.awaiting_upgrade_verdict || ex.has(Anomaly::tunnel)) return;
  request_.awaiting_upgrade_verdict = false;
  std::string held = std::move(request_.held);
  request_.held.clear();
  reset_parser(request_);
  if (!held.empty()) pending_request_bytes_ = std::move(held);
}

void HttpSession::drain_pending_request_bytes() {
  if (pending_request_bytes_.empty()) return;
  std::string bytes = std::move(pending_request_bytes_);
  pending_request_bytes_.clear();
  data(request_, now_, bytes);
}

}  // namespace chatcap
