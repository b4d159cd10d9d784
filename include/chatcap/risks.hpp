// Known engine-killing request shapes, and the stage that reads each request once.
//
// vLLM's own tracker lists requests that raise inside EngineCore's step loop, which has no
// per-request isolation: the engine dies, the request gets a 500 EngineDeadError and so does
// every request after it (or the API server exits). chatcap sees each request before the
// engine does, so it can say "this one carries a known killer" the moment it is complete,
// and rank it first among the suspects if the server then dies.
//
// risk_table() is the one list. Each entry has a stable id (a contract: records carry it),
// the shape it matches, the vLLM versions upstream names, the upstream reference and a
// one-line explanation; none is added without a reference checked against its upstream
// thread. The shapes are matched on the request summary (request_summary.hpp), read once per request
// by RequestAnalyzer, on every generation endpoint: the fields live at the top level of the
// body in chat, completions, Responses and Anthropic Messages requests alike.
//
// RequestAnalyzer sits between the HTTP sessions and the server watch (ExchangeSink in and
// out): for every request that gets a record it fills request.summary and request.risks, so
// the watch can rank by risk and the recorder writes what was read, without a second parse.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "chatcap/exchange.hpp"
#include "chatcap/http_session.hpp"
#include "chatcap/request_summary.hpp"

namespace chatcap {

// What an entry's matcher sees of a request.
struct RiskInput {
  const RequestSummary& summary;
  std::string_view path;  // the request's path, query cut
  // Read from summary.structured_output_json:
  bool structured_lacks_constraint = false;  // see structured_output_without_constraint
  std::string_view response_format_type;     // response_format.type
  std::string_view tool_choice;              // tool_choice, when a string
};

struct RiskEntry {
  std::string_view id;        // stable: the record's risks[].id
  std::string_view shape;     // what a request must look like to match
  std::string_view versions;  // vLLM versions affected, as upstream says
  std::string_view ref;       // upstream reference, owner/repo#N
  std::string_view why;       // one line for the operator
  bool (*matches)(const RiskInput& request);
};

// Every known shape, in a fixed order; bit i of a risk mask is entry i.
std::span<const RiskEntry> risk_table();
inline constexpr std::size_t kMaxRisks = 32;  // a mask is 32 bits

// The mask of entries `summary` matches, for a request to `target`.
std::uint32_t assess_risks(const RequestSummary& summary, std::string_view target);
// The entries of a mask, in table order.
std::vector<const RiskEntry*> risks_in(std::uint32_t mask);
// The first entry of a mask (the one a sentence names), nullptr for none.
const RiskEntry* first_risk(std::uint32_t mask);

// structured_output_without_constraint, on its own: `structured_output_json` is the
// summary's object of structured-output fields. Exposed for tests.
bool structured_output_lacks_constraint(std::string_view structured_output_json);

class RequestAnalyzer : public ExchangeSink {
 public:
  explicit RequestAnalyzer(ExchangeSink& next) : next_(next) {}

  void on_request_complete(Exchange& exchange) override;
  void on_exchange_end(Exchange& exchange) override { next_.on_exchange_end(exchange); }

  std::uint64_t risky_requests() const { return risky_requests_; }

 private:
  ExchangeSink& next_;
  std::uint64_t risky_requests_ = 0;
};

}  // namespace chatcap
