// The reassembler on hand-made segments: order, retransmission, overlap, wraparound, gaps.
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "chatcap/reassembler.hpp"

using namespace chatcap;

namespace {

// Records what the reassembler hands on, with gaps and closes as readable markers.
struct Collector : StreamSink {
  std::string bytes;
  std::vector<std::string> events;  // "data:N", "gap:N", "close:fin|rst"
  std::uint64_t gap_total = 0;

  void on_stream_data(timestamp_us, std::string_view data) override {
    bytes.append(data);
    events.push_back("data:" + std::to_string(data.size()));
  }
  void on_stream_gap(timestamp_us, std::uint64_t n) override {
    gap_total += n;
    events.push_back("gap:" + std::to_string(n));
  }
  void on_stream_close(timestamp_us, CloseKind kind) override {
    events.push_back(kind == CloseKind::fin ? "close:fin" : "close:rst");
  }
  bool closed() const { return !events.empty() && events.back().rfind("close:", 0) == 0; }
};

TcpSegment segment(std::uint32_t seq, std::string_view payload, std::uint8_t flags = tcp_flag::ack,
                   timestamp_us ts = 1000) {
  TcpSegment s;
  s.ts = ts;
  s.seq = seq;
  s.flags = flags;
  s.payload = payload;
  return s;
}

const std::string kText = "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789";

}  // namespace

TEST_CASE("in-order segments pass through and FIN closes after the last byte", "[reassembler]") {
  Collector out;
  Reassembler r(out);
  CHECK(r.on_segment(segment(999, "", tcp_flag::syn)) == SegmentOutcome::no_payload);
  CHECK(r.on_segment(segment(1000, std::string_view(kText).substr(0, 20))) == SegmentOutcome::delivered);
  CHECK(r.on_segment(segment(1020, std::string_view(kText).substr(20))) == SegmentOutcome::delivered);
  CHECK(out.bytes == kText);
  CHECK_FALSE(r.midstream());
  r.on_segment(segment(1000 + static_cast<std::uint32_t>(kText.size()), "", tcp_flag::fin | tcp_flag::ack));
  CHECK(out.closed());
  CHECK(out.gap_total == 0);
}

TEST_CASE("out-of-order, retransmitted and duplicated segments give the bytes once, in order", "[reassembler]") {
  // Cut the text into 7-byte segments, then deliver them shuffled with every one twice.
  std::vector<TcpSegment> segments;
  for (std::size_t at = 0; at < kText.size(); at += 7) {
    segments.push_back(segment(5000 + static_cast<std::uint32_t>(at), std::string_view(kText).substr(at, 7)));
  }
  for (unsigned seed = 1; seed <= 50; ++seed) {
    std::vector<TcpSegment> order = segments;
    order.insert(order.end(), segments.begin(), segments.end());
    std::mt19937 rng(seed);
    std::shuffle(order.begin(), order.end(), rng);
    Collector out;
    Reassembler r(out);
    r.on_segment(segment(4999, "", tcp_flag::syn));
    std::size_t retransmissions = 0;
    for (const TcpSegment& s : order) retransmissions += r.on_segment(s) == SegmentOutcome::retransmission;
    INFO("seed " << seed);
    CHECK(out.bytes == kText);
    CHECK(out.gap_total == 0);
    CHECK(retransmissions >= segments.size());
    CHECK_FALSE(r.has_pending());
  }
}

TEST_CASE("overlapping segments keep the first copy of each byte", "[reassembler]") {
  Collector out;
  Reassembler r(out);
  r.on_segment(segment(99, "", tcp_flag::syn));
  r.on_segment(segment(105, "FGHIJ"));     // ahead of a hole [100,105)
  r.on_segment(segment(103, "xxxxxxxL"));  // 103..110: overlaps the hole's tail and FGHIJ
  r.on_segment(segment(100, "ABCDE"));     // fills the start; its 'DE' overlap the 'xx' copy
  CHECK(out.bytes == "ABCxxFGHIJL");
  CHECK(out.gap_total == 0);
}

TEST_CASE("sequence numbers wrap around 2^32", "[reassembler]") {
  Collector out;
  Reassembler r(out);
  std::uint32_t isn = 0xFFFFFFF0u;
  r.on_segment(segment(isn, "", tcp_flag::syn));
  std::uint32_t seq = isn + 1;
  std::string sent;
  std::vector<TcpSegment> later;
  for (int i = 0; i < 8; ++i) {
    static const std::string chunk = "0123456";
    later.push_back(segment(seq, chunk));
    seq += static_cast<std::uint32_t>(chunk.size());
    sent += chunk;
  }
  std::swap(later[2], later[3]);  // one reordering right across the wrap
  for (const TcpSegment& s : later) r.on_segment(s);
  CHECK(out.bytes == sent);
  r.on_segment(segment(seq, "", tcp_flag::fin | tcp_flag::ack));
  CHECK(out.closed());
}

TEST_CASE("a connection picked up without its SYN starts at the first segment seen", "[reassembler]") {
  Collector out;
  Reassembler r(out);
  r.on_segment(segment(777777, "GET / HTTP/1.1\r\n\r\n"));
  CHECK(r.midstream());
  CHECK(out.bytes == "GET / HTTP/1.1\r\n\r\n");
}

TEST_CASE("a hole the peer acknowledged is declared lost at once", "[reassembler]") {
  Collector out;
  Reassembler r(out);
  r.on_segment(segment(0, "", tcp_flag::syn));
  r.on_segment(segment(1, "AAAA"));
  r.on_segment(segment(9, "CCCC"));  // [5,9) never arrives
  CHECK(out.bytes == "AAAA");
  r.on_peer_ack(2000, 13);  // the receiver had everything up to 13
  CHECK(out.bytes == "AAAACCCC");
  CHECK(out.events == std::vector<std::string>{"data:4", "gap:4", "data:4"});
}

TEST_CASE("a lost tail acknowledged by the peer becomes a gap before anything later", "[reassembler]") {
  Collector out;
  Reassembler r(out);
  r.on_segment(segment(0, "", tcp_flag::syn));
  r.on_segment(segment(1, "AAAA"));
  r.on_peer_ack(2000, 1 + 4 + 6);  // six more bytes were sent and received, none captured
  CHECK(out.gap_total == 6);
  r.on_segment(segment(11, "BB"));
  CHECK(out.bytes == "AAAABB");
}

TEST_CASE("a hole is skipped after the timeout, or when pending bytes exceed the bound", "[reassembler]") {
  SECTION("timeout") {
    Collector out;
    ReassemblerLimits limits;
    limits.hole_timeout = 500'000;
    Reassembler r(out, limits);
    r.on_segment(segment(0, "", tcp_flag::syn, 1'000'000));
    r.on_segment(segment(11, "later", tcp_flag::ack, 1'000'000));
    r.on_tick(1'400'000);
    CHECK(out.bytes.empty());
    r.on_tick(1'600'000);
    CHECK(out.bytes == "later");
    CHECK(out.gap_total == 10);
  }
  SECTION("bound") {
    Collector out;
    ReassemblerLimits limits;
    limits.max_pending_bytes = 16;
    Reassembler r(out, limits);
    r.on_segment(segment(0, "", tcp_flag::syn));
    r.on_segment(segment(101, "0123456789"));  // hole [1,101)
    CHECK(r.pending_bytes() == 10);
    r.on_segment(segment(111, "0123456789"));  // 20 pending > 16: the hole is given up
    CHECK(r.pending_bytes() == 0);
    CHECK(out.gap_total == 100);
    CHECK(out.bytes == "01234567890123456789");
  }
}

TEST_CASE("bytes cut by the snaplen are a gap at their place", "[reassembler]") {
  Collector out;
  Reassembler r(out);
  r.on_segment(segment(0, "", tcp_flag::syn));
  TcpSegment cut = segment(1, "ABC");
  cut.payload_missing = 7;
  r.on_segment(cut);
  r.on_segment(segment(11, "XYZ"));
  CHECK(out.events == std::vector<std::string>{"data:3", "gap:7", "data:3"});
}

TEST_CASE("RST delivers what is pending around holes, then closes", "[reassembler]") {
  Collector out;
  Reassembler r(out);
  r.on_segment(segment(0, "", tcp_flag::syn));
  r.on_segment(segment(1, "AB"));
  r.on_segment(segment(6, "FG"));
  r.on_segment(segment(8, "", tcp_flag::rst));
  CHECK(out.events == std::vector<std::string>{"data:2", "gap:3", "data:2", "close:rst"});
  CHECK(r.on_segment(segment(8, "late")) == SegmentOutcome::after_close);
}

TEST_CASE("FIN waits for a hole before it, flush gives the hole up", "[reassembler]") {
  Collector out;
  Reassembler r(out);
  r.on_segment(segment(0, "", tcp_flag::syn));
  r.on_segment(segment(5, "EF", tcp_flag::fin | tcp_flag::ack));  // [1,5) missing
  CHECK_FALSE(out.closed());
  r.flush(5000);
  CHECK(out.events == std::vector<std::string>{"gap:4", "data:2", "close:fin"});
}

TEST_CASE("many tiny out-of-order segments are bounded by the chunk limit", "[reassembler]") {
  Collector out;
  ReassemblerLimits limits;
  limits.max_pending_chunks = 64;
  Reassembler r(out, limits);
  r.on_segment(segment(0, "", tcp_flag::syn));
  // Every other byte, never the first: 1000 one-byte chunks behind holes.
  for (std::uint32_t i = 0; i < 1000; ++i) r.on_segment(segment(3 + 2 * i, "x"));
  CHECK(r.has_pending());
  CHECK(r.pending_bytes() <= 64);
  r.flush(9999);
  CHECK(out.bytes == std::string(1000, 'x'));
}

TEST_CASE("a RST after the FIN is reported too: the sender is gone, not just done", "[reassembler]") {
  Collector out;
  Reassembler r(out);
  r.on_segment(segment(0, "", tcp_flag::syn));
  r.on_segment(segment(1, "AB", tcp_flag::fin | tcp_flag::ack));
  r.on_segment(segment(4, "", tcp_flag::rst));
  r.on_segment(segment(4, "", tcp_flag::rst));  // only once
  CHECK(out.events == std::vector<std::string>{"data:2", "close:fin", "close:rst"});
}
