#include "chatcap/reassembler.hpp"

#include <algorithm>

namespace chatcap {

std::string_view to_string(SegmentOutcome outcome) {
  switch (outcome) {
    case SegmentOutcome::delivered: return "delivered";
    case SegmentOutcome::buffered: return "buffered";
    case SegmentOutcome::retransmission: return "retransmission";
    case SegmentOutcome::no_payload: return "no_payload";
    case SegmentOutcome::after_close: return "after_close";
  }
  return "unknown";
}

SegmentOutcome Reassembler::on_segment(const TcpSegment& segment) { return classify_and_deliver(segment); }

void Reassembler::start_at(std::uint32_t seq, bool from_syn) {
  started_ = true;
  saw_syn_ = from_syn;
  base_seq_ = seq;
  next_offset_ = 0;
}

std::int64_t Reassembler::relative(std::uint32_t seq) const {
  std::uint32_t next_seq = base_seq_ + static_cast<std::uint32_t>(next_offset_);
  return static_cast<std::int32_t>(seq - next_seq);
}

SegmentOutcome Reassembler::classify_and_deliver(const TcpSegment& segment) {
  if (closed_) {
    // A reset after a FIN still matters: the sender is gone, not just done sending (a killed
    // client's kernel answers the server's next bytes with RST, and the server sends nothing).
    if (segment.has(tcp_flag::rst) && !reset_) {
      reset_ = true;
      sink_->on_stream_close(segment.ts, CloseKind::rst);
    }
    return SegmentOutcome::after_close;
  }
  std::uint32_t data_seq = segment.seq;
  if (segment.has(tcp_flag::syn)) {
    // The SYN occupies one sequence number; data (TCP Fast Open) follows it.
    data_seq = segment.seq + 1;
    if (!started_ || (!saw_syn_ && next_offset_ == 0 && pending_.empty())) start_at(data_seq, true);
  } else if (!started_) {
    start_at(segment.seq, false);  // SYN-less pickup
  }

  const std::uint64_t length = segment.payload.size() + std::uint64_t{segment.payload_missing};
  const std::int64_t rel = relative(data_seq);
  const std::uint64_t start = next_offset_ + static_cast<std::uint64_t>(std::max<std::int64_t>(rel, 0));
  const std::int64_t end_rel = rel + static_cast<std::int64_t>(length);

  if (segment.has(tcp_flag::fin) && !fin_seen_ && end_rel >= 0) {
    fin_seen_ = true;
    fin_offset_ = next_offset_ + static_cast<std::uint64_t>(end_rel);
  }

  SegmentOutcome outcome = SegmentOutcome::no_payload;
  if (length > 0) {
    if (end_rel <= 0) {
      outcome = SegmentOutcome::retransmission;
    } else {
      // Drop the part already delivered (first copy wins), keep the rest.
      std::uint64_t skip = rel < 0 ? static_cast<std::uint64_t>(-rel) : 0;
      std::string_view captured = segment.payload;
      std::uint32_t lost = segment.payload_missing;
      if (skip >= captured.size()) {
        lost -= static_cast<std::uint32_t>(skip - captured.size());
        captured = {};
      } else {
        captured.remove_prefix(skip);
      }
      if (start == next_offset_ && pending_.empty()) {
        deliver_in_order(segment.ts, captured, lost);
        outcome = SegmentOutcome::delivered;
      } else {
        std::size_t before = pending_bytes_;
        if (pending_.empty()) hole_opened_ = segment.ts;
        insert_pending(start, segment.ts, captured, lost);
        bool filled_hole = start == next_offset_;
        drain_pending();
        if (filled_hole) {
          outcome = SegmentOutcome::delivered;
        } else {
          outcome = pending_bytes_ == before ? SegmentOutcome::retransmission : SegmentOutcome::buffered;
        }
        enforce_limits(segment.ts);
      }
    }
  }

  if (segment.has(tcp_flag::rst)) {
    flush(segment.ts);
    close(segment.ts, CloseKind::rst);
  } else {
    maybe_close(segment.ts);
  }
  return outcome;
}

void Reassembler::deliver_in_order(timestamp_us ts, std::string_view bytes, std::uint32_t lost_after) {
  if (!bytes.empty()) {
    next_offset_ += bytes.size();
    sink_->on_stream_data(ts, bytes);
  }
  if (lost_after > 0) {
    next_offset_ += lost_after;
    ++gaps_;
    gap_bytes_ += lost_after;
    sink_->on_stream_gap(ts, lost_after);
  }
}

void Reassembler::insert_pending(std::uint64_t offset, timestamp_us ts, std::string_view bytes,
                                 std::uint32_t lost_after) {
  // Insert [offset, offset + bytes + lost_after) minus whatever pending chunks already cover.
  std::uint64_t end = offset + bytes.size() + lost_after;
  std::uint64_t cursor = offset;
  auto it = std::lower_bound(pending_.begin(), pending_.end(), offset,
                             [](const Chunk& c, std::uint64_t o) { return c.end() <= o; });
  while (cursor < end) {
    std::uint64_t piece_end = (it == pending_.end()) ? end : std::min(end, it->offset);
    if (piece_end > cursor) {
      Chunk chunk;
      chunk.offset = cursor;
      chunk.ts = ts;
      std::uint64_t data_end = offset + bytes.size();
      if (cursor < data_end) {
        std::uint64_t take_end = std::min(piece_end, data_end);
        chunk.bytes.assign(bytes.substr(cursor - offset, take_end - cursor));
        if (piece_end > data_end) chunk.lost_after = static_cast<std::uint32_t>(piece_end - data_end);
      } else {
        chunk.lost_after = static_cast<std::uint32_t>(piece_end - cursor);
      }
      pending_bytes_ += chunk.bytes.size();
      it = pending_.insert(it, std::move(chunk));
      ++it;
      cursor = piece_end;
    }
    if (it == pending_.end()) break;
    cursor = std::max(cursor, it->end());
    ++it;
  }
}

void Reassembler::drain_pending() {
  while (!pending_.empty() && pending_.front().offset == next_offset_) {
    Chunk& chunk = pending_.front();
    pending_bytes_ -= chunk.bytes.size();
    deliver_in_order(chunk.ts, chunk.bytes, chunk.lost_after);
    pending_.erase(pending_.begin());
  }
}

void Reassembler::skip_to(timestamp_us ts, std::uint64_t offset) {
  if (offset <= next_offset_) return;
  std::uint64_t missing = offset - next_offset_;
  next_offset_ = offset;
  ++gaps_;
  gap_bytes_ += missing;
  sink_->on_stream_gap(ts, missing);
}

void Reassembler::skip_first_hole(timestamp_us ts) {
  if (pending_.empty()) return;
  skip_to(ts, pending_.front().offset);
  drain_pending();
  hole_opened_ = ts;
}

void Reassembler::enforce_limits(timestamp_us ts) {
  while (!pending_.empty() &&
         (pending_bytes_ > limits_.max_pending_bytes || pending_.size() > limits_.max_pending_chunks)) {
    skip_first_hole(ts);
  }
}

void Reassembler::on_peer_ack(timestamp_us ts, std::uint32_t ack) {
  if (!started_ || closed_) return;
  std::int64_t rel = relative(ack);
  if (rel <= 0) return;
  std::uint64_t acked = next_offset_ + static_cast<std::uint64_t>(rel);
  // A SYN or FIN occupies a sequence number that carries no byte.
  if (fin_seen_ && acked > fin_offset_) acked = fin_offset_;
  // Everything below `acked` reached the receiver; what we hold of it is delivered, the rest
  // is a hole the capture will never fill.
  while (!pending_.empty() && pending_.front().offset < acked) skip_first_hole(ts);
  if (pending_.empty() && acked > next_offset_) skip_to(ts, acked);
  maybe_close(ts);
}

void Reassembler::on_tick(timestamp_us now) {
  if (closed_ || pending_.empty()) return;
  if (now - hole_opened_ < limits_.hole_timeout) return;
  while (!pending_.empty()) skip_first_hole(now);
  maybe_close(now);
}

void Reassembler::flush(timestamp_us ts) {
  if (closed_) return;
  while (!pending_.empty()) skip_first_hole(ts);
  if (fin_seen_ && fin_offset_ > next_offset_) skip_to(ts, fin_offset_);
  maybe_close(ts);
}

void Reassembler::maybe_close(timestamp_us ts) {
  if (!closed_ && fin_seen_ && next_offset_ >= fin_offset_ && pending_.empty()) close(ts, CloseKind::fin);
}

void Reassembler::close(timestamp_us ts, CloseKind kind) {
  if (closed_) return;
  closed_ = true;
  reset_ = kind == CloseKind::rst;
  pending_.clear();
  pending_bytes_ = 0;
  sink_->on_stream_close(ts, kind);
}

}  // namespace chatcap
