// The OpenAI Responses API (/v1/responses), as vLLM serves it.
//
// Streamed: typed events, `event: <type>` with a data object of the same "type" (no
// [DONE]). The text is in the deltas, which are the stream:
//   response.output_text.delta                  {item_id, output_index, delta} -> content
//   response.reasoning_text.delta               {delta}                        -> reasoning
//   response.reasoning_summary_text.delta       {delta}                        -> reasoning
//     (and their older names response.reasoning.delta, response.reasoning_summary.delta)
//   response.function_call_arguments.delta      {item_id, output_index, delta} -> that call
// response.output_item.added / .done name a function call (call_id, name); .done events of
// arguments (and the items) give the whole arguments, taken only for a call no delta came
// for. response.completed / .incomplete / .failed end the stream with the whole response
// object: status, incomplete_details.reason, error, usage, model, output[] — the output's
// text is taken only for what no delta streamed (a server that sends only the final
// response), never twice. An `error` event's data is the error. Events of other types
// (content_part.*, output_text.done, ...) are ignored; a delta for an item no added event
// named still lands (text by the event's type, arguments in a call of their own).
//
// Whole: the response object (output[]: reasoning items' reasoning_text, else their
// summary_text; message items' output_text; function_call items), or an error body, kept
// whole as the error (like chat).
//
// Normalised: completed -> stop (tool_calls when there is a function call); incomplete ->
// length (content_filter when that is the reason); failed -> error. native_finish_reason is
// the status, "incomplete:<reason>" when a reason is given. Tool calls are the function_call
// items in output order, index 0, 1, 2 ... among them.
//
// An event is applied only once it has been read whole: data that is not a JSON object of
// readable fields is counted (bad_events) and changes nothing else.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "chatcap/answer.hpp"
#include "chatcap/content.hpp"

namespace chatcap {

// What a Responses stream has said so far beyond the answer itself: which output items are
// function calls (their tool-call index), and which texts arrived as deltas (so the final
// response's copy of them is not taken again).
struct ResponsesProgress {
  struct Call {
    std::int64_t index = 0;          // the tool call's index in the answer
    std::int64_t output_index = -1;  // its item's position in output[]; -1 unknown
    std::string item_id;             // its item's id ("fc_..."); empty unknown
    bool delta_seen = false;         // arguments arrived as deltas
    bool whole_arguments = false;    // the arguments held came whole (added/done/final)
  };
  std::vector<Call> calls;  // in index order, at most Answer::kMaxToolCalls
  bool content_taken = false;    // content arrived (deltas, or the final output's)
  bool reasoning_taken = false;  // reasoning arrived (deltas, or the final output's)

  void clear() {
    calls.clear();
    content_taken = false;
    reasoning_taken = false;
  }
};

class ResponsesReader final : public AnswerReader {
 public:
  void on_sse_event(const SseEvent& event) override;
  void start() override;
  Answer& answer() override { return answer_; }
  bool read_body(std::string_view body, Answer& out) override;

 private:
  Answer answer_;
  ResponsesProgress progress_;
  std::string scratch_;  // padded copy of event data for simdjson, reused
};

}  // namespace chatcap
