#include "chatcap/server_watch.hpp"

#include <algorithm>
#include <deque>
#include <functional>
#include <set>
#include <tuple>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "chatcap/risks.hpp"

namespace chatcap {
namespace {

// A server close this close to a cut belongs to the same death (one exit closes every socket).
constexpr timestamp_us kSameMoment = 200'000;
// A close this close before the first cut is the same exit seen first: the kernel closes a
// dead process's sockets within milliseconds. It dates the death (a coincidental idle
// timeout 100 ms earlier must not: requests of those 100 ms would stop being suspects).
constexpr timestamp_us kSameExit = 10'000;
constexpr std::size_t kRecentCloses = 64;

bool is_server_reason(CloseReason r) { return r == CloseReason::server_fin || r == CloseReason::server_rst; }

std::string ms_text(timestamp_us us) {
  double ms = static_cast<double>(us) / 1000.0;
  if (ms < 1000) return fmt::format("{:.0f} ms", ms);
  return fmt::format("{:.2f} s", ms / 1000.0);
}

// A suspect as the exchange shows it. `end` is when it ended (0: still in flight); tokens
// received after the death do not count.
Suspect suspect_from(const Exchange& ex, timestamp_us end) {
  Suspect suspect;
  suspect.id = ex.id;
  suspect.seq = ex.seq;
  suspect.client = ex.client.to_string();
  suspect.target = ex.request.target;
  suspect.request_end = ex.times.request_end;
  suspect.still_in_flight = end == 0;
  if (end != 0 && ex.answer.first_token_ts != 0 && ex.answer.first_token_ts <= end) {
    suspect.token_events = ex.answer.token_events;
  }
  suspect.watched_only = ex.watched_only;
  suspect.risks = ex.request.risks;
  suspect.body_hash = std::hash<std::string_view>{}(ex.request.body.bytes);
  suspect.body_bytes = ex.request.body.total;
  suspect.retry_header = find_header(ex.request.headers, "x-stainless-retry-count");
  // A dead process's kernel resets, rather than closes, a socket holding bytes it never
  // read: a request cut by RST with no response byte was never read by the server.
  suspect.unread_by_server = ex.close_reason == CloseReason::server_rst && ex.response.status == 0 &&
                             ex.times.response_start == 0;
  suspect.exchange = &ex;
  return suspect;
}

bool same_request(const Suspect& a, const Suspect& b) {
  // An empty body says nothing of what was asked: only requests with one can repeat each other.
  return a.body_bytes > 0 && a.body_hash == b.body_hash && a.body_bytes == b.body_bytes && a.target == b.target;
}

// Likeliest first. Each suspect is ranked as the first of the identical requests it belongs
// to (its leader): a retry sits right after the request it repeats, whatever it received.
void rank_suspects(std::vector<Suspect>& suspects) {
  std::vector<std::size_t> leader(suspects.size());
  for (std::size_t i = 0; i < suspects.size(); ++i) {
    leader[i] = i;
    for (std::size_t j = 0; j < suspects.size(); ++j) {
      if (j == i || !same_request(suspects[i], suspects[j])) continue;
      const Suspect& l = suspects[leader[i]];
      if (suspects[j].request_end < l.request_end || (suspects[j].request_end == l.request_end && suspects[j].seq < l.seq)) {
        leader[i] = j;
      }
    }
    if (leader[i] != i) suspects[i].retry_of = suspects[leader[i]].id;
  }
  std::vector<std::size_t> order(suspects.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  auto key = [&](std::size_t i) {
    const Suspect& l = suspects[leader[i]];
    // risk first, then what the server read, then no token, then the most recent; then the
    // leader itself, its retries in order
    return std::tuple(l.risks == 0, l.unread_by_server, l.token_events != 0, -l.request_end, l.seq,
                      suspects[i].request_end, suspects[i].seq);
  };
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return key(a) < key(b); });
  std::vector<Suspect> ranked;
  ranked.reserve(suspects.size());
  for (std::size_t i : order) ranked.push_back(std::move(suspects[i]));
  suspects = std::move(ranked);
}

// What ranked it, in the order the ranking weighs it.
std::string why_ranked(const Suspect& suspect, timestamp_us death) {
  std::vector<std::string> parts;
  if (!suspect.retry_of.empty()) {
    parts.push_back(fmt::format("the same request as {} again (a client retry{}): ranked right after it", suspect.retry_of,
                                suspect.retry_header.empty() ? "" : ", x-stainless-retry-count " + suspect.retry_header));
  }
  std::vector<std::string> risks;
  for (const RiskEntry* risk : risks_in(suspect.risks)) risks.push_back(fmt::format("{} ({})", risk->id, risk->ref));
  if (!risks.empty()) parts.push_back(fmt::format("carries a known engine killer: {}", fmt::join(risks, ", ")));
  if (suspect.unread_by_server) {
    parts.push_back("reset by the server with no response: the request was never read (ranked after those it read)");
  }
  parts.push_back(suspect.token_events == 0 ? std::string("no token received")
                                            : fmt::format("{} token event{} received", suspect.token_events,
                                                          suspect.token_events == 1 ? "" : "s"));
  parts.push_back(fmt::format("request complete {} before the death", ms_text(death - suspect.request_end)));
  if (suspect.still_in_flight) parts.push_back("still unanswered");
  return fmt::format("{}", fmt::join(parts, "; "));
}

}  // namespace

struct ServerWatch::Incident {
  std::string kind = "process_exit";
  timestamp_us opened = 0;  // the first evidence: the moment of death
  timestamp_us deadline = 0;
  // evidence
  std::set<std::string> cut_clients;
  int cuts_by_reset = 0;
  int cuts_by_fin = 0;
  timestamp_us first_cut = 0;
  timestamp_us last_cut = 0;
  std::set<std::string> closed_clients;  // connections the server closed near the death
  int refusals = 0;
  timestamp_us first_refusal = 0;
  int unanswered_syns = 0;
  int engine_error_events = 0;
  int engine_error_responses = 0;
  // suspects that ended during the window, and exchanges held back until the decision
  std::vector<Suspect> ended_suspects;
  std::vector<std::unique_ptr<Exchange>> held;
};

struct ServerWatch::ServerState {
  Endpoint server;
  std::unordered_map<const Exchange*, InFlight> in_flight;
  std::unique_ptr<Incident> incident;
  std::deque<std::pair<timestamp_us, std::string>> recent_closes;  // (when, client)
  bool down = false;
  timestamp_us down_since = 0;
  std::string down_kind;
};

ServerWatch::ServerWatch(ExchangeSink& next, ServerDownSink& downs, ServerWatchConfig config)
    : next_(next), downs_(downs), config_(config) {}

ServerWatch::~ServerWatch() = default;

ServerWatch::ServerState& ServerWatch::state_of(const Endpoint& server) {
  // Twice per exchange, nearly always for the same server as the last call: that one is
  // remembered, so the map (and the text of its key) is only consulted when the server changes.
  if (last_state_ != nullptr && last_state_->server == server) return *last_state_;
  auto& slot = servers_[std::string(server.text().view())];
  if (!slot) {
    slot = std::make_unique<ServerState>();
    slot->server = server;
  }
  last_state_ = slot.get();
  return *slot;
}

bool ServerWatch::names_dead_engine(std::string_view text) {
  static constexpr std::string_view kSigns[] = {"EngineDeadError", "EngineCore encountered an issue",
                                                "AsyncEngineDeadError", "Background loop has errored",
                                                "engine is dead", "Engine loop has died"};
  return std::any_of(std::begin(kSigns), std::end(kSigns),
                     [&](std::string_view sign) { return text.find(sign) != std::string_view::npos; });
}

bool ServerWatch::is_server_cut(const Exchange& ex) const {
  return ex.state == ExchangeState::aborted && is_server_reason(ex.close_reason) && !ex.orphan_response &&
         (ex.request.complete || ex.request.ended);
}

ServerWatch::Incident& ServerWatch::open_incident(ServerState& s, const Endpoint&, timestamp_us ts, const char* kind) {
  if (!s.incident) {
    s.incident = std::make_unique<Incident>();
    s.incident->opened = ts;
    s.incident->deadline = ts + config_.decision_window;
    s.incident->kind = kind;
    // Closes just before the first cut belong to it too (capture order within one exit).
    for (const auto& [when, client] : s.recent_closes) {
      if (ts - when <= kSameMoment) s.incident->closed_clients.insert(client);
      if (ts - when <= kSameExit && std::string_view(kind) == "process_exit") {
        s.incident->opened = std::min(s.incident->opened, when);
      }
    }
  } else if (std::string_view(kind) == "engine_dead") {
    s.incident->kind = kind;  // the more specific diagnosis wins
  }
  return *s.incident;
}

// ---- events ----------------------------------------------------------------------------------

void ServerWatch::on_request_complete(Exchange& exchange) {
  ServerState& s = state_of(exchange.server);
  s.in_flight[&exchange] = InFlight{exchange.times.request_end, exchange.kept()};
  next_.on_request_complete(exchange);
}

void ServerWatch::on_exchange_end(Exchange& ex) {
  ServerState& s = state_of(ex.server);
  tick(std::max(ex.times.response_end, ex.times.request_end));
  s.in_flight.erase(&ex);
  timestamp_us end = ex.times.response_end != 0 ? ex.times.response_end : ex.times.request_end;

  bool engine_text = names_dead_engine(ex.answer.error_json) ||
                     (ex.response.status >= 500 && names_dead_engine(ex.response.body.bytes));
  bool cut = is_server_cut(ex);
  bool healthy = ex.state == ExchangeState::complete && ex.response.status / 100 == 2 && !engine_text &&
                 ex.answer.error_json.empty();

  if (s.down && !s.incident) {
    if (healthy && ex.times.request_start > s.down_since) {
      s.down = false;  // answering again: a new life
    } else if (!healthy && ex.times.request_end >= s.down_since) {
      // Failing because the server is still dead: flagged, never a suspect.
      ex.add(Anomaly::server_down);
      if (ex.error.empty()) {
        ex.error = fmt::format("failed while the server was down (server_down at {})", format_timestamp(s.down_since));
      }
      forward(ex);
      return;
    }
  }

  if ((cut || engine_text) && !s.down) {
    timestamp_us evidence_ts = end;
    if (engine_text && ex.response.event_stream && ex.answer.error_ts != 0) evidence_ts = ex.answer.error_ts;
    if (engine_text && !ex.response.event_stream && ex.times.response_start != 0) evidence_ts = ex.times.response_start;
    Incident& incident = open_incident(s, ex.server, evidence_ts, engine_text ? "engine_dead" : "process_exit");
    incident.opened = std::min(incident.opened, evidence_ts);
    if (cut) {
      incident.cut_clients.insert(ex.client.to_string());
      (ex.close_reason == CloseReason::server_rst ? incident.cuts_by_reset : incident.cuts_by_fin)++;
      if (incident.first_cut == 0) incident.first_cut = end;
      incident.last_cut = std::max(incident.last_cut, end);
    }
    if (engine_text) (ex.response.event_stream ? incident.engine_error_events : incident.engine_error_responses)++;
  }

  if (s.incident) {
    Incident& incident = *s.incident;
    // Whether it came before the first evidence is settled when the incident is decided:
    // later evidence may still move the moment of death earlier.
    bool suspect = ex.kept() && ex.times.request_end != 0 && (cut || engine_text || !healthy);
    if (suspect) incident.ended_suspects.push_back(suspect_from(ex, end));
    if (incident.held.size() < config_.max_held_exchanges) {
      incident.held.push_back(std::make_unique<Exchange>(std::move(ex)));
      if (suspect) incident.ended_suspects.back().exchange = incident.held.back().get();
      return;
    }
    if (suspect) incident.ended_suspects.back().exchange = nullptr;  // forwarded now, gone by the decision
  }
  forward(ex);
}

void ServerWatch::on_connection_refused(timestamp_us ts, const Endpoint&, const Endpoint& server) {
  tick(ts);
  ServerState& s = state_of(server);
  if (!s.incident) return;  // nothing listening and nothing cut: a server not started yet
  ++s.incident->refusals;
  if (s.incident->first_refusal == 0) s.incident->first_refusal = ts;
}

void ServerWatch::on_syn_unanswered(timestamp_us ts, const Endpoint&, const Endpoint& server) {
  tick(ts);
  ServerState& s = state_of(server);
  if (s.incident) ++s.incident->unanswered_syns;
}

void ServerWatch::on_connection_accepted(timestamp_us ts, const Endpoint&, const Endpoint& server) {
  tick(ts);
  ServerState& s = state_of(server);
  // Something listens again: after a process exit, that is a new process.
  if (s.down && s.down_kind == "process_exit" && ts > s.down_since) s.down = false;
}

void ServerWatch::on_server_closed(timestamp_us ts, const Endpoint& client, const Endpoint& server, bool) {
  tick(ts);
  ServerState& s = state_of(server);
  s.recent_closes.emplace_back(ts, client.to_string());
  while (s.recent_closes.size() > kRecentCloses || ts - s.recent_closes.front().first > kSameMoment) {
    s.recent_closes.pop_front();
  }
  if (s.incident && ts - s.incident->opened <= kSameMoment) s.incident->closed_clients.insert(client.to_string());
}

// ---- decisions -------------------------------------------------------------------------------

void ServerWatch::tick(timestamp_us now) {
  for (auto& [key, s] : servers_) {
    if (s->incident && now >= s->incident->deadline) decide(*s, now);
  }
}

void ServerWatch::finish(timestamp_us now) {
  for (auto& [key, s] : servers_) {
    if (s->incident) decide(*s, now);
  }
}

bool ServerWatch::confirmed(const Incident& incident) const {
  if (incident.engine_error_events + incident.engine_error_responses > 0) return true;
  std::size_t cuts = incident.cut_clients.size();
  std::size_t other_closes = 0;
  for (const std::string& client : incident.closed_clients) other_closes += incident.cut_clients.count(client) == 0;
  // Several connections cut at once, or one cut that the listener's disappearance confirms.
  return cuts >= 2 || (cuts >= 1 && (incident.refusals > 0 || incident.unanswered_syns > 0 || other_closes > 0));
}

void ServerWatch::decide(ServerState& s, timestamp_us) {
  if (confirmed(*s.incident)) {
    ServerDown down = build_record(s, *s.incident);
    s.down = true;
    s.down_since = down.ts;
    s.down_kind = down.kind;
    ++deaths_;
    flag_held(s);
    // Before the held exchanges go on: the record's suspects point at them.
    downs_.on_server_down(down);
  }
  release_held(s);
  s.incident.reset();
}

ServerDown ServerWatch::build_record(const ServerState& s, const Incident& incident) const {
  ServerDown down;
  down.kind = incident.kind;
  down.ts = incident.opened;
  down.server = s.server;
  int cuts = incident.cuts_by_reset + incident.cuts_by_fin;
  if (cuts > 0) {
    down.evidence.push_back(fmt::format("{} response{} cut by the server ({} by RST, {} by FIN) within {}", cuts,
                                        cuts == 1 ? "" : "s", incident.cuts_by_reset, incident.cuts_by_fin,
                                        ms_text(incident.last_cut - incident.first_cut)));
  }
  std::size_t other_closes = 0;
  for (const std::string& client : incident.closed_clients) other_closes += incident.cut_clients.count(client) == 0;
  if (other_closes > 0) {
    down.evidence.push_back(fmt::format("{} other connection{} closed by the server at the same moment", other_closes,
                                        other_closes == 1 ? "" : "s"));
  }
  if (incident.refusals > 0) {
    down.evidence.push_back(fmt::format("{} connection attempt{} refused (RST to SYN), the first at {}", incident.refusals,
                                        incident.refusals == 1 ? "" : "s", format_timestamp(incident.first_refusal)));
  }
  if (incident.unanswered_syns > 0) {
    down.evidence.push_back(fmt::format("{} connection attempt{} unanswered", incident.unanswered_syns,
                                        incident.unanswered_syns == 1 ? "" : "s"));
  }
  if (incident.engine_error_events > 0) {
    down.evidence.push_back(fmt::format("{} stream{} ended with an error event naming the dead engine",
                                        incident.engine_error_events, incident.engine_error_events == 1 ? "" : "s"));
  }
  if (incident.engine_error_responses > 0) {
    down.evidence.push_back(fmt::format("{} response{} with a 5xx naming the dead engine", incident.engine_error_responses,
                                        incident.engine_error_responses == 1 ? "" : "s"));
  }

  // Suspects: in flight at the moment of death — ended during the window, or still open —
  // and complete before its first evidence.
  std::vector<Suspect> suspects;
  for (const Suspect& ended : incident.ended_suspects) {
    if (ended.request_end < incident.opened) suspects.push_back(ended);
  }
  for (const auto& [exchange, f] : s.in_flight) {
    if (f.kept && f.request_end != 0 && f.request_end < incident.opened) suspects.push_back(suspect_from(*exchange, 0));
  }
  rank_suspects(suspects);
  for (Suspect& suspect : suspects) suspect.why = why_ranked(suspect, incident.opened);
  down.suspects = std::move(suspects);
  return down;
}

void ServerWatch::flag_held(ServerState& s) {
  for (auto& held : s.incident->held) {
    Exchange& ex = *held;
    bool failed = ex.state != ExchangeState::complete || ex.response.status >= 500 || !ex.answer.error_json.empty();
    if (!failed || ex.times.request_end == 0) continue;
    ex.add(Anomaly::server_down);
    if (ex.times.request_end >= s.incident->opened && ex.error.empty()) {
      ex.error = fmt::format("failed while the server was down (server_down at {})", format_timestamp(s.incident->opened));
    }
  }
}

void ServerWatch::release_held(ServerState& s) {
  for (auto& held : s.incident->held) forward(*held);
  s.incident->held.clear();
}

void ServerWatch::forward(Exchange& exchange) { next_.on_exchange_end(exchange); }

}  // namespace chatcap
