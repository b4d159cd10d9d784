// OpenAI chat-completions understanding: the request summary and the assembled answer.
//
// Hot path: every streamed chunk is read with simdjson's on-demand API (see DESIGN.md,
// "Performance budget"); nothing here builds a DOM. Three entry points:
//
//   summarize_chat_request(body)      what the operator needs to see of a request at a glance:
//                                     model, stream, max_tokens, message and tool counts, and
//                                     every structured-output field verbatim (the fields that
//                                     have killed vLLM's engine).
//   ChatStreamAssembler               fed the SSE events of a streamed response: concatenates
//                                     delta.content, delta.reasoning_content / delta.reasoning,
//                                     tool_calls by index (function.arguments concatenated);
//                                     keeps finish_reason, usage, [DONE], error objects and the
//                                     event times that give TTFT and inter-token gaps.
//   assemble_chat_completion(body)    the same answer from a non-streamed JSON response.
//
// Nothing here throws on bad input: JSON that does not parse is counted (bad_events) and the
// rest of the stream is still assembled.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "chatcap/sse.hpp"
#include "chatcap/types.hpp"

namespace chatcap {

struct RequestSummary {
  bool json_valid = false;             // body parsed as a JSON object
  std::string model;
  std::optional<bool> stream;
  std::optional<std::int64_t> max_tokens;  // max_tokens, else max_completion_tokens
  std::int64_t messages = 0;           // length of `messages`
  std::int64_t tools = 0;              // length of `tools`
  std::optional<std::int64_t> n;
  // A JSON object text holding, verbatim, every structured-output field present:
  // response_format, structured_outputs, guided_json, guided_regex, guided_choice,
  // guided_grammar, guided_decoding, guided_decoding_backend, guided_whitespace_pattern,
  // tool_choice. Empty string when none is present. Example: {"structured_outputs":{"json":null}}
  std::string structured_output_json;
  // Not in the record's summary; what the risk table (risks.hpp) looks at.
  std::int64_t logit_bias_entries = 0;  // members of `logit_bias`
  std::int64_t allowed_token_ids = 0;   // length of `allowed_token_ids`
  std::int64_t stop_token_ids = 0;      // length of `stop_token_ids`
  std::optional<bool> echo;
  std::int64_t logprobs = 0;            // `logprobs` as a count (true = 1)
  bool priority = false;                // a `priority` field, not null
};

RequestSummary summarize_chat_request(std::string_view body);

struct ToolCallDelta {
  std::int64_t index = 0;
  std::string id;
  std::string type;
  std::string name;
  std::string arguments;  // concatenation of every function.arguments fragment
};

struct ChatAnswer {
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
  timestamp_us error_ts = 0;        // first event carrying an error object
  std::vector<std::uint32_t> token_gaps_us;  // gaps between token-bearing events, capped
  bool done = false;            // `data: [DONE]` seen
  bool text_truncated = false;  // some text field hit kMaxTextBytes, or kMaxToolCalls was hit
  std::uint64_t bad_events = 0; // events whose data was not JSON we could read
  std::string reasoning;
  std::vector<ToolCallDelta> tool_calls;  // ordered by index
  std::string finish_reason;
  std::string usage_json;  // raw JSON of the last `usage` object seen; empty if none
  std::string error_json;  // raw JSON of an `error` object (in a chunk or the body); empty if none
  std::string model;

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

// What the last chunk of a stream looked like around its delta text. A stream's chunks are
// byte-for-byte alike but for that text (same id, created, model, index, nulls), so a chunk
// that starts with `head` and ends with `tail` is the last one with other text: only the
// string between needs reading. Learnt from each chunk read in full, and only when all that
// chunk did, beyond assignments a repeat leaves as they are, was append that one string.
struct ChunkShape {
  static constexpr std::size_t kMaxBytes = 4096;  // larger chunks are always read in full
  enum class Text : std::uint8_t { content, reasoning };
  // The head (up to and including the text's opening quote) and the tail (from just after
  // its closing quote to the end), one after the other: one buffer, its lines adjacent.
  std::string head_and_tail;
  std::uint32_t head_bytes = 0;  // 0: no shape known
  Text target = Text::content;

  std::string_view head() const { return std::string_view(head_and_tail).substr(0, head_bytes); }
  std::string_view tail() const { return std::string_view(head_and_tail).substr(head_bytes); }
  void learn(std::string_view head, std::string_view tail, Text text) {
    head_and_tail.assign(head).append(tail);
    head_bytes = static_cast<std::uint32_t>(head.size());
    target = text;
  }
  void forget() {
    head_and_tail.clear();
    head_bytes = 0;
  }
};

class alignas(64) ChatStreamAssembler : public SseHandler {
 public:
  void on_sse_event(const SseEvent& event) override;
  const ChatAnswer& answer() const { return answer_; }
  ChatAnswer& answer() { return answer_; }
  void reset();

 private:
  ChunkShape shape_;      // first: read for every event, beside the answer's counters
  ChatAnswer answer_;
  std::string scratch_;  // padded copy of event data for simdjson, reused
};

// Parses a complete non-streamed chat.completion (or error) body into `out`.
// Returns false when the body is not a JSON object (out is left with what was read).
bool assemble_chat_completion(std::string_view body, ChatAnswer& out);

}  // namespace chatcap
