#include "chatcap/dialect/completions.hpp"

#include <optional>
#include <utility>

#include "chatcap/json_read.hpp"
#include "chatcap/json_writer.hpp"

namespace chatcap {
namespace {

using namespace json_read;

// ---------------------------------------------------------------------------------------
// Answer assembly: streamed chunks and whole bodies.

enum class AnswerSource {
  stream_chunk,     // a streamed text_completion: choice text appended, `error` object kept
  completion_body,  // a whole text_completion: the same fields; an error keeps the body
};

// Choice 0's `text` as read: a string (a view valid until the next parse), absent or null,
// or a value of another type (which no completion server writes).
struct ChoiceText {
  std::string_view view;
  bool present = false;
  bool other_type = false;
};

// Reads one chunk or body into an Answer. Chunks and bodies have the same fields (choice
// text under `text` in both); they differ in what an error keeps: for a body, the whole
// body; for a chunk, the `error` object (vLLM streams `data: {"error": {...}}`), or the
// whole chunk when it says `"object": "error"`.
//
// Every object is read in one forward pass over its fields in document order. A choice's
// text is held as a view (into the document or the parser's string buffer, valid until the
// next parse) and applied once the choice has been read, so an `index` after the text still
// decides whether it is recorded. In a choice and in usage the first of repeated keys
// counts; at the top, every one (the last usage wins).
class CompletionReader {
 public:
  CompletionReader(Answer& answer, AnswerSource source, std::string_view whole_text)
      : answer_(answer), source_(source), whole_text_(whole_text) {}

  CHATCAP_READER bool read(ondemand::object top) {  // a copy: its state stays in registers
    for (auto field_result : top) {
      ondemand::field field;
      if (std::move(field_result).get(field) != SUCCESS) return false;
      if (!read_top_level_field(field)) return false;
    }
    return true;
  }

  // Choice 0 carried non-empty text: a token event.
  bool carried_text() const { return carried_text_; }
  bool saw_error() const { return saw_error_; }
  // The raw JSON text of the document's last usage object (in the parsed copy, valid until
  // the copy is reused); empty when it has none.
  std::string_view usage_text() const { return usage_text_; }

 private:
  // The value is taken from the field only in the branch that reads it.
  CHATCAP_HOT bool read_top_level_field(ondemand::field& field) {
    const ondemand::raw_json_string key = field.key();
    switch (first_byte(key)) {
      case 'c': return !key_is<"choices">(key) || read_choices(field.value());
      case 'm': return !key_is<"model">(key) || !answer_.model.empty() || read_model(field.value());
      case 'u': return !key_is<"usage">(key) || read_usage(field.value());
      case 'e': return !key_is<"error">(key) || read_error(field.value());
      case 'o': return !key_is<"object">(key) || read_object_kind(field.value());
      default: return true;
    }
  }

  // The first chunk's model is the answer's: read while answer_.model is empty.
  CHATCAP_COLD bool read_model(ondemand::value value) {
    std::optional<std::string_view> model;
    if (!string_if_any(value, model)) return false;
    if (model) append_capped(answer_.model, *model);
    return true;
  }

  // Kept as text here and read for its counts once the document is read (read_usage_counts):
  // the parser cannot read the same object twice in one pass.
  CHATCAP_COLD bool read_usage(ondemand::value value) {
    ondemand::json_type type;
    if (!type_of(value, type)) return false;
    if (type != ondemand::json_type::object) return true;  // `"usage": null` in most chunks
    return raw_text(value, usage_text_);
  }

  CHATCAP_COLD bool read_error(ondemand::value value) {
    ondemand::json_type type;
    if (!type_of(value, type)) return false;
    if (type == ondemand::json_type::null) return true;
    saw_error_ = true;
    if (source_ == AnswerSource::completion_body) {
      answer_.error_json.assign(whole_text_);
      return true;
    }
    std::string_view raw;
    if (!raw_text(value, raw)) return false;
    answer_.error_json.assign(raw);
    return true;
  }

  // vLLM's ErrorResponse: {"object":"error","message":...,"type":...,"code":...}.
  CHATCAP_HOT bool read_object_kind(ondemand::value& value) {
    // Every chunk says "text_completion": told apart from "error" on its token as written,
    // which has no escapes to check, without unescaping it (the value is left unread, and
    // skipped). Any other text is read as a string.
    constexpr std::string_view kCompletionKind = "\"text_completion\"";
    const std::string_view token = value.raw_json_token();
    if (token.substr(0, kCompletionKind.size()) == kCompletionKind &&
        trim_trailing_whitespace(token).size() == kCompletionKind.size()) {
      return true;
    }
    return read_object_kind_text(value);
  }

  CHATCAP_COLD bool read_object_kind_text(ondemand::value value) {
    std::optional<std::string_view> kind;
    if (!string_if_any(value, kind)) return false;
    if (kind == "error") {
      saw_error_ = true;
      answer_.error_json.assign(whole_text_);
    }
    return true;
  }

  CHATCAP_HOT bool read_choices(ondemand::value& value) {
    ondemand::array choices;
    bool found = false;
    if (!array_if_any(value, choices, found)) return false;
    if (!found) return true;
    for (auto element_result : choices) {
      ondemand::value element;
      if (std::move(element_result).get(element) != SUCCESS) return false;
      ondemand::object choice;
      if (!object_if_any(element, choice, found)) return false;
      if (found && !read_choice(choice)) return false;
    }
    return true;
  }

  // Only choice 0 is recorded (a request with n > 1 has others); a choice with no `index`
  // is choice 0, one whose index is no integer is not. The rest of a choice known not to be
  // 0 is skipped unread.
  CHATCAP_HOT bool read_choice(ondemand::object& choice) {
    bool index_seen = false;
    bool text_seen = false;
    bool reason_seen = false;
    ChoiceText text;
    Text reason;
    for (auto field_result : choice) {
      ondemand::field field;
      if (std::move(field_result).get(field) != SUCCESS) return false;
      const ondemand::raw_json_string key = field.key();
      ondemand::value& value = field.value();
      switch (first_byte(key)) {
        case 'i': {
          if (index_seen || !key_is<"index">(key)) break;
          index_seen = true;
          std::optional<std::int64_t> index;
          if (!int_if_any(value, index)) return false;
          if (index != 0) return true;
          break;
        }
        case 't':
          if (text_seen || !key_is<"text">(key)) break;
          text_seen = true;
          if (!read_text(value, text)) return false;
          break;
        case 'f':
          if (reason_seen || !key_is<"finish_reason">(key)) break;
          reason_seen = true;
          if (!text_if_any(value, reason)) return false;
          break;
        default:
          break;
      }
    }
    if (text.other_type) return false;  // choice 0's text is no text: the event is bad
    if (text.present && append_answer_text(answer_, answer_.content, text.view)) carried_text_ = true;
    if (reason.nonempty()) answer_.finish_reason.assign(reason.view);
    return true;
  }

  // False only when the value is no JSON.
  CHATCAP_HOT static bool read_text(ondemand::value& value, ChoiceText& out) {
    const simdjson::error_code error = value.get_string().get(out.view);
    if (error == SUCCESS) {
      out.present = true;
      return true;
    }
    return error == simdjson::INCORRECT_TYPE && read_other_text(value, out);
  }

  // After get_string answered INCORRECT_TYPE: null is no text, another type is noted.
  CHATCAP_COLD static bool read_other_text(ondemand::value value, ChoiceText& out) {
    ondemand::json_type type;
    if (!type_of(value, type)) return false;
    out.other_type = type != ondemand::json_type::null;
    return true;
  }

  Answer& answer_;
  AnswerSource source_;
  std::string_view whole_text_;
  std::string_view usage_text_;
  bool carried_text_ = false;
  bool saw_error_ = false;
};

// The usage object a document held (its raw text, read by CompletionReader), read for its
// counts: kept as usage_json, prompt_tokens and completion_tokens as the answer's input and
// output tokens (unset when this object has none, so they always say what usage_json says).
// `padded` must not be the buffer `usage` points into. False when it is no object we can
// read; the answer is then left as it was.
CHATCAP_COLD bool read_usage_counts(Answer& answer, std::string_view usage, std::string& padded) {
  std::optional<std::int64_t> prompt_tokens;
  std::optional<std::int64_t> completion_tokens;
  auto read = [&](ondemand::object& object) {
    bool prompt_seen = false;
    bool completion_seen = false;
    for (auto field_result : object) {
      ondemand::field field;
      if (std::move(field_result).get(field) != SUCCESS) return false;
      const ondemand::raw_json_string key = field.key();
      if (key_is<"prompt_tokens">(key)) {
        if (prompt_seen) continue;
        prompt_seen = true;
        if (!int_if_any(field.value(), prompt_tokens)) return false;
      } else if (key_is<"completion_tokens">(key)) {
        if (completion_seen) continue;
        completion_seen = true;
        if (!int_if_any(field.value(), completion_tokens)) return false;
      }
    }
    return true;
  };
  const bool read_ok = parse_object(usage, padded, read);
  release_if_large(padded);
  if (!read_ok) return false;
  answer.usage_json.assign(usage);  // the last one is the total
  answer.input_tokens = prompt_tokens;
  answer.output_tokens = completion_tokens;
  return true;
}

// One document (a chunk's data or a whole body) read into `answer`: true when it is a JSON
// object we could read, its usage included.
bool read_document(CompletionReader& reader, Answer& answer, std::string_view text, std::string& padded,
                   std::string& usage_padded) {
  bool read_ok =
      parse_object(text, padded, [&reader](ondemand::object& top) { return reader.read(top); });
  if (read_ok && !reader.usage_text().empty()) {
    read_ok = read_usage_counts(answer, reader.usage_text(), usage_padded);
  }
  release_if_large(padded);  // after the usage text, which points into it, was read
  return read_ok;
}

void take_event(Answer& answer, std::string& scratch, std::string& usage_scratch, const SseEvent& event) {
  note_event(answer, event.ts);

  const std::string_view data = trim_whitespace(event.data);
  if (data == "[DONE]") {
    answer.done = true;
    return;
  }
  const bool error_event = event.type == "error";
  CompletionReader reader(answer, AnswerSource::stream_chunk, data);
  const bool read_ok = !data.empty() && read_document(reader, answer, data, scratch, usage_scratch);
  if (reader.carried_text()) note_token_event(answer, event.ts);

  // When the stream first said it failed: a server death is dated by it, not by the events
  // (`[DONE]`, a closing chunk) that may follow it in later packets.
  if (error_event || reader.saw_error()) note_error_event(answer, event.ts);
  if (error_event && !reader.saw_error()) {
    // `event: error` whose data has no `error` object: the data is the error. Text that is
    // not JSON is kept as a JSON string.
    answer.error_json.clear();
    if (read_ok) {
      answer.error_json.assign(data);
    } else {
      JsonWriter(answer.error_json).string(data);
    }
    return;
  }
  if (!read_ok && !data.empty()) ++answer.bad_events;  // empty data: a keep-alive, not bad
}

}  // namespace

void CompletionsReader::on_sse_event(const SseEvent& event) {
  try {
    take_event(answer_, scratch_, usage_scratch_, event);
  } catch (...) {  // allocation failure: count it and go on with the stream
    ++answer_.bad_events;
  }
}

void CompletionsReader::start() { answer_.clear(); }

bool CompletionsReader::read_body(std::string_view body, Answer& out) {
  try {
    thread_local std::string padded;
    thread_local std::string usage_padded;
    CompletionReader reader(out, AnswerSource::completion_body, trim_whitespace(body));
    return read_document(reader, out, body, padded, usage_padded);
  } catch (...) {
    return false;
  }
}

}  // namespace chatcap
