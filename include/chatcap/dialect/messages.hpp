// Anthropic's Messages API (/v1/messages), as vLLM serves it.
//
// Streamed: named events, each with a JSON object whose `type` repeats the name.
//   message_start        {message: {id, model, content: [], stop_reason: null, usage}}
//   content_block_start  {index, content_block: text | thinking | tool_use {id, name, input}}
//   content_block_delta  {index, delta: text_delta | thinking_delta | signature_delta |
//                         input_json_delta {partial_json}}
//   content_block_stop, ping, message_stop (the stream's own end: `done`)
//   message_delta        {delta: {stop_reason, stop_sequence}, usage: {output_tokens, ...}}
//   error                {type: "error", error: {type, message}}
// vLLM also ends every stream (after message_stop, or after an error) with chat's
// `data: [DONE]`, and some of its versions put message_start's usage beside the message.
// Text deltas go to content, thinking deltas to reasoning (signatures are not kept), and
// each tool_use block is one tool call, numbered 0, 1, ... in block order, its arguments the
// concatenation of its input_json_delta fragments (or, with no fragment, its start's
// non-empty `input` as written). The stop reason is normalised (end_turn, stop_sequence,
// pause_turn: stop; max_tokens, model_context_window_exceeded: length; tool_use:
// tool_calls; refusal: content_filter; another word as it is) and kept as sent in
// native_finish_reason. Input tokens come from message_start's usage or message_delta's
// when it has them, output tokens and usage_json from the last usage seen (message_delta's
// counts are cumulative). A token event is one that added generated text: a text, thinking
// or input JSON delta that is not empty (or a block start holding some; tool names are not
// counted).
//
// Whole: a `message` object (content blocks whole, a tool_use's `input` kept as written),
// or an error body ({type: "error", error: {...}}, kept whole as error_json).
//
// Liberal in what it reads, as a passive observer must be: an event is told by its name, or
// by its data's `type` when it has none; events and block or delta types it does not know
// are ignored; a delta for a block that never started is read by its delta type (fragments
// of input JSON make a call with no name); blocks may interleave. An event is applied whole
// or not at all: one whose data cannot be read is counted (bad_events), empty data is a
// keep-alive. The reader never throws.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "chatcap/answer.hpp"
#include "chatcap/content.hpp"

namespace chatcap {

class MessagesReader final : public AnswerReader {
 public:
  // Content blocks of one stream whose index is remembered (what kind of block it is, and a
  // tool_use block's call). A block past the cap is not remembered and the answer is marked
  // text_truncated; its text deltas are still read by their type.
  static constexpr std::size_t kMaxBlocks = 1024;

  void on_sse_event(const SseEvent& event) override;
  void start() override;
  Answer& answer() override { return answer_; }
  bool read_body(std::string_view body, Answer& out) override;

  // One content block of the stream, by the index its events name.
  struct Block {
    enum class Kind : std::uint8_t { text, thinking, tool_use, other };
    std::int64_t index = 0;
    std::int64_t call = 0;          // tool_use: the tool call's index in the answer
    Kind kind = Kind::other;
    bool input_from_start = false;  // tool_use: arguments are the start's `input` so far
  };

 private:
  Answer answer_;
  std::vector<Block> blocks_;  // in start order; looked up from the newest
  std::int64_t next_call_ = 0;  // the index the next tool_use block's call gets
  std::string scratch_;         // padded copy of event data for simdjson, reused
};

}  // namespace chatcap
