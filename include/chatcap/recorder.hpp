// The recorder: endpoint filter, record formatting, and the hand-off to a record sink.
//
// It is the ExchangeSink of every HTTP session. For each exchange that passes the endpoint
// filter it writes two JSON Lines records (DESIGN.md, "Record format"):
//   {"type":"request",...}   the moment the request is complete — on disk before the server
//                            can die on it;
//   {"type":"exchange",...}  when the exchange ends, with its state, response, assembled
//                            answer, timing and anomalies.
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

enum class RecordType : std::uint8_t { request, exchange, server_down };

// Where finished record lines go (stdout for `read`, the log writer for `run`).
class RecordSink {
 public:
  virtual ~RecordSink() = default;
  // `line` is one complete JSON object followed by '\n'; `id` is the exchange's id (empty
  // for records that belong to no exchange).
  virtual void write_record(RecordType type, std::string_view id, std::string_view line) = 0;
};

struct RecorderConfig {
  // Request-path prefixes to record; "/" records every path. Query strings are ignored.
  std::vector<std::string> endpoints{"/v1/chat/completions"};
  bool redact = true;
};

// True when the path of `target` (origin-form or absolute-form, query ignored) is one of the
// endpoints or below one of them.
bool target_matches(std::string_view target, const std::vector<std::string>& endpoints);

// "<redacted sha256:1a2b3c4d>" for credential headers, else the value unchanged.
bool is_credential_header(std::string_view name);
std::string redact_value(std::string_view value);

// Append one record line (with its '\n') to `out`; the string forms are for tests.
void format_request_record(const Exchange& exchange, bool redact, std::string& out);
void format_exchange_record(const Exchange& exchange, bool redact, std::string& out);
std::string format_request_record(const Exchange& exchange, bool redact);
std::string format_exchange_record(const Exchange& exchange, bool redact);
std::string format_server_down_record(const ServerDown& down);

class Recorder : public ExchangeSink, public ServerDownSink {
 public:
  Recorder(RecorderConfig config, RecordSink& sink);

  // The filter HTTP sessions consult; lives as long as the recorder.
  const TargetFilter* filter() const { return &filter_; }

  void on_request_complete(Exchange& exchange) override;
  void on_exchange_end(Exchange& exchange) override;
  void on_server_down(const ServerDown& down) override;

  std::uint64_t requests_written() const { return requests_written_; }
  std::uint64_t exchanges_written() const { return exchanges_written_; }
  std::uint64_t exchanges_filtered() const { return exchanges_filtered_; }
  std::uint64_t server_downs_written() const { return server_downs_written_; }
  std::uint64_t count(ExchangeState state) const { return by_state_[static_cast<std::size_t>(state)]; }

 private:
  RecorderConfig config_;
  RecordSink& sink_;
  TargetFilter filter_;
  std::string line_;  // the record being formatted; its capacity is reused
  std::uint64_t requests_written_ = 0;
  std::uint64_t exchanges_written_ = 0;
  std::uint64_t exchanges_filtered_ = 0;
  std::uint64_t server_downs_written_ = 0;
  std::uint64_t by_state_[6] = {};
};

}  // namespace chatcap
