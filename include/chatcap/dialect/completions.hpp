// Legacy completions (/v1/completions): a prompt in, text out, as vLLM serves it.
//
// Streamed: `text_completion` events, one per token or so; choice 0's `text` appended,
// its finish_reason (already OpenAI's words: stop, length), usage (a last chunk with
// `"choices": []` when stream_options.include_usage asks for it), `[DONE]`, and error
// objects (vLLM streams `data: {"error": {...}}` when its engine dies; `event: error` too).
// Whole: a `text_completion` body, choice 0's text, or an error body (kept whole).
// No reasoning and no tool calls in this dialect.
//
// Only choice 0 is recorded (a request with n > 1 has others); a choice with no `index` is
// choice 0. A choice-0 `text` that is neither a string nor null makes its event a bad
// event (no completion server writes one). Usage's prompt_tokens and completion_tokens
// become the answer's input and output tokens, from the same (last) usage object that
// usage_json keeps.
//
// Every event is read with simdjson's on-demand API in one forward pass; a usage object,
// kept as raw text, is read again for its counts (one chunk per stream).
#pragma once

#include <string>
#include <string_view>

#include "chatcap/answer.hpp"
#include "chatcap/content.hpp"

namespace chatcap {

class alignas(64) CompletionsReader final : public AnswerReader {
 public:
  void on_sse_event(const SseEvent& event) override;
  void start() override;
  Answer& answer() override { return answer_; }
  bool read_body(std::string_view body, Answer& out) override;

 private:
  Answer answer_;
  std::string scratch_;        // padded copy of event data for simdjson, reused
  std::string usage_scratch_;  // padded copy of a usage object, read for its counts
};

}  // namespace chatcap
