// Anthropic's Messages API: the reader of streamed events and whole bodies, against the
// shapes vLLM sends (tests/e2e/fake_vllm.py's /v1/messages) and the official SDK's types.
#include "chatcap/dialect/messages.hpp"

#include <cstdint>
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
  std::string type;  // "message": no `event:` line
  std::string data;
};

Answer assemble(const std::vector<TimedData>& events) {
  MessagesReader reader;
  reader.start();
  for (const TimedData& e : events) {
    SseEvent event;
    event.ts = e.ts;
    event.type = e.type;
    event.data = e.data;
    reader.on_sse_event(event);
  }
  return reader.answer();
}

bool read_whole(std::string_view body, Answer& out) {
  MessagesReader reader;
  return reader.read_body(body, out);
}

// `text` cut into pieces of `size` characters (code points), as vLLM streams a tool call's
// input: the model's text, never a UTF-8 sequence split.
std::vector<std::string> fragments(const std::string& text, std::size_t size) {
  std::vector<std::string> out;
  std::size_t characters = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const bool lead = (static_cast<unsigned char>(text[i]) & 0xC0) != 0x80;
    if (lead && characters++ % size == 0) out.emplace_back();
    out.back().push_back(text[i]);
  }
  return out;
}

std::string json_string(const std::string& text) { return nlohmann::json(text).dump(); }

std::string text_delta(int index, const std::string& literal) {
  return R"({"type":"content_block_delta","index":)" + std::to_string(index) +
         R"(,"delta":{"type":"text_delta","text":)" + literal + "}}";
}

std::string json_delta(int index, const std::string& literal) {
  return R"({"type":"content_block_delta","index":)" + std::to_string(index) +
         R"(,"delta":{"type":"input_json_delta","partial_json":)" + literal + "}}";
}

// The tool call's input as the model writes it: JSON text with escapes of its own, which
// the stream then escapes again inside partial_json.
const std::string kArguments =
    R"~({"city": "Z\u00fcrich \"HB\"", "note": "café 🚀 $(id)", "path": "C:\\tmp\nx"})~";

const std::string kMessageStart =
    R"({"type":"message_start","message":{"id":"msg_9f2c","type":"message","role":"assistant","model":"gpt-oss-120b","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":42,"output_tokens":0}}})";
const std::string kFinalUsage = R"({"input_tokens":42,"output_tokens":31})";

// vLLM serving gpt-oss through /v1/messages, as fake_vllm.py streams it: message_start, a
// thinking block (deltas, then its signature), a ping after the first block's start, a
// text block whose deltas hold escapes and raw non-ASCII, a tool_use block whose input
// arrives in 7-character fragments, message_delta (tool_use, cumulative usage),
// message_stop, and chat's `data: [DONE]` after it. Token events are 100 us apart; the others fall between them.
std::vector<TimedData> vllm_stream() {
  std::vector<TimedData> events;
  timestamp_us ts = 1000;
  timestamp_us next_token_ts = 2000;
  auto other = [&](std::string type, std::string data) {
    ts += 10;
    events.push_back({ts, std::move(type), std::move(data)});
  };
  auto token = [&](std::string data) {
    ts = next_token_ts;
    next_token_ts += 100;
    events.push_back({ts, "content_block_delta", std::move(data)});
  };
  other("message_start", kMessageStart);
  other("content_block_start",
        R"({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}})");
  other("ping", R"({"type": "ping"})");
  token(R"({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let"}})");
  token(R"({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":" me think"}})");
  token(R"({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":" — première \u00e9tape"}})");
  other("content_block_delta",
        R"({"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"5d4c0e9a"}})");
  other("content_block_stop", R"({"type":"content_block_stop","index":0})");
  other("content_block_start", R"({"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}})");
  token(text_delta(1, R"("Caf\u00e9 ")"));
  token(text_delta(1, R"("\"ol\u00e9\" ")"));
  token(text_delta(1, R"("back\\slash\n")"));
  token(text_delta(1, R"("🚀 \ud83d\ude80 ")"));
  token(text_delta(1, R"~("$(id)")~"));
  other("content_block_stop", R"({"type":"content_block_stop","index":1})");
  other("content_block_start",
        R"({"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_5e1a","name":"get_weather","input":{}}})");
  for (const std::string& piece : fragments(kArguments, 7)) token(json_delta(2, json_string(piece)));
  other("content_block_stop", R"({"type":"content_block_stop","index":2})");
  other("message_delta",
        R"({"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":)" + kFinalUsage + "}");
  other("message_stop", R"({"type":"message_stop"})");
  other("message", "[DONE]");  // real vLLM's last event (fake_vllm.py sends none)
  return events;
}

const std::string kContent =
    "Caf\xC3\xA9 \"ol\xC3\xA9\" back\\slash\n\xF0\x9F\x9A\x80 \xF0\x9F\x9A\x80 $(id)";
const std::string kReasoning = "Let me think \xE2\x80\x94 premi\xC3\xA8re \xC3\xA9tape";

std::size_t argument_fragments() { return fragments(kArguments, 7).size(); }

// What the stream above assembles to, its times aside.
void check_vllm_answer(const Answer& answer) {
  CHECK(answer.model == "gpt-oss-120b");
  CHECK(answer.reasoning == kReasoning);
  CHECK(answer.content == kContent);
  REQUIRE(answer.tool_calls.size() == 1);
  const ToolCall& call = answer.tool_calls[0];
  CHECK(call.index == 0);
  CHECK(call.id == "toolu_5e1a");
  CHECK(call.type == "function");
  CHECK(call.name == "get_weather");
  CHECK(call.arguments == kArguments);
  CHECK(answer.finish_reason == "tool_calls");
  CHECK(answer.native_finish_reason == "tool_use");
  CHECK(answer.input_tokens == 42);
  CHECK(answer.output_tokens == 31);
  CHECK(answer.usage_json == kFinalUsage);
  CHECK(answer.error_json.empty());
  CHECK(answer.error_ts == 0);
  CHECK(answer.done);
  CHECK(answer.events == vllm_stream().size());
  CHECK(answer.token_events == 3 + 5 + argument_fragments());
  CHECK(answer.bad_events == 0);
  CHECK_FALSE(answer.text_truncated);
}

// Every field of two answers.
void check_same_answer(const Answer& got, const Answer& want) {
  CHECK(got.content == want.content);
  CHECK(got.events == want.events);
  CHECK(got.token_events == want.token_events);
  CHECK(got.first_event_ts == want.first_event_ts);
  CHECK(got.first_token_ts == want.first_token_ts);
  CHECK(got.last_token_ts == want.last_token_ts);
  CHECK(got.last_event_ts == want.last_event_ts);
  CHECK(got.error_ts == want.error_ts);
  CHECK(got.token_gaps_us == want.token_gaps_us);
  CHECK(got.done == want.done);
  CHECK(got.text_truncated == want.text_truncated);
  CHECK(got.bad_events == want.bad_events);
  CHECK(got.reasoning == want.reasoning);
  REQUIRE(got.tool_calls.size() == want.tool_calls.size());
  for (std::size_t i = 0; i < got.tool_calls.size(); ++i) {
    CHECK(got.tool_calls[i].index == want.tool_calls[i].index);
    CHECK(got.tool_calls[i].id == want.tool_calls[i].id);
    CHECK(got.tool_calls[i].type == want.tool_calls[i].type);
    CHECK(got.tool_calls[i].name == want.tool_calls[i].name);
    CHECK(got.tool_calls[i].arguments == want.tool_calls[i].arguments);
  }
  CHECK(got.finish_reason == want.finish_reason);
  CHECK(got.native_finish_reason == want.native_finish_reason);
  CHECK(got.input_tokens == want.input_tokens);
  CHECK(got.output_tokens == want.output_tokens);
  CHECK(got.usage_json == want.usage_json);
  CHECK(got.error_json == want.error_json);
  CHECK(got.model == want.model);
  CHECK(got.dialect == want.dialect);
}

// The events as the bytes of an event stream, with `event:` lines (none for "message").
// `ends`, if given, gets the offset of each event's last byte (its blank line's end).
std::string as_sse(const std::vector<TimedData>& events, const std::string& eol,
                   std::vector<std::size_t>* ends = nullptr) {
  std::string text;
  for (const TimedData& e : events) {
    if (e.type != "message") text += "event: " + e.type + eol;
    text += "data: " + e.data + eol + eol;
    if (ends != nullptr) ends->push_back(text.size() - 1);
  }
  return text;
}

Answer through_decoder(std::string_view bytes, timestamp_us ts) {
  SseDecoder decoder;
  MessagesReader reader;
  reader.start();
  decoder.feed(ts, bytes, reader);
  decoder.finish();
  return reader.answer();
}

}  // namespace

TEST_CASE("messages: a vLLM stream with thinking, text and a tool call", "[messages]") {
  const Answer answer = assemble(vllm_stream());
  check_vllm_answer(answer);
  CHECK(argument_fragments() > 5);  // the input does arrive in pieces

  SECTION("times: first event, tokens 100 us apart, pings and signatures not tokens") {
    CHECK(answer.first_event_ts == 1010);
    CHECK(answer.first_token_ts == 2000);
    const auto tokens = static_cast<timestamp_us>(answer.token_events);
    CHECK(answer.last_token_ts == 2000 + 100 * (tokens - 1));
    CHECK(answer.last_event_ts == answer.last_token_ts + 40);  // stop, delta, stop, [DONE]
    CHECK(answer.token_gaps_us == std::vector<std::uint32_t>(answer.token_events - 1, 100));
  }
}

TEST_CASE("messages: the same stream through the SSE decoder, split at every byte", "[messages]") {
  // The halves are two packets (times 1 and 2): an event is dated by the packet holding the
  // byte that ends it (with CRLF, the blank line's '\r': a lone CR ends a line too).
  std::vector<std::size_t> ends;
  std::vector<TimedData> events = vllm_stream();
  const std::string stream = as_sse(events, "\r\n", &ends);
  check_vllm_answer(through_decoder(stream, 7));
  for (std::size_t split = 0; split <= stream.size(); ++split) {
    for (std::size_t i = 0; i < events.size(); ++i) events[i].ts = ends[i] - 1 < split ? 1 : 2;
    SseDecoder decoder;
    MessagesReader reader;
    reader.start();
    decoder.feed(1, std::string_view(stream).substr(0, split), reader);
    decoder.feed(2, std::string_view(stream).substr(split), reader);
    decoder.finish();
    INFO("split at " << split);
    check_same_answer(reader.answer(), assemble(events));
    REQUIRE(decoder.discarded_tail_bytes() == 0);
  }
}

TEST_CASE("messages: the same stream fed one byte at a time, each its own packet", "[messages]") {
  // Each byte's packet time is its offset: an event is dated by the byte that ends it.
  std::vector<std::size_t> ends;
  std::vector<TimedData> events = vllm_stream();
  const std::string stream = as_sse(events, "\n", &ends);
  for (std::size_t i = 0; i < events.size(); ++i) events[i].ts = static_cast<timestamp_us>(ends[i]);
  const Answer direct = assemble(events);
  check_vllm_answer(direct);

  SseDecoder decoder;
  MessagesReader reader;
  reader.start();
  for (std::size_t i = 0; i < stream.size(); ++i) {
    decoder.feed(static_cast<timestamp_us>(i), std::string_view(stream).substr(i, 1), reader);
  }
  decoder.finish();
  check_same_answer(reader.answer(), direct);
  CHECK(reader.answer().first_token_ts == static_cast<timestamp_us>(ends[3]));
}

TEST_CASE("messages: events with no name are read by their data's type", "[messages]") {
  std::vector<TimedData> events = vllm_stream();
  for (TimedData& e : events) e.type = "message";
  const Answer unnamed = assemble(events);
  check_vllm_answer(unnamed);
  check_same_answer(unnamed, assemble(vllm_stream()));
}

TEST_CASE("messages: as vLLM's serving_messages.py writes its events", "[messages]") {
  // Pydantic's field order (index after the block or delta), unset fields left out, the
  // message_start usage beside the message, chat's [DONE] after message_stop or an error.
  const std::string head =
      "event: message_start\n"
      R"(data: {"type":"message_start","message":{"id":"chatcmpl-8d1","content":[],"model":"Qwen/Qwen3-8B"},"usage":{"input_tokens":12,"output_tokens":0}})"
      "\n\n"
      "event: content_block_start\n"
      R"(data: {"type":"content_block_start","content_block":{"type":"text","text":""},"index":0})"
      "\n\n"
      "event: content_block_delta\n"
      R"(data: {"type":"content_block_delta","delta":{"type":"text_delta","text":"Hi"},"index":0})"
      "\n\n";
  SECTION("a tool call, message_delta, message_stop, [DONE]") {
    const Answer answer = through_decoder(
        head +
            "event: content_block_stop\n"
            R"(data: {"type":"content_block_stop","index":0})"
            "\n\n"
            "event: content_block_start\n"
            R"(data: {"type":"content_block_start","content_block":{"type":"tool_use","id":"chatcmpl-tool-1","name":"get_weather","input":{}},"index":1})"
            "\n\n"
            "event: content_block_delta\n"
            R"(data: {"type":"content_block_delta","delta":{"type":"input_json_delta","partial_json":"{\"city\": "},"index":1})"
            "\n\n"
            "event: content_block_delta\n"
            R"(data: {"type":"content_block_delta","delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"},"index":1})"
            "\n\n"
            "event: content_block_stop\n"
            R"(data: {"type":"content_block_stop","index":1})"
            "\n\n"
            "event: message_delta\n"
            R"(data: {"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"input_tokens":12,"output_tokens":9}})"
            "\n\n"
            "event: message_stop\n"
            R"(data: {"type":"message_stop"})"
            "\n\n"
            "data: [DONE]\n\n",
        5);
    CHECK(answer.model == "Qwen/Qwen3-8B");
    CHECK(answer.content == "Hi");
    REQUIRE(answer.tool_calls.size() == 1);
    CHECK(answer.tool_calls[0].id == "chatcmpl-tool-1");
    CHECK(answer.tool_calls[0].name == "get_weather");
    CHECK(answer.tool_calls[0].arguments == R"({"city": "Paris"})");
    CHECK(answer.finish_reason == "tool_calls");
    CHECK(answer.input_tokens == 12);
    CHECK(answer.output_tokens == 9);
    CHECK(answer.usage_json == R"({"input_tokens":12,"output_tokens":9})");
    CHECK(answer.done);
    CHECK(answer.events == 11);  // [DONE] is one
    CHECK(answer.token_events == 3);
    CHECK(answer.bad_events == 0);
    CHECK(answer.error_json.empty());
  }
  SECTION("the usage beside the message is message_start's") {
    const Answer answer = through_decoder(head, 5);
    CHECK(answer.usage_json == R"({"input_tokens":12,"output_tokens":0})");
    CHECK(answer.input_tokens == 12);
    CHECK(answer.output_tokens == 0);
  }
  SECTION("an error, then [DONE]: not done, nothing bad") {
    const Answer answer = through_decoder(
        head +
            "event: error\n"
            R"(data: {"type":"error","error":{"type":"internal_error","message":"Invalid data format received"}})"
            "\n\n"
            "data: [DONE]\n\n",
        5);
    CHECK(answer.content == "Hi");
    CHECK(answer.error_json == R"({"type":"internal_error","message":"Invalid data format received"})");
    CHECK(answer.error_ts == 5);
    CHECK_FALSE(answer.done);
    CHECK(answer.bad_events == 0);
    CHECK(answer.events == 5);
  }
}

TEST_CASE("messages: max_tokens ends the answer as length", "[messages]") {
  const Answer answer = assemble({
      {1, "message_start", kMessageStart},
      {2, "content_block_start", R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})"},
      {3, "content_block_delta", text_delta(0, R"("The answer is")")},
      {4, "content_block_stop", R"({"type":"content_block_stop","index":0})"},
      {5, "message_delta", R"({"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"output_tokens":3}})"},
      {6, "message_stop", R"({"type":"message_stop"})"},
  });
  CHECK(answer.content == "The answer is");
  CHECK(answer.finish_reason == "length");
  CHECK(answer.native_finish_reason == "max_tokens");
  CHECK(answer.output_tokens == 3);
  CHECK(answer.input_tokens == 42);  // message_delta had none: message_start's
  CHECK(answer.usage_json == R"({"output_tokens":3})");
  CHECK(answer.done);
}

TEST_CASE("messages: every stop reason, normalised, the word as sent kept", "[messages]") {
  const std::vector<std::pair<std::string, std::string>> reasons = {
      {"end_turn", "stop"},          {"stop_sequence", "stop"},
      {"pause_turn", "stop"},        {"max_tokens", "length"},
      {"model_context_window_exceeded", "length"}, {"tool_use", "tool_calls"},
      {"refusal", "content_filter"}, {"a_future_reason", "a_future_reason"},
  };
  for (const auto& [native, normalised] : reasons) {
    INFO(native);
    const Answer streamed = assemble({{1, "message_delta",
        R"({"type":"message_delta","delta":{"stop_reason":")" + native + R"(","stop_sequence":null},"usage":{"output_tokens":1}})"}});
    CHECK(streamed.finish_reason == normalised);
    CHECK(streamed.native_finish_reason == native);
    Answer whole;
    REQUIRE(read_whole(R"({"type":"message","content":[],"stop_reason":")" + native + R"("})", whole));
    CHECK(whole.finish_reason == normalised);
    CHECK(whole.native_finish_reason == native);
  }
  // null until the end, as message_start has it
  const Answer open = assemble({{1, "message_start", kMessageStart}});
  CHECK(open.finish_reason.empty());
  CHECK(open.native_finish_reason.empty());
}

TEST_CASE("messages: an error event, dated when it came", "[messages]") {
  SECTION("vLLM's engine death: event: error with Anthropic's error object") {
    const Answer answer = assemble({
        {1, "message_start", kMessageStart},
        {2, "content_block_start", R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})"},
        {3, "content_block_delta", text_delta(0, R"("par")")},
        {4, "ping", R"({"type":"ping"})"},
        {5, "error",
         R"({"type": "error", "error": {"type": "api_error", "message": "EngineCore encountered an issue. See stack trace (above) for the root cause."}})"},
    });
    CHECK(answer.error_json ==
          R"({"type": "api_error", "message": "EngineCore encountered an issue. See stack trace (above) for the root cause."})");
    CHECK(answer.error_ts == 5);
    CHECK(answer.last_event_ts == 5);
    CHECK(answer.content == "par");
    CHECK_FALSE(answer.done);
    CHECK(answer.finish_reason.empty());
    CHECK(answer.bad_events == 0);
    CHECK(answer.events == 5);
  }
  SECTION("the first error dates the death, not events after it") {
    const Answer answer = assemble({
        {10, "error", R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})"},
        {20, "message_stop", R"({"type":"message_stop"})"},
    });
    CHECK(answer.error_json == R"({"type":"overloaded_error","message":"Overloaded"})");
    CHECK(answer.error_ts == 10);
    CHECK(answer.last_event_ts == 20);
  }
  SECTION("data with no error object is the error") {
    const Answer answer = assemble({{7, "error", R"({"message":"overloaded","code":529})"}});
    CHECK(answer.error_json == R"({"message":"overloaded","code":529})");
    CHECK(answer.error_ts == 7);
  }
  SECTION("data that is no JSON is kept as a JSON string") {
    const Answer answer = assemble({{7, "error", "upstream \"died\""}});
    CHECK(answer.error_json == R"("upstream \"died\"")");
    CHECK(answer.error_ts == 7);
    CHECK(answer.bad_events == 0);
  }
  SECTION("an unnamed event whose type is error") {
    const Answer answer = assemble({{8, "message", R"({"type":"error","error":{"type":"api_error","message":"x"}})"}});
    CHECK(answer.error_json == R"({"type":"api_error","message":"x"})");
    CHECK(answer.error_ts == 8);
  }
  SECTION("no error, no error time") {
    const Answer answer = assemble(vllm_stream());
    CHECK(answer.error_json.empty());
    CHECK(answer.error_ts == 0);
  }
}

TEST_CASE("messages: a whole message, every block type, input kept as written", "[messages]") {
  // Pretty-printed, keys in unusual orders, a tool's input with whitespace and escapes.
  const std::string input_a = R"({ "city" : "Z\u00fcrich",  "days": [1, 2.50, {"x": null}],
          "q": "\"a\\b\"" })";
  const std::string body = R"({
  "id": "msg_01",
  "type": "message",
  "role": "assistant",
  "model": "gpt-oss-120b",
  "content": [
    {"type": "thinking", "thinking": "The user wants the weather \u2014 ok.", "signature": "c2ln"},
    {"type": "redacted_thinking", "data": "EmwKAhgBEgy"},
    {"type": "text", "text": "Checking \"Z\u00fcrich\"\n"},
    {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
    {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": )" + input_a + R"(},
    {"text": "See you 🚀", "type": "text"},
    {"input": {}, "name": "noop", "id": "toolu_b", "type": "tool_use"},
    {"type": "tool_use", "id": "toolu_c", "name": "echo", "input": "not an object"}
  ],
  "stop_reason": "tool_use",
  "stop_sequence": null,
  "usage": {"input_tokens": 17, "output_tokens": 64, "cache_read_input_tokens": null}
}
)";
  Answer answer;
  REQUIRE(read_whole(body, answer));
  CHECK(answer.model == "gpt-oss-120b");
  CHECK(answer.reasoning == "The user wants the weather \xE2\x80\x94 ok.");
  CHECK(answer.content == "Checking \"Z\xC3\xBCrich\"\nSee you \xF0\x9F\x9A\x80");
  REQUIRE(answer.tool_calls.size() == 3);
  CHECK(answer.tool_calls[0].index == 0);
  CHECK(answer.tool_calls[0].id == "toolu_a");
  CHECK(answer.tool_calls[0].type == "function");
  CHECK(answer.tool_calls[0].name == "get_weather");
  CHECK(answer.tool_calls[0].arguments == input_a);
  CHECK(answer.tool_calls[1].index == 1);
  CHECK(answer.tool_calls[1].id == "toolu_b");
  CHECK(answer.tool_calls[1].name == "noop");
  CHECK(answer.tool_calls[1].arguments == "{}");
  CHECK(answer.tool_calls[2].index == 2);
  CHECK(answer.tool_calls[2].arguments == R"("not an object")");
  CHECK(answer.finish_reason == "tool_calls");
  CHECK(answer.native_finish_reason == "tool_use");
  CHECK(answer.input_tokens == 17);
  CHECK(answer.output_tokens == 64);
  CHECK(answer.usage_json == R"({"input_tokens": 17, "output_tokens": 64, "cache_read_input_tokens": null})");
  CHECK(answer.error_json.empty());
  CHECK(answer.events == 0);
  CHECK_FALSE(answer.text_truncated);
}

TEST_CASE("messages: an error body is kept whole", "[messages]") {
  SECTION("Anthropic's shape, as vLLM answers once its engine died") {
    const std::string error =
        R"({"type":"error","error":{"type":"api_error","message":"EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root cause."}})";
    Answer answer;
    REQUIRE(read_whole(" " + error + "\n", answer));
    CHECK(answer.error_json == error);
    CHECK(answer.content.empty());
    CHECK(answer.finish_reason.empty());
  }
  SECTION("an OpenAI-compatible server's shapes") {
    for (const std::string error : {R"({"error":{"message":"boom","type":"InternalServerError","code":500}})",
                                    R"({"object":"error","message":"boom","type":"BadRequestError","code":400})"}) {
      Answer answer;
      REQUIRE(read_whole(error, answer));
      CHECK(answer.error_json == error);
    }
  }
  SECTION("a message is no error") {
    Answer answer;
    REQUIRE(read_whole(R"({"type":"message","content":[{"type":"text","text":"ok"}],"error":null})", answer));
    CHECK(answer.error_json.empty());
    CHECK(answer.content == "ok");
  }
}

TEST_CASE("messages: a body that is not a JSON object is not read", "[messages]") {
  for (const std::string body : {"", " ", "[]", R"("message")", "null", "42", "{", "not json",
                                 R"({"type":"message"} x)", R"({"a":1}{"b":2})", R"([{"type":"message"}])",
                                 "{\"content\":[{\"type\":\"text\",\"text\":\"\xFF\"}]}"}) {
    INFO("body: " << body);
    Answer answer;
    CHECK_FALSE(read_whole(body, answer));
  }
  // What could be read before the break is kept.
  Answer answer;
  CHECK_FALSE(read_whole(R"({"model":"m","content":[{"type":"text","text":"hi"}],"usage":})", answer));
  CHECK(answer.model == "m");
  CHECK(answer.content == "hi");
}

TEST_CASE("messages: data that cannot be read is counted, the rest still assembled", "[messages]") {
  const std::string bad_text = R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"BAD"}})";
  const Answer answer = assemble({
      {1, "message_start", kMessageStart},
      {2, "content_block_start", R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})"},
      {3, "content_block_delta", text_delta(0, R"("one ")")},
      {4, "content_block_delta", bad_text.substr(0, bad_text.size() - 1)},   // cut short
      {5, "content_block_delta", bad_text + " x"},                            // something after it
      {6, "content_block_delta", text_delta(0, R"("BAD\q")")},               // no such escape
      {7, "content_block_delta", text_delta(0, "\"\xFF\"")},                 // no UTF-8
      {8, "content_block_delta", "not json at all"},
      {9, "content_block_delta", "[" + bad_text + "]"},                       // not an object
      {10, "content_block_delta", R"({"type":"content_block_delta","index":x,"delta":{"type":"text_delta","text":"BAD"}})"},
      {11, "message_delta", R"({"type":"message_delta","delta":{"stop_reason":"refusal"},"usage":x})"},
      {12, "content_block_start", R"({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t","name":"n","input":{)"},
      {13, "content_block_delta", ""},                                        // a keep-alive
      {14, "content_block_delta", " \n "},                                     // so is this
      {15, "ping", "garbage"},                   // not read: nothing to read there
      {16, "content_block_stop", "garbage"},
      {17, "a_future_event", "garbage"},         // not ours to judge
      {18, "content_block_delta", text_delta(0, R"("two")")},
      {19, "message_delta", R"({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}})"},
      {20, "message_stop", R"({"type":"message_stop"})"},
  });
  CHECK(answer.content == "one two");
  CHECK(answer.bad_events == 9);
  CHECK(answer.events == 20);
  CHECK(answer.token_events == 2);
  CHECK(answer.tool_calls.empty());          // its start was not read
  CHECK(answer.finish_reason == "stop");     // the unreadable refusal was not applied
  CHECK(answer.usage_json == R"({"output_tokens":2})");
  CHECK(answer.done);
  CHECK(answer.error_json.empty());
}

TEST_CASE("messages: every cut of every event's data is read whole or counted", "[messages]") {
  // A strict prefix of an object's text is never an object: each is a bad event and adds
  // nothing (no prefix of a delta appends part of its text). Run under the sanitizers, this
  // also holds the reader to the bounds of what it was given.
  for (const TimedData& event : vllm_stream()) {
    for (std::size_t cut = 1; cut < event.data.size(); ++cut) {
      INFO(event.type << " cut at " << cut << ": " << event.data.substr(0, cut));
      const Answer answer = assemble({{1, event.type, event.data.substr(0, cut)}});
      const bool read = event.type != "ping" && event.type != "content_block_stop" && event.type != "message_stop";
      REQUIRE(answer.bad_events == (read ? 1u : 0u));
      REQUIRE(answer.content.empty());
      REQUIRE(answer.reasoning.empty());
      REQUIRE(answer.tool_calls.empty());
      REQUIRE(answer.usage_json.empty());
    }
  }
}

TEST_CASE("messages: a stream cut mid-event gives the partial answer", "[messages]") {
  const std::string stream = as_sse(vllm_stream(), "\n");
  const std::size_t second_text = stream.find(R"(\"ol\u00e9)");
  REQUIRE(second_text != std::string::npos);
  SseDecoder decoder;
  MessagesReader reader;
  reader.start();
  decoder.feed(1, std::string_view(stream).substr(0, second_text + 4), reader);
  decoder.finish();
  const Answer& answer = reader.answer();
  CHECK(decoder.discarded_tail_bytes() > 0);
  CHECK(answer.reasoning == kReasoning);
  CHECK(answer.content == "Caf\xC3\xA9 ");
  CHECK(answer.tool_calls.empty());
  CHECK(answer.finish_reason.empty());
  CHECK(answer.usage_json == R"({"input_tokens":42,"output_tokens":0})");  // message_start's
  CHECK(answer.input_tokens == 42);
  CHECK(answer.output_tokens == 0);
  CHECK(answer.model == "gpt-oss-120b");
  CHECK_FALSE(answer.done);
  CHECK(answer.bad_events == 0);
  CHECK(answer.token_events == 4);
}

TEST_CASE("messages: unknown events, blocks and deltas are ignored", "[messages]") {
  const Answer answer = assemble({
      {1, "message_start", kMessageStart},
      {2, "content_block_start", R"({"type":"content_block_start","index":0,"content_block":{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{}}})"},
      {3, "content_block_delta", json_delta(0, R"("{\"query\": \"x\"}")")},  // a server tool's, not ours
      {4, "content_block_stop", R"({"type":"content_block_stop","index":0})"},
      {5, "content_block_start", R"({"type":"content_block_start","index":1,"content_block":{"type":"redacted_thinking","data":"EmwK"}})"},
      {6, "content_block_start", R"({"type":"content_block_start","index":2,"content_block":{"type":"text","text":"","citations":[]}})"},
      {7, "content_block_delta", R"({"type":"content_block_delta","index":2,"delta":{"type":"citations_delta","citation":{"type":"char_location","cited_text":"NO"}}})"},
      {8, "content_block_delta", R"({"type":"content_block_delta","index":2,"delta":{"type":"future_delta","text":"NO"}})"},
      {9, "content_block_delta", R"({"type":"content_block_delta","index":2,"delta":{"text":"NO"}})"},  // no type
      {10, "content_block_delta", text_delta(2, R"("yes")")},
      {11, "content_block_future", R"({"type":"content_block_future","index":2,"delta":{"type":"text_delta","text":"NO"}})"},
      {12, "message", R"({"type":"future_event","delta":{"type":"text_delta","text":"NO"}})"},
      {13, "message", R"({"delta":{"type":"text_delta","text":"NO"}})"},  // no name, no type
      {14, "message_delta", R"({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_details":{"x":1}},"usage":{"output_tokens":1,"server_tool_use":{"web_search_requests":1}},"context_management":null})"},
      {15, "message_stop", R"({"type":"message_stop"})"},
  });
  CHECK(answer.content == "yes");
  CHECK(answer.reasoning.empty());
  CHECK(answer.tool_calls.empty());
  CHECK(answer.token_events == 1);
  CHECK(answer.events == 15);
  CHECK(answer.bad_events == 0);
  CHECK(answer.finish_reason == "stop");
  CHECK(answer.usage_json == R"({"output_tokens":1,"server_tool_use":{"web_search_requests":1}})");
  CHECK(answer.done);
}

TEST_CASE("messages: interleaved blocks, and deltas for blocks that never started", "[messages]") {
  const Answer answer = assemble({
      {1, "content_block_start", R"({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_a","name":"a","input":{}}})"},
      {2, "content_block_start", R"({"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}})"},
      {3, "content_block_start", R"({"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_b","name":"b","input":{}}})"},
      {4, "content_block_delta", json_delta(2, R"("{\"y\":")")},
      {5, "content_block_delta", json_delta(0, R"("{\"x\":")")},
      {6, "content_block_delta", text_delta(1, R"("mid")")},
      {7, "content_block_delta", json_delta(0, R"("1}")")},
      {8, "content_block_delta", json_delta(2, R"("2}")")},
      // Never started: text by its type, input JSON as a call with no name.
      {9, "content_block_delta", text_delta(7, R"(" text")")},
      {10, "content_block_delta", R"({"type":"content_block_delta","index":8,"delta":{"type":"thinking_delta","thinking":"hm"}})"},
      {11, "content_block_delta", json_delta(9, R"("{\"z\":")")},
      {12, "content_block_delta", json_delta(9, R"("3}")")},
      // Keys in another order: the delta before its index.
      {13, "content_block_delta", R"({"delta":{"partial_json":"","type":"input_json_delta"},"type":"content_block_delta","index":0})"},
      {14, "content_block_delta", R"({"delta":{"text":" end","type":"text_delta"},"index":1})"},
      // input JSON for a text block is no tool call's
      {15, "content_block_delta", json_delta(1, R"("{\"no\":1}")")},
  });
  REQUIRE(answer.tool_calls.size() == 3);
  CHECK(answer.tool_calls[0].index == 0);
  CHECK(answer.tool_calls[0].id == "toolu_a");
  CHECK(answer.tool_calls[0].name == "a");
  CHECK(answer.tool_calls[0].arguments == R"({"x":1})");
  CHECK(answer.tool_calls[1].index == 1);
  CHECK(answer.tool_calls[1].id == "toolu_b");
  CHECK(answer.tool_calls[1].name == "b");
  CHECK(answer.tool_calls[1].arguments == R"({"y":2})");
  CHECK(answer.tool_calls[2].index == 2);
  CHECK(answer.tool_calls[2].id.empty());
  CHECK(answer.tool_calls[2].name.empty());
  CHECK(answer.tool_calls[2].type == "function");
  CHECK(answer.tool_calls[2].arguments == R"({"z":3})");
  CHECK(answer.content == "mid text end");
  CHECK(answer.reasoning == "hm");
  CHECK(answer.token_events == 10);  // not the empty fragment, not the text block's JSON
  CHECK(answer.bad_events == 0);
}

TEST_CASE("messages: a tool_use start that holds its input", "[messages]") {
  const std::string start_with_input =
      R"({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_a","name":"a","input":{"city": "Paris"}}})";
  SECTION("with no fragment after it, the input as written is the arguments") {
    const Answer answer = assemble({
        {1, "content_block_start", start_with_input},
        {2, "content_block_stop", R"({"type":"content_block_stop","index":0})"},
        {3, "content_block_start", R"({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_b","name":"b","input":{ }}})"},
    });
    REQUIRE(answer.tool_calls.size() == 2);
    CHECK(answer.tool_calls[0].arguments == R"({"city": "Paris"})");
    CHECK(answer.tool_calls[1].arguments.empty());  // `{}`: no arguments yet
    CHECK(answer.token_events == 1);
    CHECK(answer.first_token_ts == 1);
  }
  SECTION("fragments after it are the input") {
    const Answer answer = assemble({
        {1, "content_block_start", start_with_input},
        {2, "content_block_delta", json_delta(0, R"("{\"city\": ")")},
        {3, "content_block_delta", json_delta(0, R"("\"Lyon\"}")")},
    });
    REQUIRE(answer.tool_calls.size() == 1);
    CHECK(answer.tool_calls[0].arguments == R"({"city": "Lyon"})");
  }
}

TEST_CASE("messages: usage, from message_start and message_delta", "[messages]") {
  SECTION("message_start's alone") {
    const Answer answer = assemble({{1, "message_start", kMessageStart}});
    CHECK(answer.usage_json == R"({"input_tokens":42,"output_tokens":0})");
    CHECK(answer.input_tokens == 42);
    CHECK(answer.output_tokens == 0);
  }
  SECTION("message_delta's input_tokens supersede, null counts do not") {
    const Answer answer = assemble({
        {1, "message_start", kMessageStart},
        {2, "message_delta", R"({"type":"message_delta","delta":{"stop_reason":null},"usage":{"input_tokens":40,"output_tokens":5}})"},
        {3, "message_delta", R"({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":null,"output_tokens":9,"cache_read_input_tokens":null} })"},
    });
    CHECK(answer.input_tokens == 40);
    CHECK(answer.output_tokens == 9);
    CHECK(answer.usage_json == R"({"input_tokens":null,"output_tokens":9,"cache_read_input_tokens":null})");
    CHECK(answer.finish_reason == "stop");
  }
}

TEST_CASE("messages: text past the cap is cut on a character and flagged", "[messages]") {
  // 1.5 MiB of 3-byte characters an event: past the kept parser's size, so each is read by
  // a parser of its own; the cap (2^24 bytes) falls inside a character.
  std::string piece;
  for (int i = 0; i < 512 * 1024; ++i) piece += "\xE6\x97\xA5";
  std::vector<TimedData> events;
  for (int i = 0; i < 12; ++i) events.push_back({i + 1, "content_block_delta", text_delta(0, "\"" + piece + "\"")});
  events.push_back({13, "message_stop", "{}"});
  const Answer answer = assemble(events);
  CHECK(answer.text_truncated);
  CHECK(answer.content.size() == Answer::kMaxTextBytes - Answer::kMaxTextBytes % 3);
  CHECK(answer.content.substr(answer.content.size() - 6) == "\xE6\x97\xA5\xE6\x97\xA5");
  CHECK(answer.bad_events == 0);
  CHECK(answer.done);
}

TEST_CASE("messages: tool calls and blocks past their caps", "[messages]") {
  SECTION("tool_use blocks past kMaxToolCalls") {
    std::vector<TimedData> events;
    for (std::size_t i = 0; i < Answer::kMaxToolCalls + 10; ++i) {
      const std::string index = std::to_string(i);
      events.push_back({1, "content_block_start",
                        R"({"type":"content_block_start","index":)" + index +
                            R"(,"content_block":{"type":"tool_use","id":"toolu_)" + index + R"(","name":"f","input":{}}})"});
      events.push_back({2, "content_block_delta", json_delta(static_cast<int>(i), R"("{}")")});
    }
    const Answer answer = assemble(events);
    REQUIRE(answer.tool_calls.size() == Answer::kMaxToolCalls);
    CHECK(answer.text_truncated);
    CHECK(answer.tool_calls.back().id == "toolu_" + std::to_string(Answer::kMaxToolCalls - 1));
    CHECK(answer.tool_calls.back().arguments == "{}");
    CHECK(answer.bad_events == 0);
  }
  SECTION("blocks past kMaxBlocks: flagged, their text still read") {
    std::vector<TimedData> events;
    for (std::size_t i = 0; i <= MessagesReader::kMaxBlocks; ++i) {
      const int index = static_cast<int>(i);
      events.push_back({1, "content_block_start",
                        R"({"type":"content_block_start","index":)" + std::to_string(index) +
                            R"(,"content_block":{"type":"text","text":""}})"});
      events.push_back({2, "content_block_delta", text_delta(index, R"("x")")});
    }
    const Answer answer = assemble(events);
    CHECK(answer.text_truncated);
    CHECK(answer.content == std::string(MessagesReader::kMaxBlocks + 1, 'x'));
  }
  SECTION("under both caps, nothing is flagged") {
    const Answer answer = assemble(vllm_stream());
    CHECK_FALSE(answer.text_truncated);
  }
}

TEST_CASE("messages: start() begins a new answer and forgets the blocks", "[messages]") {
  MessagesReader reader;
  reader.start();
  SseEvent event;
  event.ts = 1;
  event.type = "content_block_start";
  const std::string start =
      R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})";
  event.data = start;
  reader.on_sse_event(event);
  reader.start();
  CHECK(reader.answer().events == 0);
  // Index 0 is no text block any more: input JSON for it makes a call.
  event.type = "content_block_delta";
  const std::string delta = json_delta(0, R"("{}")");
  event.data = delta;
  reader.on_sse_event(event);
  REQUIRE(reader.answer().tool_calls.size() == 1);
  CHECK(reader.answer().tool_calls[0].arguments == "{}");
  CHECK(reader.answer().events == 1);
}

}  // namespace chatcap
