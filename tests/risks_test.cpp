// The risk table: each known engine killer matched on the request bodies that carry it, and
// not on the nearest bodies that do not.
#include <catch2/catch.hpp>

#include <set>
#include <string>
#include <vector>

#include "chatcap/risks.hpp"

using namespace chatcap;

namespace {

constexpr const char* kChat = "/v1/chat/completions";
constexpr const char* kCompletions = "/v1/completions";
constexpr const char* kResponses = "/v1/responses";
constexpr const char* kMessages = "/v1/messages";

// The ids a request body to `target` carries.
std::set<std::string> risk_ids(const std::string& body, const char* target = kChat) {
  const RequestSummary summary = summarize_request(body, dialect_of(target));
  REQUIRE(summary.json_valid);
  std::set<std::string> ids;
  for (const RiskEntry* risk : risks_in(assess_risks(summary, target))) ids.emplace(risk->id);
  return ids;
}

std::string chat(const std::string& extra) {
  return R"({"model":"gpt-oss-120b","messages":[{"role":"user","content":"hi"}])" +
         (extra.empty() ? std::string() : "," + extra) + "}";
}

std::string int_list(int n) {
  std::string out = "[";
  for (int i = 0; i < n; ++i) out += (i ? "," : "") + std::to_string(i + 10);
  return out + "]";
}

std::string bias_object(int n) {
  std::string out = "{";
  for (int i = 0; i < n; ++i) out += (i ? ",\"" : "\"") + std::to_string(i + 10) + "\":-100";
  return out + "}";
}

using Ids = std::set<std::string>;

}  // namespace

TEST_CASE("risks: the table is well formed: unique ids, a reference and an explanation each", "[risks]") {
  std::set<std::string_view> ids;
  for (const RiskEntry& risk : risk_table()) {
    INFO(risk.id);
    CHECK(ids.insert(risk.id).second);
    CHECK_FALSE(risk.shape.empty());
    CHECK_FALSE(risk.versions.empty());
    CHECK(risk.ref.starts_with("vllm-project/vllm#"));
    CHECK_FALSE(risk.why.empty());
    CHECK(risk.matches != nullptr);
  }
  // The seed incident's id is a contract.
  CHECK(ids.count("structured_output_without_constraint") == 1);
  CHECK(risk_table().size() <= kMaxRisks);
}

TEST_CASE("risks: structured_output_without_constraint, on every generation endpoint", "[risks]") {
  const Ids seed{"structured_output_without_constraint"};
  for (const char* target : {kChat, kCompletions, kResponses, kMessages}) {
    INFO(target);
    for (const char* so : {R"({"json":null})", R"({"json":""})", R"({"json":"  "})", R"({"json_object":false})",
                           R"({})", R"({"choice":[]})", R"({"regex":"","grammar":null})",
                           R"({"disable_fallback":true})", R"({"structural_tag":""})"}) {
      INFO(so);
      CHECK(risk_ids(chat(std::string("\"structured_outputs\":") + so), target) == seed);
      CHECK(risk_ids(chat(std::string("\"guided_decoding\":") + so), target) == seed);
    }
  }
  // The legacy top-level fields, set to empty values.
  for (const char* legacy : {R"("guided_json":"")", R"("guided_regex":"")", R"("guided_choice":[])",
                             R"("guided_grammar":"")", R"("guided_grammar":" \n")"}) {
    INFO(legacy);
    CHECK(risk_ids(chat(legacy)) == seed);
  }
  // Negative: a usable constraint anywhere, or no structured output asked at all.
  for (const char* fine : {R"("structured_outputs":{"json":{"type":"object"}})", R"("structured_outputs":{"json":{}})",
                           R"("structured_outputs":{"json_object":true})", R"("structured_outputs":{"regex":"a+"})",
                           R"("structured_outputs":{"choice":["a","b"]})", R"("structured_outputs":{"grammar":"root ::= x"})",
                           R"("structured_outputs":{"structural_tag":{"type":"structural_tag"}})",
                           R"("structured_outputs":{"json":null,"choice":["yes","no"]})", R"("structured_outputs":null)",
                           R"("guided_json":null)", R"("guided_json":{"type":"object"})", R"("guided_regex":"\\d+")",
                           R"("guided_choice":["x"])", R"("guided_decoding":null)",
                           R"("response_format":{"type":"json_object"})", ""}) {
    INFO(fine);
    CHECK(risk_ids(chat(fine)).empty());
  }
  CHECK(structured_output_lacks_constraint(R"({"structured_outputs":{"json":null}})"));
  CHECK_FALSE(structured_output_lacks_constraint(R"({"structured_outputs":{"json":"{}"}})"));
  CHECK_FALSE(structured_output_lacks_constraint(""));
  CHECK_FALSE(structured_output_lacks_constraint("not json"));
}

TEST_CASE("risks: response_format of type text", "[risks]") {
  CHECK(risk_ids(chat(R"("response_format":{"type":"text"})")) == Ids{"response_format_text"});
  CHECK(risk_ids(chat(R"("response_format":{"type":"json_object"})")).empty());
  CHECK(risk_ids(chat(R"("response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{}}})")).empty());
  CHECK(risk_ids(chat(R"("response_format":"text")")).empty());
}

TEST_CASE("risks: json_object output with a required tool choice", "[risks]") {
  const std::string tools = R"("tools":[{"type":"function","function":{"name":"f","parameters":{}}}])";
  CHECK(risk_ids(chat(tools + R"(,"response_format":{"type":"json_object"},"tool_choice":"required")")) ==
        Ids{"json_object_with_required_tool_choice"});
  CHECK(risk_ids(chat(tools + R"(,"response_format":{"type":"json_object"},"tool_choice":"auto")")).empty());
  CHECK(risk_ids(chat(tools + R"(,"response_format":{"type":"text"},"tool_choice":"required")")) ==
        Ids{"response_format_text"});
  CHECK(risk_ids(chat(tools + R"(,"tool_choice":"required")")).empty());
}

TEST_CASE("risks: sampling lists longer than the engine's GPU tensors", "[risks]") {
  CHECK(risk_ids(chat("\"logit_bias\":" + bias_object(1025))) == Ids{"too_many_logit_bias"});
  CHECK(risk_ids(chat("\"logit_bias\":" + bias_object(1024))).empty());
  CHECK(risk_ids(chat("\"allowed_token_ids\":" + int_list(1025))) == Ids{"too_many_allowed_token_ids"});
  CHECK(risk_ids(chat("\"allowed_token_ids\":" + int_list(1024))).empty());
  CHECK(risk_ids(chat("\"stop_token_ids\":" + int_list(127))) == Ids{"too_many_stop_token_ids"});
  CHECK(risk_ids(chat("\"stop_token_ids\":" + int_list(126))).empty());
  // On the completions endpoint too, and all three at once.
  CHECK(risk_ids(R"({"prompt":"x","logit_bias":)" + bias_object(2000) + R"(,"allowed_token_ids":)" + int_list(2000) +
                     R"(,"stop_token_ids":)" + int_list(200) + "}",
                 kCompletions) == Ids{"too_many_logit_bias", "too_many_allowed_token_ids", "too_many_stop_token_ids"});
  // Not a list or not an object: nothing to count.
  CHECK(risk_ids(chat(R"("logit_bias":null,"allowed_token_ids":"1,2,3","stop_token_ids":{})")).empty());
}

TEST_CASE("risks: echo with logprobs and max_tokens 0 on /v1/completions", "[risks]") {
  const Ids echo{"echo_logprobs_zero_max_tokens"};
  CHECK(risk_ids(R"({"prompt":"hello","echo":true,"logprobs":1,"max_tokens":0})", kCompletions) == echo);
  CHECK(risk_ids(R"({"prompt":"hello","echo":true,"logprobs":5,"max_tokens":0})", "/v1/completions?x=1") == echo);
  CHECK(risk_ids(R"({"prompt":"hello","echo":true,"logprobs":1,"max_tokens":1})", kCompletions).empty());
  CHECK(risk_ids(R"({"prompt":"hello","echo":false,"logprobs":1,"max_tokens":0})", kCompletions).empty());
  CHECK(risk_ids(R"({"prompt":"hello","echo":true,"logprobs":0,"max_tokens":0})", kCompletions).empty());
  CHECK(risk_ids(R"({"prompt":"hello","echo":true,"logprobs":null,"max_tokens":0})", kCompletions).empty());
  CHECK(risk_ids(R"({"prompt":"hello","echo":true,"logprobs":1})", kCompletions).empty());
  // The chat endpoint has no echo: not this shape.
  CHECK(risk_ids(R"({"messages":[],"echo":true,"logprobs":true,"max_tokens":0})", kChat).empty());
}

TEST_CASE("risks: n > 1 in a request that sets a priority", "[risks]") {
  CHECK(risk_ids(chat(R"("n":2,"priority":1)")) == Ids{"n_with_priority_scheduling"});
  CHECK(risk_ids(chat(R"("n":4,"priority":0)"), kCompletions) == Ids{"n_with_priority_scheduling"});
  CHECK(risk_ids(chat(R"("n":1,"priority":1)")).empty());
  CHECK(risk_ids(chat(R"("n":2)")).empty());
  CHECK(risk_ids(chat(R"("n":2,"priority":null)")).empty());
}

TEST_CASE("risks: an ordinary request carries none", "[risks]") {
  CHECK(risk_ids(chat(R"("stream":true,"max_tokens":400,"temperature":0.2,"logprobs":true,"top_logprobs":5,)"
                      R"("stop":["\n\n"],"stop_token_ids":[1,2,3],"logit_bias":{"50256":-100},"n":3)"))
            .empty());
  CHECK(first_risk(0) == nullptr);
  CHECK(risks_in(0).empty());
}

TEST_CASE("risks: the analyzer fills summary and risks of every request with a record, once", "[risks]") {
  struct Next : ExchangeSink {
    int requests = 0;
    void on_request_complete(Exchange&) override { ++requests; }
    void on_exchange_end(Exchange&) override {}
  } next;
  RequestAnalyzer analyzer(next);
  auto request = [](std::string target, std::string body, bool recorded, bool watched) {
    Exchange ex;
    ex.request.method = "POST";
    ex.request.target = std::move(target);
    ex.request.body.bytes = std::move(body);
    ex.request.complete = true;
    ex.recorded = recorded;
    ex.watched_only = watched;
    return ex;
  };
  const std::string killer = chat(R"("structured_outputs":{"json_object":false})");
  Exchange ring = request(kChat, killer, true, false);
  Exchange watched = request(kCompletions, killer, false, true);
  Exchange ignored = request("/metrics", killer, false, false);
  Exchange cut = request(kChat, killer, true, false);
  cut.request.complete = false;
  for (Exchange* ex : {&ring, &watched, &ignored, &cut}) analyzer.on_request_complete(*ex);
  CHECK(next.requests == 4);
  REQUIRE(ring.request.summary);
  CHECK(ring.request.summary->model == "gpt-oss-120b");
  CHECK(first_risk(ring.request.risks)->id == "structured_output_without_constraint");
  REQUIRE(watched.request.summary);
  CHECK(watched.request.risks == ring.request.risks);
  CHECK_FALSE(ignored.request.summary);
  CHECK(ignored.request.risks == 0);
  CHECK_FALSE(cut.request.summary);  // an incomplete body is not what the engine would see
  CHECK(analyzer.risky_requests() == 2);
}
