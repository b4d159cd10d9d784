#include "chatcap/sse.hpp"

#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace chatcap {
namespace {

constexpr std::string_view kBom = "\xEF\xBB\xBF";
constexpr std::string_view kDefaultEventType = "message";  // W3C: no `event:` field

// A line may exceed the event cap by its field name ("data: " and the like), so that an
// event whose data is exactly kMaxEventBytes is still delivered.
constexpr std::size_t kMaxLineBytes = SseDecoder::kMaxEventBytes + 64;

// A buffer that once held an unusually large line or event gives its memory back, so one
// big event does not pin megabytes for the rest of a long-lived connection. Below this,
// capacity is kept: steady-state events then cost no allocation.
constexpr std::size_t kKeptCapacityBytes = 64 * 1024;

void release_if_large(std::string& buffer) {
  if (buffer.capacity() > kKeptCapacityBytes) std::string().swap(buffer);
}

// Index of the first '\r' or '\n' in bytes, or npos: the decoder's inner loop. One pass,
// 32 bytes a step (an event is ~100-200 bytes; two memchr calls cost twice the setup), and
// the last few bytes in one more 16-byte step that overlaps bytes already found clean.
std::size_t find_line_end(std::string_view bytes) {
  const char* const p = bytes.data();
  const std::size_t n = bytes.size();
  std::size_t i = 0;
#if defined(__SSE2__)
  const __m128i lf = _mm_set1_epi8('\n');
  const __m128i cr = _mm_set1_epi8('\r');
  auto ends_in = [&](std::size_t at) {  // bit k: byte at + k ends a line
    const __m128i block = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + at));
    return static_cast<unsigned>(_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(block, lf), _mm_cmpeq_epi8(block, cr))));
  };
  for (; i + 32 <= n; i += 32) {
    const unsigned low = ends_in(i);
    const unsigned high = ends_in(i + 16);
    if ((low | high) != 0) return i + static_cast<std::size_t>(__builtin_ctz(low | (high << 16)));
  }
  if (i + 16 <= n) {
    if (const unsigned ends = ends_in(i); ends != 0) return i + static_cast<std::size_t>(__builtin_ctz(ends));
    i += 16;
  }
  if (i < n && n >= 16) {
    const std::size_t at = n - 16;  // bytes before i were clean: only the later bits count
    const unsigned ends = ends_in(at) >> (i - at);
    return ends != 0 ? i + static_cast<std::size_t>(__builtin_ctz(ends)) : std::string_view::npos;
  }
#endif
  for (; i < n; ++i) {
    if (p[i] == '\n' || p[i] == '\r') return i;
  }
  return std::string_view::npos;
}

bool starts_with_field_name(std::string_view bytes) {
  for (std::string_view field : {"data:", "event:", "id:", "retry:"}) {
    if (bytes.starts_with(field)) return true;
  }
  return bytes.starts_with(": ");
}

}  // namespace

void SseDecoder::feed(timestamp_us ts, std::string_view bytes, SseHandler& handler) {
  if (!bom_checked_) bytes = drop_bom(bytes);  // only a stream's first bytes can hold one
  if (just_after_gap_) {
    // Servers write whole events (uvicorn: one per chunk), so bytes after a gap that open
    // with a field name most likely start a line: take it rather than drop a whole event.
    just_after_gap_ = false;
    if (starts_with_field_name(bytes)) skipping_to_line_end_ = false;
  }
  // The previous fragment ended in '\r', already taken as a line end: a '\n' now is the
  // second half of that CRLF, not a blank line (which would dispatch an event too early).
  if (after_cr_ && !bytes.empty()) {
    after_cr_ = false;
    if (bytes.front() == '\n') bytes.remove_prefix(1);
  }
  while (!bytes.empty()) {
    if (at_event_start() && take_whole_data_event(ts, bytes, handler)) continue;
    const std::size_t end = find_line_end(bytes);
    if (end == std::string_view::npos) {
      carry_partial_line(bytes);
      return;
    }
    std::size_t terminator_bytes = 1;
    if (bytes[end] == '\r') {
      if (end + 1 == bytes.size()) {
        after_cr_ = true;
      } else if (bytes[end + 1] == '\n') {
        terminator_bytes = 2;
      }
    }
    const std::string_view piece = bytes.substr(0, end);
    bytes.remove_prefix(end + terminator_bytes);
    complete_line(ts, piece, handler);
  }
}

bool SseDecoder::at_event_start() const {
  return line_.empty() && !have_data_ && !oversized_ && !has_type_or_id_ && !skipping_to_line_end_;
}

// Servers write each event whole (uvicorn: one `data: ...\n\n` per chunk). Such an event,
// met with nothing carried over, is handed over from the fragment itself: no copy, one line
// search. Anything else (CR line ends, other fields, events over the caps) takes the
// general path, which gives the same events.
bool SseDecoder::take_whole_data_event(timestamp_us ts, std::string_view& bytes, SseHandler& handler) {
  constexpr std::string_view kDataField = "data:";
  if (!bytes.starts_with(kDataField)) return false;
  const std::size_t end = find_line_end(bytes);
  if (end == std::string_view::npos || end > kMaxLineBytes || bytes[end] != '\n' || end + 1 >= bytes.size() ||
      bytes[end + 1] != '\n') {
    return false;
  }
  std::string_view value = bytes.substr(kDataField.size(), end - kDataField.size());
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (value.size() > kMaxEventBytes) return false;
  ++events_;
  SseEvent event;
  event.ts = ts;
  event.type = kDefaultEventType;
  event.data = value;
  handler.on_sse_event(event);
  bytes.remove_prefix(end + 2);
  return true;
}

// The BOM may itself arrive split across fragments: its bytes matched so far wait in line_.
// If the stream turns out not to start with a BOM, what line_ holds is simply the start of
// the first line.
std::string_view SseDecoder::drop_bom(std::string_view bytes) {
  while (!bom_checked_ && !bytes.empty()) {
    if (bytes.front() != kBom[line_.size()]) {
      bom_checked_ = true;
      break;
    }
    line_.push_back(bytes.front());
    bytes.remove_prefix(1);
    if (line_.size() == kBom.size()) {
      line_.clear();
      bom_checked_ = true;
    }
  }
  return bytes;
}

void SseDecoder::carry_partial_line(std::string_view piece) {
  if (skipping_to_line_end_) return;
  if (line_.size() + piece.size() > kMaxLineBytes) {
    // The line alone is over the event cap: stop copying it, and drop its event.
    oversized_ = true;
    line_.clear();
    skipping_to_line_end_ = true;
    return;
  }
  line_.append(piece);
}

void SseDecoder::complete_line(timestamp_us ts, std::string_view piece, SseHandler& handler) {
  if (skipping_to_line_end_) {  // the rest of a line cut by a gap or over the cap
    skipping_to_line_end_ = false;
    line_.clear();
    return;
  }
  std::string_view line = piece;  // common case: the whole line is in this fragment, no copy
  if (!line_.empty()) {
    if (line_.size() + piece.size() > kMaxLineBytes) {
      oversized_ = true;
      line_.clear();
      return;
    }
    line_.append(piece);
    line = line_;
  }
  if (line.empty()) {
    dispatch(ts, handler);
  } else {
    process_line(line);
  }
  line_.clear();
}

void SseDecoder::process_line(std::string_view line) {
  if (line.size() > kMaxLineBytes) {
    oversized_ = true;
    return;
  }
  if (line.front() == ':') {
    ++comments_;
    return;
  }
  // W3C: "field:value", one space after the colon stripped; no colon means the whole line is
  // the field name and the value is empty.
  const std::size_t colon = line.find(':');
  const std::string_view field = line.substr(0, colon);
  std::string_view value;
  if (colon != std::string_view::npos) {
    value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (field == "data") {
    append_data(value);
  } else if (field == "event") {
    type_.assign(value);
  } else if (field == "id") {
    if (value.find('\0') == std::string_view::npos) id_.assign(value);  // W3C: NUL => ignore
  }
  has_type_or_id_ = !type_.empty() || !id_.empty();
  // `retry:` (a reconnection delay) and unknown fields are ignored: we never reconnect.
}

void SseDecoder::append_data(std::string_view value) {
  if (oversized_) return;
  const std::size_t joined_size = data_.size() + (have_data_ ? 1 : 0) + value.size();
  if (joined_size > kMaxEventBytes) {
    oversized_ = true;
    data_.clear();
    return;
  }
  if (have_data_) data_.push_back('\n');
  data_.append(value);
  have_data_ = true;
}

void SseDecoder::dispatch(timestamp_us ts, SseHandler& handler) {
  if (oversized_) {
    ++oversized_events_;
  } else if (have_data_) {  // W3C: an event without data lines is not dispatched
    ++events_;
    SseEvent event;
    event.ts = ts;
    event.type = type_.empty() ? kDefaultEventType : std::string_view(type_);
    event.data = data_;
    event.id = id_;
    handler.on_sse_event(event);
  }
  start_next_event();
}

void SseDecoder::start_next_event() {
  data_.clear();
  type_.clear();
  id_.clear();
  has_type_or_id_ = false;
  have_data_ = false;
  oversized_ = false;
  release_if_large(data_);
  release_if_large(line_);
  release_if_large(type_);
  release_if_large(id_);
}

void SseDecoder::finish() {
  if (!skipping_to_line_end_) discarded_tail_bytes_ += line_.size() + data_.size();
  line_.clear();
  start_next_event();
  after_cr_ = false;
  bom_checked_ = false;
  skipping_to_line_end_ = false;
  just_after_gap_ = false;
}

void SseDecoder::on_gap() {
  line_.clear();
  start_next_event();
  after_cr_ = false;  // bytes after a gap do not continue the CRLF before it
  bom_checked_ = true;  // no longer the start of the stream
  skipping_to_line_end_ = true;
  just_after_gap_ = true;
}

void SseDecoder::reset() {
  line_.clear();
  start_next_event();
  after_cr_ = false;
  bom_checked_ = false;
  skipping_to_line_end_ = false;
  just_after_gap_ = false;
  events_ = 0;
  comments_ = 0;
  oversized_events_ = 0;
  discarded_tail_bytes_ = 0;
}

}  // namespace chatcap
