#include "chatcap/openai.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include <simdjson.h>

#include "chatcap/json_writer.hpp"

// Everything here reads JSON with simdjson's on-demand API and its error codes: no DOM, no
// exceptions on bad input. On-demand reads forward only and checks what it reads, not what
// it skips; where a value is copied out verbatim for a record (structured-output fields of a
// request) it is checked in full first.

namespace chatcap {
namespace {

namespace ondemand = simdjson::ondemand;
using simdjson::SUCCESS;

// On-demand's iterators are cheap only when the compiler sees a whole read in one function:
// passed by reference into an out-of-line function, their state goes through memory at every
// token. So the reading of a chunk's usual fields is forced inline (HOT) into one function of
// its own (READER: inlined further into its caller, it ran slower), and what few chunks need
// (usage, errors, tool calls, the first model) is kept out of it (COLD).
#define CHATCAP_HOT [[gnu::always_inline]] inline
#define CHATCAP_READER [[gnu::noinline]]
#define CHATCAP_COLD [[gnu::noinline]]

// Buffers and parsers grow to the largest document they have read. Up to this size they are
// kept (the steady state then allocates nothing); past it, a document gets buffers of its
// own that are freed afterwards, so one huge body does not pin memory for the process life.
constexpr std::size_t kKeptBufferBytes = 1024 * 1024;

// Fields of a request whose value is copied verbatim into the summary: the structured-output
// and tool-choice options, the ones whose bad values have killed vLLM's engine.
constexpr std::array<std::string_view, 10> kStructuredOutputKeys = {
    "response_format",  "structured_outputs",      "guided_json",
    "guided_regex",     "guided_choice",           "guided_grammar",
    "guided_decoding",  "guided_decoding_backend", "guided_whitespace_pattern",
    "tool_choice",
};

bool is_json_whitespace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string_view trim_trailing_whitespace(std::string_view text) {
  while (!text.empty() && is_json_whitespace(text.back())) text.remove_suffix(1);
  return text;
}

std::string_view trim_whitespace(std::string_view text) {
  while (!text.empty() && is_json_whitespace(text.front())) text.remove_prefix(1);
  return trim_trailing_whitespace(text);
}

void release_if_large(std::string& buffer) {
  if (buffer.capacity() > kKeptBufferBytes) std::string().swap(buffer);
}

// simdjson reads up to SIMDJSON_PADDING bytes past the end of its input: copy `text` into a
// reused buffer with that much room, zeroed as simdjson's own padded_string has it (a
// closing bracket there would send on-demand on a scan of the whole document, simdjson
// issue 1834). The buffer keeps the size of the largest copy, so the usual event costs two
// fixed-size copies and no string bookkeeping.
simdjson::padded_string_view padded_copy(std::string_view text, std::string& buffer) {
  const std::size_t padded_size = text.size() + simdjson::SIMDJSON_PADDING;
  if (buffer.size() < padded_size) buffer.resize(padded_size);
  if (!text.empty()) std::memcpy(buffer.data(), text.data(), text.size());
  std::memset(buffer.data() + text.size(), 0, simdjson::SIMDJSON_PADDING);
  return simdjson::padded_string_view(buffer.data(), text.size(), buffer.size());
}

// simdjson 3.0's document has no at_end(); its current_location() is out of bounds exactly
// when every token has been read, and nothing may follow the one value of a document.
bool document_at_end(ondemand::document& document) {
  return document.current_location().error() == simdjson::OUT_OF_BOUNDS;
}

// The key and value of one field met while iterating an object. The key unescaped: for
// requests, whose clients may write keys any way JSON allows.
bool split_field(simdjson::simdjson_result<ondemand::field> result, std::string_view& key,
                 ondemand::value& value) {
  ondemand::field field;
  if (std::move(result).get(field) != SUCCESS) return false;
  if (field.unescaped_key().get(key) != SUCCESS) return false;
  value = field.value();
  return true;
}

// Iterates `json` as one object and hands it to read(object&) -> bool. True only when the
// document is an object, read() succeeded and nothing follows the object.
template <class Read>
CHATCAP_HOT bool read_object_document(ondemand::parser& parser, simdjson::padded_string_view json,
                          Read& read) {
  ondemand::document document;
  if (parser.iterate(json).get(document) != SUCCESS) return false;
  ondemand::object top;
  if (document.get_object().get(top) != SUCCESS) return false;
  if (!read(top)) return false;
  return document_at_end(document);
}

// One parser per thread (chatcap parses on its processing thread only), reused so that an
// event costs no allocation once the parser has grown to the usual event size.
ondemand::parser& reused_parser() {
  thread_local ondemand::parser parser;
  return parser;
}

// Parses `text` as a JSON object with the reused parser when the text is of ordinary size,
// or with a parser of its own when it is not.
template <class Read>
CHATCAP_HOT bool parse_object(std::string_view text, std::string& padded, Read&& read) {
  const simdjson::padded_string_view json = padded_copy(text, padded);
  if (text.size() <= kKeptBufferBytes) return read_object_document(reused_parser(), json, read);
  ondemand::parser own_parser;
  return read_object_document(own_parser, json, read);
}

// ---------------------------------------------------------------------------------------
// Small typed reads. Each returns false only when the JSON is broken; a value of another
// type (content is null in many chunks) leaves the output empty and is skipped by the
// enclosing iteration.

bool type_of(ondemand::value& value, ondemand::json_type& type) {
  return value.type().get(type) == SUCCESS;
}

// After a typed get_* answered INCORRECT_TYPE (which leaves the value unread): true when the
// value is of another type, to be skipped; false when its first byte starts no JSON value.
// Reading with get_* first and asking type() only then gives the same answers as asking
// type() first, for less work on the value of the expected type.
CHATCAP_COLD bool other_type(ondemand::value value) {
  ondemand::json_type type;
  return type_of(value, type);
}

// A string value if the value is one. (Plain fields, not std::optional: in the inlined
// chunk reader, optionals cost calls the compiler would not inline.)
struct Text {
  std::string_view view;
  bool present = false;
  bool nonempty() const { return present && !view.empty(); }
};

CHATCAP_HOT bool text_if_any(ondemand::value& value, Text& out) {
  out.present = false;
  const simdjson::error_code error = value.get_string().get(out.view);
  if (error == SUCCESS) {
    out.present = true;
    return true;
  }
  return error == simdjson::INCORRECT_TYPE && other_type(value);
}

bool string_if_any(ondemand::value& value, std::optional<std::string_view>& out) {
  out.reset();
  Text text;
  if (!text_if_any(value, text)) return false;
  if (text.present) out = text.view;
  return true;
}

CHATCAP_HOT bool int_if_any(ondemand::value& value, std::optional<std::int64_t>& out) {
  std::int64_t number = 0;
  if (value.get_int64().get(number) == SUCCESS) {
    out = number;
    return true;
  }
  return other_type(value);  // 1.5, 1e30 or not a number: not a count
}

bool bool_if_any(ondemand::value& value, std::optional<bool>& out) {
  ondemand::json_type type;
  if (!type_of(value, type)) return false;
  if (type != ondemand::json_type::boolean) return true;
  bool flag = false;
  if (value.get_bool().get(flag) != SUCCESS) return false;
  out = flag;
  return true;
}

// Element count of an array value; other types count as nothing.
bool count_if_array(ondemand::value& value, std::int64_t& out) {
  ondemand::json_type type;
  if (!type_of(value, type)) return false;
  if (type != ondemand::json_type::array) return true;
  ondemand::array array;
  if (value.get_array().get(array) != SUCCESS) return false;
  std::size_t count = 0;
  if (array.count_elements().get(count) != SUCCESS) return false;
  out = static_cast<std::int64_t>(count);
  return true;
}

// Member count of an object value; other types count as nothing.
bool count_if_object(ondemand::value& value, std::int64_t& out) {
  ondemand::json_type type;
  if (!type_of(value, type)) return false;
  if (type != ondemand::json_type::object) return true;
  ondemand::object object;
  if (value.get_object().get(object) != SUCCESS) return false;
  std::size_t count = 0;
  if (object.count_fields().get(count) != SUCCESS) return false;
  out = static_cast<std::int64_t>(count);
  return true;
}

// `logprobs` as a count: an integer as sent (completions), 1 for true (chat), else 0.
bool logprobs_if_any(ondemand::value& value, std::int64_t& out) {
  std::optional<std::int64_t> number;
  if (!int_if_any(value, number)) return false;
  if (number) {
    out = *number;
    return true;
  }
  std::optional<bool> flag;
  if (!bool_if_any(value, flag)) return false;
  out = flag.value_or(false) ? 1 : 0;
  return true;
}

// Whether the value is anything but null.
bool present_not_null(ondemand::value& value, bool& out) {
  ondemand::json_type type;
  if (!type_of(value, type)) return false;
  out = type != ondemand::json_type::null;
  return true;
}

// An object (array) value if the value is one: `found` says whether it was.
CHATCAP_HOT bool object_if_any(ondemand::value& value, ondemand::object& out, bool& found) {
  const simdjson::error_code error = value.get_object().get(out);
  found = error == SUCCESS;
  return found || (error == simdjson::INCORRECT_TYPE && other_type(value));
}

CHATCAP_HOT bool array_if_any(ondemand::value& value, ondemand::array& out, bool& found) {
  const simdjson::error_code error = value.get_array().get(out);
  found = error == SUCCESS;
  return found || (error == simdjson::INCORRECT_TYPE && other_type(value));
}

// The value's JSON text exactly as in the document, trailing whitespace trimmed. simdjson
// 3.0 values have no raw_json(): objects and arrays give theirs (consuming the value),
// scalars their token (which runs up to the next token, spaces included).
bool raw_text(ondemand::value& value, std::string_view& out) {
  ondemand::json_type type;
  if (!type_of(value, type)) return false;
  if (type == ondemand::json_type::object) {
    ondemand::object object;
    if (value.get_object().get(object) != SUCCESS) return false;
    if (object.raw_json().get(out) != SUCCESS) return false;
  } else if (type == ondemand::json_type::array) {
    ondemand::array array;
    if (value.get_array().get(array) != SUCCESS) return false;
    if (array.raw_json().get(out) != SUCCESS) return false;
  } else {
    out = value.raw_json_token();
  }
  out = trim_trailing_whitespace(out);
  return true;
}

// `text` as a JSON string literal: for bytes that must be kept but are not JSON.
void append_json_string(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (byte < 0x20) {
      out.append("\\u00");
      out.push_back(kHex[byte >> 4]);
      out.push_back(kHex[byte & 0xF]);
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
}

// ---------------------------------------------------------------------------------------
// Full validation, for the few values copied verbatim from a client's request: on-demand
// skips unread values without checking them, and a summary must stay valid JSON.

bool walk_value(ondemand::value value);

bool walk_object(ondemand::object object) {
  for (auto field_result : object) {
    std::string_view key;
    ondemand::value value;
    if (!split_field(field_result, key, value) || !walk_value(value)) return false;
  }
  return true;
}

bool walk_array(ondemand::array array) {
  for (auto element_result : array) {
    ondemand::value element;
    if (element_result.get(element) != SUCCESS || !walk_value(element)) return false;
  }
  return true;
}

bool walk_value(ondemand::value value) {
  ondemand::json_type type;
  if (!type_of(value, type)) return false;
  switch (type) {
    case ondemand::json_type::object: {
      ondemand::object object;
      return value.get_object().get(object) == SUCCESS && walk_object(object);
    }
    case ondemand::json_type::array: {
      ondemand::array array;
      return value.get_array().get(array) == SUCCESS && walk_array(array);
    }
    case ondemand::json_type::string: {
      std::string_view text;
      return value.get_string().get(text) == SUCCESS;
    }
    case ondemand::json_type::number: {
      ondemand::number number;
      return value.get_number().get(number) == SUCCESS;
    }
    case ondemand::json_type::boolean: {
      bool flag = false;
      return value.get_bool().get(flag) == SUCCESS;
    }
    case ondemand::json_type::null: {
      bool is_null = false;
      return value.is_null().get(is_null) == SUCCESS && is_null;
    }
  }
  return false;
}

bool is_one_valid_element(ondemand::parser& parser, simdjson::padded_string_view json) {
  ondemand::document document;
  ondemand::array array;
  std::size_t count = 0;
  return parser.iterate(json).get(document) == SUCCESS &&
         document.get_array().get(array) == SUCCESS &&
         array.count_elements().get(count) == SUCCESS && count == 1 && walk_array(array) &&
         document_at_end(document);
}

// Whether `text` is exactly one valid JSON value. Wrapped in [ ] because a document that is
// a bare scalar cannot be walked as a value. Not reused_parser(): the caller's document is
// still being read with it.
bool is_valid_json_value(std::string_view text) {
  thread_local std::string wrapped;
  wrapped.reserve(text.size() + 2 + simdjson::SIMDJSON_PADDING);
  wrapped.assign("[");
  wrapped.append(text);
  wrapped.push_back(']');
  const simdjson::padded_string_view json(wrapped.data(), wrapped.size(), wrapped.capacity());
  bool valid = false;
  if (wrapped.size() <= kKeptBufferBytes) {
    thread_local ondemand::parser validation_parser;
    valid = is_one_valid_element(validation_parser, json);
  } else {
    ondemand::parser own_parser;
    valid = is_one_valid_element(own_parser, json);
  }
  release_if_large(wrapped);
  return valid;
}

// ---------------------------------------------------------------------------------------
// Request summary.

bool is_structured_output_key(std::string_view key) {
  return std::find(kStructuredOutputKeys.begin(), kStructuredOutputKeys.end(), key) !=
         kStructuredOutputKeys.end();
}

// Appends `"key":raw` to the summary's object text (opened here, closed by the caller). A
// value that is not valid JSON is kept as a JSON string of its bytes: the operator still
// sees what was sent, and the record stays parseable. False for such a value.
bool append_structured_field(std::string& out, std::string_view key, std::string_view raw) {
  out.push_back(out.empty() ? '{' : ',');
  out.push_back('"');
  out.append(key);  // one of kStructuredOutputKeys: nothing to escape
  out.append("\":");
  if (is_valid_json_value(raw)) {
    out.append(raw);
    return true;
  }
  append_json_string(out, raw);
  return false;
}

struct RequestReader {
  RequestSummary& summary;
  std::optional<std::int64_t> max_tokens;
  std::optional<std::int64_t> max_completion_tokens;
  bool structured_field_invalid = false;  // on-demand skipped it unchecked; the walk did not

  bool read(ondemand::object& top) {
    for (auto field_result : top) {
      std::string_view key;
      ondemand::value value;
      if (!split_field(field_result, key, value) || !read_field(key, value)) return false;
    }
    return true;
  }

  bool read_field(std::string_view key, ondemand::value& value) {
    if (key == "model") {
      std::optional<std::string_view> model;
      if (!string_if_any(value, model)) return false;
      if (model) summary.model.assign(*model);
      return true;
    }
    if (key == "stream") return bool_if_any(value, summary.stream);
    if (key == "max_tokens") return int_if_any(value, max_tokens);
    if (key == "max_completion_tokens") return int_if_any(value, max_completion_tokens);
    if (key == "n") return int_if_any(value, summary.n);
    if (key == "messages") return count_if_array(value, summary.messages);
    if (key == "tools") return count_if_array(value, summary.tools);
    // The sizes and switches that known engine killers are made of (risks.hpp).
    if (key == "logit_bias") return count_if_object(value, summary.logit_bias_entries);
    if (key == "allowed_token_ids") return count_if_array(value, summary.allowed_token_ids);
    if (key == "stop_token_ids") return count_if_array(value, summary.stop_token_ids);
    if (key == "echo") return bool_if_any(value, summary.echo);
    if (key == "logprobs") return logprobs_if_any(value, summary.logprobs);
    if (key == "priority") return present_not_null(value, summary.priority);
    if (is_structured_output_key(key)) {
      // Present with value null counts too: {"structured_outputs": {"json": null}} is
      // exactly the kind of request this field exists to show.
      std::string_view raw;
      if (!raw_text(value, raw)) return false;
      if (!append_structured_field(summary.structured_output_json, key, raw)) {
        structured_field_invalid = true;
      }
    }
    return true;
  }
};

// ---------------------------------------------------------------------------------------
// Answer assembly: streamed chunks and whole bodies.

enum class AnswerSource {
  stream_chunk,     // chat.completion.chunk: choice text under `delta`, appended
  completion_body,  // chat.completion: choice text under `message`, whole
};

// Appends `piece` to `text` without passing ChatAnswer::kMaxTextBytes; a cut backs up to a
// UTF-8 character boundary so the record stays valid UTF-8. False when it cut.
bool append_capped(std::string& text, std::string_view piece) {
  const std::size_t room =
      text.size() < ChatAnswer::kMaxTextBytes ? ChatAnswer::kMaxTextBytes - text.size() : 0;
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
bool append_answer_text(ChatAnswer& answer, std::string& field, std::string_view piece) {
  if (piece.empty()) return false;
  if (!append_capped(field, piece)) answer.text_truncated = true;
  return true;
}

// The first byte of a key as written (its closing quote when the key is empty): objects are
// read in one pass with their keys dispatched on it, then compared whole.
CHATCAP_HOT char first_byte(const ondemand::raw_json_string& key) { return *key.raw(); }

// A key name as a template argument: key_is<"choices">(key).
template <std::size_t N>
struct KeyName {
  char text[N] = {};  // the name and its NUL
  constexpr KeyName(const char (&name)[N]) {  // NOLINT: implicit by design
    for (std::size_t i = 0; i < N; ++i) text[i] = name[i];
  }
};

// The bytes a key that is exactly `Name` has as written, the name then the closing quote,
// as 8-byte words in memory order, with masks for the bytes that count in the last one.
template <KeyName Name>
struct KeyWords {
  static constexpr std::size_t kBytes = sizeof(Name.text);  // the name and the quote
  static constexpr std::size_t kCount = (kBytes + 7) / 8;
  std::uint64_t want[kCount] = {};
  std::uint64_t mask[kCount] = {};
  constexpr KeyWords() {
    for (std::size_t i = 0; i < kBytes; ++i) {
      const auto byte = static_cast<std::uint64_t>(
          static_cast<unsigned char>(i + 1 < kBytes ? Name.text[i] : '"'));
      const std::size_t shift =
          std::endian::native == std::endian::little ? (i % 8) * 8 : (7 - i % 8) * 8;
      want[i / 8] |= byte << shift;
      mask[i / 8] |= std::uint64_t{0xFF} << shift;
    }
  }
};

// True when the key as written is exactly `Name` (plain ASCII, as servers write keys): its
// raw bytes are then the name and the closing quote. Compared a word at a time against
// constants (memcmp is a call for these sizes); like raw_json_string's own ==, it may read
// past a shorter key, never past the document's padding.
template <KeyName Name>
CHATCAP_HOT bool key_is(const ondemand::raw_json_string& key) {
  static constexpr KeyWords<Name> kWords;
  static_assert(kWords.kCount * 8 <= simdjson::SIMDJSON_PADDING, "reads stay within the padding");
  const char* raw = key.raw();
  for (std::size_t word = 0; word < kWords.kCount; ++word) {
    std::uint64_t got = 0;
    std::memcpy(&got, raw + word * 8, 8);
    if ((got & kWords.mask[word]) != kWords.want[word]) return false;
  }
  return true;
}

// Reads one chunk or body into a ChatAnswer. The two differ in where choice 0's text lives
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
class AnswerReader {
 public:
  AnswerReader(ChatAnswer& answer, AnswerSource source, std::string_view whole_text)
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
    ToolCallDelta* slot = tool_call_slot(pieces.index.value_or(position));
    if (slot == nullptr) {
      answer_.text_truncated = true;
      return true;
    }
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

  // The tool call with this index, created in index order; nullptr past kMaxToolCalls.
  ToolCallDelta* tool_call_slot(std::int64_t index) {
    auto& calls = answer_.tool_calls;
    auto at = std::lower_bound(calls.begin(), calls.end(), index,
                               [](const ToolCallDelta& call, std::int64_t i) { return call.index < i; });
    if (at != calls.end() && at->index == index) return &*at;
    if (calls.size() >= ChatAnswer::kMaxToolCalls) return nullptr;
    ToolCallDelta fresh;
    fresh.index = index;
    return &*calls.insert(at, std::move(fresh));
  }

  // False for an empty piece, which changes nothing.
  CHATCAP_HOT bool append_text(std::string& text, std::string_view piece) {
    if (!append_answer_text(answer_, text, piece)) return false;
    carried_text_ = true;
    return true;
  }

  ChatAnswer& answer_;
  AnswerSource source_;
  std::string_view whole_text_;
  bool carried_text_ = false;
  bool saw_error_ = false;
  bool tool_calls_seen_ = false;
  int appends_ = 0;  // content and reasoning appends
  std::string_view appended_token_;
  ChunkShape::Text appended_target_ = ChunkShape::Text::content;
};

std::uint32_t gap_us(timestamp_us from, timestamp_us to) {
  const timestamp_us gap = std::clamp<timestamp_us>(
      to - from, 0, std::numeric_limits<std::uint32_t>::max());
  return static_cast<std::uint32_t>(gap);
}

void note_token_event(ChatAnswer& answer, timestamp_us ts) {
  ++answer.token_events;
  if (answer.token_events == 1) {
    answer.first_token_ts = ts;
  } else if (answer.token_gaps_us.size() < ChatAnswer::kMaxGapSamples) {
    // Room for a typical answer's gaps at once (512 bytes), not eight regrowths and copies.
    if (answer.token_gaps_us.capacity() == 0) answer.token_gaps_us.reserve(128);
    answer.token_gaps_us.push_back(gap_us(answer.last_token_ts, ts));
  }
  answer.last_token_ts = ts;
}

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
bool take_same_shape_chunk(ChatAnswer& answer, std::string& scratch, const ChunkShape& shape,
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
                 const AnswerReader& reader) {
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

void take_event(ChatAnswer& answer, std::string& scratch, ChunkShape& shape, const SseEvent& event) {
  ++answer.events;
  if (answer.events == 1) answer.first_event_ts = event.ts;
  answer.last_event_ts = event.ts;

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
  AnswerReader reader(answer, AnswerSource::stream_chunk, data);
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
  if ((error_event || reader.saw_error()) && answer.error_ts == 0) answer.error_ts = event.ts;
  if (error_event && !reader.saw_error()) {
    // `event: error` whose data has no `error` object: the data is the error. Text that is
    // not JSON is kept as a JSON string.
    answer.error_json.clear();
    if (read_ok) {
      answer.error_json.assign(data);
    } else {
      append_json_string(answer.error_json, data);
    }
    return;
  }
  if (!read_ok && !data.empty()) ++answer.bad_events;  // empty data: a keep-alive, not bad
}

}  // namespace

RequestSummary summarize_chat_request(std::string_view body) {
  RequestSummary summary;
  try {
    thread_local std::string padded;
    RequestReader reader{summary, std::nullopt, std::nullopt, false};
    summary.json_valid =
        parse_object(body, padded, [&reader](ondemand::object& top) { return reader.read(top); }) &&
        !reader.structured_field_invalid;
    release_if_large(padded);
    summary.max_tokens =
        reader.max_tokens ? reader.max_tokens : reader.max_completion_tokens;
  } catch (...) {  // allocation failure: the summary says what it could read
    summary.json_valid = false;
  }
  if (!summary.structured_output_json.empty()) summary.structured_output_json.push_back('}');
  return summary;
}

void ChatStreamAssembler::on_sse_event(const SseEvent& event) {
  try {
    take_event(answer_, scratch_, shape_, event);
  } catch (...) {  // allocation failure: count it and go on with the stream
    ++answer_.bad_events;
  }
}

void ChatStreamAssembler::reset() {
  answer_.clear();
  shape_.forget();
}

bool assemble_chat_completion(std::string_view body, ChatAnswer& out) {
  try {
    thread_local std::string padded;
    AnswerReader reader(out, AnswerSource::completion_body, trim_whitespace(body));
    const bool read_ok =
        parse_object(body, padded, [&reader](ondemand::object& top) { return reader.read(top); });
    release_if_large(padded);
    return read_ok;
  } catch (...) {
    return false;
  }
}

namespace {

// Nearest rank: the smallest sample with at least `percentile` % of samples at or below it
// (1-based, within 1..samples).
std::size_t nearest_rank(double percentile, std::size_t samples) {
  if (!(percentile >= 0.0)) percentile = 0.0;  // also NaN
  percentile = std::min(percentile, 100.0);
  auto rank = static_cast<std::size_t>(std::ceil(percentile / 100.0 * static_cast<double>(samples)));
  return std::clamp<std::size_t>(rank, 1, samples);
}

// A scratch copy of the gaps kept by the thread (at most kMaxGapSamples): no allocation per
// record, and the answer's own samples keep their order.
std::vector<std::uint32_t>& sorted_scratch(const std::vector<std::uint32_t>& gaps) {
  thread_local std::vector<std::uint32_t> scratch;
  scratch.assign(gaps.begin(), gaps.end());
  return scratch;
}

// Puts the rank-th smallest of [first, last) at first + rank - 1; everything before it is
// no larger and everything after no smaller.
std::uint32_t select_rank(std::vector<std::uint32_t>::iterator first, std::vector<std::uint32_t>::iterator last,
                          std::size_t rank) {
  auto nth = first + static_cast<std::ptrdiff_t>(rank - 1);
  std::nth_element(first, nth, last);
  return *nth;
}

double as_ms(std::uint32_t us) { return static_cast<double>(us) / 1000.0; }

}  // namespace

std::optional<double> ChatAnswer::gap_percentile_ms(double percentile) const {
  if (token_gaps_us.empty()) return std::nullopt;
  std::vector<std::uint32_t>& sorted = sorted_scratch(token_gaps_us);
  return as_ms(select_rank(sorted.begin(), sorted.end(), nearest_rank(percentile, sorted.size())));
}

ChatAnswer::GapMedianP99 ChatAnswer::gap_p50_p99_us() const {
  if (token_gaps_us.empty()) return {};
  std::vector<std::uint32_t>& sorted = sorted_scratch(token_gaps_us);
  const std::size_t rank50 = nearest_rank(50.0, sorted.size());
  const std::size_t rank99 = nearest_rank(99.0, sorted.size());  // >= rank50
  GapMedianP99 result;
  result.p50_us = select_rank(sorted.begin(), sorted.end(), rank50);
  // The p99 sample is at or after the median's position, among samples no smaller.
  const auto median_at = sorted.begin() + static_cast<std::ptrdiff_t>(rank50 - 1);
  result.p99_us = select_rank(median_at, sorted.end(), rank99 - rank50 + 1);
  return result;
}

void ChatAnswer::clear() {
  content.clear();
  reasoning.clear();
  tool_calls.clear();
  finish_reason.clear();
  usage_json.clear();
  error_json.clear();
  model.clear();
  done = false;
  text_truncated = false;
  events = 0;
  bad_events = 0;
  token_events = 0;
  first_event_ts = 0;
  first_token_ts = 0;
  last_token_ts = 0;
  last_event_ts = 0;
  error_ts = 0;
  token_gaps_us.clear();
}

}  // namespace chatcap
