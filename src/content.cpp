#include "chatcap/content.hpp"

#include "chatcap/dialect/chat.hpp"
#include "chatcap/dialect/completions.hpp"
#include "chatcap/dialect/messages.hpp"
#include "chatcap/dialect/responses.hpp"

namespace chatcap {

std::unique_ptr<AnswerReader> make_answer_reader(Dialect dialect) {
  switch (dialect) {
    case Dialect::completions:
      return std::make_unique<CompletionsReader>();
    case Dialect::messages:
      return std::make_unique<MessagesReader>();
    case Dialect::responses:
      return std::make_unique<ResponsesReader>();
    case Dialect::chat:
    case Dialect::unknown:
      break;
  }
  return std::make_unique<ChatReader>();
}

AnswerReader& ContentLayer::reader_for(Dialect dialect) {
  auto& slot = readers_[static_cast<std::size_t>(dialect)];
  if (!slot) slot = make_answer_reader(dialect);
  return *slot;
}

void ContentLayer::begin(std::string_view target, bool event_stream) {
  dialect_ = dialect_of(target);
  reader_ = &reader_for(dialect_);
  if (!event_stream) return;
  sse_.reset();
  reader_->start();
  reader_->answer().dialect = dialect_;
}

bool ContentLayer::finish(Answer& out) {
  sse_.finish();
  const bool event_cut = sse_.discarded_tail_bytes() > 0;
  out = std::move(reader_->answer());
  reader_->start();
  sse_.reset();
  return event_cut;
}

bool ContentLayer::read_body(std::string_view target, std::string_view body, Answer& out) {
  const Dialect dialect = dialect_of(target);
  out.dialect = dialect;
  const bool read = reader_for(dialect).read_body(body, out);
  out.dialect = dialect;
  return read;
}

}  // namespace chatcap
