#include "chatcap/dialect/chat.hpp"

#include <algorithm>
#include <cstring>
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
  stream_chunk,     // chat.completion.chunk: choice text under `delta`, appended
  completion_body,  // chat.completion: choice text under `message`, whole
};

// Reads one chunk or body into a Answer. The two differ in where choice 0's text lives
// (`delta` or `message`) and in what an error keeps: for a body, the whole body; for a
// chunk, the `error` object (vLLM streams `data: {"error": {...}}`).
//
// Every object is read in one forward pass over its fields in document order (a lookup by
// key rescans the object, and that was most of the cost of a chunk). Where one field decides
// what another means (a choice's `index` whether its text is recorded, a tool call's `index`
// where its pieces go), the pieces are held as views (into the document or the parser's
// string buffer, valid until the next parse) and applied once the object has been read;
// only a choice whose text comes before its `index` is read twice. In a choice, a tool call
// or a function the first of repeated keys counts; at the top and in a message, every one.
class ChoiceReader {
 public:
  ChoiceReader(Answer& answer, AnswerSource source, std::string_view whole_text)
      : answer_(answer), source_(source), whole_text_(whole_text) {}

  CHATCAP_READER bool read(ondemand::object top) {  // a copy: its state stays in registers
    for (auto field_result : top) {
      ondemand::field field;
      if (std::move(field_result).get(field) != SUCCESS) return false;
      if (!read_top_level_field(field)) return false;
    }
    return true;
  }

  // Some content, reasoning or tool-call text was read: a token event.
  bool carried_text() const { return carried_text_; }
  bool saw_error() const { return saw_error_; }

  // When the chunk's only effect that is not idempotent was appending one string value to
  // `content` or `reasoning`: that value's token as written (in the parsed copy), and where
  // it went. Empty otherwise. (Assignments such as finish_reason or usage repeat harmlessly.)
  std::string_view sole_text_token() const {
    return appends_ == 1 && !tool_calls_seen_ ? appended_token_ : std::string_view();
  }
  ChunkShape::Text sole_text_target() const { return appended_target_; }

 private:
  // A tool call (or fragment) as read, applied once its index is known.
  struct ToolCallPieces {
    bool index_seen = false;
    std::optional<std::int64_t> index;
    bool id_seen = false;
    Text id;
    bool type_seen = false;
    Text type;
    bool function_seen = false;
    Text name;
    Text arguments;  // a string, or other JSON kept as text
  };

  // The value is taken from the field only in the branch that reads it: a copy made for all
  // fields costs stores for each (values are passed by copy to the cold readers).
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

  CHATCAP_COLD bool read_usage(ondemand::value value) {
    ondemand::json_type type;
    if (!type_of(value, type)) return false;
    if (type != ondemand::json_type::object) return true;  // `"usage": null` in most chunks
    std::string_view raw;
    if (!raw_text(value, raw)) return false;
    answer_.usage_json.assign(raw);  // the last one is the total
    return true;
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
    // Every chunk says "chat.completion.chunk": told apart from "error" on its token as
    // written, which has no escapes to check, without unescaping it (the value is left
    // unread, and skipped). Any other text is read as a string.
    constexpr std::string_view kChunkKind = "\"chat.completion.chunk\"";
    const std::string_view token = value.raw_json_token();
    if (token.substr(0, kChunkKind.size()) == kChunkKind &&
        trim_trailing_whitespace(token).size() == kChunkKind.size()) {
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
  // is choice 0. Its text is read when met if `index` came first (as servers send it);
  // otherwise once the whole choice has been read and the index is known.
  CHATCAP_HOT bool read_choice(ondemand::object& choice) {
    bool index_seen = false;
    bool text_seen = false;
    bool text_before_index = false;
    bool reason_seen = false;
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
        case 'd':
        case 'm':
          if (text_seen || !is_text_key(key)) break;
          text_seen = true;
          if (!index_seen) {
            text_before_index = true;
          } else if (!read_text(value)) {
            return false;
          }
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
    if (text_before_index && !read_text_again(choice)) return false;
    if (reason.nonempty()) answer_.finish_reason.assign(reason.view);
    return true;
  }

  // A choice whose text came before its index, and is choice 0 after all: back to its text.
  // Rewound with reset() and read forward with every step checked, not with
  // find_field_unordered, whose second pass trusts the structure (the old reader crashed on
  // a malformed chunk there).
  CHATCAP_COLD bool read_text_again(ondemand::object choice) {
    bool has_fields = false;
    if (choice.reset().get(has_fields) != SUCCESS) return false;
    if (!has_fields) return true;
    for (auto field_result : choice) {
      ondemand::field field;
      if (std::move(field_result).get(field) != SUCCESS) return false;
      if (is_text_key(field.key())) return read_text(field.value());
    }
    return true;
  }

  // `delta` in a chunk, `message` in a body.
  CHATCAP_HOT bool is_text_key(const ondemand::raw_json_string& key) const {
    return source_ == AnswerSource::stream_chunk ? key_is<"delta">(key) : key_is<"message">(key);
  }

  CHATCAP_HOT bool read_text(ondemand::value& value) {
    ondemand::object message;
    bool found = false;
    if (!object_if_any(value, message, found)) return false;
    return !found || read_message(message);
  }

  CHATCAP_HOT bool read_message(ondemand::object& message) {
    Text reasoning_content;
    Text reasoning;
    std::string_view reasoning_content_token;
    std::string_view reasoning_token;
    for (auto field_result : message) {
      ondemand::field field;
      if (std::move(field_result).get(field) != SUCCESS) return false;
      const ondemand::raw_json_string key = field.key();
      ondemand::value& value = field.value();
      switch (first_byte(key)) {
        case 'c':
          if (key_is<"content">(key)) {
            const std::string_view token = value.raw_json_token();
            Text content;
            if (!text_if_any(value, content)) return false;
            if (content.present && append_text(answer_.content, content.view)) {
              note_append(token, ChunkShape::Text::content);
            }
          }
          break;
        case 'r':
          if (key_is<"reasoning_content">(key)) {
            reasoning_content_token = value.raw_json_token();
            if (!text_if_any(value, reasoning_content)) return false;
          } else if (key_is<"reasoning">(key)) {
            reasoning_token = value.raw_json_token();
            if (!text_if_any(value, reasoning)) return false;
          }
          break;
        case 't':
          if (key_is<"tool_calls">(key)) {
            tool_calls_seen_ = true;
            if (!read_tool_calls(value)) return false;
          }
          break;
        default:
          break;
      }
    }
    // Some vLLM versions send the same reasoning text under both names: take it once.
    // (Unescaped strings stay valid in the parser until the next document.)
    if (reasoning_content.nonempty()) {
      append_text(answer_.reasoning, reasoning_content.view);
      note_append(reasoning_content_token, ChunkShape::Text::reasoning);
    } else if (reasoning.present && append_text(answer_.reasoning, reasoning.view)) {
      note_append(reasoning_token, ChunkShape::Text::reasoning);
    }
    return true;
  }

  void note_append(std::string_view token, ChunkShape::Text target) {
    ++appends_;
    appended_token_ = token;
    appended_target_ = target;
  }

  // Tool-call deltas: not in most chunks, so out of read(), but read the same way.
  CHATCAP_READER bool read_tool_calls(ondemand::value value) {
    ondemand::array calls;
    bool found = false;
    if (!array_if_any(value, calls, found)) return false;
    if (!found) return true;
    std::int64_t position = 0;
    for (auto element_result : calls) {
      ondemand::value element;
      if (std::move(element_result).get(element) != SUCCESS) return false;
      ondemand::object call;
      if (!object_if_any(element, call, found)) return false;
      if (found && !read_tool_call(call, position)) return false;
      ++position;
    }
    return true;
  }

  // One tool call (whole) or one fragment of it (streamed), merged by `index`. A whole
  // body's calls may have no index: their position stands for it.
  CHATCAP_HOT bool read_tool_call(ondemand::object& call, std::int64_t position) {
    ToolCallPieces pieces;
    for (auto field_result : call) {
      ondemand::field field;
      if (std::move(field_result).get(field) != SUCCESS) return false;
      const ondemand::raw_json_string key = field.key();
      ondemand::value& value = field.value();
      switch (first_byte(key)) {
        case 'i':
          if (key_is<"index">(key)) {
            if (pieces.index_seen) break;
            pieces.index_seen = true;
            if (!int_if_any(value, pieces.index)) return false;
          } else if (key_is<"id">(key)) {
            if (!first_text(value, pieces.id_seen, pieces.id)) return false;
          }
          break;
        case 't':
          if (key_is<"type">(key) && !first_text(value, pieces.type_seen, pieces.type)) return false;
          break;
        case 'f':
          if (!key_is<"function">(key) || pieces.function_seen) break;
          pieces.function_seen = true;
          {
            ondemand::object function;
            bool found = false;
            if (!object_if_any(value, function, found)) return false;
            if (found && !read_function(function, pieces)) return false;
          }
          break;
        default:
          break;
      }
    }
    ToolCall* slot = tool_call_slot(answer_, pieces.index.value_or(position));
    if (slot == nullptr) return true;  // past the cap: the answer says it was cut
    assign_if_nonempty(pieces.id, slot->id);
    assign_if_nonempty(pieces.type, slot->type);
    // A name is generated text too: vLLM's tool parsers emit it once decoded.
    if (pieces.name.nonempty()) {
      carried_text_ = true;
      assign_if_nonempty(pieces.name, slot->name);
    }
    if (pieces.arguments.present) append_text(slot->arguments, pieces.arguments.view);
    return true;
  }

  CHATCAP_HOT bool read_function(ondemand::object& function, ToolCallPieces& pieces) {
    bool name_seen = false;
    bool arguments_seen = false;
    for (auto field_result : function) {
      ondemand::field field;
      if (std::move(field_result).get(field) != SUCCESS) return false;
      const ondemand::raw_json_string key = field.key();
      ondemand::value& value = field.value();
      if (key_is<"name">(key)) {
        if (name_seen) continue;
        name_seen = true;
        if (!text_if_any(value, pieces.name)) return false;
      } else if (key_is<"arguments">(key)) {
        if (arguments_seen) continue;
        arguments_seen = true;
        ondemand::json_type type;
        if (!type_of(value, type)) return false;
        if (type == ondemand::json_type::null) continue;
        std::string_view arguments;
        if (type == ondemand::json_type::string) {
          if (value.get_string().get(arguments) != SUCCESS) return false;
        } else if (!raw_text(value, arguments)) {  // an object instead of a string: keep it as text
          return false;
        }
        pieces.arguments.view = arguments;
        pieces.arguments.present = true;
      }
    }
    return true;
  }

  // The first occurrence of a key, whose value is kept if it is a string (later ones are
  // ignored even when the first is not a string).
  CHATCAP_HOT static bool first_text(ondemand::value& value, bool& seen, Text& out) {
    if (seen) return true;
    seen = true;
    return text_if_any(value, out);
  }

  void assign_if_nonempty(const Text& text, std::string& out) {
    if (!text.nonempty()) return;
    out.clear();
    if (!append_capped(out, text.view)) answer_.text_truncated = true;
  }

  // False for an empty piece, which changes nothing.
  CHATCAP_HOT bool append_text(std::string& text, std::string_view piece) {
    if (!append_answer_text(answer_, text, piece)) return false;
    carried_text_ = true;
    return true;
  }

  Answer& answer_;
  AnswerSource source_;
  std::string_view whole_text_;
  bool carried_text_ = false;
  bool saw_error_ = false;
  bool tool_calls_seen_ = false;
  int appends_ = 0;  // content and reasoning appends
  std::string_view appended_token_;
  ChunkShape::Text appended_target_ = ChunkShape::Text::content;
};

// Parses `token`, a JSON string literal as written, with nothing after it. The text it holds
// is valid until the next parse.
bool read_string_token(std::string_view token, std::string& padded, std::string_view& text) {
  ondemand::document document;
  if (reused_parser().iterate(padded_copy(token, padded)).get(document) != SUCCESS) return false;
  if (document.get_string().get(text) != SUCCESS) return false;
  return document_at_end(document);
}

// The character a two-character escape stands for (\" \\ \/ \b \f \n \r \t), or 0 for
// \u (left to a parser: surrogates) and for what is no escape at all.
char simple_escape(char c) {
  switch (c) {
    case '"': return '"';
    case '\\': return '\\';
    case '/': return '/';
    case 'b': return '\b';
    case 'f': return '\f';
    case 'n': return '\n';
    case 'r': return '\r';
    case 't': return '\t';
    default: return 0;
  }
}

// The inside of a string literal whose escapes are all two-character ones (the quotes,
// backslashes, newlines and tabs a model writes) and whose other bytes are UTF-8, unescaped
// into `buffer`. False for \u escapes and for anything that is no valid literal.
bool unescape_simple(std::string_view inner, std::string& buffer, std::string_view& text) {
  buffer.clear();
  bool ascii = true;
  for (std::size_t i = 0; i < inner.size(); ++i) {
    const auto byte = static_cast<unsigned char>(inner[i]);
    if (byte == '"' || byte < 0x20) return false;  // the literal ends early, or a raw control
    if (byte != '\\') {
      buffer.push_back(inner[i]);
      ascii = ascii && byte < 0x80;
      continue;
    }
    if (++i == inner.size()) return false;  // the backslash escapes the closing quote
    const char unescaped = simple_escape(inner[i]);
    if (unescaped == 0) return false;
    buffer.push_back(unescaped);
  }
  // Escapes give ASCII, which never completes or splits a UTF-8 sequence: checking the
  // result checks the literal's own bytes.
  if (!ascii && !simdjson::validate_utf8(buffer.data(), buffer.size())) return false;
  text = buffer;
  return true;
}

// The text a JSON string literal stands for, most of them without setting up a parse: plain
// ASCII as it stands (most token texts; eight bytes a step), UTF-8 and two-character escapes
// unescaped here, the rest (\u, whitespace around the literal, anything invalid) by simdjson.
// The text is valid until `scratch` is used again.
bool string_token_text(std::string_view token, std::string& scratch, std::string_view& text) {
  if (token.size() >= 2 && token.front() == '"' && token.back() == '"') {
    const std::string_view inner = token.substr(1, token.size() - 2);
    if (is_plain_json_ascii(inner)) {
      text = inner;
      return true;
    }
    if (unescape_simple(inner, scratch, text)) return true;
  }
  return read_string_token(token, scratch, text);
}

// A chunk shaped like the last one read in full (see ChunkShape): its text appended, and true;
// false when it is not so shaped, or its text is no valid JSON string, or is empty (then the
// full reading may pick other text, `reasoning` after an empty `reasoning_content`).
bool take_same_shape_chunk(Answer& answer, std::string& scratch, const ChunkShape& shape,
                           std::string_view data) {
  const std::string_view shape_head = shape.head();
  const std::string_view shape_tail = shape.tail();
  const std::size_t head = shape_head.size();
  const std::size_t tail = shape_tail.size();
  if (head == 0 || data.size() < head + tail + 1) return false;  // +1: the closing quote
  if (data.substr(0, head) != shape_head || data.substr(data.size() - tail) != shape_tail) return false;
  // The head's last byte is the text's opening quote.
  const std::string_view token = data.substr(head - 1, data.size() - tail - (head - 1));
  std::string_view text;
  if (!string_token_text(token, scratch, text) || text.empty()) return false;
  std::string& field = shape.target == ChunkShape::Text::content ? answer.content : answer.reasoning;
  return append_answer_text(answer, field, text);
}

// After a chunk read in full: learns its shape if its text token allows (in the padded copy
// of `data`, at the same offsets), else forgets the last.
void learn_shape(ChunkShape& shape, std::string_view data, const std::string& padded,
                 const ChoiceReader& reader) {
  const std::string_view token = trim_trailing_whitespace(reader.sole_text_token());
  const char* const copy = padded.data();
  const bool usable = token.size() >= 2 && token.front() == '"' && token.back() == '"' &&
                      data.size() <= ChunkShape::kMaxBytes && token.data() > copy &&
                      token.data() + token.size() <= copy + data.size();
  if (!usable) {
    shape.forget();
    return;
  }
  const auto at = static_cast<std::size_t>(token.data() - copy);
  shape.learn(data.substr(0, at + 1), data.substr(at + token.size()), reader.sole_text_target());
}

void take_event(Answer& answer, std::string& scratch, ChunkShape& shape, const SseEvent& event) {
  note_event(answer, event.ts);

  const std::string_view data = trim_whitespace(event.data);
  if (data == "[DONE]") {
    answer.done = true;
    return;
  }
  const bool error_event = event.type == "error";
  if (!error_event && take_same_shape_chunk(answer, scratch, shape, data)) {
    note_token_event(answer, event.ts);
    return;
  }
  ChoiceReader reader(answer, AnswerSource::stream_chunk, data);
  const bool read_ok =
      !data.empty() &&
      parse_object(data, scratch, [&reader](ondemand::object& top) { return reader.read(top); });
  if (read_ok && !error_event) {
    learn_shape(shape, data, scratch, reader);
  } else {
    shape.forget();
  }
  release_if_large(scratch);
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

void ChatReader::on_sse_event(const SseEvent& event) {
  try {
    take_event(answer_, scratch_, shape_, event);
  } catch (...) {  // allocation failure: count it and go on with the stream
    ++answer_.bad_events;
  }
}

void ChatReader::start() {
  answer_.clear();
  shape_.forget();
}

bool ChatReader::read_body(std::string_view body, Answer& out) {
  try {
    thread_local std::string padded;
    ChoiceReader reader(out, AnswerSource::completion_body, trim_whitespace(body));
    const bool read_ok =
        parse_object(body, padded, [&reader](ondemand::object& top) { return reader.read(top); });
    release_if_large(padded);
    return read_ok;
  } catch (...) {
    return false;
  }
}

}  // namespace chatcap
