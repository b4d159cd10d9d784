// TCP reassembly for one direction of one connection. Pure: no I/O, no clock.
//
// How it works:
//  - Sequence numbers are turned into 64-bit stream offsets relative to the next expected
//    byte ((int32_t)(seq - next_seq)), so 32-bit wraparound needs no special case and old
//    data (retransmissions, the duplicate copy `-i any` shows of every loopback packet) is
//    recognised by a negative offset.
//  - A SYN fixes the start of the stream (ISN + 1). Without a SYN the first packet seen fixes
//    it: SYN-less pickup, for a daemon started while connections are open. The consumer is
//    told (midstream()) so it can resynchronise on a message boundary.
//  - In-order bytes are handed to the sink straight from the packet buffer: no copy.
//  - Bytes ahead of a hole are copied into a sorted list of pending chunks (the only copy
//    this class makes). Overlaps keep the first copy of each byte.
//  - A hole is skipped, and reported to the sink as on_stream_gap(n) — out of band, never as
//    bytes in the stream — when one of these proves it will not be filled:
//      * the peer acknowledged bytes past it (the receiver got them; the capture did not),
//      * the pending bytes or chunks exceed their limit (ReassemblerLimits),
//      * it stayed open for hole_timeout of packet time (on_tick),
//      * the stream ends: RST, end of capture, eviction (flush).
//    Bytes the snaplen cut off a packet are a gap at their place in the stream.
//  - A FIN ends the stream once every byte before it was delivered or skipped; a RST ends it
//    at once (pending bytes are delivered around their holes first). A RST after the FIN is
//    reported as a second close: the peer is gone, not only done sending.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "chatcap/packet.hpp"
#include "chatcap/types.hpp"

namespace chatcap {

enum class CloseKind : std::uint8_t { fin, rst };

// Receives one direction's bytes in order.
class StreamSink {
 public:
  virtual ~StreamSink() = default;
  virtual void on_stream_data(timestamp_us ts, std::string_view bytes) = 0;
  // `bytes` were sent but never captured; the next on_stream_data follows them.
  virtual void on_stream_gap(timestamp_us ts, std::uint64_t bytes) = 0;
  virtual void on_stream_close(timestamp_us ts, CloseKind kind) = 0;
};

// What happened to one segment: every segment gets one, and the counters come from them.
enum class SegmentOutcome : std::uint8_t {
  delivered,       // in order: passed to the sink (with any pending bytes it unblocked)
  buffered,        // ahead of a hole: kept until the hole is filled or skipped
  retransmission,  // every byte was seen before (retransmission or duplicate capture)
  no_payload,      // SYN, pure ACK, FIN without data
  after_close,     // arrived after the stream ended
};
constexpr std::size_t kSegmentOutcomeCount = 5;
std::string_view to_string(SegmentOutcome outcome);

struct ReassemblerLimits {
  // Out-of-order bytes kept per direction while waiting for a hole to fill.
  std::size_t max_pending_bytes = 4 * 1024 * 1024;
  // Out-of-order chunks kept per direction (bounds the work of a flood of tiny segments).
  std::size_t max_pending_chunks = 4096;
  // A hole still open after this much packet time is declared lost.
  timestamp_us hole_timeout = 2 * kMicrosPerSecond;
};

class Reassembler {
 public:
  explicit Reassembler(StreamSink& sink, ReassemblerLimits limits = {}) : sink_(&sink), limits_(limits) {}
  Reassembler(const Reassembler&) = delete;
  Reassembler& operator=(const Reassembler&) = delete;

  SegmentOutcome on_segment(const TcpSegment& segment);
  // The other direction acknowledged `ack`: bytes of ours below it were received, so any
  // hole below it will never be filled from this capture.
  void on_peer_ack(timestamp_us ts, std::uint32_t ack);
  // Packet time advanced: skip holes older than the timeout.
  void on_tick(timestamp_us now);
  // No more packets will come (end of capture, eviction): skip every hole, deliver all.
  void flush(timestamp_us ts);

  bool started() const { return started_; }
  bool midstream() const { return started_ && !saw_syn_; }
  bool closed() const { return closed_; }
  bool has_pending() const { return !pending_.empty(); }
  std::size_t pending_bytes() const { return pending_bytes_; }
  std::uint64_t delivered_bytes() const { return next_offset_; }
  std::uint64_t gap_bytes() const { return gap_bytes_; }
  std::uint64_t gaps() const { return gaps_; }

 private:
  // Bytes waiting behind a hole. `lost_after` is the snaplen-cut tail of the packet that
  // carried them: a gap to report right after these bytes.
  struct Chunk {
    std::uint64_t offset = 0;
    timestamp_us ts = 0;
    std::string bytes;
    std::uint32_t lost_after = 0;
    std::uint64_t end() const { return offset + bytes.size() + lost_after; }
  };

  SegmentOutcome classify_and_deliver(const TcpSegment& segment);
  void start_at(std::uint32_t seq, bool from_syn);
  std::int64_t relative(std::uint32_t seq) const;
  void deliver_in_order(timestamp_us ts, std::string_view bytes, std::uint32_t lost_after);
  void insert_pending(std::uint64_t offset, timestamp_us ts, std::string_view bytes, std::uint32_t lost_after);
  void drain_pending();
  void skip_first_hole(timestamp_us ts);
  void skip_to(timestamp_us ts, std::uint64_t offset);
  void enforce_limits(timestamp_us ts);
  void maybe_close(timestamp_us ts);
  void close(timestamp_us ts, CloseKind kind);

  // First, within 64 bytes, all that an in-order segment (and an ACK from
  // the peer) reads or writes: with hundreds of connections each line it spans is a miss
  // per packet.
  StreamSink* sink_;
  std::uint64_t next_offset_ = 0;  // next byte the sink expects
  std::uint32_t base_seq_ = 0;     // sequence number of stream offset 0
  bool started_ = false;
  bool saw_syn_ = false;
  bool closed_ = false;
  bool reset_ = false;             // a RST was seen (after a FIN, it is reported too)
  bool fin_seen_ = false;
  std::vector<Chunk> pending_;     // sorted by offset, non-overlapping, all > next_offset_
  // Then what holes, FINs and limits need.
  std::uint64_t fin_offset_ = 0;
  ReassemblerLimits limits_;
  std::size_t pending_bytes_ = 0;
  timestamp_us hole_opened_ = 0;   // packet time the current hole was first noticed
  std::uint64_t gap_bytes_ = 0;
  std::uint64_t gaps_ = 0;
};

}  // namespace chatcap
