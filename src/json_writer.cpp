#include "chatcap/json_writer.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <stdexcept>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <fmt/format.h>
#include <simdjson.h>

namespace chatcap {
namespace {

// 0: copy as is; otherwise the byte needs an escape.
constexpr std::array<std::uint8_t, 256> kNeedsEscape = [] {
  std::array<std::uint8_t, 256> table{};
  for (int c = 0; c < 0x20; ++c) table[c] = 1;
  table['"'] = 1;
  table['\\'] = 1;
  return table;
}();

// True for a short string that is written as it is: ASCII with nothing to escape. Checked
// eight bytes at a time in a register (header names and values, ids, methods: most strings
// a record holds), which for a few dozen bytes costs less than the UTF-8 check and the
// escaper. A clean word wrongly flagged only sends the string the slow, exact way.
bool is_short_plain_ascii(std::string_view text) {
  constexpr std::size_t kShort = 64;
  return text.size() <= kShort && is_plain_json_ascii(text);
}

// Writes the escape for `c` at `dst` (room for 6 bytes); returns the new end.
char* write_escape(char* dst, unsigned char c) {
  char short_form = 0;
  switch (c) {
    case '"': short_form = '"'; break;
    case '\\': short_form = '\\'; break;
    case '\n': short_form = 'n'; break;
    case '\r': short_form = 'r'; break;
    case '\t': short_form = 't'; break;
    case '\b': short_form = 'b'; break;
    case '\f': short_form = 'f'; break;
    default: break;
  }
  *dst++ = '\\';
  if (short_form != 0) {
    *dst++ = short_form;
    return dst;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  *dst++ = 'u';
  *dst++ = '0';
  *dst++ = '0';
  *dst++ = kHex[c >> 4];
  *dst++ = kHex[c & 0xF];
  return dst;
}

void append_escape(std::string& out, unsigned char c) {
  char buf[6];
  char* end = write_escape(buf, c);
  out.append(buf, static_cast<std::size_t>(end - buf));
}

std::size_t escape_length(unsigned char c) {
  switch (c) {
    case '"': case '\\': case '\n': case '\r': case '\t': case '\b': case '\f': return 2;
    default: return c < 0x20 ? 6 : 1;
  }
}

#if defined(__SSE2__)
// Bit i set when byte i of the chunk needs an escape: '"', '\\' or below 0x20 (unsigned:
// bytes >= 0x80 are UTF-8 and pass through).
int special_mask(__m128i chunk) {
  __m128i control = _mm_cmpeq_epi8(_mm_min_epu8(chunk, _mm_set1_epi8(0x1f)), chunk);
  __m128i quote = _mm_cmpeq_epi8(chunk, _mm_set1_epi8('"'));
  __m128i backslash = _mm_cmpeq_epi8(chunk, _mm_set1_epi8('\\'));
  return _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control));
}
#endif

// The length of `n` bytes once escaped: +1 per quote, backslash or short-form control
// character, +5 for the other control characters (\u00XX).
std::size_t escaped_size(const char* p, std::size_t n) {
  std::size_t size = n;
  std::size_t i = 0;
#if defined(__SSE2__)
  for (; i + 16 <= n; i += 16) {
    __m128i chunk = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
    int mask = special_mask(chunk);
    if (mask == 0) continue;
    size += static_cast<std::size_t>(__builtin_popcount(static_cast<unsigned>(mask)));
    // Control characters are rare; a quote or a backslash needs nothing more than its +1.
    int controls = _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(chunk, _mm_set1_epi8(0x1f)), chunk));
    for (; controls != 0; controls &= controls - 1) {
      auto c = static_cast<unsigned char>(p[i + static_cast<std::size_t>(__builtin_ctz(static_cast<unsigned>(controls)))]);
      size += escape_length(c) - 2;
    }
  }
#endif
  for (; i < n; ++i) size += escape_length(static_cast<unsigned char>(p[i])) - 1;
  return size;
}

}  // namespace

bool is_plain_json_ascii(std::string_view text) {
  // Each test below finds every byte it looks for (it may also flag a clean word).
  constexpr std::uint64_t kOnes = 0x0101010101010101ull;
  constexpr std::uint64_t kHigh = 0x8080808080808080ull;
  auto has_zero_byte = [](std::uint64_t v) { return (v - kOnes) & ~v & kHigh; };
  auto needs_care = [&](std::uint64_t w) {
    return (w & kHigh) |                        // a byte from 0x80: UTF-8 to check
           ((w - kOnes * 0x20) & ~w & kHigh) |  // a control character (the bytes are below 0x80 here)
           has_zero_byte(w ^ (kOnes * '"')) | has_zero_byte(w ^ (kOnes * '\\'));
  };
  const char* const p = text.data();
  const std::size_t n = text.size();
  if (n < 8) {
    // Most token texts: one word, the missing bytes plain spaces, assembled without a
    // library call (a memcpy of a variable size is one).
    std::uint64_t word = kOnes * ' ';
    for (std::size_t k = 0; k < n; ++k) {
      const unsigned shift = static_cast<unsigned>(8 * k);
      word = (word & ~(std::uint64_t{0xFF} << shift)) | (std::uint64_t{static_cast<unsigned char>(p[k])} << shift);
    }
    return needs_care(word) == 0;
  }
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t word;
    std::memcpy(&word, p + i, sizeof word);
    if (needs_care(word) != 0) return false;
  }
  if (i < n) {  // the last eight bytes, overlapping some already found plain
    std::uint64_t word;
    std::memcpy(&word, p + n - 8, sizeof word);
    if (needs_care(word) != 0) return false;
  }
  return true;
}

void JsonWriter::separate() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (depth_ == 0) return;
  const std::uint64_t bit = std::uint64_t{1} << (depth_ - 1);
  if ((first_bits_ & bit) == 0) out_ += ',';
  first_bits_ &= ~bit;
}

void JsonWriter::open(char bracket) {
  if (depth_ == kMaxDepth) throw std::logic_error("JsonWriter: containers nested too deep");
  separate();
  out_ += bracket;
  ++depth_;
  first_bits_ |= std::uint64_t{1} << (depth_ - 1);
}

void JsonWriter::close(char bracket) {
  out_ += bracket;
  if (depth_ > 0) --depth_;
}

JsonWriter& JsonWriter::begin_object() {
  open('{');
  return *this;
}

JsonWriter& JsonWriter::end_object() {
  close('}');
  return *this;
}

JsonWriter& JsonWriter::begin_array() {
  open('[');
  return *this;
}

JsonWriter& JsonWriter::end_array() {
  close(']');
  return *this;
}

JsonWriter& JsonWriter::key(std::string_view name) {
  separate();
  // Keys are the record's own field names: plain ASCII, nothing to escape.
  out_ += '"';
  out_.append(name);
  out_ += "\":";
  after_key_ = true;
  return *this;
}

JsonWriter& JsonWriter::string(std::string_view text) {
  separate();
  if (is_short_plain_ascii(text)) {  // header names and values, methods, states: most strings
    const std::size_t at = out_.size();
    out_.resize(at + text.size() + 2);
    char* dst = out_.data() + at;
    dst[0] = '"';
    std::memcpy(dst + 1, text.data(), text.size());
    dst[text.size() + 1] = '"';
    return *this;
  }
  out_.reserve(out_.size() + text.size() + 2);
  out_ += '"';
  if (simdjson::validate_utf8(text.data(), text.size())) {
    escape_utf8(text);
  } else {
    escape_bytes(text);
  }
  out_ += '"';
  return *this;
}

void JsonWriter::escape_utf8(std::string_view text) {
  // Streamed answers are JSON inside JSON: a quote every few bytes. One pass sizes the
  // output exactly, the second writes it through a pointer, 16 bytes at a time between
  // escapes (no call per escape, no zero-filled slack). Each 16-byte store may run past
  // what is valid; kStoreSlack keeps it inside the string, trimmed at the end.
  constexpr std::size_t kStoreSlack = 16;
  if (text.size() < 32) {  // ids, methods, header values: sizing passes would cost more
    for (char ch : text) {
      auto c = static_cast<unsigned char>(ch);
      if (kNeedsEscape[c] != 0) {
        append_escape(out_, c);
      } else {
        out_ += ch;
      }
    }
    return;
  }
  std::size_t start = out_.size();
  std::size_t final_size = start + escaped_size(text.data(), text.size());
  out_.resize(final_size + kStoreSlack);
  char* dst = out_.data() + start;
  const char* p = text.data();
  const char* end = p + text.size();
#if defined(__SSE2__)
  while (end - p >= 16) {
    __m128i chunk = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), chunk);
    int mask = special_mask(chunk);
    if (mask == 0) {
      dst += 16;
      p += 16;
      continue;
    }
    int plain = __builtin_ctz(static_cast<unsigned>(mask));
    dst += plain;
    p += plain;
    unsigned char c = static_cast<unsigned char>(*p++);
    if (c == '"' || c == '\\') {
      dst[0] = '\\';
      dst[1] = static_cast<char>(c);
      dst += 2;
    } else {
      dst = write_escape(dst, c);
    }
  }
#endif
  for (; p < end; ++p) {
    unsigned char c = static_cast<unsigned char>(*p);
    if (kNeedsEscape[c] != 0) {
      dst = write_escape(dst, c);
    } else {
      *dst++ = static_cast<char>(c);
    }
  }
  out_.resize(final_size);
}

void JsonWriter::escape_bytes(std::string_view text) {
  for (unsigned char c : text) {
    if (c >= 0x80) {  // the byte as the Latin-1 code point U+0080..U+00FF
      out_ += static_cast<char>(0xC0 | (c >> 6));
      out_ += static_cast<char>(0x80 | (c & 0x3F));
    } else if (kNeedsEscape[c] != 0) {
      append_escape(out_, c);
    } else {
      out_ += static_cast<char>(c);
    }
  }
}

JsonWriter& JsonWriter::number(std::int64_t value) {
  separate();
  fmt::format_to(std::back_inserter(out_), "{}", value);
  return *this;
}

JsonWriter& JsonWriter::number(std::uint64_t value) {
  separate();
  fmt::format_to(std::back_inserter(out_), "{}", value);
  return *this;
}

JsonWriter& JsonWriter::number(double value) {
  separate();
  if (!std::isfinite(value)) {
    out_ += "null";
  } else {
    fmt::format_to(std::back_inserter(out_), "{}", value);
  }
  return *this;
}

JsonWriter& JsonWriter::millis(std::int64_t micros) {
  // Below 10^15 µs the decimal micros/1000 has at most 15 significant digits, so it is the
  // shortest text that reads back as the double micros / 1000.0, which is what fmt writes
  // for it (fixed notation: the exponent is below 16). Beyond that, fmt's own way.
  constexpr std::int64_t kExactBelow = 1'000'000'000'000'000;
  if (micros <= -kExactBelow || micros >= kExactBelow) return number(static_cast<double>(micros) / 1000.0);
  separate();
  char text[24];
  char* end = text;
  if (micros < 0) *end++ = '-';
  const auto magnitude = static_cast<std::uint64_t>(micros < 0 ? -micros : micros);
  const fmt::format_int whole(magnitude / 1000);
  end = std::copy_n(whole.data(), whole.size(), end);
  if (unsigned thousandths = static_cast<unsigned>(magnitude % 1000); thousandths != 0) {
    *end++ = '.';
    for (unsigned unit = 100; thousandths != 0; unit /= 10) {  // trailing zeros are not written
      *end++ = static_cast<char>('0' + thousandths / unit);
      thousandths %= unit;
    }
  }
  out_.append(text, static_cast<std::size_t>(end - text));
  return *this;
}

JsonWriter& JsonWriter::boolean(bool value) {
  separate();
  out_ += value ? "true" : "false";
  return *this;
}

JsonWriter& JsonWriter::null() {
  separate();
  out_ += "null";
  return *this;
}

JsonWriter& JsonWriter::raw(std::string_view json) {
  separate();
  out_.append(json);
  return *this;
}

}  // namespace chatcap
