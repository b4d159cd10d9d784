#include "chatcap/sse.hpp"

#include <string>
#include <vector>

#include <catch2/catch.hpp>

namespace chatcap {
namespace {

// An event copied out of the callback (the decoder's views die when the callback returns).
struct CopiedEvent {
  timestamp_us ts = 0;
  std::string type;
  std::string data;
  std::string id;

  friend bool operator==(const CopiedEvent&, const CopiedEvent&) = default;
};

std::ostream& operator<<(std::ostream& os, const CopiedEvent& e) {
  return os << "{ts=" << e.ts << " type=" << e.type << " data=" << e.data << " id=" << e.id << "}";
}

struct Recorder : SseHandler {
  std::vector<CopiedEvent> events;
  void on_sse_event(const SseEvent& e) override {
    events.push_back({e.ts, std::string(e.type), std::string(e.data), std::string(e.id)});
  }
};

std::vector<CopiedEvent> decode_whole(std::string_view stream, timestamp_us ts = 1) {
  SseDecoder decoder;
  Recorder recorder;
  decoder.feed(ts, stream, recorder);
  decoder.finish();
  return recorder.events;
}

// Everything the W3C rules have to say about one small stream: BOM, a comment, CRLF, lone
// CR, multi-line data, a field with no colon, a value with two leading spaces (one is kept),
// retry, an event with no data (not dispatched, its type forgotten), an id per event.
const std::string kStream =
    "\xEF\xBB\xBF"
    ": keep-alive\r\n"
    "data: first\n"
    "\n"
    "event: delta\r\n"
    "id: 7\r\n"
    "data:  two spaces\r\n"
    "data\r\n"
    "data:third\r\n"
    "\r\n"
    "event: ignored\r"
    "retry: 100\r"
    "\r"
    "data: {\"a\":1}\r"
    "\r"
    "data: not terminated";

// Offset of the byte that ends the blank line dispatching each event (the first byte of
// the blank line's terminator: a CR counts as a line end on its own).
std::vector<std::size_t> dispatch_offsets() {
  return {kStream.find("first\n\n") + 6, kStream.find("third\r\n\r\n") + 7,
          kStream.find("{\"a\":1}\r\r") + 8};
}

std::vector<CopiedEvent> expected_events(const std::vector<timestamp_us>& ts) {
  return {{ts[0], "message", "first", ""},
          {ts[1], "delta", " two spaces\n\nthird", "7"},
          {ts[2], "message", "{\"a\":1}", ""}};
}

}  // namespace

TEST_CASE("sse: whole stream in one fragment", "[sse]") {
  SseDecoder decoder;
  Recorder recorder;
  decoder.feed(5, kStream, recorder);
  CHECK(recorder.events == expected_events({5, 5, 5}));
  CHECK(decoder.events() == 3);
  CHECK(decoder.comments() == 1);
  decoder.finish();
  CHECK(decoder.discarded_tail_bytes() == std::string_view("data: not terminated").size());
}

TEST_CASE("sse: one byte per fragment gives each event the time of its completing byte",
          "[sse]") {
  SseDecoder decoder;
  Recorder recorder;
  for (std::size_t i = 0; i < kStream.size(); ++i) {
    decoder.feed(static_cast<timestamp_us>(i), std::string_view(kStream).substr(i, 1), recorder);
  }
  const auto offsets = dispatch_offsets();
  CHECK(recorder.events == expected_events({static_cast<timestamp_us>(offsets[0]),
                                            static_cast<timestamp_us>(offsets[1]),
                                            static_cast<timestamp_us>(offsets[2])}));
}

TEST_CASE("sse: a split at every byte position yields the same events", "[sse]") {
  const auto offsets = dispatch_offsets();
  const std::string_view stream = kStream;
  for (std::size_t split = 0; split <= stream.size(); ++split) {
    SseDecoder decoder;
    Recorder recorder;
    decoder.feed(0, stream.substr(0, split), recorder);
    decoder.feed(1, stream.substr(split), recorder);
    std::vector<timestamp_us> ts;
    for (auto offset : offsets) ts.push_back(offset < split ? 0 : 1);
    INFO("split at " << split);
    REQUIRE(recorder.events == expected_events(ts));
    REQUIRE(decoder.comments() == 1);
  }
}

TEST_CASE("sse: every pair of split positions yields the same events", "[sse]") {
  const auto offsets = dispatch_offsets();
  const std::string_view stream = kStream;
  for (std::size_t first = 0; first <= stream.size(); ++first) {
    for (std::size_t second = first; second <= stream.size(); ++second) {
      SseDecoder decoder;
      Recorder recorder;
      decoder.feed(0, stream.substr(0, first), recorder);
      decoder.feed(1, stream.substr(first, second - first), recorder);
      decoder.feed(2, stream.substr(second), recorder);
      std::vector<timestamp_us> ts;
      for (auto offset : offsets) ts.push_back(offset < first ? 0 : offset < second ? 1 : 2);
      INFO("splits at " << first << " and " << second);
      REQUIRE(recorder.events == expected_events(ts));
    }
  }
}

TEST_CASE("sse: CRLF split across fragments is one line end", "[sse]") {
  SseDecoder decoder;
  Recorder recorder;
  // Were the '\n' opening the second fragment a line end of its own, it would make a blank
  // line and dispatch "a" alone.
  decoder.feed(1, "data: a\r", recorder);
  decoder.feed(2, "\ndata: b\r", recorder);
  decoder.feed(3, "\n\r", recorder);
  decoder.feed(4, "\n", recorder);
  REQUIRE(recorder.events.size() == 1);
  CHECK(recorder.events[0] == CopiedEvent{3, "message", "a\nb", ""});
  // An empty fragment between CR and LF does not forget the CR.
  decoder.feed(5, "data: c\r\r", recorder);
  decoder.feed(6, "", recorder);
  decoder.feed(7, "\ndata: d\n\n", recorder);
  REQUIRE(recorder.events.size() == 3);
  CHECK(recorder.events[1] == CopiedEvent{5, "message", "c", ""});
  CHECK(recorder.events[2] == CopiedEvent{7, "message", "d", ""});
}

TEST_CASE("sse: lone CR ends lines", "[sse]") {
  CHECK(decode_whole("data: a\rdata: b\r\rdata: c\r\r") ==
        std::vector<CopiedEvent>{{1, "message", "a\nb", ""}, {1, "message", "c", ""}});
}

TEST_CASE("sse: BOM dropped once, only at the start", "[sse]") {
  CHECK(decode_whole("\xEF\xBB\xBF" "data: x\n\n") ==
        std::vector<CopiedEvent>{{1, "message", "x", ""}});
  // A second BOM belongs to the field name, which is then unknown: no event.
  CHECK(decode_whole("\xEF\xBB\xBF\xEF\xBB\xBF" "data: x\n\n").empty());
  // Not a BOM after all: its first byte starts the first line (an unknown field).
  CHECK(decode_whole("\xEF" "data: x\n\ndata: y\n\n") ==
        std::vector<CopiedEvent>{{1, "message", "y", ""}});

  SseDecoder decoder;
  Recorder recorder;
  decoder.feed(1, "\xEF", recorder);
  decoder.feed(2, "\xBB", recorder);
  decoder.feed(3, "\xBF" "data: split bom\n", recorder);
  decoder.feed(4, "\n", recorder);
  CHECK(recorder.events == std::vector<CopiedEvent>{{4, "message", "split bom", ""}});
}

TEST_CASE("sse: comments are counted and never dispatch", "[sse]") {
  SseDecoder decoder;
  Recorder recorder;
  decoder.feed(1, ": ping\n\n:\n\n: another\ndata: x\n: inside\n\n", recorder);
  CHECK(decoder.comments() == 4);
  CHECK(recorder.events == std::vector<CopiedEvent>{{1, "message", "x", ""}});
}

TEST_CASE("sse: data lines join with newline, empty data is still an event", "[sse]") {
  CHECK(decode_whole("data: a\ndata:\ndata: b\n\n") ==
        std::vector<CopiedEvent>{{1, "message", "a\n\nb", ""}});
  CHECK(decode_whole("data:\n\n") == std::vector<CopiedEvent>{{1, "message", "", ""}});
  CHECK(decode_whole("data\n\n") == std::vector<CopiedEvent>{{1, "message", "", ""}});
  // One leading space stripped, not more; a colon inside the value is kept.
  CHECK(decode_whole("data:   x: y\n\n") ==
        std::vector<CopiedEvent>{{1, "message", "  x: y", ""}});
}

TEST_CASE("sse: an event with no data is not dispatched and its type is forgotten", "[sse]") {
  SseDecoder decoder;
  Recorder recorder;
  decoder.feed(1, "event: error\nid: 3\n\n", recorder);
  CHECK(recorder.events.empty());
  CHECK(decoder.events() == 0);
  decoder.feed(2, "data: y\n\n", recorder);
  CHECK(recorder.events == std::vector<CopiedEvent>{{2, "message", "y", ""}});
}

TEST_CASE("sse: event type and id", "[sse]") {
  CHECK(decode_whole("event: error\nid: abc\ndata: {}\n\n") ==
        std::vector<CopiedEvent>{{1, "error", "{}", "abc"}});
  // `event:` with an empty value means the default type.
  CHECK(decode_whole("event:\ndata: x\n\n") ==
        std::vector<CopiedEvent>{{1, "message", "x", ""}});
  // An id holding NUL is ignored (W3C), the earlier one stays.
  static constexpr char kNulId[] = "id: 1\nid: 2\0x\ndata: x\n\n";
  CHECK(decode_whole(std::string_view(kNulId, sizeof kNulId - 1)) ==
        std::vector<CopiedEvent>{{1, "message", "x", "1"}});
}

TEST_CASE("sse: an event over the cap is dropped whole and counted", "[sse]") {
  const std::string big(SseDecoder::kMaxEventBytes + 1, 'x');

  SECTION("one line over the cap, in one fragment") {
    SseDecoder decoder;
    Recorder recorder;
    decoder.feed(1, "data: " + big + "\n\ndata: after\n\n", recorder);
    CHECK(decoder.oversized_events() == 1);
    CHECK(recorder.events == std::vector<CopiedEvent>{{1, "message", "after", ""}});
  }
  SECTION("one line far over the cap, carried across fragments") {
    const std::string huge(SseDecoder::kMaxEventBytes + 1000, 'x');
    SseDecoder decoder;
    Recorder recorder;
    decoder.feed(1, "data: ", recorder);
    for (std::size_t at = 0; at < huge.size(); at += 100000) {
      decoder.feed(2, std::string_view(huge).substr(at, 100000), recorder);
    }
    decoder.feed(3, "\n\ndata: after\n\n", recorder);
    CHECK(decoder.oversized_events() == 1);
    CHECK(recorder.events == std::vector<CopiedEvent>{{3, "message", "after", ""}});
  }
  SECTION("many small lines adding up to over the cap") {
    SseDecoder decoder;
    Recorder recorder;
    const std::string line = "data: " + std::string(1023, 'y') + "\n";  // 1 KiB joined
    for (std::size_t i = 0; i <= SseDecoder::kMaxEventBytes / 1024; ++i) {
      decoder.feed(1, line, recorder);
    }
    decoder.feed(2, "\ndata: after\n\n", recorder);
    CHECK(decoder.oversized_events() == 1);
    CHECK(recorder.events == std::vector<CopiedEvent>{{2, "message", "after", ""}});
  }
  SECTION("exactly at the cap is delivered") {
    const std::string at_cap(SseDecoder::kMaxEventBytes, 'z');
    SseDecoder decoder;
    Recorder recorder;
    decoder.feed(1, "data:" + at_cap + "\n\n", recorder);
    CHECK(decoder.oversized_events() == 0);
    REQUIRE(recorder.events.size() == 1);
    CHECK(recorder.events[0].data.size() == SseDecoder::kMaxEventBytes);
  }
}

TEST_CASE("sse: a gap drops the partial line and event, then resynchronises", "[sse]") {
  SseDecoder decoder;
  Recorder recorder;
  decoder.feed(1, "data: a\n\ndata: one\ndata: par", recorder);
  decoder.on_gap();
  // "tial" ends the cut line; the blank line after it has no event to dispatch ("one" was
  // dropped with the gap).
  decoder.feed(2, "tial\n\ndata: b\n\n", recorder);
  CHECK(recorder.events ==
        std::vector<CopiedEvent>{{1, "message", "a", ""}, {2, "message", "b", ""}});

  // A gap whose following bytes span fragments before the first line end.
  decoder.feed(3, "event: x\ndata: c", recorder);
  decoder.on_gap();
  decoder.feed(4, "still the cut line", recorder);
  decoder.feed(5, " and more\r", recorder);
  decoder.feed(6, "\ndata: d\r\n\r\n", recorder);
  CHECK(recorder.events.size() == 3);
  CHECK(recorder.events.back() == CopiedEvent{6, "message", "d", ""});
  CHECK(decoder.events() == 3);

  // Where the lost bytes ended is unknown, so a first line after a gap is dropped unless it
  // opens with a field name (servers write whole events, so that is a line start).
  decoder.feed(7, "data: e\n\n", recorder);
  decoder.on_gap();
  decoder.feed(8, "ta: maybe a tail\n\ndata: f\n\n", recorder);
  CHECK(recorder.events.size() == 5);
  CHECK(recorder.events.back() == CopiedEvent{8, "message", "f", ""});
  decoder.on_gap();
  decoder.feed(9, "data: g\n\n", recorder);
  CHECK(recorder.events.size() == 6);
  CHECK(recorder.events.back() == CopiedEvent{9, "message", "g", ""});
}

TEST_CASE("sse: finish counts the unterminated tail and starts afresh", "[sse]") {
  SseDecoder decoder;
  Recorder recorder;
  decoder.feed(1, "data: a\n\ndata: xy\ndata: tail", recorder);
  decoder.finish();
  // "xy" (data kept so far) + "data: tail" (the partial line).
  CHECK(decoder.discarded_tail_bytes() == 2 + 10);
  CHECK(recorder.events.size() == 1);
  // The next stream starts clean: nothing of the discarded event leaks into it.
  decoder.feed(2, "\xEF\xBB\xBF" "data: b\n\n", recorder);
  CHECK(recorder.events.back() == CopiedEvent{2, "message", "b", ""});

  decoder.reset();
  CHECK(decoder.events() == 0);
  CHECK(decoder.discarded_tail_bytes() == 0);
}

// The line-end search looks at 32 bytes a step and ends with a 16-byte step that overlaps
// bytes already searched: a line end at any offset, after a first line of any length, must
// be the one found, and one the overlap saw earlier must not count twice.
TEST_CASE("sse: the first line end is found at every offset, whatever ends it", "[sse]") {
  for (std::size_t first = 0; first <= 80; ++first) {
    for (std::size_t second = 0; second <= 40; second += 7) {
      for (std::string_view end : {"\n", "\r", "\r\n"}) {
        const std::string a(first, 'a');
        const std::string b(second, 'b');
        const std::string stream = "data: " + a + std::string(end) + "data: " + b + "\n\n";
        INFO("first line " << first << " bytes, second " << second << ", ends " << (end == "\n" ? "LF" : end == "\r" ? "CR" : "CRLF"));
        REQUIRE(decode_whole(stream) == std::vector<CopiedEvent>{{1, "message", a + "\n" + b, ""}});
      }
      // One line, no end yet: nothing is dispatched, however long the line is.
      CHECK(decode_whole("data: " + std::string(first, 'a')).empty());
    }
  }
}

}  // namespace chatcap
