// Reading JSON on the hot path: simdjson's on-demand API, its error codes, no DOM, no
// exceptions on bad input. The helpers every dialect's answer reader and the request
// summary share, in one place (DESIGN.md, "Performance budget").
//
// On-demand reads forward only and checks what it reads, not what it skips: where a value
// is copied out verbatim into a record it is checked in full first (is_valid_json). Typed
// reads return false only when the JSON is broken; a value of another type (content is
// null in many chunks) leaves the output empty and is skipped by the enclosing iteration.
//
// Inline, in a header: on-demand's iterators are cheap only when the compiler sees a whole
// read in one function (see CHATCAP_HOT).
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include <simdjson.h>

// On-demand's iterators are cheap only when the compiler sees a whole read in one function:
// passed by reference into an out-of-line function, their state goes through memory at every
// token. So the reading of a chunk's usual fields is forced inline (HOT) into one function of
// its own (READER: inlined further into its caller, it ran slower), and what few chunks need
// (usage, errors, tool calls, the first model) is kept out of it (COLD).
#define CHATCAP_HOT [[gnu::always_inline]] inline
#define CHATCAP_READER [[gnu::noinline]]
#define CHATCAP_COLD [[gnu::noinline]]

namespace chatcap::json_read {

namespace ondemand = simdjson::ondemand;
using simdjson::SUCCESS;

// Buffers and parsers grow to the largest document they have read. Up to this size they are
// kept (the steady state then allocates nothing); past it, a document gets buffers of its
// own that are freed afterwards, so one huge body does not pin memory for the process life.
constexpr std::size_t kKeptBufferBytes = 1024 * 1024;

inline bool is_json_whitespace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

inline std::string_view trim_trailing_whitespace(std::string_view text) {
  while (!text.empty() && is_json_whitespace(text.back())) text.remove_suffix(1);
  return text;
}

inline std::string_view trim_whitespace(std::string_view text) {
  while (!text.empty() && is_json_whitespace(text.front())) text.remove_prefix(1);
  return trim_trailing_whitespace(text);
}

inline void release_if_large(std::string& buffer) {
  if (buffer.capacity() > kKeptBufferBytes) std::string().swap(buffer);
}

// simdjson reads up to SIMDJSON_PADDING bytes past the end of its input: copy `text` into a
// reused buffer with that much room, zeroed as simdjson's own padded_string has it (a
// closing bracket there would send on-demand on a scan of the whole document, simdjson
// issue 1834). The buffer keeps the size of the largest copy, so the usual event costs two
// fixed-size copies and no string bookkeeping.
inline simdjson::padded_string_view padded_copy(std::string_view text, std::string& buffer) {
  const std::size_t padded_size = text.size() + simdjson::SIMDJSON_PADDING;
  if (buffer.size() < padded_size) buffer.resize(padded_size);
  if (!text.empty()) std::memcpy(buffer.data(), text.data(), text.size());
  std::memset(buffer.data() + text.size(), 0, simdjson::SIMDJSON_PADDING);
  return simdjson::padded_string_view(buffer.data(), text.size(), buffer.size());
}

// simdjson 3.0's document has no at_end(); its current_location() is out of bounds exactly
// when every token has been read, and nothing may follow the one value of a document.
inline bool document_at_end(ondemand::document& document) {
  return document.current_location().error() == simdjson::OUT_OF_BOUNDS;
}

// The key and value of one field met while iterating an object. The key unescaped: for
// requests, whose clients may write keys any way JSON allows.
inline bool split_field(simdjson::simdjson_result<ondemand::field> result, std::string_view& key,
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
inline ondemand::parser& reused_parser() {
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

// Parses `text` as one JSON object with read(object&) -> bool, then, only when all of it
// was read, calls apply() while the views read() took are still valid: parse_object's
// parser of its own for a large document dies when it returns. For readers that change an
// answer only once a whole event has parsed.
template <class Read, class Apply>
bool read_then_apply(std::string_view text, std::string& padded, Read&& read, Apply&& apply) {
  const simdjson::padded_string_view json = padded_copy(text, padded);
  auto run = [&](ondemand::parser& parser) {
    if (!read_object_document(parser, json, read)) return false;
    apply();
    return true;
  };
  if (text.size() <= kKeptBufferBytes) return run(reused_parser());
  ondemand::parser own_parser;
  return run(own_parser);
}

// ---------------------------------------------------------------------------------------
// Small typed reads. Each returns false only when the JSON is broken; a value of another
// type (content is null in many chunks) leaves the output empty and is skipped by the
// enclosing iteration.

inline bool type_of(ondemand::value& value, ondemand::json_type& type) {
  return value.type().get(type) == SUCCESS;
}

// After a typed get_* answered INCORRECT_TYPE (which leaves the value unread): true when the
// value is of another type, to be skipped; false when its first byte starts no JSON value.
// Reading with get_* first and asking type() only then gives the same answers as asking
// type() first, for less work on the value of the expected type.
CHATCAP_COLD inline bool other_type(ondemand::value value) {
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

inline bool string_if_any(ondemand::value& value, std::optional<std::string_view>& out) {
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

inline bool bool_if_any(ondemand::value& value, std::optional<bool>& out) {
  ondemand::json_type type;
  if (!type_of(value, type)) return false;
  if (type != ondemand::json_type::boolean) return true;
  bool flag = false;
  if (value.get_bool().get(flag) != SUCCESS) return false;
  out = flag;
  return true;
}

// Element count of an array value; other types count as nothing.
inline bool count_if_array(ondemand::value& value, std::int64_t& out) {
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
inline bool count_if_object(ondemand::value& value, std::int64_t& out) {
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
inline bool raw_text(ondemand::value& value, std::string_view& out) {
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

// Whether `text` is exactly one valid JSON value, checked in full (simdjson's DOM parser,
// its own buffers: callable in the middle of an on-demand read). The one validator: what is
// embedded in a record as raw JSON passes it first.
bool is_valid_json(std::string_view text);

// ---------------------------------------------------------------------------------------
// Keys compared as written.

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

}  // namespace chatcap::json_read
