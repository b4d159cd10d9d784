// Server-death detection on hand-made exchange and connection events.
#include <catch2/catch.hpp>

#include <vector>

#include "chatcap/server_watch.hpp"

using namespace chatcap;

namespace {

const Endpoint kServer{IpAddress::v4(127, 0, 0, 1), 8077};
constexpr timestamp_us kT0 = 1'000'000'000;

struct Sinks : ExchangeSink, ServerDownSink {
  std::vector<Exchange> ended;
  std::vector<std::string> requests;
  std::vector<ServerDown> downs;
  void on_request_complete(Exchange& ex) override { requests.push_back(ex.id); }
  void on_exchange_end(Exchange& ex) override { ended.push_back(ex); }
  void on_server_down(const ServerDown& d) override { downs.push_back(d); }
};

struct World {
  Sinks sinks;
  ServerWatch watch{sinks, sinks};
  std::vector<std::unique_ptr<Exchange>> open;
  std::uint16_t next_port = 40000;

  Exchange& request(const std::string& id, timestamp_us at) {
    auto ex = std::make_unique<Exchange>();
    ex->id = id;
    ex->client = Endpoint{IpAddress::v4(127, 0, 0, 1), next_port++};
    ex->server = kServer;
    ex->times.request_start = at;
    ex->times.request_end = at;
    ex->request.complete = true;
    ex->request.ended = true;
    watch.on_request_complete(*ex);
    open.push_back(std::move(ex));
    return *open.back();
  }
  void streamed_tokens(Exchange& ex, timestamp_us first, std::uint64_t events) {
    ex.response.status = 200;
    ex.response.event_stream = true;
    ex.answer.first_token_ts = first;
    ex.answer.token_events = events;
  }
  void cut(Exchange& ex, timestamp_us at, CloseReason reason = CloseReason::server_fin) {
    ex.state = ExchangeState::aborted;
    ex.close_reason = reason;
    ex.times.response_end = at;
    watch.on_exchange_end(ex);
  }
  void complete(Exchange& ex, timestamp_us at, int status = 200, std::string body = "{}") {
    ex.state = ExchangeState::complete;
    ex.response.status = status;
    ex.response.complete = true;
    ex.response.body.bytes = std::move(body);
    ex.times.response_start = at;
    ex.times.response_end = at;
    watch.on_exchange_end(ex);
  }
};

}  // namespace

TEST_CASE("server watch: several streams cut at once is a death; the newest tokenless request leads", "[server_watch]") {
  World w;
  Exchange& old_stream = w.request("old", kT0);
  w.streamed_tokens(old_stream, kT0 + 50'000, 120);
  Exchange& other_stream = w.request("other", kT0 + 500'000);
  w.streamed_tokens(other_stream, kT0 + 550'000, 40);
  Exchange& waiting = w.request("waiting", kT0 + 700'000);   // no token yet
  Exchange& killer = w.request("killer", kT0 + 900'000);     // arrived last, no token
  timestamp_us death = kT0 + 950'000;
  w.cut(old_stream, death, CloseReason::server_rst);
  w.cut(other_stream, death + 100);
  w.cut(waiting, death + 200);
  w.cut(killer, death + 300);
  CHECK(w.sinks.ended.empty());  // held back until the decision
  w.watch.on_connection_refused(death + 300'000, Endpoint{}, kServer);
  w.watch.tick(death + 3 * kMicrosPerSecond);

  REQUIRE(w.sinks.downs.size() == 1);
  const ServerDown& down = w.sinks.downs[0];
  CHECK(down.kind == "process_exit");
  CHECK(down.ts == death);
  REQUIRE(down.suspects.size() == 4);
  CHECK(down.suspects[0].id == "killer");
  CHECK(down.suspects[1].id == "waiting");
  CHECK(down.suspects[2].id == "other");
  CHECK(down.suspects[3].id == "old");
  CHECK_THAT(down.suspects[0].why, Catch::Contains("50 ms before the death") && Catch::Contains("no token"));
  REQUIRE(w.sinks.ended.size() == 4);
  for (const Exchange& ex : w.sinks.ended) CHECK(ex.has(Anomaly::server_down));
  CHECK_THAT(down.evidence[0], Catch::Contains("4 responses cut by the server (1 by RST, 3 by FIN)"));
}

TEST_CASE("server watch: one cut stream with nothing else is not a death", "[server_watch]") {
  World w;
  Exchange& ex = w.request("lonely", kT0);
  w.cut(ex, kT0 + 1000);
  w.watch.tick(kT0 + 5 * kMicrosPerSecond);
  CHECK(w.sinks.downs.empty());
  REQUIRE(w.sinks.ended.size() == 1);
  CHECK_FALSE(w.sinks.ended[0].has(Anomaly::server_down));
}

TEST_CASE("server watch: clients hanging up are never the server's death", "[server_watch]") {
  World w;
  for (int i = 0; i < 5; ++i) {
    Exchange& ex = w.request("c" + std::to_string(i), kT0 + i);
    w.cut(ex, kT0 + 1000 + i, i % 2 ? CloseReason::client_fin : CloseReason::client_rst);
  }
  w.watch.finish(kT0 + kMicrosPerSecond);
  CHECK(w.sinks.downs.empty());
  CHECK(w.sinks.ended.size() == 5);  // not held: no incident was opened
}

TEST_CASE("server watch: a dead engine — 500s after the death are flagged, not suspects", "[server_watch]") {
  World w;
  Exchange& stream = w.request("stream", kT0);
  w.streamed_tokens(stream, kT0 + 10'000, 30);
  Exchange& killer = w.request("killer", kT0 + 400'000);
  timestamp_us death = kT0 + 450'000;
  stream.answer.error_json = R"({"message":"EngineCore encountered an issue. See stack trace","code":500})";
  stream.answer.error_ts = stream.answer.last_event_ts = death;
  w.complete(stream, death + 10);
  w.complete(killer, death + 20, 500, R"({"error":{"message":"EngineDeadError"}})");
  w.watch.tick(death + 3 * kMicrosPerSecond);
  REQUIRE(w.sinks.downs.size() == 1);
  CHECK(w.sinks.downs[0].kind == "engine_dead");
  REQUIRE(w.sinks.downs[0].suspects.size() == 2);
  CHECK(w.sinks.downs[0].suspects[0].id == "killer");

  Exchange& later = w.request("later", death + 5 * kMicrosPerSecond);
  w.complete(later, death + 5 * kMicrosPerSecond + 100, 500, R"({"error":{"message":"EngineDeadError"}})");
  CHECK(w.sinks.downs.size() == 1);  // still the same death
  CHECK(w.sinks.ended.back().id == "later");
  CHECK(w.sinks.ended.back().has(Anomaly::server_down));

  // A success means the server answers again: a later failure is a new question.
  Exchange& ok = w.request("ok", death + 60 * kMicrosPerSecond);
  w.complete(ok, death + 60 * kMicrosPerSecond + 100);
  CHECK_FALSE(w.sinks.ended.back().has(Anomaly::server_down));
}

TEST_CASE("server watch: one cut confirmed by the server closing its idle connections", "[server_watch]") {
  World w;
  Exchange& ex = w.request("only", kT0);
  Endpoint idle_client{IpAddress::v4(127, 0, 0, 1), 50000};
  w.watch.on_server_closed(kT0 + 5000, idle_client, kServer, false);  // same exit, captured first
  w.cut(ex, kT0 + 5100);
  w.watch.finish(kT0 + 10 * kMicrosPerSecond);
  REQUIRE(w.sinks.downs.size() == 1);
  CHECK(w.sinks.downs[0].suspects.size() == 1);
}

TEST_CASE("server watch: requests complete after the first evidence are never suspects, however close", "[server_watch]") {
  World w;
  Exchange& stream = w.request("stream", kT0);
  w.streamed_tokens(stream, kT0 + 10'000, 30);
  Exchange& killer = w.request("killer", kT0 + 400'000);
  timestamp_us death = kT0 + 450'000;
  // Sent 1, 38 and 40 ms after the first error event: an immediate 500 each, no token.
  Exchange& late1 = w.request("late1", death + 1'000);
  Exchange& late38 = w.request("late38", death + 38'000);
  Exchange& late40 = w.request("late40", death + 40'000);
  Exchange& hanging = w.request("hanging", death + 50'000);  // still open at the decision
  stream.answer.error_json = R"({"message":"EngineCore encountered an issue.","code":500})";
  stream.answer.error_ts = stream.answer.last_event_ts = death;
  w.complete(stream, death + 10);
  for (Exchange* late : {&late1, &late38, &late40}) {
    w.complete(*late, late->times.request_end + 900, 500, R"({"error":{"message":"EngineDeadError"}})");
  }
  w.complete(killer, death + 60'000, 500, R"({"error":{"message":"EngineDeadError"}})");
  (void)hanging;
  w.watch.tick(death + 3 * kMicrosPerSecond);
  REQUIRE(w.sinks.downs.size() == 1);
  const ServerDown& down = w.sinks.downs[0];
  CHECK(down.ts == death);
  std::vector<std::string> ids;
  for (const Suspect& s : down.suspects) ids.push_back(s.id);
  CHECK(ids == std::vector<std::string>{"killer", "stream"});
  for (const Exchange& ex : w.sinks.ended) {
    if (ex.id.starts_with("late")) {
      CHECK(ex.has(Anomaly::server_down));
      CHECK_THAT(ex.error, Catch::Contains("failed while the server was down"));
    }
  }
}

namespace {

// A request with a body (a retry is recognised by its target and body).
Exchange& request_with(World& w, const std::string& id, timestamp_us at, const std::string& target,
                       const std::string& body, std::uint32_t risks = 0) {
  Exchange& ex = w.request(id, at);
  ex.request.target = target;
  ex.request.body.bytes = body;
  ex.request.body.total = body.size();
  ex.request.risks = risks;
  return ex;
}

std::vector<std::string> suspect_ids(const ServerDown& down) {
  std::vector<std::string> ids;
  for (const Suspect& s : down.suspects) ids.push_back(s.id);
  return ids;
}

}  // namespace

TEST_CASE("server watch: a request with a known risk ranks first, whatever came after it", "[server_watch]") {
  World w;
  Exchange& risky = request_with(w, "risky", kT0, "/v1/completions", R"({"prompt":"x"})", 1u);
  w.streamed_tokens(risky, kT0 + 1000, 3);  // it even got tokens
  Exchange& newer = request_with(w, "newer", kT0 + 500'000, "/v1/chat/completions", R"({"messages":[]})");
  Exchange& newest = request_with(w, "newest", kT0 + 600'000, "/v1/chat/completions", R"({"messages":[1]})");
  timestamp_us death = kT0 + 700'000;
  w.cut(newest, death);
  w.cut(newer, death + 10);
  w.cut(risky, death + 20);
  w.watch.finish(death + kMicrosPerSecond);
  REQUIRE(w.sinks.downs.size() == 1);
  CHECK(suspect_ids(w.sinks.downs[0]) == std::vector<std::string>{"risky", "newest", "newer"});
  CHECK_THAT(w.sinks.downs[0].suspects[0].why,
             Catch::StartsWith("carries a known engine killer: structured_output_without_constraint") &&
                 Catch::Contains("vllm-project/vllm#45346") && Catch::Contains("3 token events received"));
}

TEST_CASE("server watch: a retry of a request never ranks above it", "[server_watch]") {
  const std::string killer_body = R"({"messages":[{"role":"user","content":"kill"}],"structured_outputs":{"json":""}})";
  for (std::uint32_t risk : {0u, 1u}) {
    INFO("risk " << risk);
    World w;
    Exchange& original = request_with(w, "original", kT0, "/v1/chat/completions", killer_body, risk);
    w.streamed_tokens(original, kT0 + 5000, 2);  // the original got a token before it hung
    Exchange& other = request_with(w, "other", kT0 + 200'000, "/v1/chat/completions", R"({"messages":[2]})");
    Exchange& retry = request_with(w, "retry", kT0 + 300'000, "/v1/chat/completions", killer_body, risk);
    retry.request.headers = {{"X-Stainless-Retry-Count", "1"}};
    Exchange& retry2 = request_with(w, "retry2", kT0 + 350'000, "/v1/chat/completions", killer_body, risk);
    // The same body to another endpoint is another request.
    Exchange& elsewhere = request_with(w, "elsewhere", kT0 + 360'000, "/v1/completions", killer_body, risk);
    timestamp_us death = kT0 + 400'000;
    for (Exchange* ex : {&retry2, &retry, &other, &original, &elsewhere}) w.cut(*ex, death);
    w.watch.finish(death + kMicrosPerSecond);
    REQUIRE(w.sinks.downs.size() == 1);
    const ServerDown& down = w.sinks.downs[0];
    const std::vector<std::string> ids = suspect_ids(down);
    auto at = [&](const std::string& id) { return std::find(ids.begin(), ids.end(), id) - ids.begin(); };
    CHECK(at("original") < at("retry"));
    CHECK(at("retry") == at("original") + 1);
    CHECK(at("retry2") == at("original") + 2);
    if (risk != 0) {
      CHECK(ids == std::vector<std::string>{"elsewhere", "original", "retry", "retry2", "other"});
    } else {
      // No risk: no token first (elsewhere, other), the original ranks as itself (it got a
      // token) and takes its retries with it.
      CHECK(ids == std::vector<std::string>{"elsewhere", "other", "original", "retry", "retry2"});
    }
    const Suspect& r = down.suspects[static_cast<std::size_t>(at("retry"))];
    CHECK(r.retry_of == "original");
    CHECK_THAT(r.why, Catch::StartsWith("the same request as original again (a client retry, x-stainless-retry-count 1)"));
    CHECK(down.suspects[static_cast<std::size_t>(at("original"))].retry_of.empty());
  }
}

TEST_CASE("server watch: watched-only requests are suspects; requests without a record are not", "[server_watch]") {
  struct Recording : Sinks {
    std::vector<std::string> order;  // what reached the sinks, in order
    std::vector<std::string> pointed_bodies;
    void on_exchange_end(Exchange& ex) override {
      order.push_back("end " + ex.id);
      Sinks::on_exchange_end(ex);
    }
    void on_server_down(const ServerDown& d) override {
      order.push_back("down");
      for (const Suspect& s : d.suspects) pointed_bodies.push_back(s.exchange ? s.exchange->request.body.bytes : "-");
      Sinks::on_server_down(d);
    }
  } sinks;
  ServerWatch watch{sinks, sinks};
  auto make = [&](const std::string& id, timestamp_us at, bool recorded, bool watched, std::string body) {
    auto ex = std::make_unique<Exchange>();
    ex->id = id;
    ex->client = Endpoint{IpAddress::v4(127, 0, 0, 1), static_cast<std::uint16_t>(41000 + id.size())};
    ex->server = kServer;
    ex->times.request_start = ex->times.request_end = at;
    ex->request.complete = ex->request.ended = true;
    ex->request.body.bytes = std::move(body);
    ex->recorded = recorded;
    ex->watched_only = watched;
    watch.on_request_complete(*ex);
    return ex;
  };
  auto chat = make("chat", kT0, true, false, "c");
  auto completions = make("completions", kT0 + 1000, false, true, "k");
  auto health = make("health", kT0 + 2000, false, false, "");
  auto open = make("open", kT0 + 3000, false, true, "o");  // never ends: still in flight
  for (Exchange* ex : {chat.get(), completions.get(), health.get()}) {
    ex->state = ExchangeState::aborted;
    ex->close_reason = CloseReason::server_rst;
    ex->times.response_end = kT0 + 100'000;
    watch.on_exchange_end(*ex);
  }
  watch.finish(kT0 + kMicrosPerSecond);
  REQUIRE(sinks.downs.size() == 1);
  const ServerDown& down = sinks.downs[0];
  CHECK(suspect_ids(down) == std::vector<std::string>{"open", "completions", "chat"});
  CHECK(down.suspects[0].watched_only);
  CHECK(down.suspects[0].still_in_flight);
  CHECK(down.suspects[1].watched_only);
  CHECK_FALSE(down.suspects[2].watched_only);
  // Each suspect's exchange could be read while the record was made, and the death came
  // before the held exchanges went on.
  CHECK(sinks.pointed_bodies == std::vector<std::string>{"o", "k", "c"});
  REQUIRE(sinks.order.size() == 4);
  CHECK(sinks.order[0] == "down");
}

TEST_CASE("server watch: an engine death is dated by the error event, not by the [DONE] after it", "[server_watch]") {
  World w;
  Exchange& killer = w.request("killer", kT0);
  timestamp_us error_event = kT0 + 100'000;
  killer.response.status = 200;
  killer.response.event_stream = true;
  killer.answer.error_json = R"({"message":"EngineCore encountered an issue.","code":500})";
  killer.answer.error_ts = error_event;
  killer.answer.last_event_ts = error_event + 3'000;  // [DONE], in a later packet
  Exchange& between = w.request("between", error_event + 1'500);  // sent just after the error event
  w.complete(between, error_event + 2'000, 500, R"({"error":{"message":"EngineDeadError"}})");
  w.complete(killer, error_event + 3'000);
  w.watch.tick(error_event + 3 * kMicrosPerSecond);
  REQUIRE(w.sinks.downs.size() == 1);
  CHECK(w.sinks.downs[0].ts == error_event);
  CHECK(suspect_ids(w.sinks.downs[0]) == std::vector<std::string>{"killer"});
}

TEST_CASE("server watch: a process exit is dated by the first socket it closed, if just before the first cut",
          "[server_watch]") {
  for (timestamp_us lead : {2'000, 100'000}) {
    INFO("idle connection closed " << lead << " us before the first cut");
    World w;
    Exchange& a = w.request("a", kT0);
    Exchange& b = w.request("b", kT0 + 10'000);
    timestamp_us cut = kT0 + 500'000;
    Exchange& late = w.request("late", cut - 1'000);  // between the close and the cut
    w.watch.on_server_closed(cut - lead, Endpoint{IpAddress::v4(127, 0, 0, 1), 50000}, kServer, false);
    w.cut(a, cut);
    w.cut(b, cut + 100);
    w.cut(late, cut + 200);
    w.watch.finish(cut + kMicrosPerSecond);
    REQUIRE(w.sinks.downs.size() == 1);
    if (lead == 2'000) {
      CHECK(w.sinks.downs[0].ts == cut - lead);  // the same exit, seen first on the idle socket
      CHECK(suspect_ids(w.sinks.downs[0]) == std::vector<std::string>{"b", "a"});
    } else {
      CHECK(w.sinks.downs[0].ts == cut);  // an idle timeout long before: not the moment of death
      CHECK(suspect_ids(w.sinks.downs[0]) == std::vector<std::string>{"late", "b", "a"});
    }
  }
}

TEST_CASE("server watch: a request the dying server reset unread ranks after those it read", "[server_watch]") {
  World w;
  Exchange& killer = w.request("killer", kT0);              // read, no answer yet: cut by FIN
  Exchange& unread = w.request("unread", kT0 + 200'000);    // arrived as the process was exiting
  Exchange& stream = w.request("stream", kT0 + 100'000);
  w.streamed_tokens(stream, kT0 + 110'000, 9);
  timestamp_us death = kT0 + 201'000;
  w.cut(unread, death, CloseReason::server_rst);
  w.cut(killer, death + 10, CloseReason::server_fin);
  w.cut(stream, death + 20, CloseReason::server_rst);  // a response had begun: it was read
  w.watch.finish(death + kMicrosPerSecond);
  REQUIRE(w.sinks.downs.size() == 1);
  CHECK(suspect_ids(w.sinks.downs[0]) == std::vector<std::string>{"killer", "stream", "unread"});
  CHECK_THAT(w.sinks.downs[0].suspects[2].why, Catch::Contains("never read"));
}
