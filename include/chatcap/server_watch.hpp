// Server-death detection: which in-flight request did the server die on?
//
// A stage between the HTTP sessions and the recorder (ExchangeSink in, ExchangeSink out),
// also told about handshakes by the flow table (ConnectionObserver). It recognises the two
// ways vLLM dies from what the wire shows:
//
//   process_exit  the server process is gone: responses cut by the server's FIN/RST, on
//                 several connections at once, its idle connections closed at the same
//                 moment, then SYNs refused (RST) or unanswered.
//   engine_dead   the engine died but the HTTP front end lives on: streams end with an SSE
//                 error event and later requests get a 500 whose body names the dead engine
//                 (EngineDeadError, "EngineCore encountered an issue").
//
// The first piece of evidence opens an incident for that server; evidence is collected for
// `decision_window` of packet time, during which the exchanges that end on that server are
// held back (so their records can carry the `server_down` anomaly), then the incident is
// decided. A confirmed death gives one server_down record: when, the evidence, and the
// suspects — the requests in flight at that moment, on any path (a killer can come through
// any endpoint; every request with a record, in the ring or watched-only, is one), and only
// those complete before the first evidence: a request that arrived after it cannot have
// caused it. Likeliest first: a request carrying a known engine killer (risks.hpp), then
// those the server read (a dying process's kernel resets connections holding requests it
// never read), then those that got no token (a killer typically gets none), then the most
// recent. A retry
// of a request (the same target and body again, as SDKs resend on errors and timeouts)
// ranks right after the request it repeats, never above it. After a death, exchanges that
// fail because the server is still dead are flagged, never suspects; a successful response
// clears the state.
//
// No false alarms by construction: a client that disconnects is not a server cut (the
// session attributes the close to the client), idle keep-alive connections closed on the
// server's timer carry no exchange, and one cut stream with nothing else is not a death.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "chatcap/exchange.hpp"
#include "chatcap/flow_table.hpp"
#include "chatcap/http_session.hpp"

namespace chatcap {

struct Suspect {
  std::string id;
  std::uint64_t seq = 0;
  std::string client;
  std::string target;
  timestamp_us request_end = 0;
  std::uint64_t token_events = 0;  // token-bearing events received before the death
  bool still_in_flight = false;    // had not ended when the death was decided
  bool watched_only = false;       // its records are in the watched log, not the ring
  std::uint32_t risks = 0;         // risk_table() bits its request matched
  bool unread_by_server = false;   // cut by the server's RST before any response byte
  std::size_t body_hash = 0;       // with target and body size: what a retry repeats
  std::uint64_t body_bytes = 0;
  std::string retry_of;            // id of the earlier identical request it repeats, if any
  std::string retry_header;        // its x-stainless-retry-count, when sent
  std::string why;                 // what ranked it, for people
  // The exchange itself, for the ServerDownSink to copy what it needs; valid only during
  // on_server_down (nullptr when the watch no longer holds it).
  const Exchange* exchange = nullptr;
};

struct ServerDown {
  std::string kind;  // "process_exit" or "engine_dead"
  timestamp_us ts = 0;  // the moment of death: the first evidence
  Endpoint server;
  std::vector<std::string> evidence;
  std::vector<Suspect> suspects;  // likeliest first
};

class ServerDownSink {
 public:
  virtual ~ServerDownSink() = default;
  virtual void on_server_down(const ServerDown& down) = 0;
};

struct ServerWatchConfig {
  timestamp_us decision_window = 2 * kMicrosPerSecond;
  std::size_t max_held_exchanges = 10'000;  // past this, held exchanges are released early
};

class ServerWatch : public ExchangeSink, public ConnectionObserver {
 public:
  ServerWatch(ExchangeSink& next, ServerDownSink& downs, ServerWatchConfig config = {});
  ~ServerWatch() override;

  // ExchangeSink (from the HTTP sessions)
  void on_request_complete(Exchange& exchange) override;
  void on_exchange_end(Exchange& exchange) override;
  // ConnectionObserver (from the flow table)
  void on_connection_refused(timestamp_us ts, const Endpoint& client, const Endpoint& server) override;
  void on_connection_accepted(timestamp_us ts, const Endpoint& client, const Endpoint& server) override;
  void on_syn_unanswered(timestamp_us ts, const Endpoint& client, const Endpoint& server) override;
  void on_server_closed(timestamp_us ts, const Endpoint& client, const Endpoint& server, bool reset) override;

  // Packet time moved on: decide incidents whose window has passed.
  void tick(timestamp_us now);
  // End of capture: decide every open incident with the evidence there is.
  void finish(timestamp_us now);

  std::uint64_t deaths() const { return deaths_; }

 private:
  struct InFlight {
    timestamp_us request_end = 0;
    bool kept = true;  // has a record: can be named as a suspect
  };
  struct Incident;
  struct ServerState;

  ServerState& state_of(const Endpoint& server);
  Incident& open_incident(ServerState& s, const Endpoint& server, timestamp_us ts, const char* kind);
  void decide(ServerState& s, timestamp_us now);
  bool confirmed(const Incident& incident) const;
  ServerDown build_record(const ServerState& s, const Incident& incident) const;
  void flag_held(ServerState& s);
  void release_held(ServerState& s);
  void forward(Exchange& exchange);
  static bool names_dead_engine(std::string_view text);
  bool is_server_cut(const Exchange& ex) const;

  ExchangeSink& next_;
  ServerDownSink& downs_;
  ServerWatchConfig config_;
  std::map<std::string, std::unique_ptr<ServerState>> servers_;  // by "addr:port"; never erased
  ServerState* last_state_ = nullptr;                             // the last state_of()'s answer
  std::uint64_t deaths_ = 0;
};

}  // namespace chatcap
