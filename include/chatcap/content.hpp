// The content layer: what a response body says, in the dialect its request spoke.
//
// The HTTP session ends where a body begins (it knows no dialect): when a response's
// headers are complete it hands the body to the ContentLayer with the request's target and
// whether the body is an event stream; the layer picks the AnswerReader of the dialect the
// target names (answer.hpp, dialect_of) and fills the exchange's Answer. Streamed bodies go
// through the W3C event-stream decoder (sse.hpp) to the reader event by event, each with
// its packet time; whole bodies are read at once when they end.
//
// One dialect = one reader, in its own header/source/test (include/chatcap/dialect/...):
//   chat          /v1/chat/completions: choices[0].delta / .message, tool_calls by index
//   completions   /v1/completions: choices[0].text
//   responses     /v1/responses: typed events (response.output_text.delta, ...), output[]
//   messages      /v1/messages (Anthropic): message_start, content_block_*, message_delta
// A path no dialect claims is read as chat completions (OpenAI-compatible servers' other
// streaming endpoints speak its chunks; its error objects are what a dying vLLM sends).
//
// Readers never throw on bad input: an event they cannot read is counted (bad_events) and
// the rest of the stream is still assembled.
#pragma once

#include <array>
#include <memory>
#include <string_view>

#include "chatcap/answer.hpp"
#include "chatcap/sse.hpp"

namespace chatcap {

// Reads one dialect's responses. A streamed response's events arrive through
// SseHandler::on_sse_event into answer(); a whole body is read by read_body.
class AnswerReader : public SseHandler {
 public:
  // A new streamed response begins: answer() is empty again.
  virtual void start() = 0;
  virtual Answer& answer() = 0;
  // A whole (non-streamed) response body, read into `out` (which starts empty). False when
  // the body is not a JSON object; `out` keeps what could be read.
  virtual bool read_body(std::string_view body, Answer& out) = 0;
};

// The reader of a dialect; unknown gets the chat reader.
std::unique_ptr<AnswerReader> make_answer_reader(Dialect dialect);

// One connection's content layer: the event-stream decoder and a reader per dialect met
// (made on first use: a connection speaks one dialect, and 10,000 idle connections must not
// carry four readers each).
class ContentLayer {
 public:
  // A response body begins: an event stream (read as it arrives) or not (read_body at the
  // end). `target` is its request's.
  void begin(std::string_view target, bool event_stream);
  void feed(timestamp_us ts, std::string_view bytes) { sse_.feed(ts, bytes, *reader_); }
  void gap() { sse_.on_gap(); }
  // The streamed response ended however it ended: its answer moved into `out`. True when an
  // event was cut by the end (sse_incomplete).
  bool finish(Answer& out);
  // A whole body of a response to `target`, read into `out`.
  bool read_body(std::string_view target, std::string_view body, Answer& out);

 private:
  AnswerReader& reader_for(Dialect dialect);

  SseDecoder sse_;
  AnswerReader* reader_ = nullptr;
  Dialect dialect_ = Dialect::unknown;
  std::array<std::unique_ptr<AnswerReader>, kDialects> readers_;
};

}  // namespace chatcap
