// Chat completions (/v1/chat/completions), the dialect vLLM is mostly asked in.
//
// Streamed: `chat.completion.chunk` events; choice 0's delta.content, delta.reasoning_content
// / delta.reasoning (vLLM's reasoning parsers), tool_calls by index (function.arguments
// concatenated); finish_reason, usage, `[DONE]`, and error objects (vLLM streams
// `data: {"error": {...}}`; `event: error` too). Whole: a `chat.completion` body, choice 0's
// message, or an error body.
//
// Hot path: every event is read with simdjson's on-demand API in one forward pass; a chunk
// shaped like the one before it is read by its text alone (ChunkShape). A differential test
// holds the fast path to reading each chunk in full.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "chatcap/answer.hpp"
#include "chatcap/content.hpp"

namespace chatcap {

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

class alignas(64) ChatReader final : public AnswerReader {
 public:
  void on_sse_event(const SseEvent& event) override;
  void start() override;
  Answer& answer() override { return answer_; }
  bool read_body(std::string_view body, Answer& out) override;

 private:
  ChunkShape shape_;      // first: read for every event, beside the answer's counters
  Answer answer_;
  std::string scratch_;  // padded copy of event data for simdjson, reused
};

}  // namespace chatcap
