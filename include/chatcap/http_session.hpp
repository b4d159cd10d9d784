// HTTP/1.x over one TCP connection: two llhttp parsers (requests on client→server bytes,
// responses on server→client bytes) and the FIFO of exchanges that pairs them.
//
// Contract:
//  - Fed in-order bytes, gaps and closes for each direction (it is the StreamSink of both
//    reassemblers, through client_stream() and server_stream()).
//  - An Exchange is created when a request starts and queued; responses pair with queued
//    requests in order (keep-alive, pipelining). 1xx responses are noted on the exchange
//    (`interim_statuses`) without consuming it. HEAD responses have no body; a 2xx to CONNECT
//    and a 101 turn the connection into a tunnel (not HTTP; ignored until it closes).
//  - on_request_complete() is called the moment a request is complete (so the recorder can
//    write it before the server can die on it); on_exchange_end() once per exchange, with its
//    final state. A response without a request (SYN-less pickup) still gets an exchange.
//  - A gap inside a body whose remaining length is known (Content-Length, or inside one
//    chunk) keeps the parser in step: the lost bytes are counted, not invented. Any other gap,
//    and any parse error, ends the message in progress with an honest state and the parser
//    resynchronises at the next request line (or status line): one bad message never stops
//    the connection. A connection picked up without its SYN starts in resync mode.
//  - Parses at least as leniently as the servers it watches (uvicorn's h11): bare LF and
//    mixed line ends in heads, header values llhttp alone would refuse, Transfer-Encoding
//    beside Content-Length (chunked wins), and Content-Length as h11 takes it — a list of
//    equal values ("121, 121"), repeated equal headers, whitespace around the value; such a
//    value is handed to llhttp as one clean number (normalise_content_length). A request a
//    server would act on must never slip past the recorder as a parse error.
//  - Bodies are kept up to HttpLimits caps (beyond: counted, flagged body_truncated), for
//    the exchanges that get a record (RecordScope): those on a --endpoint path (the ring),
//    and POSTs on any other path (watched-only: the request, and the response body only when
//    it is an error). Other exchanges are parsed to stay in step, and keep nothing.
#pragma once

#include <cstdint>
#include <vector>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <llhttp.h>

#include "chatcap/content.hpp"
#include "chatcap/exchange.hpp"
#include "chatcap/reassembler.hpp"

namespace chatcap {

// Which exchanges get records, decided from the method and target once both are known.
struct RecordScope {
  // Request-path prefixes of the ring (--endpoint); "/" is every path. Queries are ignored.
  std::vector<std::string> endpoints{"/v1/chat/completions"};
  // POSTs on other paths are kept as watched-only requests (--keep-watched > 0).
  bool watch_other_posts = true;

  bool every_path() const;
  // Sets exchange.recorded and exchange.watched_only.
  void apply(std::string_view method, std::string_view target, Exchange& exchange) const;
};

struct HttpLimits {
  RecordScope scope;
  std::size_t max_body_bytes = 4 * 1024 * 1024;    // per body kept (--max-body)
  // Raw bytes kept of a text/event-stream response (--stream-body). Its events are assembled
  // into the answer whatever this says; the raw stream is ~10× the answer's text.
  std::size_t max_stream_body_bytes = 0;
  std::size_t max_header_bytes = 256 * 1024;       // request/status line + headers
  std::size_t max_queued_requests = 256;           // pipelined requests awaiting responses
  std::size_t max_resync_scan_bytes = 64 * 1024;   // carry kept while looking for a message start
};

class ExchangeSink {
 public:
  virtual ~ExchangeSink() = default;
  // The request is complete (or, if it never will be, as complete as it gets).
  virtual void on_request_complete(Exchange& exchange) = 0;
  // The exchange ended; `exchange.state` says how. Called exactly once per exchange.
  virtual void on_exchange_end(Exchange& exchange) = 0;
};

// Per-process exchange numbering; ids are derived from it and the connection.
struct ExchangeNumbering {
  std::uint64_t next_seq = 1;
  std::uint64_t id_salt = 0;  // differs per process run so ids stay unique across restarts
};

class HttpSession {
 public:
  HttpSession(Endpoint client, Endpoint server, ExchangeSink& sink, ExchangeNumbering& numbering,
              const HttpLimits& limits);
  ~HttpSession();
  HttpSession(const HttpSession&) = delete;
  HttpSession& operator=(const HttpSession&) = delete;

  StreamSink& client_stream() { return client_side_; }
  StreamSink& server_stream() { return server_side_; }

  // The connection was picked up without its SYN: resynchronise before parsing.
  void start_midstream(bool client, bool server);
  // Ends every open exchange with `state` (end of capture, idle eviction, daemon stopped).
  void close_all(timestamp_us ts, ExchangeState state, std::string_view why);
  // Flags every open exchange (e.g. capture drops happened while it was open).
  void flag_open(Anomaly anomaly);

  std::size_t open_exchanges() const { return queue_.size(); }
  // Chunks taken whole without the parser (see take_whole_chunks): tests check the fast path is taken.
  std::uint64_t chunks_taken_whole() const { return chunks_taken_whole_; }
  bool finished() const { return client_closed_ && server_closed_ && queue_.empty(); }

  // llhttp callbacks (public so the C callback table can reach them).
  int on_message_begin(llhttp_t* parser);
  int on_method(const char* at, std::size_t length);
  int on_url(const char* at, std::size_t length);
  int on_url_complete();
  int on_status(const char* at, std::size_t length);
  int on_header_field(llhttp_t* parser, const char* at, std::size_t length);
  int on_header_value(llhttp_t* parser, const char* at, std::size_t length);
  int on_header_field_complete(llhttp_t* parser);
  int on_headers_complete(llhttp_t* parser);
  int on_body(llhttp_t* parser, const char* at, std::size_t length);
  int on_chunk_header(llhttp_t* parser);
  int on_chunk_complete(llhttp_t* parser);
  int on_message_complete(llhttp_t* parser);

 private:
  // One direction: its parser and what we know of where it stands. The parser and the
  // flags and pointer every segment reads come first, within 128 bytes; the buffers only
  // resynchronisation and upgrades use, after them.
  struct Direction {
    llhttp_t parser{};
    bool is_request = true;
    bool resyncing = false;       // scanning for the next message start
    bool resync_at_boundary = false;  // the next byte may start a message (after a gap/pickup)
    bool in_message = false;      // between on_message_begin and on_message_complete
    bool headers_done = false;    // on_headers_complete seen for the current message
    bool in_known_length_body = false;  // parser.content_length is the bytes left in body/chunk
    bool in_eof_body = false;     // body delimited by the close: any gap can be stepped over
    bool feeding_filler = false;  // bytes being fed stand for a capture gap
    bool tunnel = false;          // CONNECT/Upgrade accepted: not HTTP any more
    bool awaiting_upgrade_verdict = false;  // request asked to upgrade; hold bytes until the answer
    bool header_field_open = false;     // last header callback was a field (name)
    bool chunk_complete_last = false;   // of the chunk callbacks, on_chunk_complete came last
    bool at_chunk_boundary = false;     // the parser stopped right after a whole chunk
    bool in_content_length = false;     // paused after a Content-Length name: its value is read here
    std::size_t header_bytes = 0;
    Exchange* current = nullptr;  // exchange this direction's message belongs to
    std::string resync_carry;     // a partial line that may be a message start
    std::string scan_buffer;      // carry + new bytes, while scanning
    std::string held;             // client bytes held while awaiting that verdict
    std::string content_length_value;  // the value's bytes so far (in_content_length)
    std::optional<std::uint64_t> content_length;  // the message's Content-Length, once one was read
  };

  class Side : public StreamSink {
   public:
    Side(HttpSession& session, bool client) : session_(session), client_(client) {}
    void on_stream_data(timestamp_us ts, std::string_view bytes) override;
    void on_stream_gap(timestamp_us ts, std::uint64_t bytes) override;
    void on_stream_close(timestamp_us ts, CloseKind kind) override;

   private:
    HttpSession& session_;
    bool client_;
  };

  Direction& direction_of(llhttp_t* parser) { return parser == &request_.parser ? request_ : response_; }
  void data(Direction& d, timestamp_us ts, std::string_view bytes);
  // Runs llhttp; returns the bytes left to scan after a parse error (empty otherwise).
  std::string_view execute(Direction& d, std::string_view bytes);
  // At a chunk boundary, whole chunks ("HEX\r\n" data "\r\n") taken without the parser;
  // returns the bytes after them.
  std::string_view take_whole_chunks(Direction& d, std::string_view bytes);
  void take_body(Direction& d, std::string_view bytes);
  // After a pause at a Content-Length name: its value read up to the line end and handed to
  // llhttp as one number when h11 would take it; returns the bytes after the line (all of
  // `bytes` consumed and empty returned while the line is not complete yet).
  std::string_view normalise_content_length(Direction& d, std::string_view bytes);
  void handle_parse_error(Direction& d, llhttp_errno_t error, std::string_view bytes, std::size_t error_at);
  void fill_request_line_from(Exchange& ex, std::string_view line);
  void handle_upgrade(Direction& d, std::string_view rest);
  void gap(Direction& d, timestamp_us ts, std::uint64_t bytes);
  void feed_filler(Direction& d, std::uint64_t bytes);
  void closed(Direction& d, timestamp_us ts, CloseKind kind);
  CloseReason close_reason_for(const Direction& d, CloseKind kind) const;
  void abort_open(timestamp_us ts);
  void enter_resync(Direction& d);
  // Finds a message start in carry+bytes; returns the bytes from it on (empty: keep looking).
  std::string_view scan_for_message_start(Direction& d, std::string_view bytes);
  void reset_parser(Direction& d);
  bool within_header_limit(Direction& d, std::size_t length);
  void release_held_upgrade_bytes(const Exchange& ex);
  void drain_pending_request_bytes();
  void end_stream_answer(Exchange& ex);
  ContentLayer& content();

  Exchange& new_exchange(timestamp_us ts);
  void pop_front();
  Exchange* response_target();
  void request_done(Exchange& ex);
  void response_done(Exchange& ex);
  void finish(Exchange& ex, ExchangeState state);
  void finish_front_if_done();
  void record_request_now(Exchange& ex);
  void apply_scope(Exchange& ex);
  std::size_t request_body_cap(const Exchange& ex) const { return ex.kept() ? limits_.max_body_bytes : 0; }
  std::size_t response_body_cap(const Exchange& ex) const {
    // A watched-only exchange is there for its request; of its answer only an error says
    // something (a 500 naming the dead engine is evidence of a death).
    if (!ex.recorded && !(ex.watched_only && ex.response.status >= 400)) return 0;
    return ex.response.event_stream ? limits_.max_stream_body_bytes : limits_.max_body_bytes;
  }

  // What every segment reads or writes, together at the start (a connection's state is
  // revisited once per packet among hundreds of others': each line it spans is a miss).
  const HttpLimits& limits_;
  Side client_side_{*this, true};
  Side server_side_{*this, false};
  timestamp_us now_ = 0;         // timestamp of the bytes being parsed
  // What reads response bodies in their dialect (content.hpp); made on the first body to
  // read, so connections that never answer anything worth reading do not carry it.
  std::unique_ptr<ContentLayer> content_;
  Exchange* stream_owner_ = nullptr;  // the exchange whose event stream content_ is reading
  bool client_closed_ = false;
  bool server_closed_ = false;
  std::string pending_request_bytes_;  // held upgrade bytes released by a refusal, fed after the response parser returns
  std::uint64_t chunks_taken_whole_ = 0;
  Direction request_;
  Direction response_;
  Endpoint client_;
  Endpoint server_;
  ExchangeSink& sink_;
  ExchangeNumbering& numbering_;
  // Exchanges awaiting their response (or their end), oldest first.
  // (A vector: it rarely holds more than one or two, and an empty std::deque already
  // allocates ~600 bytes — per connection, with 10,000 idle connections.)
  std::vector<std::unique_ptr<Exchange>> queue_;
  CloseKind client_close_kind_ = CloseKind::fin;
  std::uint64_t exchanges_started_ = 0;
};

}  // namespace chatcap
