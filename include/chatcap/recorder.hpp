// The recorder: record formatting, and the hand-off to a record sink.
//
// It is the ExchangeSink after the server watch. For each exchange that gets a record
// (Exchange::kept(), decided by the HTTP session's RecordScope) it writes two JSON Lines
// records (DESIGN.md, "Record format"):
//   {"type":"request",...}   the moment the request is complete — on disk before the server
//                            can die on it;
//   {"type":"exchange",...}  when the exchange ends, with its state, response, assembled
//                            answer, timing and anomalies.
// Exchanges on a --endpoint path go to the ring (RecordType::request/exchange: the last N);
// watched-only ones (POSTs on other paths) to the watched log (watched_request/exchange,
// "watched_only":true), bounded on its own so a flood of them cannot push chat exchanges out.
// When a server death names a watched-only request as a suspect, a copy of its request
// record ("pinned":true) goes into the ring log with the server_down record, so the suspect
// stays on disk as long as the death does. A request carrying a known engine killer
// (risks.hpp) has "risks":[{"id","why","ref"}] and is announced once to the sink
// (on_risk_notice), the moment it is complete.
// Bodies are kept byte-exact: a JSON string when they are valid UTF-8, else base64 with
// "body_encoding":"base64". Credentials (Authorization, Proxy-Authorization, Cookie,
// Set-Cookie, X-Api-Key, Api-Key) become "<redacted sha256:xxxxxxxx>" unless redaction is off.
// Captured bytes are only ever data here: they go into JSON strings, never into a format
// string or a shell.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "chatcap/exchange.hpp"
#include "chatcap/http_session.hpp"
#include "chatcap/server_watch.hpp"

namespace chatcap {

enum class RecordType : std::uint8_t {
  request,           // ring: counted toward --keep
  exchange,
  server_down,
  watched_request,   // watched log: counted toward --keep-watched
  watched_exchange,
  pinned_request,    // ring, not counted: a watched-only suspect's request next to its death
};

// Where finished record lines go (stdout for `read`, the log writer for `run`).
class RecordSink {
 public:
  virtual ~RecordSink() = default;
  // `line` is one complete JSON object followed by '\n'; `id` is the exchange's id (empty
  // for records that belong to no exchange).
  virtual void write_record(RecordType type, std::string_view id, std::string_view line) = 0;
  // A request with a known risk is complete: one sentence for people (stderr, the journal).
  // Captured text in it is already made printable.
  virtual void on_risk_notice(std::string_view /*sentence*/) {}
};

struct RecorderConfig {
  bool redact = true;
};

// "<redacted sha256:1a2b3c4d>" for credential headers, else the value unchanged.
bool is_credential_header(std::string_view name);
std::string redact_value(std::string_view value);

// Append one record line (with its '\n') to `out`; the string forms are for tests.
// `summary`: the request's summary when the exchange no longer holds it (released once its
// record is written); nullptr: the exchange's own.
void format_request_record(const Exchange& exchange, bool redact, std::string& out,
                           const RequestSummary* summary = nullptr);
void format_exchange_record(const Exchange& exchange, bool redact, std::string& out);
std::string format_request_record(const Exchange& exchange, bool redact);
std::string format_exchange_record(const Exchange& exchange, bool redact);
std::string format_server_down_record(const ServerDown& down);
// What on_risk_notice says of a request with risks.
std::string risk_notice(const Exchange& exchange);

class Recorder : public ExchangeSink, public ServerDownSink {
 public:
  Recorder(RecorderConfig config, RecordSink& sink);

  void on_request_complete(Exchange& exchange) override;
  void on_exchange_end(Exchange& exchange) override;
  void on_server_down(const ServerDown& down) override;

  std::uint64_t requests_written() const { return requests_written_; }
  std::uint64_t watched_requests_written() const { return watched_requests_written_; }
  std::uint64_t risky_requests() const { return risky_requests_; }
  std::uint64_t exchanges_written() const { return exchanges_written_; }
  std::uint64_t exchanges_filtered() const { return exchanges_filtered_; }
  std::uint64_t server_downs_written() const { return server_downs_written_; }
  std::uint64_t count(ExchangeState state) const { return by_state_[static_cast<std::size_t>(state)]; }

 private:
  RecorderConfig config_;
  RecordSink& sink_;
  std::string line_;  // the record being formatted; its capacity is reused
  std::uint64_t requests_written_ = 0;
  std::uint64_t watched_requests_written_ = 0;
  std::uint64_t risky_requests_ = 0;
  std::uint64_t exchanges_written_ = 0;
  std::uint64_t exchanges_filtered_ = 0;
  std::uint64_t server_downs_written_ = 0;
  std::uint64_t by_state_[6] = {};
};

}  // namespace chatcap
