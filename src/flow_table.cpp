#include "chatcap/flow_table.hpp"

#include <algorithm>
#include <cstring>

namespace chatcap {

Connection::Connection(Endpoint client, Endpoint server, ExchangeSink& sink, ExchangeNumbering& numbering,
                       const FlowTableConfig& config)
    : client_(client),
      server_(server),
      http_(client, server, sink, numbering, config.http),
      to_server_(http_.client_stream(), config.reassembly),
      to_client_(http_.server_stream(), config.reassembly) {}

SegmentOutcome Connection::on_segment(const TcpSegment& segment, bool from_client) {
  last_seen = segment.ts;
  Reassembler& own = from_client ? to_server_ : to_client_;
  Reassembler& peer = from_client ? to_client_ : to_server_;
  // The ACK first: it may prove bytes of the other direction lost, and that must be known
  // before this segment's data (say, a response) is paired with the other side's message.
  if (segment.has(tcp_flag::ack)) peer.on_peer_ack(segment.ts, segment.ack);
  const SegmentOutcome outcome = own.on_segment(segment);
  if (segment.has(tcp_flag::rst) && !peer.closed()) {
    // The connection is gone for both directions: deliver what the other side holds.
    peer.flush(segment.ts);
  }
  return outcome;
}

void Connection::tick(timestamp_us now) {
  to_server_.on_tick(now);
  to_client_.on_tick(now);
}

void Connection::finish(timestamp_us ts, ExchangeState state, std::string_view why) {
  to_server_.flush(ts);
  to_client_.flush(ts);
  http_.close_all(ts, state, why);
}

bool Connection::closed() const {
  return (to_server_.closed() && to_client_.closed()) || (http_.finished());
}

// ---------------------------------------------------------------------------------------------

std::size_t FlowTable::KeyHash::operator()(const Key& k) const {
  // Per packet: the words folded with independent multipliers, then one multiply and a shift
  // to spread every input bit into the low bits the index probes with.
  std::uint64_t x = k.a.address.word(0) ^ (k.b.address.word(0) * 0x9E3779B97F4A7C15ull);
  std::uint64_t y = k.a.address.word(1) ^ (k.b.address.word(1) * 0xC2B2AE3D27D4EB4Full) ^ k.a.address.family;
  std::uint64_t ports = (std::uint64_t{k.a.port} << 16) | k.b.port;
  std::uint64_t h = (x ^ ((y << 29) | (y >> 35)) ^ (ports * 0x165667B19E3779F9ull)) * 0xBF58476D1CE4E5B9ull;
  return static_cast<std::size_t>(h ^ (h >> 31));
}

FlowTable::Entry* FlowTable::Index::find(std::uint64_t hash, const Key& key) const {
  if (slots_.empty()) return nullptr;
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
    const Slot& slot = slots_[i];
    if (slot.entry == nullptr) return nullptr;
    if (slot.hash == hash && slot.entry->first == key) return slot.entry;
  }
}

void FlowTable::Index::insert(std::uint64_t hash, Entry* entry) {
  if (2 * (used_ + 1) > slots_.size()) grow();
  const std::size_t mask = slots_.size() - 1;
  std::size_t i = hash & mask;
  while (slots_[i].entry != nullptr) i = (i + 1) & mask;
  slots_[i] = Slot{hash, entry};
  ++used_;
}

void FlowTable::Index::erase(std::uint64_t hash, const Entry* entry) {
  if (slots_.empty()) return;
  const std::size_t mask = slots_.size() - 1;
  std::size_t hole = hash & mask;
  while (slots_[hole].entry != entry) {
    if (slots_[hole].entry == nullptr) return;  // not indexed
    hole = (hole + 1) & mask;
  }
  // Backward shift: pull later members of the probe run into the hole when their home slot
  // is not between the hole and where they sit, so no lookup ever meets a false "empty".
  for (std::size_t next = (hole + 1) & mask; slots_[next].entry != nullptr; next = (next + 1) & mask) {
    std::size_t home = slots_[next].hash & mask;
    if (((next - home) & mask) >= ((next - hole) & mask)) {
      slots_[hole] = slots_[next];
      hole = next;
    }
  }
  slots_[hole] = Slot{};
  --used_;
}

void FlowTable::Index::clear() {
  slots_.clear();
  used_ = 0;
}

void FlowTable::Index::grow() {
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(std::max<std::size_t>(64, 2 * old.size()), Slot{});
  used_ = 0;
  for (const Slot& slot : old) {
    if (slot.entry != nullptr) insert(slot.hash, slot.entry);
  }
}

// ---------------------------------------------------------------------------------------------

FlowTable::FlowTable(ExchangeSink& sink, FlowTableConfig config,
                     ConnectionObserver* observer)
    : sink_(sink), config_(std::move(config)), observer_(observer) {}

FlowTable::~FlowTable() = default;

FlowTable::Key FlowTable::key_of(const Endpoint& x, const Endpoint& y) {
  // Any strict order will do, as long as both directions pick the same endpoint first.
  auto less = [](const Endpoint& l, const Endpoint& r) {
    if (l.address.family != r.address.family) return l.address.family < r.address.family;
    if (l.address.word(0) != r.address.word(0)) return l.address.word(0) < r.address.word(0);
    if (l.address.word(1) != r.address.word(1)) return l.address.word(1) < r.address.word(1);
    return l.port < r.port;
  };
  return less(x, y) ? Key{x, y} : Key{y, x};
}

bool FlowTable::is_server_port(std::uint16_t port) const {
  return std::find(config_.server_ports.begin(), config_.server_ports.end(), port) != config_.server_ports.end();
}

void FlowTable::on_segment(const TcpSegment& segment) {
  tick(segment.ts);
  Key key = key_of(segment.src, segment.dst);
  std::uint64_t hash = KeyHash{}(key);
  Entry* entry = index_.find(hash, key);
  bool fresh_syn = segment.has(tcp_flag::syn) && !segment.has(tcp_flag::ack);
  if (entry != nullptr && fresh_syn && (entry->second.closed() || entry->second.closed_at != 0)) {
    // The 4-tuple is reused by a new connection.
    retire(entry->second);
    erase(connections_.find(key));
    entry = nullptr;
  }
  Connection& c = entry != nullptr ? entry->second : create(segment, key, hash);
  if (c.closed_at != 0) return;  // late duplicates of a closed connection
  bool from_client = segment.src == c.client();
  watch_handshake(c, segment, from_client);
  ++segment_counts_[static_cast<std::size_t>(c.on_segment(segment, from_client))];
  if (c.closed() && c.closed_at == 0) {
    c.closed_at = segment.ts;
    c.finish(segment.ts, ExchangeState::aborted, "connection closed");
  }
}

void FlowTable::watch_handshake(Connection& c, const TcpSegment& segment, bool from_client) {
  bool syn = segment.has(tcp_flag::syn) && !segment.has(tcp_flag::ack);
  if (from_client) {
    // A second SYN with no SYN-ACK between: the first went unanswered.
    if (syn && c.saw_syn && !c.saw_syn_ack && !c.syn_unanswered_reported && observer_ != nullptr) {
      c.syn_unanswered_reported = true;
      observer_->on_syn_unanswered(segment.ts, c.client(), c.server());
    }
    if (syn) c.saw_syn = true;
    if (segment.has(tcp_flag::fin) || segment.has(tcp_flag::rst)) c.client_closed_first = !c.server_close_reported;
    return;
  }
  if (observer_ == nullptr) return;
  if (segment.has(tcp_flag::syn) && segment.has(tcp_flag::ack)) {
    if (!c.saw_syn_ack) observer_->on_connection_accepted(segment.ts, c.client(), c.server());
    c.saw_syn_ack = true;
  } else if (segment.has(tcp_flag::rst) && c.saw_syn && !c.saw_syn_ack) {
    observer_->on_connection_refused(segment.ts, c.client(), c.server());
  } else if (segment.has(tcp_flag::fin) || segment.has(tcp_flag::rst)) {
    // Only a close the server started says something about the server; answering the
    // client's FIN is just the end of a conversation.
    if (!c.server_close_reported && !c.client_closed_first) {
      c.server_close_reported = true;
      observer_->on_server_closed(segment.ts, c.client(), c.server(), segment.has(tcp_flag::rst));
    }
  }
}

Connection& FlowTable::create(const TcpSegment& segment, const Key& key, std::uint64_t hash) {
  if (connections_.size() >= config_.max_connections) evict_least_recent(segment.ts);
  Endpoint client = segment.src;
  Endpoint server = segment.dst;
  bool syn = segment.has(tcp_flag::syn);
  bool syn_ack = syn && segment.has(tcp_flag::ack);
  if (syn_ack) {
    std::swap(client, server);
  } else if (!syn) {
    // No handshake seen: decide by the configured server ports, else the lower port.
    bool src_is_server = is_server_port(segment.src.port) && !is_server_port(segment.dst.port);
    bool dst_is_server = is_server_port(segment.dst.port) && !is_server_port(segment.src.port);
    if (src_is_server || (!dst_is_server && segment.src.port < segment.dst.port)) std::swap(client, server);
  }
  Entry& entry = *connections_.try_emplace(key, client, server, sink_, numbering_, config_).first;
  index_.insert(hash, &entry);
  Connection& connection = entry.second;
  if (!syn) connection.http().start_midstream(true, true);
  ++connections_seen_;
  return connection;
}

FlowTable::Map::iterator FlowTable::erase(Map::iterator it) {
  index_.erase(KeyHash{}(it->first), &*it);
  return connections_.erase(it);
}

void FlowTable::tick(timestamp_us now) {
  if (now - last_sweep_ < kMicrosPerSecond && now >= last_sweep_) return;
  last_sweep_ = now;
  sweep(now);
}

void FlowTable::sweep(timestamp_us now) {
  for (auto it = connections_.begin(); it != connections_.end();) {
    Connection& c = it->second;
    if (c.closed_at != 0) {
      if (now - c.closed_at >= config_.closed_linger) {
        retire(c);
        it = erase(it);
        continue;
      }
      ++it;
      continue;
    }
    timestamp_us idle_limit =
        c.http().open_exchanges() > 0 ? config_.idle_timeout : config_.idle_timeout_no_exchange;
    if (now - c.last_seen >= idle_limit) {
      c.finish(now, ExchangeState::timeout, "connection idle past the idle timeout");
      ++evicted_idle_;
      retire(c);
      it = erase(it);
      continue;
    }
    c.tick(now);
    ++it;
  }
}

void FlowTable::evict_least_recent(timestamp_us now) {
  auto oldest = std::min_element(connections_.begin(), connections_.end(), [](const auto& l, const auto& r) {
    return l.second.last_seen < r.second.last_seen;
  });
  if (oldest == connections_.end()) return;
  oldest->second.finish(now, ExchangeState::timeout, "evicted: too many open connections (max_connections)");
  ++evicted_full_;
  retire(oldest->second);
  erase(oldest);
}

void FlowTable::retire(Connection& c) {
  retired_gap_bytes_ += c.to_server().gap_bytes() + c.to_client().gap_bytes();
}

void FlowTable::finish(timestamp_us ts, ExchangeState state, std::string_view why) {
  for (auto& [key, c] : connections_) {
    if (c.closed_at == 0) c.finish(ts, state, why);
    retire(c);
  }
  connections_.clear();
  index_.clear();
}

void FlowTable::flag_open(Anomaly anomaly) {
  for (auto& [key, c] : connections_) c.http().flag_open(anomaly);
}

std::uint64_t FlowTable::segments(SegmentOutcome outcome) const {
  return segment_counts_[static_cast<std::size_t>(outcome)];
}

std::uint64_t FlowTable::gap_bytes() const {
  std::uint64_t total = retired_gap_bytes_;
  for (const auto& [key, c] : connections_) total += c.to_server().gap_bytes() + c.to_client().gap_bytes();
  return total;
}

}  // namespace chatcap
