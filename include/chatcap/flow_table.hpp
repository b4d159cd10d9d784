// The flow table: TCP 4-tuple → Connection (two reassemblers and one HTTP session).
//
// Usage:
//   FlowTable flows(exchange_sink, config);               // config.http.scope: what gets records
//   for each decoded segment: flows.on_segment(segment);   // also runs timers off packet time
//   at the end:               flows.finish(ts, ExchangeState::capture_stopped, "capture ended");
//
// Roles: the sender of a SYN is the client, the sender of a SYN-ACK the server. A connection
// picked up without its handshake (SYN-less pickup: the daemon started while connections
// were open — always attached, never ignored) takes the endpoint whose port is a configured
// server port as the server, else the lower port.
//
// Bounds, all named in FlowTableConfig: connections idle (no packet at all — a reasoning
// model may think for minutes, which is not idleness of the exchange but is of the wire) are
// evicted after idle_timeout, or after idle_timeout_no_exchange when nothing is in flight;
// closed connections linger briefly to absorb late duplicates; past max_connections the least
// recently seen connection is evicted. Every eviction ends its open exchanges as `timeout`.
// Timers run on packet time: tick(now) is called for every packet and may be called from a
// wall clock when the wire is quiet.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "chatcap/http_session.hpp"
#include "chatcap/packet.hpp"
#include "chatcap/reassembler.hpp"

namespace chatcap {

struct FlowTableConfig {
  std::vector<std::uint16_t> server_ports;  // empty = any port
  timestamp_us idle_timeout = 3600 * kMicrosPerSecond;             // with an exchange in flight
  timestamp_us idle_timeout_no_exchange = 300 * kMicrosPerSecond;  // nothing in flight
  timestamp_us closed_linger = 2 * kMicrosPerSecond;
  std::size_t max_connections = 65536;
  ReassemblerLimits reassembly;
  HttpLimits http;
};

// What the flow table saw of connections as a whole (for server-death detection).
class ConnectionObserver {
 public:
  virtual ~ConnectionObserver() = default;
  // A server answered a SYN with RST: nothing listens on that port.
  virtual void on_connection_refused(timestamp_us ts, const Endpoint& client, const Endpoint& server) = 0;
  // A server completed a handshake (SYN-ACK seen): something listens.
  virtual void on_connection_accepted(timestamp_us ts, const Endpoint& client, const Endpoint& server) = 0;
  // A client sent its SYN again with no answer: nothing answers on that port.
  virtual void on_syn_unanswered(timestamp_us ts, const Endpoint& client, const Endpoint& server) = 0;
  // The server closed (FIN) or reset an established connection.
  virtual void on_server_closed(timestamp_us ts, const Endpoint& client, const Endpoint& server, bool reset) = 0;
};

class Connection {
 public:
  Connection(Endpoint client, Endpoint server, ExchangeSink& sink, ExchangeNumbering& numbering,
             const FlowTableConfig& config);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Returns what became of the segment in its direction's reassembler.
  SegmentOutcome on_segment(const TcpSegment& segment, bool from_client);
  void tick(timestamp_us now);
  // End of capture / eviction: deliver what is buffered, then end open exchanges with `state`.
  void finish(timestamp_us ts, ExchangeState state, std::string_view why);

  bool closed() const;
  const Endpoint& client() const { return client_; }
  const Endpoint& server() const { return server_; }
  HttpSession& http() { return http_; }
  const Reassembler& to_server() const { return to_server_; }
  const Reassembler& to_client() const { return to_client_; }

  timestamp_us closed_at = 0;  // when closed() first held (for the linger timer)
  timestamp_us last_seen = 0;  // packet time of the last segment (here: in the line the lookup reads)
  bool saw_syn = false;        // client SYN seen (not yet answered)
  bool saw_syn_ack = false;
  bool syn_unanswered_reported = false;
  bool server_close_reported = false;
  bool client_closed_first = false;  // the client sent FIN/RST before the server did

 private:
  Endpoint client_;
  Endpoint server_;
  HttpSession http_;          // before the reassemblers: they feed it
  Reassembler to_server_;
  Reassembler to_client_;
};

class FlowTable {
 public:
  FlowTable(ExchangeSink& sink, FlowTableConfig config, ConnectionObserver* observer = nullptr);
  ~FlowTable();

  void on_segment(const TcpSegment& segment);
  // Runs timers (hole timeouts, idle eviction, linger) at most once per second of packet time.
  void tick(timestamp_us now);
  void finish(timestamp_us ts, ExchangeState state, std::string_view why);
  // Flags every open exchange (capture drops happened while they were open).
  void flag_open(Anomaly anomaly);

  std::size_t size() const { return connections_.size(); }
  ExchangeNumbering& numbering() { return numbering_; }
  std::uint64_t connections_seen() const { return connections_seen_; }
  std::uint64_t evicted_idle() const { return evicted_idle_; }
  std::uint64_t evicted_full() const { return evicted_full_; }
  std::uint64_t segments(SegmentOutcome outcome) const;
  std::uint64_t gap_bytes() const;

 private:
  struct Key {
    Endpoint a;  // the lower endpoint, so both directions map to one key
    Endpoint b;
    friend bool operator==(const Key&, const Key&) = default;
  };
  struct KeyHash {
    // Not noexcept on purpose: libstdc++ then keeps each node's hash, and a lookup compares
    // those instead of rehashing the next node's key at every step of a bucket's chain.
    std::size_t operator()(const Key& k) const;
  };

  using Map = std::unordered_map<Key, Connection, KeyHash>;
  using Entry = Map::value_type;  // a node of connections_

  // The per-packet lookup: open addressing over the connections' hashes, in one small array
  // that stays in cache. A bucket chain of map nodes costs a division and a miss on the
  // node before the one sought (another connection's) for every packet.
  class Index {
   public:
    Entry* find(std::uint64_t hash, const Key& key) const;
    void insert(std::uint64_t hash, Entry* entry);
    void erase(std::uint64_t hash, const Entry* entry);
    void clear();

   private:
    struct Slot {
      std::uint64_t hash = 0;
      Entry* entry = nullptr;  // nullptr: empty
    };
    void grow();
    std::vector<Slot> slots_;  // a power of two in size, at most half full
    std::size_t used_ = 0;
  };

  static Key key_of(const Endpoint& x, const Endpoint& y);
  Connection& create(const TcpSegment& segment, const Key& key, std::uint64_t hash);
  Map::iterator erase(Map::iterator it);  // from both the map and the index
  bool is_server_port(std::uint16_t port) const;
  void watch_handshake(Connection& c, const TcpSegment& segment, bool from_client);
  void sweep(timestamp_us now);
  void evict_least_recent(timestamp_us now);
  void retire(Connection& c);

  ExchangeSink& sink_;
  FlowTableConfig config_;
  ConnectionObserver* observer_;
  ExchangeNumbering numbering_;
  // Connections live in the map's nodes (which never move): a lookup reaches the state it
  // needs without following one more pointer, one cache miss less per packet.
  Map connections_;
  Index index_;  // the same connections, by hash
  timestamp_us last_sweep_ = 0;
  std::uint64_t connections_seen_ = 0;
  std::uint64_t evicted_idle_ = 0;
  std::uint64_t evicted_full_ = 0;
  // Segments by outcome, over all connections (counted here, not per connection: the
  // table's counters stay in cache, a connection's would be one more line per packet).
  std::array<std::uint64_t, kSegmentOutcomeCount> segment_counts_{};
  // Totals of connections already removed, so counters survive eviction.
  std::uint64_t retired_gap_bytes_ = 0;
};

}  // namespace chatcap
