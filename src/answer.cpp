#include "chatcap/answer.hpp"

#include <cmath>

namespace chatcap {

std::string_view to_string(Dialect dialect) {
  switch (dialect) {
    case Dialect::chat: return "chat";
    case Dialect::completions: return "completions";
    case Dialect::responses: return "responses";
    case Dialect::messages: return "messages";
    case Dialect::unknown: break;
  }
  return "";
}

Dialect dialect_of(std::string_view target) {
  std::string_view path = path_of(target);
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  if (path.ends_with("/chat/completions")) return Dialect::chat;
  if (path.ends_with("/completions")) return Dialect::completions;
  if (path.ends_with("/responses")) return Dialect::responses;
  if (path.ends_with("/messages")) return Dialect::messages;
  return Dialect::unknown;
}

ToolCall* tool_call_slot(Answer& answer, std::int64_t index) {
  auto& calls = answer.tool_calls;
  auto at = std::lower_bound(calls.begin(), calls.end(), index,
                             [](const ToolCall& call, std::int64_t i) { return call.index < i; });
  if (at != calls.end() && at->index == index) return &*at;
  if (calls.size() >= Answer::kMaxToolCalls) {
    answer.text_truncated = true;
    return nullptr;
  }
  ToolCall fresh;
  fresh.index = index;
  return &*calls.insert(at, std::move(fresh));
}

namespace {

// Nearest rank: the smallest sample with at least `percentile` % of samples at or below it
// (1-based, within 1..samples).
std::size_t nearest_rank(double percentile, std::size_t samples) {
  if (!(percentile >= 0.0)) percentile = 0.0;  // also NaN
  percentile = std::min(percentile, 100.0);
  auto rank = static_cast<std::size_t>(std::ceil(percentile / 100.0 * static_cast<double>(samples)));
  return std::clamp<std::size_t>(rank, 1, samples);
}

// A scratch copy of the gaps kept by the thread (at most kMaxGapSamples): no allocation per
// record, and the answer's own samples keep their order.
std::vector<std::uint32_t>& sorted_scratch(const std::vector<std::uint32_t>& gaps) {
  thread_local std::vector<std::uint32_t> scratch;
  scratch.assign(gaps.begin(), gaps.end());
  return scratch;
}

// Puts the rank-th smallest of [first, last) at first + rank - 1; everything before it is
// no larger and everything after no smaller.
std::uint32_t select_rank(std::vector<std::uint32_t>::iterator first, std::vector<std::uint32_t>::iterator last,
                          std::size_t rank) {
  auto nth = first + static_cast<std::ptrdiff_t>(rank - 1);
  std::nth_element(first, nth, last);
  return *nth;
}

double as_ms(std::uint32_t us) { return static_cast<double>(us) / 1000.0; }

}  // namespace

std::optional<double> Answer::gap_percentile_ms(double percentile) const {
  if (token_gaps_us.empty()) return std::nullopt;
  std::vector<std::uint32_t>& sorted = sorted_scratch(token_gaps_us);
  return as_ms(select_rank(sorted.begin(), sorted.end(), nearest_rank(percentile, sorted.size())));
}

Answer::GapMedianP99 Answer::gap_p50_p99_us() const {
  if (token_gaps_us.empty()) return {};
  std::vector<std::uint32_t>& sorted = sorted_scratch(token_gaps_us);
  const std::size_t rank50 = nearest_rank(50.0, sorted.size());
  const std::size_t rank99 = nearest_rank(99.0, sorted.size());  // >= rank50
  GapMedianP99 result;
  result.p50_us = select_rank(sorted.begin(), sorted.end(), rank50);
  // The p99 sample is at or after the median's position, among samples no smaller.
  const auto median_at = sorted.begin() + static_cast<std::ptrdiff_t>(rank50 - 1);
  result.p99_us = select_rank(median_at, sorted.end(), rank99 - rank50 + 1);
  return result;
}

void Answer::clear() {
  content.clear();
  reasoning.clear();
  tool_calls.clear();
  finish_reason.clear();
  native_finish_reason.clear();
  input_tokens.reset();
  output_tokens.reset();
  usage_json.clear();
  error_json.clear();
  model.clear();
  done = false;
  text_truncated = false;
  events = 0;
  bad_events = 0;
  token_events = 0;
  first_event_ts = 0;
  first_token_ts = 0;
  last_token_ts = 0;
  last_event_ts = 0;
  error_ts = 0;
  token_gaps_us.clear();
  dialect = Dialect::unknown;
}

}  // namespace chatcap
