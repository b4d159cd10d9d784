// Metrics: what the exposition says after exchanges of each kind went through the stage.
#include <catch2/catch.hpp>

#include <memory>
#include <string>

#include "chatcap/metrics.hpp"
#include "chatcap/risks.hpp"

using namespace chatcap;

namespace {

struct Next : ExchangeSink, ServerDownSink {
  int requests = 0, ends = 0, downs = 0;
  void on_request_complete(Exchange&) override { ++requests; }
  void on_exchange_end(Exchange&) override { ++ends; }
  void on_server_down(const ServerDown&) override { ++downs; }
};

const Endpoint kServer{IpAddress::v4(127, 0, 0, 1), 8077};

Exchange exchange(const std::string& id, const std::string& target, const std::string& model) {
  Exchange ex;
  ex.id = id;
  ex.server = kServer;
  ex.request.target = target;
  ex.request.complete = true;
  auto summary = std::make_shared<RequestSummary>();
  summary->model = model;
  ex.request.summary = summary;
  ex.times.request_start = 1'000'000;
  ex.times.request_end = 1'000'100;
  ex.times.response_end = 1'500'000;  // 0.5 s in all
  ex.answer.first_token_ts = 1'050'100;  // ttft 50 ms
  ex.answer.last_token_ts = 1'450'100;
  ex.answer.token_events = 5;  // 4 gaps over 0.4 s: 0.1 s per token
  ex.answer.input_tokens = 100;
  ex.answer.output_tokens = 20;
  ex.answer.dialect = dialect_of(target);
  ex.state = ExchangeState::complete;
  return ex;
}

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos || text.starts_with(line + "\n");
}

}  // namespace

TEST_CASE("metrics: GenAI histograms and chatcap's counters from exchanges", "[metrics]") {
  Next next;
  Metrics metrics(next, next);
  for (int i = 0; i < 3; ++i) {
    Exchange ex = exchange("c" + std::to_string(i), "/v1/chat/completions", "gpt-oss-120b");
    metrics.on_request_complete(ex);
    ex.request.summary.reset();  // the recorder lets it go: the model is remembered
    metrics.on_exchange_end(ex);
  }
  Exchange messages = exchange("m", "/v1/messages", "claude-like");
  messages.request.risks = assess_risks(summarize_request(R"({"structured_outputs":{"json":""}})"), "/v1/messages");
  messages.state = ExchangeState::aborted;
  metrics.on_request_complete(messages);
  metrics.on_exchange_end(messages);
  ServerDown down;
  down.kind = "engine_dead";
  down.server = kServer;
  metrics.on_server_down(down);
  metrics.set_io({3, 4, 5, 6789});
  CHECK(next.requests == 4);
  CHECK(next.ends == 4);
  CHECK(next.downs == 1);

  const std::string text = metrics.exposition();
  const std::string chat =
      R"(server_address="127.0.0.1",server_port="8077",gen_ai_operation_name="chat",dialect="chat",gen_ai_request_model="gpt-oss-120b")";
  CHECK(has_line(text, "# TYPE gen_ai_server_request_duration_seconds histogram"));
  CHECK(has_line(text, "gen_ai_server_request_duration_seconds_count{" + chat + "} 3"));
  CHECK(has_line(text, "gen_ai_server_request_duration_seconds_sum{" + chat + "} 1.5"));
  CHECK(has_line(text, "gen_ai_server_request_duration_seconds_bucket{" + chat + ",le=\"0.32\"} 0"));
  CHECK(has_line(text, "gen_ai_server_request_duration_seconds_bucket{" + chat + ",le=\"0.64\"} 3"));
  CHECK(has_line(text, "gen_ai_server_request_duration_seconds_bucket{" + chat + ",le=\"+Inf\"} 3"));
  CHECK(has_line(text, "gen_ai_server_time_to_first_token_seconds_bucket{" + chat + ",le=\"0.04\"} 0"));
  CHECK(has_line(text, "gen_ai_server_time_to_first_token_seconds_bucket{" + chat + ",le=\"0.06\"} 3"));
  CHECK(has_line(text, "gen_ai_server_time_per_output_token_seconds_bucket{" + chat + ",le=\"0.1\"} 3"));
  CHECK(has_line(text, "gen_ai_client_token_usage_sum{" + chat + ",gen_ai_token_type=\"input\"} 300"));
  CHECK(has_line(text, "gen_ai_client_token_usage_count{" + chat + ",gen_ai_token_type=\"output\"} 3"));
  CHECK(has_line(text, R"(chatcap_requests_total{server_address="127.0.0.1",server_port="8077",dialect="chat"} 3)"));
  CHECK(has_line(text, R"(chatcap_requests_total{server_address="127.0.0.1",server_port="8077",dialect="messages"} 1)"));
  CHECK(has_line(text, "chatcap_exchanges_total{" + chat + ",state=\"complete\"} 3"));
  CHECK(text.find(R"(gen_ai_request_model="claude-like",state="aborted"} 1)") != std::string::npos);
  CHECK(has_line(text, R"(chatcap_server_deaths_total{server_address="127.0.0.1",server_port="8077",kind="engine_dead"} 1)"));
  CHECK(has_line(text, R"(chatcap_risky_requests_total{risk="structured_output_without_constraint"} 1)"));
  CHECK(has_line(text, R"(chatcap_capture_drops_total{where="kernel"} 3)"));
  CHECK(has_line(text, R"(chatcap_capture_drops_total{where="queue"} 4)"));
  CHECK(has_line(text, "chatcap_records_lost_total 5"));
  CHECK(has_line(text, "chatcap_log_bytes_total 6789"));
}

TEST_CASE("metrics: models past the cap fold into other; captured label text cannot break the format",
          "[metrics]") {
  Next next;
  MetricsConfig config;
  config.max_models = 2;
  Metrics metrics(next, next, config);
  for (const std::string& model : {std::string("a"), std::string("b"), std::string("c"),
                                   std::string("evil\"} 1\nfake_metric 9\\"), std::string(500, 'x')}) {
    Exchange ex = exchange(model.substr(0, 8), "/v1/chat/completions", model);
    metrics.on_request_complete(ex);
    metrics.on_exchange_end(ex);
  }
  const std::string text = metrics.exposition();
  CHECK(text.find(R"(gen_ai_request_model="a")") != std::string::npos);
  CHECK(text.find(R"(gen_ai_request_model="b")") != std::string::npos);
  CHECK(text.find(R"(gen_ai_request_model="c")") == std::string::npos);
  CHECK(text.find("gen_ai_server_request_duration_seconds_count{server_address=\"127.0.0.1\",server_port=\"8077\","
                  "gen_ai_operation_name=\"chat\",dialect=\"chat\",gen_ai_request_model=\"other\"} 3") != std::string::npos);
  CHECK(text.find("\nfake_metric") == std::string::npos);
  // Every sample line is NAME{labels} VALUE or NAME VALUE; comments start with #.
  std::size_t at = 0;
  while (at < text.size()) {
    const std::size_t end = text.find('\n', at);
    REQUIRE(end != std::string::npos);
    const std::string line = text.substr(at, end - at);
    at = end + 1;
    if (line.starts_with("#")) continue;
    INFO(line);
    CHECK((line.starts_with("gen_ai_") || line.starts_with("chatcap_")));
  }
}

TEST_CASE("metrics: listen addresses", "[metrics]") {
  std::string address;
  std::uint16_t port = 0;
  REQUIRE(parse_listen_address("9477", address, port));
  CHECK((address == "127.0.0.1" && port == 9477));
  REQUIRE(parse_listen_address(":9478", address, port));
  CHECK((address == "127.0.0.1" && port == 9478));
  REQUIRE(parse_listen_address("0.0.0.0:80", address, port));
  CHECK((address == "0.0.0.0" && port == 80));
  REQUIRE(parse_listen_address("[::1]:9477", address, port));
  CHECK((address == "::1" && port == 9477));
  for (const char* bad : {"", "host:80", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:x", "1.2.3.4:"}) {
    INFO(bad);
    CHECK_FALSE(parse_listen_address(bad, address, port));
  }
}
