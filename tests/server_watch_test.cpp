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
  stream.answer.last_event_ts = death;
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
