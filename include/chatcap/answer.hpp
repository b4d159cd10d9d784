// The answer of one exchange, whatever dialect the server spoke: what the model said
// (content, reasoning, tool calls), how it ended, what it cost, what went wrong, and the
// packet times of its events (TTFT and inter-token gaps come from token-bearing events).
//
// Every dialect's reader (content.hpp, dialect/*.hpp) fills this one shape, so the record,
// the server watch and `last`/`show`/`tail` read every dialect the same way:
//   finish_reason         normalised: stop, length, tool_calls, content_filter, error
//   native_finish_reason  the dialect's own word when it differs (Anthropic's end_turn,
//                         Responses' incomplete/max_output_tokens ...)
//   input_tokens/output_tokens  normalised usage; usage_json keeps the dialect's object
//   tool_calls            by index, in OpenAI's shape when written (function name and
//                         arguments)
// The helpers below are what every reader uses to add to an answer: text capped on a UTF-8
// boundary, token events counted, tool-call slots in index order.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "chatcap/types.hpp"

namespace chatcap {

// The generation dialects vLLM serves, told by the request path.
enum class Dialect : std::uint8_t { unknown, chat, completions, responses, messages };
inline constexpr std::size_t kDialects = 5;
// "chat", "completions", "responses", "messages"; "" for unknown.
std::string_view to_string(Dialect dialect);
// By the path's last segments, so a gateway's prefix does not matter: .../chat/completions,
// .../completions, .../responses, .../messages; anything else is unknown.
Dialect dialect_of(std::string_view target);

struct ToolCall {
  std::int64_t index = 0;
  std::string id;
  std::string type;       // "function" unless the server said otherwise
  std::string name;
  std::string arguments;  // concatenation of every arguments fragment (JSON text)
};

struct Answer {
  static constexpr std::size_t kMaxTextBytes = 16 * 1024 * 1024;  // cap per text field
  static constexpr std::size_t kMaxGapSamples = 1 << 16;
  static constexpr std::size_t kMaxToolCalls = 256;  // distinct tool-call indexes kept

  // First, what every streamed token event updates, together rather than spread over five
  // cache lines (a stream's state is revisited once per event, among hundreds of others').
  std::string content;
  std::uint64_t events = 0;     // SSE events seen (including [DONE])
  std::uint64_t token_events = 0;  // events carrying content, reasoning or tool-call text
  // Times (packet timestamps) for timing fields; 0 = not seen.
  timestamp_us first_event_ts = 0;
  timestamp_us first_token_ts = 0;  // first event carrying content, reasoning or tool-call text
  timestamp_us last_token_ts = 0;
  timestamp_us last_event_ts = 0;
  timestamp_us error_ts = 0;        // first event carrying an error
  std::vector<std::uint32_t> token_gaps_us;  // gaps between token-bearing events, capped
  bool done = false;            // the stream's own end was seen ([DONE], message_stop, response.completed)
  bool text_truncated = false;  // some text field hit kMaxTextBytes, or kMaxToolCalls was hit
  std::uint64_t bad_events = 0; // events whose data was not JSON we could read
  std::string reasoning;
  std::vector<ToolCall> tool_calls;  // ordered by index
  std::string finish_reason;         // normalised (see above)
  std::string native_finish_reason;  // the dialect's own, when it differs
  std::optional<std::int64_t> input_tokens;
  std::optional<std::int64_t> output_tokens;
  std::string usage_json;  // raw JSON of the dialect's usage object (the last, or merged); empty if none
  std::string error_json;  // raw JSON of an error object (in an event or the body); empty if none
  std::string model;
  Dialect dialect = Dialect::unknown;

  bool has_something() const {
    return !content.empty() || !reasoning.empty() || !tool_calls.empty() || !finish_reason.empty() ||
           !error_json.empty() || !usage_json.empty();
  }
  // Percentile (0..100) of token_gaps_us in milliseconds; nullopt when there are no gaps.
  std::optional<double> gap_percentile_ms(double percentile) const;
  // The median and 99th percentile together (each record has both): one copy of the
  // samples, and the second selection runs over the upper half only. In microseconds, as
  // sampled (the record writes them as milliseconds, JsonWriter::millis).
  struct GapMedianP99 {
    std::optional<std::uint32_t> p50_us;
    std::optional<std::uint32_t> p99_us;
  };
  GapMedianP99 gap_p50_p99_us() const;
  void clear();
};

// Appends `piece` to `text` without passing Answer::kMaxTextBytes; a cut backs up to a
// UTF-8 character boundary so the record stays valid UTF-8. False when it cut.
inline bool append_capped(std::string& text, std::string_view piece) {
  const std::size_t room = text.size() < Answer::kMaxTextBytes ? Answer::kMaxTextBytes - text.size() : 0;
  if (piece.size() <= room) {
    text.append(piece);
    return true;
  }
  std::size_t cut = room;
  while (cut > 0 && (static_cast<unsigned char>(piece[cut]) & 0xC0) == 0x80) --cut;
  text.append(piece.substr(0, cut));
  return false;
}

// Appends streamed text to one of the answer's text fields, marking the answer cut when the
// cap is met. False for an empty piece, which changes nothing.
inline bool append_answer_text(Answer& answer, std::string& field, std::string_view piece) {
  if (piece.empty()) return false;
  if (!append_capped(field, piece)) answer.text_truncated = true;
  return true;
}

// One event of a stream at `ts` (any event, [DONE] included): counted, first and last times.
inline void note_event(Answer& answer, timestamp_us ts) {
  ++answer.events;
  if (answer.events == 1) answer.first_event_ts = ts;
  answer.last_event_ts = ts;
}

// The stream said it failed at `ts`: a server death is dated by the first such event, not
// by the events (`[DONE]`, a closing event) that may follow it in later packets.
inline void note_error_event(Answer& answer, timestamp_us ts) {
  if (answer.error_ts == 0) answer.error_ts = ts;
}

// One token-bearing event at `ts`: counted, its gap to the last one sampled.
inline void note_token_event(Answer& answer, timestamp_us ts) {
  ++answer.token_events;
  if (answer.token_events == 1) {
    answer.first_token_ts = ts;
  } else if (answer.token_gaps_us.size() < Answer::kMaxGapSamples) {
    // Room for a typical answer's gaps at once (512 bytes), not eight regrowths and copies.
    if (answer.token_gaps_us.capacity() == 0) answer.token_gaps_us.reserve(128);
    const timestamp_us gap =
        std::clamp<timestamp_us>(ts - answer.last_token_ts, 0, std::numeric_limits<std::uint32_t>::max());
    answer.token_gaps_us.push_back(static_cast<std::uint32_t>(gap));
  }
  answer.last_token_ts = ts;
}

// The tool call with this index, created in index order; nullptr past kMaxToolCalls (the
// answer is then marked text_truncated).
ToolCall* tool_call_slot(Answer& answer, std::int64_t index);

}  // namespace chatcap
