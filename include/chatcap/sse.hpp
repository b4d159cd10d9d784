// Server-Sent-Events decoder (W3C "event stream" interpretation rules).
//
// Fed the body of a `text/event-stream` response in fragments split anywhere (mid-line,
// mid-CRLF, mid-UTF-8), it emits one SseEvent per dispatched event. Lines end in "\n",
// "\r\n" or a lone "\r"; a leading BOM is dropped; lines starting with ':' are comments;
// `data:` lines of one event are joined with "\n"; an event with no data is not dispatched
// (the W3C rule), `event:` and `id:` are carried on the event, `retry:` is ignored. Each
// event carries the timestamp of the packet whose bytes completed it.
//
// Memory: one carry buffer for the current line and one for the current event's data, both
// reused across events and capped by kMaxEventBytes; an event over the cap is dropped whole
// and counted (oversized_events), never delivered cut.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "chatcap/types.hpp"

namespace chatcap {

struct SseEvent {
  timestamp_us ts = 0;        // packet that completed the event
  std::string_view type;      // "message" when no `event:` field was given
  std::string_view data;      // data lines joined by '\n' (no trailing '\n')
  std::string_view id;        // last `id:` seen in this event (empty if none)
};

class SseHandler {
 public:
  virtual ~SseHandler() = default;
  virtual void on_sse_event(const SseEvent& event) = 0;
};

class alignas(64) SseDecoder {
 public:
  static constexpr std::size_t kMaxEventBytes = 4 * 1024 * 1024;

  // Decodes `bytes` (any fragment of the stream), calling handler for each complete event.
  void feed(timestamp_us ts, std::string_view bytes, SseHandler& handler);
  // The stream ended. Per W3C an event not terminated by a blank line is discarded; its
  // size is counted in discarded_tail_bytes so the record can say so.
  void finish();
  // Bytes were lost (capture gap): drop the partial line and event, resynchronise at the
  // next line boundary.
  void on_gap();
  void reset();

  std::uint64_t events() const { return events_; }
  std::uint64_t comments() const { return comments_; }
  std::uint64_t oversized_events() const { return oversized_events_; }
  std::uint64_t discarded_tail_bytes() const { return discarded_tail_bytes_; }

 private:
  std::string_view drop_bom(std::string_view bytes);
  bool at_event_start() const;
  bool take_whole_data_event(timestamp_us ts, std::string_view& bytes, SseHandler& handler);
  void carry_partial_line(std::string_view piece);
  void complete_line(timestamp_us ts, std::string_view piece, SseHandler& handler);
  void process_line(std::string_view line);
  void append_data(std::string_view value);
  void dispatch(timestamp_us ts, SseHandler& handler);
  void start_next_event();

  // First, in one cache line, what a whole event's fast path reads (a stream's decoder is
  // revisited once per event, among hundreds of other streams').
  bool have_data_ = false;
  bool oversized_ = false;  // current event exceeded kMaxEventBytes: drop at dispatch
  bool after_cr_ = false;   // last fragment ended in '\r': a leading '\n' is part of CRLF
  bool bom_checked_ = false;
  bool skipping_to_line_end_ = false;  // after a gap
  bool just_after_gap_ = false;        // the next feed() is the first after a gap
  bool has_type_or_id_ = false;        // type_ or id_ is not empty
  std::uint64_t events_ = 0;
  std::string line_;        // carry for a line split across fragments
  std::string data_;        // current event's data
  std::string type_;        // current event's `event:` value
  std::string id_;          // last event id
  std::uint64_t comments_ = 0;
  std::uint64_t oversized_events_ = 0;
  std::uint64_t discarded_tail_bytes_ = 0;
};

}  // namespace chatcap
