// A streaming JSON writer for records: appends to a caller's (reused) buffer, escapes
// strings in one pass over runs of plain bytes, allocates nothing of its own.
//
// Why not nlohmann's dump: records carry whole bodies (a streamed answer is ~10× its text),
// and escaping them byte by byte through a DOM copy was most of the cost of a record.
// nlohmann stays for reading records and for the small nested objects (usage, error).
//
// Strings must be UTF-8: bodies are checked by the caller (base64 otherwise). Other captured
// text (headers, targets) may hold any bytes; string() keeps such text valid JSON by
// writing each byte of an invalid sequence as the code point of the same value (Latin-1),
// so nothing is lost and no reader chokes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace chatcap {

// True when every byte of `text` is ASCII from 0x20 on and neither '"' nor '\\': the text
// stands as a JSON string's content unescaped. Eight bytes at a step; it may answer false
// for such text (callers then look byte by byte), never true for other text.
bool is_plain_json_ascii(std::string_view text);

class JsonWriter {
 public:
  explicit JsonWriter(std::string& out) : out_(out) {}

  JsonWriter& begin_object();
  JsonWriter& end_object();
  JsonWriter& begin_array();
  JsonWriter& end_array();
  JsonWriter& key(std::string_view name);
  JsonWriter& string(std::string_view text);
  JsonWriter& number(std::int64_t value);
  JsonWriter& number(std::uint64_t value);
  JsonWriter& number(double value);
  // A count of microseconds as milliseconds: the text number(micros / 1000.0) writes
  // ("169.079", "2.5", "-0.015"), from integers (every record has six such timings).
  JsonWriter& millis(std::int64_t micros);
  JsonWriter& boolean(bool value);
  JsonWriter& null();
  // Text that is already one valid JSON value (checked by the caller).
  JsonWriter& raw(std::string_view json);

  // Convenience: key followed by a value.
  template <class T>
  JsonWriter& field(std::string_view name, const T& value) {
    key(name);
    return put(value);
  }

 private:
  JsonWriter& put(std::string_view v) { return string(v); }
  JsonWriter& put(const std::string& v) { return string(v); }
  JsonWriter& put(const char* v) { return string(v); }
  JsonWriter& put(bool v) { return boolean(v); }
  JsonWriter& put(int v) { return number(static_cast<std::int64_t>(v)); }
  JsonWriter& put(long v) { return number(static_cast<std::int64_t>(v)); }
  JsonWriter& put(long long v) { return number(static_cast<std::int64_t>(v)); }
  JsonWriter& put(unsigned v) { return number(static_cast<std::uint64_t>(v)); }
  JsonWriter& put(unsigned long v) { return number(static_cast<std::uint64_t>(v)); }
  JsonWriter& put(unsigned long long v) { return number(static_cast<std::uint64_t>(v)); }
  JsonWriter& put(double v) { return number(v); }

  void separate();  // the comma before a value or key, where one is due
  void escape_utf8(std::string_view text);
  void escape_bytes(std::string_view text);

  std::string& out_;
  void open(char bracket);
  void close(char bracket);
  // Per open container, one bit: nothing written in it yet (bit i: depth i + 1). Records
  // nest a few levels; kMaxDepth is far beyond any of them.
  static constexpr std::size_t kMaxDepth = 64;
  std::uint64_t first_bits_ = 0;
  std::size_t depth_ = 0;
  bool after_key_ = false;
};

}  // namespace chatcap
