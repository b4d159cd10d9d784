// The request summary: what a request asks for, in any dialect, read once.
#include "chatcap/request_summary.hpp"

#include <string>

#include <catch2/catch.hpp>

namespace chatcap {

// ---------------------------------------------------------------------------------------

TEST_CASE("request summary: request summary of a streamed request with structured outputs",
          "[request_summary]") {
  const RequestSummary summary = summarize_request(
      R"({"model":"gpt-oss-120b","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"},{"role":"assistant","content":"{\"x\":[1,2]}"}],"stream":true,"max_tokens":400,"structured_outputs":{"json":null}})");
  CHECK(summary.json_valid);
  CHECK(summary.model == "gpt-oss-120b");
  CHECK(summary.stream == true);
  CHECK(summary.max_tokens == 400);
  CHECK(summary.messages == 3);
  CHECK(summary.tools == 0);
  CHECK_FALSE(summary.n.has_value());
  CHECK(summary.structured_output_json == R"({"structured_outputs":{"json":null}})");
}

TEST_CASE("request summary: structured-output fields are copied verbatim", "[request_summary]") {
  SECTION("json_object false, with spaces around") {
    const auto summary = summarize_request(
        "{ \"model\" : \"m\", \"structured_outputs\" : {\"json_object\": false} \n, \"stream\": false }");
    CHECK(summary.json_valid);
    CHECK(summary.stream == false);
    CHECK(summary.structured_output_json == R"({"structured_outputs":{"json_object": false}})");
  }
  SECTION("response_format text") {
    const auto summary =
        summarize_request(R"({"messages":[],"response_format":{"type":"text"}})");
    CHECK(summary.structured_output_json == R"({"response_format":{"type":"text"}})");
    CHECK(summary.messages == 0);
  }
  SECTION("guided_* of every kind, null included, in body order") {
    const auto summary = summarize_request(
        R"({"guided_json":{"type":"object","properties":{"a":{"type":"integer"}}},"guided_regex":"\\d+ ","guided_choice":["yes","no"],"guided_grammar":null,"guided_decoding_backend":"xgrammar","guided_whitespace_pattern":"[ ]?","model":"m"})");
    CHECK(summary.json_valid);
    CHECK(summary.structured_output_json ==
          R"({"guided_json":{"type":"object","properties":{"a":{"type":"integer"}}},"guided_regex":"\\d+ ","guided_choice":["yes","no"],"guided_grammar":null,"guided_decoding_backend":"xgrammar","guided_whitespace_pattern":"[ ]?"})");
  }
  SECTION("tools and tool_choice") {
    const auto summary = summarize_request(
        R"({"model":"m","tools":[{"type":"function","function":{"name":"a"}},{"type":"function","function":{"name":"b"}}],"tool_choice":"auto","n":2,"max_completion_tokens":50})");
    CHECK(summary.tools == 2);
    CHECK(summary.n == 2);
    CHECK(summary.max_tokens == 50);
    CHECK(summary.structured_output_json == R"({"tool_choice":"auto"})");
  }
  SECTION("max_tokens wins over max_completion_tokens, in any order; null falls back") {
    CHECK(summarize_request(R"({"max_completion_tokens":50,"max_tokens":7})").max_tokens == 7);
    CHECK(summarize_request(R"({"max_tokens":null,"max_completion_tokens":50})").max_tokens ==
          50);
    CHECK_FALSE(summarize_request(R"({"max_tokens":"many"})").max_tokens.has_value());
  }
  SECTION("an escaped key is still recognised") {
    const auto summary = summarize_request(R"({"guided\u005fjson":{"a":1}})");
    CHECK(summary.structured_output_json == R"({"guided_json":{"a":1}})");
  }
  SECTION("none present") {
    const auto summary = summarize_request(R"({"model":"m","messages":[{"role":"user"}]})");
    CHECK(summary.json_valid);
    CHECK(summary.structured_output_json.empty());
    CHECK(summary.messages == 1);
    CHECK_FALSE(summary.stream.has_value());
    CHECK_FALSE(summary.max_tokens.has_value());
  }
  SECTION("a broken structured value is kept as a string, and the body is not valid") {
    const auto summary = summarize_request(R"({"model":"m","guided_json":{"a":tru}})");
    CHECK_FALSE(summary.json_valid);
    CHECK(summary.model == "m");
    CHECK(summary.structured_output_json == R"({"guided_json":"{\"a\":tru}"})");
  }
}

TEST_CASE("request summary: request summary of bodies that are not a JSON object", "[request_summary]") {
  for (const char* body : {"", "   ", "not json", "{\"model\": \"x\", ", "[1,2,3]", "\"text\"",
                           "42", "null", "{\"model\":\"x\"} {}", "{\"a\":1}}",
                           "{\"messages\":[1,2"}) {
    INFO("body: " << body);
    RequestSummary summary;
    REQUIRE_NOTHROW(summary = summarize_request(body));
    CHECK_FALSE(summary.json_valid);
  }
  // Broken after the structured field: what was read is kept, and the object is closed.
  const auto cut = summarize_request(R"({"structured_outputs":{"json":null},"messages":[1 2]})");
  CHECK_FALSE(cut.json_valid);
  CHECK(cut.structured_output_json == R"({"structured_outputs":{"json":null}})");
}


}  // namespace chatcap

namespace chatcap {

TEST_CASE("request summary: every dialect's request says what it asks", "[request_summary]") {
  SECTION("completions: prompts, max_tokens") {
    const RequestSummary s = summarize_request(
        R"({"model":"m","prompt":["a","b","c"],"max_tokens":7,"stream":true,"echo":true,"logprobs":2})",
        Dialect::completions);
    REQUIRE(s.json_valid);
    CHECK(s.dialect == Dialect::completions);
    CHECK(s.prompts == 3);
    CHECK_FALSE(s.input_items);
    CHECK(s.max_tokens == 7);
    CHECK(s.stream == true);
    CHECK(s.echo == true);
    CHECK(s.logprobs == 2);
    CHECK(summarize_request(R"({"prompt":"one"})", Dialect::completions).prompts == 1);
  }
  SECTION("responses: input items, max_output_tokens, text.format with the structured output") {
    const RequestSummary s = summarize_request(
        R"({"model":"m","input":[{"role":"user","content":"hi"},{"type":"function_call_output","call_id":"c","output":"1"}],)"
        R"("instructions":"be brief","max_output_tokens":64,"tools":[{"type":"function","name":"f"}],)"
        R"("text":{"format":{"type":"json_schema","name":"x","schema":{}}},"structured_outputs":{"json":""}})",
        Dialect::responses);
    REQUIRE(s.json_valid);
    CHECK(s.input_items == 2);
    CHECK(s.max_tokens == 64);
    CHECK(s.tools == 1);
    CHECK(s.structured_output_json ==
          R"({"text":{"format":{"type":"json_schema","name":"x","schema":{}}},"structured_outputs":{"json":""}})");
    CHECK(summarize_request(R"({"input":"hello"})", Dialect::responses).input_items == 1);
    // `text` is a structured-output field of Responses only.
    CHECK(summarize_request(R"({"text":{"format":{}}})", Dialect::chat).structured_output_json.empty());
  }
  SECTION("messages: messages, max_tokens, tools") {
    const RequestSummary s = summarize_request(
        R"({"model":"claude","system":"s","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}],)"
        R"("max_tokens":1024,"tools":[{"name":"t","input_schema":{}}],"stream":false})",
        Dialect::messages);
    REQUIRE(s.json_valid);
    CHECK(s.messages == 2);
    CHECK(s.max_tokens == 1024);
    CHECK(s.tools == 1);
    CHECK(s.stream == false);
  }
  SECTION("chat: max_tokens before max_completion_tokens before max_output_tokens") {
    CHECK(summarize_request(R"({"max_completion_tokens":5,"max_tokens":9})").max_tokens == 9);
    CHECK(summarize_request(R"({"max_completion_tokens":5,"max_output_tokens":3})").max_tokens == 5);
    CHECK(summarize_request(R"({"max_output_tokens":3})").max_tokens == 3);
  }
}

}  // namespace chatcap
