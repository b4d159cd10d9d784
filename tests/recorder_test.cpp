// The recorder's record formatting: credentials redacted to a fingerprint of their own value.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "chatcap/recorder.hpp"
#include "chatcap/risks.hpp"

using namespace chatcap;

namespace {

Exchange request_with_key(const std::string& key) {
  Exchange ex;
  ex.id = "0123456789ab";
  ex.request.method = "POST";
  ex.request.target = "/v1/chat/completions";
  ex.request.complete = true;
  ex.request.headers = {{"Host", "127.0.0.1:8077"}, {"Authorization", "Bearer " + key}, {"Cookie", key}};
  return ex;
}

}  // namespace

TEST_CASE("recorder: each credential is redacted to the fingerprint of its own value", "[recorder]") {
  // More keys than the writer remembers, in turns and back again: a remembered fingerprint
  // must never be handed to another value.
  std::vector<std::string> keys;
  for (int i = 0; i < 7; ++i) keys.push_back("sk-test-" + std::to_string(i) + std::string(static_cast<std::size_t>(i), 'k'));
  keys.push_back(std::string(2000, 'c'));  // longer than what is remembered
  for (int round = 0; round < 3; ++round) {
    for (std::size_t i = 0; i < keys.size(); ++i) {
      const std::string& key = keys[(i * 3 + static_cast<std::size_t>(round)) % keys.size()];
      const std::string line = format_request_record(request_with_key(key), true);
      INFO("key " << key.substr(0, 20) << " round " << round);
      CHECK(line.find(key) == std::string::npos);
      auto headers = nlohmann::json::parse(line)["headers"];
      REQUIRE(headers.size() == 3);
      CHECK(headers[0][1] == "127.0.0.1:8077");
      CHECK(headers[1][1] == redact_value("Bearer " + key));
      CHECK(headers[2][1] == redact_value(key));
    }
  }
  CHECK(redact_value("Bearer a") != redact_value("Bearer b"));
  CHECK_THAT(redact_value("x"), Catch::StartsWith("<redacted sha256:") && Catch::EndsWith(">"));
  // Not redacting keeps the value as sent.
  const std::string plain = format_request_record(request_with_key("sk-visible"), false);
  CHECK(nlohmann::json::parse(plain)["headers"][1][1] == "Bearer sk-visible");
}

namespace {

struct Lines : RecordSink {
  std::vector<std::pair<RecordType, std::string>> lines;
  std::vector<std::string> notices;
  void write_record(RecordType type, std::string_view, std::string_view line) override {
    lines.emplace_back(type, std::string(line));
  }
  void on_risk_notice(std::string_view sentence) override { notices.emplace_back(sentence); }
};

Exchange watched_killer() {
  Exchange ex = request_with_key("k");
  ex.id = "feedfacecafe";
  ex.request.target = "/v1/completions";
  ex.request.body.bytes = R"({"prompt":"x","structured_outputs":{"json":""}})";
  ex.request.body.total = ex.request.body.bytes.size();
  ex.recorded = false;
  ex.watched_only = true;
  auto summary = std::make_shared<RequestSummary>(summarize_request(ex.request.body.bytes, Dialect::completions));
  ex.request.risks = assess_risks(*summary, ex.request.target);
  ex.request.summary = summary;
  return ex;
}

}  // namespace

TEST_CASE("recorder: a watched-only request goes to the watched log, with its risks, and is announced once",
          "[recorder]") {
  Lines sink;
  Recorder recorder({}, sink);
  Exchange ex = watched_killer();
  recorder.on_request_complete(ex);
  REQUIRE(sink.lines.size() == 1);
  CHECK(sink.lines[0].first == RecordType::watched_request);
  auto record = nlohmann::json::parse(sink.lines[0].second);
  CHECK(record["watched_only"] == true);
  CHECK(record["target"] == "/v1/completions");
  REQUIRE(record["risks"].size() == 1);
  CHECK(record["risks"][0]["id"] == "structured_output_without_constraint");
  CHECK(record["risks"][0]["ref"] == "vllm-project/vllm#45346");
  CHECK(record["summary"]["structured_output"] == nlohmann::json::parse(R"({"structured_outputs":{"json":""}})"));
  REQUIRE(sink.notices.size() == 1);
  CHECK_THAT(sink.notices[0], Catch::Contains("request feedfacecafe (POST /v1/completions from") &&
                                  Catch::Contains("structured_output_without_constraint") &&
                                  Catch::Contains("chatcap show feedfacecafe"));
  ex.state = ExchangeState::aborted;
  recorder.on_exchange_end(ex);
  CHECK(sink.lines.back().first == RecordType::watched_exchange);
  CHECK(nlohmann::json::parse(sink.lines.back().second)["watched_only"] == true);
  CHECK(recorder.watched_requests_written() == 1);
  CHECK(recorder.requests_written() == 0);

  // A ring request without a risk: no field, no notice.
  Exchange plain = request_with_key("k");
  recorder.on_request_complete(plain);
  CHECK(sink.lines.back().first == RecordType::request);
  CHECK_FALSE(nlohmann::json::parse(sink.lines.back().second).contains("risks"));
  CHECK_FALSE(nlohmann::json::parse(sink.lines.back().second).contains("watched_only"));
  CHECK(sink.notices.size() == 1);
}

TEST_CASE("recorder: a notice shows captured text only as printable ASCII", "[recorder]") {
  Exchange ex = watched_killer();
  ex.request.target = "/v1/completions?\x1b]0;owned\x07\n" + std::string(300, 'a');
  const std::string notice = risk_notice(ex);
  CHECK(notice.find('\x1b') == std::string::npos);
  CHECK(notice.find('\n') == std::string::npos);
  CHECK(notice.find('\x07') == std::string::npos);
  CHECK(notice.size() < 900);
}

TEST_CASE("recorder: a death pins its watched-only suspects' requests into the ring, before its record",
          "[recorder]") {
  Lines sink;
  Recorder recorder({}, sink);
  Exchange killer = watched_killer();
  Exchange ring = request_with_key("r");
  recorder.on_request_complete(killer);  // its record written: the summary is let go
  CHECK_FALSE(killer.request.summary);
  const auto original = nlohmann::json::parse(sink.lines.at(0).second);
  sink.lines.clear();
  ServerDown down;
  down.kind = "engine_dead";
  Suspect s1;
  s1.id = killer.id;
  s1.watched_only = true;
  s1.exchange = &killer;
  s1.risks = killer.request.risks;
  Suspect s2;
  s2.id = ring.id;
  s2.exchange = &ring;  // in the ring already: nothing to pin
  down.suspects = {s1, s2};
  recorder.on_server_down(down);
  REQUIRE(sink.lines.size() == 2);
  CHECK(sink.lines[0].first == RecordType::pinned_request);
  auto pinned = nlohmann::json::parse(sink.lines[0].second);
  CHECK(pinned["id"] == killer.id);
  CHECK(pinned["pinned"] == true);
  CHECK(pinned["watched_only"] == true);
  CHECK(pinned["body"] == killer.request.body.bytes);
  // The same request record as was written when it arrived, summary and risks included.
  CHECK(pinned["summary"] == original["summary"]);
  CHECK(pinned["risks"] == original["risks"]);
  auto without_copy_marker = pinned;
  without_copy_marker.erase("pinned");
  CHECK(without_copy_marker == original);
  CHECK(sink.lines[0].second.back() == '\n');
  CHECK(sink.lines[1].first == RecordType::server_down);
  auto record = nlohmann::json::parse(sink.lines[1].second);
  CHECK(record["suspects"][0]["watched_only"] == true);
  CHECK(record["suspects"][0]["risks"] == nlohmann::json::array({"structured_output_without_constraint"}));
  CHECK_FALSE(record["suspects"][1].contains("watched_only"));
}
