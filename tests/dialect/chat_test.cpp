// Chat completions: the reader of streamed chunks and whole bodies, against vLLM's shapes.
#include "chatcap/dialect/chat.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "chatcap/sse.hpp"

namespace chatcap {
namespace {

// One SSE event as the decoder would hand it over.
struct TimedData {
  timestamp_us ts = 0;
  std::string data;
  std::string type = "message";
};

// A whole (non-streamed) body, as the content layer reads one.
bool assemble_chat_completion(std::string_view body, Answer& out) {
  ChatReader reader;
  return reader.read_body(body, out);
}

Answer assemble(const std::vector<TimedData>& events) {
  ChatReader assembler;
  for (const auto& e : events) {
    SseEvent event;
    event.ts = e.ts;
    event.type = e.type;
    event.data = e.data;
    assembler.on_sse_event(event);
  }
  return assembler.answer();
}

// vLLM serving gpt-oss with a reasoning parser: a role chunk, reasoning deltas, content
// deltas (one with escapes), a finish chunk, a usage chunk with no choices, [DONE].
const std::string kChunkHead =
    R"({"id":"chatcmpl-9f","object":"chat.completion.chunk","created":1764000000,"model":"gpt-oss-120b","choices":[{"index":0,"delta":)";
const std::string kChunkTail = R"(,"logprobs":null,"finish_reason":null}]})";

std::string chunk(const std::string& delta) { return kChunkHead + delta + kChunkTail; }

std::vector<TimedData> gpt_oss_stream() {
  return {
      {1000, chunk(R"({"role":"assistant","content":"","reasoning_content":null})")},
      {2000, chunk(R"({"reasoning_content":"The user"})")},
      {2500, chunk(R"({"reasoning_content":" says hi."})")},
      {4000, chunk(R"({"content":"Caf\u00e9 \"ol\u00e9\"\n"})")},
      {4100,
       kChunkHead + R"({"content":"Bye!"},"logprobs":null,"finish_reason":"stop","stop_reason":null}]})"},
      {5000,
       R"({"id":"chatcmpl-9f","object":"chat.completion.chunk","created":1764000000,"model":"gpt-oss-120b","choices":[],"usage":{"prompt_tokens":72,"total_tokens":90,"completion_tokens":18}})"},
      {5100, "[DONE]"},
  };
}

void check_gpt_oss_answer(const Answer& answer) {
  CHECK(answer.model == "gpt-oss-120b");
  CHECK(answer.reasoning == "The user says hi.");
  CHECK(answer.content == "Caf\xC3\xA9 \"ol\xC3\xA9\"\nBye!");
  CHECK(answer.finish_reason == "stop");
  CHECK(answer.usage_json == R"({"prompt_tokens":72,"total_tokens":90,"completion_tokens":18})");
  CHECK(answer.error_json.empty());
  CHECK(answer.done);
  CHECK(answer.events == 7);
  CHECK(answer.bad_events == 0);
  CHECK(answer.tool_calls.empty());
  CHECK_FALSE(answer.text_truncated);
}

std::string as_sse(const std::vector<TimedData>& events) {
  std::string text;
  for (const auto& e : events) {
    if (e.type != "message") text += "event: " + e.type + "\r\n";
    text += "data: " + e.data + "\r\n\r\n";
  }
  return text;
}

}  // namespace

TEST_CASE("chat: vLLM gpt-oss stream with reasoning, content, usage and [DONE]", "[chat]") {
  const Answer answer = assemble(gpt_oss_stream());
  check_gpt_oss_answer(answer);

  SECTION("times: first event, first token, gaps between token events") {
    CHECK(answer.first_event_ts == 1000);  // the role chunk carries no text
    CHECK(answer.first_token_ts == 2000);
    CHECK(answer.last_token_ts == 4100);
    CHECK(answer.last_event_ts == 5100);
    CHECK(answer.token_events == 4);
    CHECK(answer.token_gaps_us == std::vector<std::uint32_t>{500, 1500, 100});
    // Nearest rank over {100, 500, 1500} us.
    CHECK(answer.gap_percentile_ms(50) == Approx(0.5));
    CHECK(answer.gap_percentile_ms(99) == Approx(1.5));
    CHECK(answer.gap_percentile_ms(0) == Approx(0.1));
    CHECK(answer.gap_percentile_ms(33) == Approx(0.1));
    CHECK(answer.gap_percentile_ms(34) == Approx(0.5));
    CHECK(answer.gap_percentile_ms(100) == Approx(1.5));
  }
}

TEST_CASE("chat: the same stream through the SSE decoder, split at every byte", "[chat]") {
  const std::string stream = as_sse(gpt_oss_stream());
  for (std::size_t split = 0; split <= stream.size(); ++split) {
    SseDecoder decoder;
    ChatReader assembler;
    decoder.feed(1, std::string_view(stream).substr(0, split), assembler);
    decoder.feed(2, std::string_view(stream).substr(split), assembler);
    INFO("split at " << split);
    check_gpt_oss_answer(assembler.answer());
    REQUIRE(assembler.answer().events == 7);
  }
}

TEST_CASE("chat: vLLM sending reasoning under both names takes it once", "[chat]") {
  const Answer answer = assemble({
      {10, chunk(R"({"reasoning_content":"Hm","reasoning":"Hm"})")},
      {20, chunk(R"({"reasoning":", ok"})")},
      {30, chunk(R"({"reasoning_content":null,"reasoning":"."})")},
  });
  CHECK(answer.reasoning == "Hm, ok.");
}

TEST_CASE("chat: two tool calls whose arguments arrive in fragments", "[chat]") {
  const Answer answer = assemble({
      {100, chunk(R"({"role":"assistant","content":null})")},
      {200, chunk(R"({"tool_calls":[{"index":0,"id":"chatcmpl-tool-a","type":"function","function":{"name":"get_weather"}}]})")},
      {300, chunk(R"({"tool_calls":[{"index":0,"function":{"arguments":"{\"city\": "}}]})")},
      {400, chunk(R"({"tool_calls":[{"index":0,"id":null,"function":{"name":null,"arguments":"\"Paris\"}"}}]})")},
      {500, chunk(R"({"tool_calls":[{"index":1,"id":"chatcmpl-tool-b","type":"function","function":{"name":"get_time","arguments":""}}]})")},
      {600, chunk(R"({"tool_calls":[{"index":1,"function":{"arguments":"{\"tz\":"}}]})")},
      // Keys in another order: index after function.
      {700, chunk(R"({"tool_calls":[{"function":{"arguments":" \"CET\"}"},"index":1}]})")},
      {800, kChunkHead + R"({},"logprobs":null,"finish_reason":"tool_calls"}]})"},
      {900, "[DONE]"},
  });
  REQUIRE(answer.tool_calls.size() == 2);
  CHECK(answer.tool_calls[0].index == 0);
  CHECK(answer.tool_calls[0].id == "chatcmpl-tool-a");
  CHECK(answer.tool_calls[0].type == "function");
  CHECK(answer.tool_calls[0].name == "get_weather");
  CHECK(answer.tool_calls[0].arguments == R"({"city": "Paris"})");
  CHECK(answer.tool_calls[1].index == 1);
  CHECK(answer.tool_calls[1].id == "chatcmpl-tool-b");
  CHECK(answer.tool_calls[1].name == "get_time");
  CHECK(answer.tool_calls[1].arguments == R"({"tz": "CET"})");
  CHECK(answer.finish_reason == "tool_calls");
  CHECK(answer.content.empty());
  CHECK(answer.done);
  CHECK(answer.bad_events == 0);
  // Token events: the name at 200, argument text at 300, 400, 500 (name), 600, 700.
  CHECK(answer.first_token_ts == 200);
  CHECK(answer.token_gaps_us == std::vector<std::uint32_t>{100, 100, 100, 100, 100});
}

TEST_CASE("chat: tool calls are kept in index order whatever order they arrive in",
          "[chat]") {
  const Answer answer = assemble({
      {1, chunk(R"({"tool_calls":[{"index":2,"function":{"name":"c","arguments":"3"}},{"index":0,"function":{"name":"a","arguments":"1"}}]})")},
      {2, chunk(R"({"tool_calls":[{"index":1,"function":{"name":"b","arguments":"2"}},{"index":0,"function":{"arguments":"1"}}]})")},
  });
  REQUIRE(answer.tool_calls.size() == 3);
  CHECK(answer.tool_calls[0].name == "a");
  CHECK(answer.tool_calls[0].arguments == "11");
  CHECK(answer.tool_calls[1].name == "b");
  CHECK(answer.tool_calls[2].name == "c");
}

TEST_CASE("chat: tool calls past kMaxToolCalls are not kept, and that is flagged",
          "[chat]") {
  std::string calls;
  for (std::size_t i = 0; i < Answer::kMaxToolCalls + 10; ++i) {
    if (!calls.empty()) calls += ',';
    calls += R"({"index":)" + std::to_string(i * 1000) + R"(,"function":{"arguments":"x"}})";
  }
  const Answer answer = assemble({{1, chunk(R"({"tool_calls":[)" + calls + "]}")}});
  CHECK(answer.tool_calls.size() == Answer::kMaxToolCalls);
  CHECK(answer.text_truncated);
  CHECK(answer.tool_calls.back().index ==
        static_cast<std::int64_t>((Answer::kMaxToolCalls - 1) * 1000));
}

TEST_CASE("chat: only choice 0 is recorded, whatever the key order", "[chat]") {
  const Answer answer = assemble({
      {1, R"({"choices":[{"delta":{"content":"zero "},"index":0},{"delta":{"content":"ONE"},"index":1}]})"},
      {2, R"({"choices":[{"index":1,"delta":{"content":"ONE"},"finish_reason":"length"}]})"},
      {3, R"({"choices":[{"finish_reason":"stop","delta":{"content":"end"}}]})"},  // no index: 0
  });
  CHECK(answer.content == "zero end");
  CHECK(answer.finish_reason == "stop");
  CHECK(answer.token_events == 2);
}

TEST_CASE("chat: error objects in a stream", "[chat]") {
  SECTION("vLLM: data: {\"error\": {...}}") {
    const Answer answer = assemble({
        {1, chunk(R"({"content":"par"})")},
        {2, R"({"error": {"object": "error", "message": "EngineCore encountered an issue.", "type": "InternalServerError", "param": null, "code": 500}} )"},
        {3, "[DONE]"},
    });
    CHECK(answer.error_json ==
          R"({"object": "error", "message": "EngineCore encountered an issue.", "type": "InternalServerError", "param": null, "code": 500})");
    CHECK(answer.content == "par");
    CHECK(answer.bad_events == 0);
    CHECK(answer.error_ts == 2);       // when the stream said it failed: a death is dated by it
    CHECK(answer.last_event_ts == 3);  // not by the [DONE] after it
  }
  SECTION("event: error with a JSON object") {
    const Answer answer = assemble({{1, R"({"message":"overloaded","code":503})", "error"}, {2, "[DONE]"}});
    CHECK(answer.error_json == R"({"message":"overloaded","code":503})");
    CHECK(answer.error_ts == 1);
  }
  SECTION("event: error with an error object inside") {
    const Answer answer = assemble({{1, R"({"error":{"message":"x"}})", "error"}});
    CHECK(answer.error_json == R"({"message":"x"})");
  }
  SECTION("event: error with plain text is kept as a JSON string") {
    const Answer answer = assemble({{1, "Internal \"server\" error\tnow", "error"}});
    CHECK(answer.error_json == R"("Internal \"server\" error\tnow")");  // one escaper: the records'
    CHECK(answer.bad_events == 0);
  }
  SECTION("\"error\": null is not an error") {
    const Answer answer = assemble({{1, R"({"choices":[],"error":null})"}});
    CHECK(answer.error_json.empty());
  }
}

TEST_CASE("chat: unreadable data is counted and the stream goes on", "[chat]") {
  const Answer answer = assemble({
      {1, chunk(R"({"content":"a"})")},
      {2, "not json"},
      {3, R"({"choices":[{"index":0,"delta":{"content":"b)"},  // unterminated
      {4, "[1, 2]"},
      {5, "\"a string\""},
      {6, R"({"choices":[]} trailing)"},
      {7, ""},  // an empty event is a keep-alive, not an error
      {8, chunk(R"({"content":"c"})")},
      {9, " [DONE] \n"},
  });
  CHECK(answer.content == "ac");
  CHECK(answer.bad_events == 5);
  CHECK(answer.events == 9);
  CHECK(answer.done);
  CHECK(answer.error_json.empty());
}

TEST_CASE("chat: usage, last one wins, null ignored", "[chat]") {
  const Answer answer = assemble({
      {1, R"({"choices":[],"usage":{"completion_tokens":1}})"},
      {2, R"({"choices":[],"usage":{"completion_tokens":2}  ,"x":1})"},
      {3, R"({"choices":[],"usage":null})"},
  });
  CHECK(answer.usage_json == R"({"completion_tokens":2})");
}

TEST_CASE("chat: the first model seen is the answer's", "[chat]") {
  const Answer answer = assemble({
      {1, R"({"model":"first","choices":[]})"},
      {2, R"({"model":"second","choices":[]})"},
  });
  CHECK(answer.model == "first");
}

TEST_CASE("chat: text over the cap is cut at a UTF-8 boundary and flagged", "[chat]") {
  const std::string almost(Answer::kMaxTextBytes - 1, 'a');
  const Answer answer = assemble({
      {1, chunk(R"({"content":")" + almost + R"("})")},
      {2, chunk(R"({"content":"\u00e9"})")},  // 2 bytes: does not fit, and is not cut in half
  });
  CHECK(answer.content.size() == Answer::kMaxTextBytes - 1);
  CHECK(answer.text_truncated);
  CHECK(answer.token_events == 2);
}

TEST_CASE("chat: clear and reset forget everything", "[chat]") {
  ChatReader assembler;
  for (const auto& e : gpt_oss_stream()) {
    SseEvent event;
    event.ts = e.ts;
    event.type = e.type;
    event.data = e.data;
    assembler.on_sse_event(event);
  }
  assembler.start();
  const Answer& answer = assembler.answer();
  CHECK(answer.content.empty());
  CHECK(answer.reasoning.empty());
  CHECK(answer.usage_json.empty());
  CHECK(answer.model.empty());
  CHECK_FALSE(answer.done);
  CHECK(answer.events == 0);
  CHECK(answer.token_events == 0);
  CHECK(answer.first_token_ts == 0);
  CHECK(answer.token_gaps_us.empty());
  // And it assembles a second stream from scratch, the same way.
  for (const auto& e : gpt_oss_stream()) {
    SseEvent event;
    event.ts = e.ts;
    event.data = e.data;
    event.type = "message";
    assembler.on_sse_event(event);
  }
  check_gpt_oss_answer(assembler.answer());
}

// ---------------------------------------------------------------------------------------

TEST_CASE("chat: non-streamed chat.completion", "[chat]") {
  Answer answer;
  REQUIRE(assemble_chat_completion(
      R"({"id":"chatcmpl-1","object":"chat.completion","created":1764000000,"model":"gpt-oss-120b","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!","refusal":null,"annotations":null,"audio":null,"function_call":null,"tool_calls":[],"reasoning_content":"Greet back."},"logprobs":null,"finish_reason":"stop","stop_reason":null}],"usage":{"prompt_tokens":10,"total_tokens":15,"completion_tokens":5,"prompt_tokens_details":null},"prompt_logprobs":null,"kv_transfer_params":null}
)",
      answer));
  CHECK(answer.model == "gpt-oss-120b");
  CHECK(answer.content == "Hello!");
  CHECK(answer.reasoning == "Greet back.");
  CHECK(answer.finish_reason == "stop");
  CHECK(answer.usage_json ==
        R"({"prompt_tokens":10,"total_tokens":15,"completion_tokens":5,"prompt_tokens_details":null})");
  CHECK(answer.tool_calls.empty());
  CHECK(answer.error_json.empty());
}

TEST_CASE("chat: non-streamed tool calls", "[chat]") {
  Answer answer;
  REQUIRE(assemble_chat_completion(
      R"({"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}},{"id":"call_2","type":"function","function":{"name":"get_time","arguments":"{}"}}]},"finish_reason":"tool_calls"}]})",
      answer));
  REQUIRE(answer.tool_calls.size() == 2);
  CHECK(answer.tool_calls[0].index == 0);
  CHECK(answer.tool_calls[0].id == "call_1");
  CHECK(answer.tool_calls[0].name == "get_weather");
  CHECK(answer.tool_calls[0].arguments == R"({"city": "Paris"})");
  CHECK(answer.tool_calls[1].index == 1);
  CHECK(answer.tool_calls[1].id == "call_2");
  CHECK(answer.tool_calls[1].arguments == "{}");
  CHECK(answer.finish_reason == "tool_calls");
  CHECK(answer.content.empty());
}

TEST_CASE("chat: non-streamed error bodies keep the whole object", "[chat]") {
  SECTION("vLLM ErrorResponse") {
    const std::string body =
        R"({"object":"error","message":"This model's maximum context length is 8192 tokens.","type":"BadRequestError","param":null,"code":400})";
    Answer answer;
    CHECK(assemble_chat_completion(body + "\n", answer));
    CHECK(answer.error_json == body);
    CHECK(answer.content.empty());
  }
  SECTION("OpenAI-style {\"error\": {...}}") {
    const std::string body =
        R"({"error":{"message":"EngineDeadError","type":"InternalServerError","param":null,"code":500}})";
    Answer answer;
    CHECK(assemble_chat_completion(body, answer));
    CHECK(answer.error_json == body);
  }
}

TEST_CASE("chat: non-streamed bodies that are not a JSON object", "[chat]") {
  for (const char* body : {"", "Internal Server Error", "[]", "{\"choices\":[", "null"}) {
    INFO("body: " << body);
    Answer answer;
    CHECK_FALSE(assemble_chat_completion(body, answer));
  }
}

// ---------------------------------------------------------------------------------------
// Chunks read in one pass: keys matched exactly, in any order, values of any shape.

TEST_CASE("chat: keys are matched whole, not by their first letters", "[chat]") {
  const Answer answer = assemble({
      {1, R"({"models":"not-this","model":"m","choices":[{"indexes":1,"index":0,"deltas":{"content":"no"},"delta":{"contents":"no","content":"yes","reasonings":"no","tool_callsx":[{"index":0,"function":{"name":"no"}}]},"finish_reasons":"no","finish_reason":null}],"usages":{"a":1},"errors":{"message":"no"},"objects":"error"})"},
      {2, R"({"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"completion_tokens":1}})"},
  });
  CHECK(answer.model == "m");
  CHECK(answer.content == "yes");
  CHECK(answer.reasoning.empty());
  CHECK(answer.tool_calls.empty());
  CHECK(answer.finish_reason == "stop");
  CHECK(answer.usage_json == R"({"completion_tokens":1})");
  CHECK(answer.error_json.empty());
  CHECK(answer.bad_events == 0);
}

TEST_CASE("chat: a choice's fields in any order, with whitespace everywhere", "[chat]") {
  const Answer answer = assemble({
      // finish_reason and delta before index; choice 1 first.
      {1, " {\n \"choices\" : [ { \"finish_reason\" : \"length\" , \"delta\" : { \"content\" : \"ONE\" } , \"index\" : 1 } ,"
          "\n\t{ \"delta\" : { \"content\" : \"zero\" } , \"logprobs\" : null , \"index\" : 0 } ] , \"model\" : \"m\" } \n"},
      {2, R"({"choices":[{"finish_reason":"stop","logprobs":{"content":[{"token":"x"}]},"delta":{"reasoning_content":"r"},"index":0}]})"},
  });
  CHECK(answer.content == "zero");
  CHECK(answer.reasoning == "r");
  CHECK(answer.finish_reason == "stop");
  CHECK(answer.model == "m");
  CHECK(answer.token_events == 2);
  CHECK(answer.bad_events == 0);
}

TEST_CASE("chat: `object` says error however it is written", "[chat]") {
  SECTION("escaped") {
    const std::string data = R"({"object":"\u0065rror","message":"boom","code":500})";
    const Answer answer = assemble({{1, data}});
    CHECK(answer.error_json == data);
  }
  SECTION("the usual chunk kind, escaped or spaced, is no error") {
    const Answer answer = assemble({
        {1, R"({"object":"chat.completion.chunk\u0020","choices":[]})"},
        {2, R"({"object" : "chat.completion.chunk"  ,"choices":[]})"},
        {3, R"({"object":"chat.completion.chunk","choices":[]})"},
        {4, R"({"object":"chat\u002ecompletion.chunk","choices":[]})"},
    });
    CHECK(answer.error_json.empty());
    CHECK(answer.bad_events == 0);
  }
  SECTION("a bad escape in it is a bad event") {
    const Answer answer = assemble({{1, R"({"object":"chat.completion.chunk\q","choices":[]})"}});
    CHECK(answer.bad_events == 1);
  }
}

TEST_CASE("chat: a value that is no JSON where a field is read is a bad event", "[chat]") {
  for (const char* data : {
           R"({"choices":x})",
           R"({"choices":[x]})",
           R"({"choices":[{"index":x,"delta":{"content":"a"}}]})",
           R"({"choices":[{"index":0,"delta":x}]})",
           R"({"choices":[{"index":0,"delta":{"content":x}}]})",
           R"({"choices":[{"index":0,"delta":{"reasoning":x}}]})",
           R"({"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":x}]})",
           R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":x}}]}}]})",
           R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":x}]}}]})",
           R"({"model":x,"choices":[]})",
           R"({"object":x,"choices":[]})",
           R"({"usage":x,"choices":[]})",
           R"({"choices":[{"index":0,"delta":{"content":"a\x"}}]})",
           R"({"choices":[{"index":0,"delta":{"content":"a"}}]})"
           "}",
       }) {
    INFO("data: " << data);
    const Answer answer = assemble({{1, data}});
    CHECK(answer.bad_events == 1);
  }
}

TEST_CASE("chat: a short event after a long one is read on its own", "[chat]") {
  // The parse buffer is reused: what a longer event left past a shorter one's end must not
  // count. Each truncated event below follows one whose next bytes would complete it.
  const std::string nested = R"({"choices":[],"x":{"y":{"z":[1]}}})";
  const std::string long_chunk = chunk(R"({"content":")" + std::string(300, 'x') + R"("})");
  const Answer answer = assemble({
      {1, long_chunk},
      {2, R"({"choices":[{"index":0,"delta":{"content":"y"}}]})"},
      {3, nested},
      {4, nested.substr(0, nested.size() - 1)},  // ends in '}', one missing
      {5, nested},
      {6, nested.substr(0, nested.size() - 2)},
      {7, nested},
      {8, nested.substr(0, nested.size() - 4)},  // ends in ']'
      {9, R"({"choices":[]})"},
  });
  CHECK(answer.content == std::string(300, 'x') + "y");
  CHECK(answer.bad_events == 3);
  CHECK(answer.events == 9);
}

TEST_CASE("chat: tool-call fields in any order; the first of a repeated key counts", "[chat]") {
  const Answer answer = assemble({
      {1, chunk(R"({"tool_calls":[{"function":{"arguments":"{\"a\":","name":"f"},"type":"function","id":"call_1","index":0}]})")},
      {2, chunk(R"({"tool_calls":[{"function":{"arguments":"1}"},"index":0,"index":1}]})")},
      {3, chunk(R"({"tool_calls":[{"id":null,"id":"call_x","index":0,"function":{"name":"","arguments":null}}]})")},
  });
  REQUIRE(answer.tool_calls.size() == 1);
  CHECK(answer.tool_calls[0].id == "call_1");
  CHECK(answer.tool_calls[0].type == "function");
  CHECK(answer.tool_calls[0].name == "f");
  CHECK(answer.tool_calls[0].arguments == R"({"a":1})");
  CHECK(answer.token_events == 2);
}

TEST_CASE("chat: non-streamed body with the message before the index", "[chat]") {
  Answer answer;
  REQUIRE(assemble_chat_completion(
      R"({"choices":[{"message":{"content":"one"},"index":1},{"finish_reason":"stop","message":{"content":"zero","tool_calls":[{"function":{"name":"a","arguments":"{}"}},{"function":{"name":"b","arguments":{"x":[1, 2]}}}]},"index":0}],"model":"m"})",
      answer));
  CHECK(answer.content == "zero");
  CHECK(answer.finish_reason == "stop");
  REQUIRE(answer.tool_calls.size() == 2);
  CHECK(answer.tool_calls[0].name == "a");
  CHECK(answer.tool_calls[1].index == 1);
  CHECK(answer.tool_calls[1].arguments == R"({"x":[1, 2]})");
}

namespace {

// Random chunks written every way JSON allows (key order, whitespace, escapes, unknown keys
// and values of any shape, nulls, n > 1 choices, tool-call fragments), with the answer they
// must assemble to worked out alongside, independently of the reader.
class RandomChunks {
 public:
  explicit RandomChunks(std::uint32_t seed) : rng_(seed) {}

  struct Expected {
    std::string model, content, reasoning, finish_reason;
    std::optional<nlohmann::json> usage;
    std::map<std::int64_t, ToolCall> tool_calls;
    std::uint64_t token_events = 0;
  };

  // One chunk event's data; `expected` is updated with what it carries.
  std::string event(Expected& expected) {
    Fields top;
    top.push_back({"id", literal("chatcmpl-" + std::to_string(pick(1000)))});
    top.push_back({"object", literal("chat.completion.chunk")});
    top.push_back({"created", std::to_string(1764000000 + pick(10))});
    top.push_back({"model", literal("gpt-oss-120b")});
    if (expected.model.empty()) expected.model = "gpt-oss-120b";
    const int choices = chance(75) ? 1 : 2 + pick(2);
    std::vector<std::string> elements;
    bool carried = false;
    for (int index = 0; index < choices; ++index) {
      elements.push_back(choice(index, choices == 1 && chance(15), expected, carried));
    }
    std::shuffle(elements.begin(), elements.end(), rng_);
    if (chance(5)) elements.insert(elements.begin() + pick(static_cast<int>(elements.size()) + 1), junk(1));
    top.push_back({"choices", array(elements)});
    if (chance(30)) {
      top.push_back({"usage", "null"});
    } else if (chance(10)) {
      const nlohmann::json usage = {{"prompt_tokens", pick(500)}, {"completion_tokens", pick(500)},
                                    {"prompt_tokens_details", nullptr}};
      top.push_back({"usage", object({{"prompt_tokens", std::to_string(usage["prompt_tokens"].get<int>())},
                                      {"completion_tokens", std::to_string(usage["completion_tokens"].get<int>())},
                                      {"prompt_tokens_details", "null"}})});
      expected.usage = usage;
    }
    if (chance(10)) top.push_back({"error", "null"});
    add_unknown(top, {"models", "choice", "choices_", "usage_", "objects", "system_fingerprint", "e"});
    if (carried) ++expected.token_events;
    return ws() + object(top) + ws();
  }

 private:
  using Fields = std::vector<std::pair<std::string, std::string>>;

  int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }
  bool chance(int percent) { return pick(100) < percent; }

  std::string ws() {
    static const char* const kSpaces[] = {"", "", "", "", " ", "\n", "\t", " \r\n  "};
    return kSpaces[pick(8)];
  }

  std::string text() {
    static const char* const kPieces[] = {
        "",        " tok",   "a",        "Caf\xC3\xA9",       "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E",
        "\xF0\x9F\x98\x80", "q\"uote", "back\\slash", "new\nline", "tab\there", " / ", "{\"city\": "};
    std::string out;
    for (int n = 1 + pick(2); n > 0; --n) out += kPieces[pick(12)];
    return out;
  }

  // `value` as a JSON string literal, each character written plainly or escaped at random.
  std::string literal(const std::string& value) {
    static constexpr char kHex[] = "0123456789abcdef";
    auto hex4 = [](std::uint32_t unit) {
      std::string s = "\\u";
      for (int shift = 12; shift >= 0; shift -= 4) s.push_back(kHex[(unit >> shift) & 0xF]);
      return s;
    };
    std::string out = "\"";
    for (std::size_t i = 0; i < value.size();) {
      const auto byte = static_cast<unsigned char>(value[i]);
      const std::size_t length = byte < 0x80 ? 1 : byte < 0xE0 ? 2 : byte < 0xF0 ? 3 : 4;
      const std::string character = value.substr(i, length);
      i += length;
      if (!chance(30)) {  // plainly, where JSON allows
        if (byte == '"' || byte == '\\') {
          out += '\\';
          out += character;
          continue;
        }
        if (byte == '\n') { out += "\\n"; continue; }
        if (byte == '\t') { out += "\\t"; continue; }
        if (byte >= 0x20) { out += character; continue; }
      }
      std::uint32_t code = length == 1 ? byte : byte & (0xFF >> (length + 1));
      for (std::size_t k = 1; k < length; ++k) code = (code << 6) | (static_cast<unsigned char>(character[k]) & 0x3F);
      if (code >= 0x10000) {
        code -= 0x10000;
        out += hex4(0xD800 + (code >> 10)) + hex4(0xDC00 + (code & 0x3FF));
      } else {
        out += hex4(code);
      }
    }
    return out + "\"";
  }

  std::string object(Fields fields) {
    std::shuffle(fields.begin(), fields.end(), rng_);
    std::string out = "{";
    for (std::size_t i = 0; i < fields.size(); ++i) {
      if (i > 0) out += ws() + ",";
      out += ws() + "\"" + fields[i].first + "\"" + ws() + ":" + ws() + fields[i].second;
    }
    return out + ws() + "}";
  }

  std::string array(const std::vector<std::string>& elements) {
    std::string out = "[";
    for (std::size_t i = 0; i < elements.size(); ++i) {
      if (i > 0) out += ws() + ",";
      out += ws() + elements[i];
    }
    return out + ws() + "]";
  }

  // Any JSON value, nested up to `depth` levels.
  std::string junk(int depth) {
    switch (pick(depth > 0 ? 8 : 6)) {
      case 0: return "null";
      case 1: return chance(50) ? "true" : "false";
      case 2: return std::to_string(pick(100000) - 50000);
      case 3: return "-1.5e3";
      case 4:
      case 5: return literal(text());
      case 6: return array({junk(depth - 1), junk(depth - 1)});
      default: return object({{"index", junk(depth - 1)}, {"content", junk(depth - 1)}, {"}", literal("]")}});
    }
  }

  // Keys the reader must not take for the ones it reads, with values of any shape.
  void add_unknown(Fields& fields, std::initializer_list<const char*> keys) {
    for (const char* key : keys) {
      if (chance(15)) fields.push_back({key, junk(2)});
    }
  }

  std::string choice(int index, bool without_index, Expected& expected, bool& carried) {
    const bool recorded = index == 0;
    Fields fields;
    if (!without_index) fields.push_back({"index", std::to_string(index)});
    if (chance(90)) fields.push_back({"delta", chance(5) ? "null" : delta(recorded, expected, carried)});
    fields.push_back({"logprobs", chance(90) ? "null" : junk(2)});
    if (chance(85)) {
      if (chance(80)) {
        fields.push_back({"finish_reason", "null"});
      } else {
        const std::string reason = chance(50) ? "stop" : "length";
        fields.push_back({"finish_reason", literal(reason)});
        if (recorded) expected.finish_reason = reason;
      }
    }
    add_unknown(fields, {"indexes", "deltas", "finish_reasons", "stop_reason", "d", "i", "f"});
    return object(fields);
  }

  std::string delta(bool recorded, Expected& expected, bool& carried) {
    Fields fields;
    if (chance(10)) fields.push_back({"role", literal("assistant")});
    if (chance(60)) {
      if (chance(15)) {
        fields.push_back({"content", "null"});
      } else {
        const std::string piece = text();
        fields.push_back({"content", literal(piece)});
        if (recorded && !piece.empty()) {
          expected.content += piece;
          carried = true;
        }
      }
    }
    std::optional<std::string> reasoning_content, reasoning;
    if (chance(30)) {
      reasoning_content = text();
      fields.push_back({"reasoning_content", chance(20) ? "null" : literal(*reasoning_content)});
      if (fields.back().second == "null") reasoning_content.reset();
    }
    if (chance(30)) {
      reasoning = chance(50) && reasoning_content ? *reasoning_content : text();
      fields.push_back({"reasoning", chance(20) ? "null" : literal(*reasoning)});
      if (fields.back().second == "null") reasoning.reset();
    }
    if (recorded) {
      const std::string* taken = reasoning_content && !reasoning_content->empty() ? &*reasoning_content
                                 : reasoning ? &*reasoning : nullptr;
      if (taken != nullptr && !taken->empty()) {
        expected.reasoning += *taken;
        carried = true;
      }
    }
    if (chance(25)) {
      if (chance(10)) {
        fields.push_back({"tool_calls", "null"});
      } else {
        std::vector<std::string> calls;
        for (int n = pick(3); n > 0; --n) calls.push_back(tool_call(recorded, expected, carried));
        fields.push_back({"tool_calls", array(calls)});
      }
    }
    add_unknown(fields, {"contents", "reasoning_contents", "reasonings", "tool_call", "refusal", "c", "r", "t"});
    return object(fields);
  }

  std::string tool_call(bool recorded, Expected& expected, bool& carried) {
    const std::int64_t index = pick(3);
    // Streamed calls always say their index; choice 0's are recorded (made even when empty).
    ToolCall ignored;
    ToolCall& slot = recorded ? expected.tool_calls[index] : ignored;
    slot.index = index;
    Fields fields = {{"index", std::to_string(index)}};
    if (chance(30)) {
      const std::string id = "call_" + std::to_string(pick(100));
      fields.push_back({"id", chance(20) ? "null" : literal(id)});
      if (recorded && fields.back().second != "null") slot.id = id;
    }
    if (chance(30)) {
      fields.push_back({"type", literal("function")});
      if (recorded) slot.type = "function";
    }
    if (chance(90)) {
      Fields function;
      if (chance(30)) {
        const std::string name = chance(10) ? "" : "get_" + std::to_string(pick(10));
        function.push_back({"name", chance(10) ? "null" : literal(name)});
        if (recorded && function.back().second != "null" && !name.empty()) {
          slot.name = name;
          carried = true;
        }
      }
      if (chance(80)) {
        const std::string arguments = text();
        function.push_back({"arguments", chance(10) ? "null" : literal(arguments)});
        if (recorded && function.back().second != "null" && !arguments.empty()) {
          slot.arguments += arguments;
          carried = true;
        }
      }
      add_unknown(function, {"names", "argument", "a", "n"});
      fields.push_back({"function", object(function)});
    }
    add_unknown(fields, {"indexes", "ids", "types", "functions", "i", "t", "f"});
    return object(fields);
  }

  std::mt19937 rng_;
};

}  // namespace

TEST_CASE("chat: random chunks, written every way JSON allows, assemble as expected",
          "[chat]") {
  for (std::uint32_t seed = 1; seed <= 300; ++seed) {
    RandomChunks random(seed);
    RandomChunks::Expected expected;
    std::vector<TimedData> events;
    for (int i = 0; i < 25; ++i) events.push_back({1000 * (i + 1), random.event(expected)});
    events.push_back({1000000, "[DONE]"});
    const Answer answer = assemble(events);
    INFO("seed " << seed << ", first event: " << events.front().data);
    REQUIRE(answer.bad_events == 0);
    CHECK(answer.model == expected.model);
    CHECK(answer.content == expected.content);
    CHECK(answer.reasoning == expected.reasoning);
    CHECK(answer.finish_reason == expected.finish_reason);
    CHECK(answer.token_events == expected.token_events);
    if (expected.usage) {
      REQUIRE_FALSE(answer.usage_json.empty());
      CHECK(nlohmann::json::parse(answer.usage_json) == *expected.usage);
    } else {
      CHECK(answer.usage_json.empty());
    }
    CHECK(answer.error_json.empty());
    CHECK(answer.done);
    // Choice 0's calls only, in index order.
    REQUIRE(answer.tool_calls.size() == expected.tool_calls.size());
    auto want = expected.tool_calls.begin();
    for (const ToolCall& call : answer.tool_calls) {
      INFO("tool call " << want->first);
      CHECK(call.index == want->first);
      CHECK(call.id == want->second.id);
      CHECK(call.type == want->second.type);
      CHECK(call.name == want->second.name);
      CHECK(call.arguments == want->second.arguments);
      ++want;
    }
  }
}

// Chunks shaped like the one before (ChunkShape) are read by their text alone. The reference
// is the same stream with an empty keep-alive event before each chunk, which makes every
// chunk be read in full: both must give the same answer, whatever the text between the head
// and the tail holds (escapes, quotes that end the string early, broken UTF-8, more fields).
namespace {

Answer assemble_each_in_full(const std::vector<TimedData>& events) {
  std::vector<TimedData> spaced;
  for (const TimedData& e : events) {
    spaced.push_back({e.ts, ""});
    spaced.push_back(e);
  }
  return assemble(spaced);
}

void check_same_answer(const Answer& got, const Answer& want) {
  CHECK(got.content == want.content);
  CHECK(got.reasoning == want.reasoning);
  CHECK(got.finish_reason == want.finish_reason);
  CHECK(got.usage_json == want.usage_json);
  CHECK(got.error_json == want.error_json);
  CHECK(got.model == want.model);
  CHECK(got.done == want.done);
  CHECK(got.text_truncated == want.text_truncated);
  CHECK(got.bad_events == want.bad_events);
  CHECK(got.token_events == want.token_events);
  CHECK(got.first_token_ts == want.first_token_ts);
  CHECK(got.last_token_ts == want.last_token_ts);
  CHECK(got.token_gaps_us == want.token_gaps_us);
  REQUIRE(got.tool_calls.size() == want.tool_calls.size());
  for (std::size_t i = 0; i < got.tool_calls.size(); ++i) {
    CHECK(got.tool_calls[i].index == want.tool_calls[i].index);
    CHECK(got.tool_calls[i].id == want.tool_calls[i].id);
    CHECK(got.tool_calls[i].name == want.tool_calls[i].name);
    CHECK(got.tool_calls[i].arguments == want.tool_calls[i].arguments);
  }
}

}  // namespace

TEST_CASE("chat: chunks shaped like the last are read by their text alone, as a full read would",
          "[chat]") {
  const std::string id = R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",)";
  // Heads and tails around the text: the usual ones, and ones where the same text lands
  // elsewhere or where other fields repeat (idempotent) or append (not).
  const std::vector<std::pair<std::string, std::string>> shapes = {
      {id + R"("choices":[{"index":0,"delta":{"content":)", R"(},"logprobs":null,"finish_reason":null}]})"},
      {id + R"("choices":[{"index":0,"delta":{"reasoning_content":)", R"(},"finish_reason":null}]})"},
      {id + R"("choices":[{"index":0,"delta":{"reasoning":)", R"(}}]})"},
      {id + R"("choices":[{"index":0,"delta":{"reasoning_content":"","reasoning":)", R"(}}]})"},
      {id + R"("choices":[{"index":0,"delta":{"reasoning":"r","reasoning_content":)", R"(}}]})"},
      {id + R"("choices":[{"delta":{"content":)", R"(},"index":0}]})"},
      {id + R"("choices":[{"delta":{"content":)", R"(},"index":1}]})"},
      {id + R"("choices":[{"index":0,"delta":{"content":)", R"(,"content":"again"}}]})"},
      {id + R"("choices":[{"index":0,"delta":{"content":"","content":)", R"(}}]})"},
      {id + R"("choices":[{"index":0,"delta":{"content":)", R"(},"finish_reason":"stop"}],"usage":{"total_tokens":3}})"},
      {id + R"("choices":[{"index":0,"delta":{"content":)",
       R"(,"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]})"},
      {id + R"("choices":[{"index":0,"delta":{"content":)", R"(}}],"choices":[{"index":0,"delta":{"content":"x"}}]})"},
  };
  // What goes between: JSON strings, and text that is not one string.
  const std::vector<std::string> middles = {
      R"("tok")", R"(" tok")", R"("")", R"("caf\u00e9 \ud83d\ude00")", R"("q\"uote")", R"("back\\")",
      R"("new\nline")", "\"\xE6\x97\xA5\"", R"("a","content":"b")", R"("a","reasoning":"b")", R"("a\")",
      R"(")", R"("\u12")", "\"\xFF\"", "\"ctl\x01\"", R"(null)", R"(17)", R"({"a":1})",
      R"("x"}}],"usage":{"a":1},"q":[{"y":{"z":"w")", R"("x"}},{"index":0,"delta":{"content":"y")",
      "\"" + std::string(300, 'z') + "\"", R"("a" )", R"( "a")", R"("abc)", R"("ab"c)", R"("abc\)",
      // Two-character escapes (unescaped without the parser), mixed with UTF-8 and \u.
      R"("\/\b\f\r\t\n\"\\")", R"("tab\there")", R"("\\\"")", R"("\\")", R"("a\q")", R"("\ ")",
      "\"caf\xC3\xA9\\n\"", "\"\xC3\\n\xA9\"", "\"\\n\xE6\x97\xA5\\t\"", R"("\n\u00e9\n")", "\"\\n\x01\"",
      "\"\\t\xFF\"",
  };
  for (std::uint32_t seed = 1; seed <= 400; ++seed) {
    std::mt19937 rng(seed);
    auto pick = [&rng](std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng); };
    std::vector<TimedData> events;
    std::size_t shape = pick(shapes.size());
    for (int i = 0; i < 30; ++i) {
      if (pick(6) == 0) shape = pick(shapes.size());  // runs of one shape, then another
      // Mostly plain text (the usual case), sometimes any of the middles.
      const std::string middle = pick(3) != 0 ? "\"t" + std::to_string(pick(1000)) + "\"" : middles[pick(middles.size())];
      events.push_back({1000 * (i + 1), shapes[shape].first + middle + shapes[shape].second});
    }
    events.push_back({100000, "[DONE]"});
    INFO("seed " << seed);
    check_same_answer(assemble(events), assemble_each_in_full(events));
  }
}

TEST_CASE("chat: a shaped chunk near the text cap is cut as a full read cuts it", "[chat]") {
  const std::string head = R"({"choices":[{"index":0,"delta":{"content":)";
  const std::string tail = R"(}}]})";
  std::vector<TimedData> events;
  const std::string piece(1024 * 1024 - 7, 'w');
  for (int i = 0; i < 20; ++i) events.push_back({i + 1, head + "\"" + piece + "\xC3\xA9\"" + tail});
  const Answer answer = assemble(events);
  CHECK(answer.text_truncated);
  CHECK(answer.content.size() <= Answer::kMaxTextBytes);
  check_same_answer(answer, assemble_each_in_full(events));
}

}  // namespace chatcap
