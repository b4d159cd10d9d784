// An Exchange is one HTTP request and its response as the wire showed them: the bytes kept
// (bodies up to a cap), the packet times that give TTFB/TTFT/duration, the state it ended
// in and what went wrong on the way (anomalies).
//
// States (DESIGN.md, "Exchange states"):
//   in_flight        request complete, response not (only ever seen in the request record)
//   complete         the response ended as HTTP says it ends
//   aborted          FIN/RST before the response completed (close_reason says whose)
//   timeout          the connection went idle past the flow table's limit
//   capture_stopped  capture ended (end of file, daemon stopped) before the exchange did
//   parse_error      the bytes were not HTTP we could follow (error says why)
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "chatcap/answer.hpp"
#include "chatcap/request_summary.hpp"
#include "chatcap/types.hpp"

namespace chatcap {

enum class ExchangeState : std::uint8_t {
  in_flight,
  complete,
  aborted,
  timeout,
  capture_stopped,
  parse_error,
};
std::string_view to_string(ExchangeState state);

// Anomalies are bits so an exchange carries any set of them without allocation.
enum class Anomaly : std::uint32_t {
  capture_gap = 1u << 0,          // bytes of this exchange were never captured
  body_truncated = 1u << 1,       // a body exceeded --max-body; the rest was counted, not kept
  request_incomplete = 1u << 2,   // the request never completed
  midstream_pickup = 1u << 3,     // connection seen without its SYN (daemon started late)
  server_error_event = 1u << 4,   // the stream carried an error object
  unanswered_interim = 1u << 5,   // only 1xx responses were seen
  packet_truncated = 1u << 6,     // caplen < len on a packet of this exchange
  capture_drops = 1u << 7,        // kernel/queue drops happened while this exchange was open
  sse_incomplete = 1u << 8,       // an SSE event was cut by the end of the stream
  server_down = 1u << 9,          // cut by the death of the server
  tunnel = 1u << 10,              // CONNECT/Upgrade: bytes after the headers are not HTTP
  unreadable_events = 1u << 11,   // stream events its dialect's reader could not read (answer.bad_events)
};
constexpr std::uint32_t bit(Anomaly a) { return static_cast<std::uint32_t>(a); }
// Names of the set bits, in a fixed order, e.g. {"capture_gap","body_truncated"}.
std::vector<std::string_view> anomaly_names(std::uint32_t anomalies);

// Who ended the connection under an unfinished exchange.
enum class CloseReason : std::uint8_t { none, client_fin, client_rst, server_fin, server_rst };
std::string_view to_string(CloseReason reason);

struct Header {
  std::string name;   // as sent
  std::string value;  // as sent, surrounding whitespace trimmed by the parser
};

// The value of the first header called `name` (any case); empty when there is none.
std::string_view find_header(const std::vector<Header>& headers, std::string_view name);

// A body kept up to a cap; bytes past the cap are counted, not stored.
struct Body {
  std::string bytes;
  std::uint64_t total = 0;
  bool truncated = false;

  void append(std::string_view data, std::size_t cap);
  void clear();
};

struct RequestPart {
  std::string method;
  std::string target;
  std::string version;  // "1.1"
  std::vector<Header> headers;
  Body body;
  bool complete = false;  // parsed to its end
  bool ended = false;     // complete, or cut (gap, parse error, close) and never will be
  // What the request asks for (model, stream, structured output...) and the known
  // engine-killing shapes it carries (bits of risk_table()), read once when it is complete
  // (RequestAnalyzer) for every request that gets a record; null for the others.
  std::shared_ptr<const RequestSummary> summary;  // shared: an Exchange stays copyable (tests)
  std::uint32_t risks = 0;
};

struct ResponsePart {
  // First, what every segment of the body touches (see Exchange::recorded).
  Body body;
  bool event_stream = false;  // Content-Type: text/event-stream
  int status = 0;             // 0 = no status line seen
  std::string reason;
  std::string version;
  std::vector<Header> headers;
  std::vector<int> interim_statuses;  // 1xx responses seen before the final one
  bool complete = false;  // parsed to its end
  bool ended = false;     // complete, or cut and never will be
};

struct ExchangeTimes {
  timestamp_us request_start = 0;     // first byte of the request line
  timestamp_us request_end = 0;       // request complete
  timestamp_us response_start = 0;    // first byte of the final (non-1xx) response
  timestamp_us response_end = 0;      // response complete or cut
};

struct Exchange {
  std::string id;          // short stable id (hex), unique within a log
  std::uint64_t seq = 0;   // order in which requests were seen by this process
  Endpoint client;
  Endpoint server;
  RequestPart request;
  // Read with the response's body and event_stream for every segment of a response: the
  // three sit within 64 bytes (a stream's exchanges are visited once per event, among
  // hundreds of other connections', and each cache line is a miss). Not aligned to a line:
  // 10,000 idle connections each hold an exchange, and padding them costs more than the
  // odd straddled line.
  bool recorded = true;  // passes the endpoint filter: in the ring of N, bodies kept, records written
  // Not in the ring, but a request the server watch must be able to name: a POST on a path
  // outside --endpoint (a killer can come through any endpoint). Its request is kept and
  // written to the watched log (bounded by --keep-watched), its response body only when it is
  // an error.
  bool watched_only = false;
  ResponsePart response;
  ExchangeTimes times;
  Answer answer;           // the answer assembled in its dialect (streamed or not), when the body is one
  ExchangeState state = ExchangeState::in_flight;
  std::uint32_t anomalies = 0;
  CloseReason close_reason = CloseReason::none;
  std::string error;       // parse error reason, or why it ended as it did
  std::uint64_t gap_bytes = 0;  // bytes lost to capture gaps inside this exchange
  bool orphan_response = false;  // a response whose request was never seen
  bool request_record_written = false;

  // A record is written for it: in the ring, or in the watched log.
  bool kept() const { return recorded || watched_only; }
  void add(Anomaly a) { anomalies |= bit(a); }
  bool has(Anomaly a) const { return (anomalies & bit(a)) != 0; }
};

}  // namespace chatcap
