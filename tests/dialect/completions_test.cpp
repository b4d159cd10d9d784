// Legacy completions: the reader of streamed text_completion chunks and whole bodies,
// against vLLM's shapes (pydantic's compact JSON for chunks, Python's json.dumps for the
// error it streams when its engine dies).
#include "chatcap/dialect/completions.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <catch2/catch.hpp>

#include "chatcap/sse.hpp"

namespace chatcap {
namespace {

// One SSE event as the decoder would hand it over.
struct TimedData {
  timestamp_us ts = 0;
  std::string data;
  std::string type = "message";
};

void feed(CompletionsReader& reader, const std::vector<TimedData>& events) {
  for (const auto& e : events) {
    SseEvent event;
    event.ts = e.ts;
    event.type = e.type;
    event.data = e.data;
    reader.on_sse_event(event);
  }
}

Answer assemble(const std::vector<TimedData>& events) {
  CompletionsReader reader;
  feed(reader, events);
  return reader.answer();
}

// A whole (non-streamed) body, as the content layer reads one.
bool assemble_body(std::string_view body, Answer& out) {
  CompletionsReader reader;
  return reader.read_body(body, out);
}

// A vLLM chunk: choice 0 with `text_literal` (JSON as written) and `finish` (JSON).
const std::string kChunkHead =
    R"({"id":"cmpl-7c1f2d","object":"text_completion","created":1764000000,"model":"Qwen/Qwen2.5-1.5B-Instruct","choices":[{"index":0,"text":)";

std::string chunk(const std::string& text_literal, const std::string& finish = "null") {
  return kChunkHead + text_literal + R"(,"logprobs":null,"finish_reason":)" + finish +
         R"(,"stop_reason":null,"prompt_token_ids":null}],"usage":null})";
}

// vLLM streaming a completion cut by max_tokens, with stream_options.include_usage: text
// with escapes, \u escapes (a surrogate pair among them), raw UTF-8 and shell-looking text,
// an empty-text chunk, the finish chunk, the usage chunk (no choices), [DONE].
std::vector<TimedData> vllm_stream() {
  return {
      {1000, chunk(R"("Caf\u00e9")")},
      {1100, chunk(R"("")")},
      {1300, chunk(R"(" \"quoted\" \\ back\nslash")")},
      {1600, chunk("\" \xF0\x9F\x9A\x80 launch\"")},
      {2000, chunk(R"j(" \ud83d\ude80 $(id)")j")},
      {2500, chunk(R"(" \u65e5\u672c")", R"("length")")},
      {2600,
       R"({"id":"cmpl-7c1f2d","object":"text_completion","created":1764000000,"model":"Qwen/Qwen2.5-1.5B-Instruct","choices":[],"usage":{"prompt_tokens":5,"total_tokens":21,"completion_tokens":16}})"},
      {2700, "[DONE]"},
  };
}

const std::string kVllmContent =
    "Caf\xC3\xA9"
    " \"quoted\" \\ back\nslash"
    " \xF0\x9F\x9A\x80 launch"
    " \xF0\x9F\x9A\x80 $(id)"
    " \xE6\x97\xA5\xE6\x9C\xAC";

void check_vllm_answer(const Answer& answer) {
  CHECK(answer.content == kVllmContent);
  CHECK(answer.model == "Qwen/Qwen2.5-1.5B-Instruct");
  CHECK(answer.finish_reason == "length");
  CHECK(answer.native_finish_reason.empty());
  CHECK(answer.usage_json == R"({"prompt_tokens":5,"total_tokens":21,"completion_tokens":16})");
  CHECK(answer.input_tokens == 5);
  CHECK(answer.output_tokens == 16);
  CHECK(answer.error_json.empty());
  CHECK(answer.error_ts == 0);
  CHECK(answer.done);
  CHECK(answer.events == 8);
  CHECK(answer.token_events == 5);  // not the empty text, the usage chunk or [DONE]
  CHECK(answer.bad_events == 0);
  CHECK(answer.reasoning.empty());
  CHECK(answer.tool_calls.empty());
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
  CHECK(got.tool_calls.size() == want.tool_calls.size());
  CHECK(got.finish_reason == want.finish_reason);
  CHECK(got.native_finish_reason == want.native_finish_reason);
  CHECK(got.input_tokens == want.input_tokens);
  CHECK(got.output_tokens == want.output_tokens);
  CHECK(got.usage_json == want.usage_json);
  CHECK(got.error_json == want.error_json);
  CHECK(got.model == want.model);
  CHECK(got.dialect == want.dialect);
}

// Events as the bytes a server sends: `data: ...\n\n` as vLLM writes them, typed events with
// CRLF line ends. `dispatch_at` is the offset of the byte that completes each event (the
// blank line's '\n', or its lone '\r', which already ends the line).
struct SseBytes {
  std::string text;
  std::vector<std::size_t> dispatch_at;
};

SseBytes as_sse(const std::vector<TimedData>& events) {
  SseBytes out;
  for (const auto& e : events) {
    if (e.type == "message") {
      out.text += "data: " + e.data + "\n\n";
      out.dispatch_at.push_back(out.text.size() - 1);
    } else {
      out.text += "event: " + e.type + "\r\ndata: " + e.data + "\r\n\r\n";
      out.dispatch_at.push_back(out.text.size() - 2);
    }
  }
  return out;
}

// The events, each at the time `ts_of(i)`.
template <class TsOf>
std::vector<TimedData> retimed(std::vector<TimedData> events, TsOf ts_of) {
  for (std::size_t i = 0; i < events.size(); ++i) events[i].ts = ts_of(i);
  return events;
}

// vLLM's engine dies mid-stream: a token, the error it streams, [DONE].
std::vector<TimedData> engine_death_stream() {
  return {
      {1000, chunk(R"("par")")},
      {1500,
       R"({"error": {"message": "EngineCore encountered an issue. See stack trace (above) for the root cause.", "type": "InternalServerError", "param": null, "code": 500}})"},
      {1600, "[DONE]"},
  };
}

// A gateway's form of the same: a typed error event, then [DONE].
std::vector<TimedData> error_event_stream() {
  return {
      {1000, chunk(R"("par")")},
      {1200, chunk(R"("tial")")},
      {1500, R"({"message":"EngineDeadError","type":"InternalServerError","code":500})", "error"},
      {1600, "[DONE]"},
  };
}

}  // namespace

TEST_CASE("completions: vLLM stream with escapes, UTF-8, finish length, usage and [DONE]",
          "[completions]") {
  const Answer answer = assemble(vllm_stream());
  check_vllm_answer(answer);

  SECTION("times: first event, first token, gaps between token events") {
    CHECK(answer.first_event_ts == 1000);
    CHECK(answer.first_token_ts == 1000);
    CHECK(answer.last_token_ts == 2500);
    CHECK(answer.last_event_ts == 2700);
    CHECK(answer.token_gaps_us == std::vector<std::uint32_t>{300, 300, 400, 500});
    CHECK(answer.gap_percentile_ms(50) == Approx(0.3));
    CHECK(answer.gap_percentile_ms(100) == Approx(0.5));
  }
}

TEST_CASE("completions: streams through the SSE decoder split at every byte give the same answer",
          "[completions]") {
  for (const auto& events : {vllm_stream(), engine_death_stream(), error_event_stream()}) {
    const SseBytes sse = as_sse(events);
    const std::string_view stream = sse.text;
    for (std::size_t split = 0; split <= stream.size(); ++split) {
      SseDecoder decoder;
      CompletionsReader reader;
      decoder.feed(1, stream.substr(0, split), reader);
      decoder.feed(2, stream.substr(split), reader);
      decoder.finish();
      INFO("split at " << split << " of " << stream.size());
      REQUIRE(decoder.discarded_tail_bytes() == 0);
      // An event is at the first packet's time if its last byte was in it.
      const Answer want = assemble(retimed(events, [&](std::size_t i) { return split > sse.dispatch_at[i] ? 1 : 2; }));
      check_same_answer(reader.answer(), want);
      REQUIRE(reader.answer().events == events.size());
    }
  }
  // And the reference itself is the expected answer.
  const SseBytes sse = as_sse(vllm_stream());
  SseDecoder decoder;
  CompletionsReader reader;
  decoder.feed(1, sse.text, reader);
  check_vllm_answer(reader.answer());
}

TEST_CASE("completions: streams fed to the SSE decoder one byte at a time give the same answer",
          "[completions]") {
  for (const auto& events : {vllm_stream(), engine_death_stream(), error_event_stream()}) {
    const SseBytes sse = as_sse(events);
    SseDecoder decoder;
    CompletionsReader reader;
    for (std::size_t i = 0; i < sse.text.size(); ++i) {
      decoder.feed(static_cast<timestamp_us>(i + 1), std::string_view(sse.text).substr(i, 1), reader);
    }
    decoder.finish();
    CHECK(decoder.discarded_tail_bytes() == 0);
    // Each event at the time of the byte that completed it.
    const Answer want =
        assemble(retimed(events, [&](std::size_t i) { return static_cast<timestamp_us>(sse.dispatch_at[i] + 1); }));
    check_same_answer(reader.answer(), want);
    CHECK(reader.answer().events == events.size());
    CHECK(reader.answer().first_token_ts == static_cast<timestamp_us>(sse.dispatch_at[0] + 1));
  }
}

TEST_CASE("completions: a stream cut anywhere gives the answer of the events before the cut",
          "[completions]") {
  const std::vector<TimedData> events = vllm_stream();
  const SseBytes sse = as_sse(events);
  for (std::size_t cut = 0; cut <= sse.text.size(); ++cut) {
    SseDecoder decoder;
    CompletionsReader reader;
    decoder.feed(7, std::string_view(sse.text).substr(0, cut), reader);
    decoder.finish();
    std::vector<TimedData> before;
    bool at_boundary = cut == 0;
    for (std::size_t i = 0; i < events.size(); ++i) {
      if (sse.dispatch_at[i] < cut) before.push_back(events[i]);
      at_boundary = at_boundary || cut == sse.dispatch_at[i] + 1;
    }
    INFO("cut at " << cut);
    check_same_answer(reader.answer(), assemble(retimed(before, [](std::size_t) { return 7; })));
    CHECK((decoder.discarded_tail_bytes() == 0) == at_boundary);
  }

  SECTION("cut in the middle of the finish chunk's JSON") {
    const std::string head = "data: " + events[0].data + "\n\ndata: " + events[2].data + "\n\n";
    const std::string partial = "data: " + events[5].data.substr(0, 120);
    SseDecoder decoder;
    CompletionsReader reader;
    decoder.feed(10, head, reader);
    decoder.feed(20, partial, reader);
    decoder.finish();
    CHECK(decoder.discarded_tail_bytes() == partial.size());
    const Answer& answer = reader.answer();
    CHECK(answer.content == "Caf\xC3\xA9 \"quoted\" \\ back\nslash");
    CHECK(answer.finish_reason.empty());
    CHECK(answer.usage_json.empty());
    CHECK_FALSE(answer.done);
    CHECK(answer.events == 2);
    CHECK(answer.bad_events == 0);
    CHECK(answer.last_event_ts == 10);
  }
}

TEST_CASE("completions: only choice 0 is recorded, whatever the key order", "[completions]") {
  const Answer answer = assemble({
      {1, R"({"choices":[{"index":0,"text":"zero "},{"index":1,"text":"ONE","finish_reason":"length"}]})"},
      {2, R"({"choices":[{"text":"ONE","index":1,"finish_reason":"length"}]})"},  // index after text
      {3, R"({"choices":[{"text":"and ","logprobs":null,"index":0}]})"},       // index after text, 0
      {4, R"({"choices":[{"index":1,"text":"ONE"},{"text":"end","finish_reason":"stop"}]})"},  // no index: 0
      {5, R"({"choices":[{"index":"0","text":"NOT"}]})"},  // an index that is no integer is not 0
      {6, R"({"choices":[{"index":2,"text":"TWO","finish_reason":"length"}]})"},
  });
  CHECK(answer.content == "zero and end");
  CHECK(answer.finish_reason == "stop");
  CHECK(answer.token_events == 3);
  CHECK(answer.first_token_ts == 1);
  CHECK(answer.token_gaps_us == std::vector<std::uint32_t>{2, 1});
  CHECK(answer.bad_events == 0);
}

TEST_CASE("completions: a choice's keys are matched whole, at their own level", "[completions]") {
  const Answer answer = assemble({
      // `text` inside logprobs (a top_logprobs token) and look-alike keys are not the text.
      {1, R"({"models":"no","model":"m","choices":[{"indexes":1,"index":0,"texts":"no","logprobs":{"text_offset":[0],"tokens":[" yes"],"top_logprobs":[{"text":-0.5," yes":-0.1}]},"text":" yes","text":"no","finish_reasons":"no","finish_reason":null}],"usages":{"a":1},"errors":{"message":"no"},"objects":"error"})"},
      {2, R"({"choices":[{"finish_reason":"stop","text":"","index":0}],"usage":{"completion_tokens":1}})"},
  });
  CHECK(answer.model == "m");
  CHECK(answer.content == " yes");
  CHECK(answer.finish_reason == "stop");
  CHECK(answer.usage_json == R"({"completion_tokens":1})");
  CHECK(answer.error_json.empty());
  CHECK(answer.bad_events == 0);
  CHECK(answer.token_events == 1);
}

TEST_CASE("completions: error objects in a stream", "[completions]") {
  SECTION("vLLM: data: {\"error\": {...}}, then [DONE]") {
    const Answer answer = assemble(engine_death_stream());
    CHECK(answer.error_json ==
          R"({"message": "EngineCore encountered an issue. See stack trace (above) for the root cause.", "type": "InternalServerError", "param": null, "code": 500})");
    CHECK(answer.content == "par");
    CHECK(answer.error_ts == 1500);       // when the stream said it failed: a death is dated by it
    CHECK(answer.last_event_ts == 1600);  // not by the [DONE] after it
    CHECK(answer.done);
    CHECK(answer.events == 3);
    CHECK(answer.token_events == 1);
    CHECK(answer.bad_events == 0);
  }
  SECTION("event: error with a JSON object, then [DONE]") {
    const Answer answer = assemble(error_event_stream());
    CHECK(answer.error_json == R"({"message":"EngineDeadError","type":"InternalServerError","code":500})");
    CHECK(answer.content == "partial");
    CHECK(answer.error_ts == 1500);
    CHECK(answer.last_event_ts == 1600);
    CHECK(answer.done);
    CHECK(answer.bad_events == 0);
  }
  SECTION("event: error with an error object inside") {
    const Answer answer = assemble({{1, R"({"error":{"message":"x","code":500}})", "error"}, {2, "[DONE]"}});
    CHECK(answer.error_json == R"({"message":"x","code":500})");
    CHECK(answer.error_ts == 1);
  }
  SECTION("event: error with plain text is kept as a JSON string") {
    const Answer answer = assemble({{3, "Internal \"server\" error\tnow", "error"}, {4, "[DONE]"}});
    CHECK(answer.error_json == R"("Internal \"server\" error\tnow")");
    CHECK(answer.error_ts == 3);
    CHECK(answer.bad_events == 0);
  }
  SECTION("a chunk that says \"object\": \"error\" is kept whole, however it is written") {
    const std::string data = R"({"object":"\u0065rror","message":"boom","type":"InternalServerError","code":500})";
    const Answer answer = assemble({{1, chunk(R"("a")")}, {2, " " + data + " \n"}, {3, "[DONE]"}});
    CHECK(answer.error_json == data);
    CHECK(answer.error_ts == 2);
    CHECK(answer.content == "a");
  }
  SECTION("the first error dates the failure") {
    const Answer answer = assemble({
        {5, R"({"error":{"message":"first"}})"},
        {6, R"({"error":{"message":"second"}})"},
    });
    CHECK(answer.error_ts == 5);
  }
  SECTION("\"error\": null and the usual kind are no error") {
    const Answer answer = assemble({
        {1, R"({"object":"text_completion","choices":[],"error":null})"},
        {2, R"({"object" : "text_completion"  ,"choices":[]})"},
        {3, R"({"object":"text\u005fcompletion","choices":[]})"},
    });
    CHECK(answer.error_json.empty());
    CHECK(answer.error_ts == 0);
    CHECK(answer.bad_events == 0);
  }
}

TEST_CASE("completions: unreadable data is counted and the stream goes on", "[completions]") {
  const Answer answer = assemble({
      {1, chunk(R"("a")")},
      {2, "not json"},
      {3, R"({"choices":[{"index":0,"text":"b)"},  // truncated
      {4, "17"},                                   // a number where an object should be
      {5, R"({"choices":[{"index":0,"text":5}]})"},  // text not a string
      {6, ""},                                      // an empty event is a keep-alive, not bad
      {7, R"({"choices":[{"index":0,"text":null}]})"},  // null text: no text, not bad
      {8, R"({"choices":[{"index":1,"text":5}]})"},     // another choice's text is not read
      {9, chunk(R"("c")", R"("stop")")},
      {10, " [DONE] \n"},
  });
  CHECK(answer.content == "ac");
  CHECK(answer.finish_reason == "stop");
  CHECK(answer.bad_events == 4);
  CHECK(answer.events == 10);
  CHECK(answer.token_events == 2);
  CHECK(answer.done);
  CHECK(answer.error_json.empty());
  CHECK(answer.model == "Qwen/Qwen2.5-1.5B-Instruct");
}

TEST_CASE("completions: a value that is no text or no JSON where a field is read is a bad event",
          "[completions]") {
  for (const char* data : {
           "not json",
           R"({"choices":[{"index":0,"text":"b)",
           "17",
           "[1, 2]",
           "\"a string\"",
           "null",
           R"({"choices":[]} trailing)",
           R"({"choices":[{"index":0,"text":5}]})",
           R"({"choices":[{"index":0,"text":true}]})",
           R"({"choices":[{"index":0,"text":["a"]}]})",
           R"({"choices":[{"text":{"t":"a"}}]})",
           R"({"choices":[{"index":0,"text":x}]})",
           R"({"choices":[{"index":0,"text":"a\q"}]})",
           "{\"choices\":[{\"index\":0,\"text\":\"\xFF\"}]}",
           R"({"choices":[{"index":x,"text":"a"}]})",
           R"({"choices":[{"index":0,"text":"a","finish_reason":x}]})",
           R"({"choices":x})",
           R"({"choices":[x]})",
           R"({"model":x,"choices":[]})",
           R"({"object":x,"choices":[]})",
           R"({"usage":x,"choices":[]})",
           R"({"choices":[],"usage":{"prompt_tokens":x}})",
           R"({"choices":[],"usage":{"completion_tokens":[}})",
       }) {
    INFO("data: " << data);
    const Answer answer = assemble({{1, data}});
    CHECK(answer.bad_events == 1);
    CHECK(answer.content.empty());
    CHECK(answer.usage_json.empty());
    CHECK_FALSE(answer.input_tokens.has_value());
    CHECK(answer.token_events == 0);
  }
}

TEST_CASE("completions: usage, the last object wins, null ignored, tokens from the same object",
          "[completions]") {
  SECTION("include_usage's last chunk, after chunks with \"usage\": null") {
    const Answer answer = assemble({
        {1, R"({"choices":[{"index":0,"text":"a"}],"usage":{"prompt_tokens":5,"total_tokens":6,"completion_tokens":1}})"},
        {2, R"({"choices":[{"index":0,"text":"b"}],"usage":{"prompt_tokens":5,"total_tokens":7,"completion_tokens":2}  ,"x":1})"},
        {3, R"({"choices":[],"usage":null})"},
    });
    CHECK(answer.usage_json == R"({"prompt_tokens":5,"total_tokens":7,"completion_tokens":2})");
    CHECK(answer.input_tokens == 5);
    CHECK(answer.output_tokens == 2);
  }
  SECTION("counts in any order, among other fields; none when the object has none") {
    const Answer with_counts =
        assemble({{1, R"({"usage":{"prompt_tokens_details":{"cached_tokens":3},"completion_tokens":9,"prompt_tokens":4}})"}});
    CHECK(with_counts.input_tokens == 4);
    CHECK(with_counts.output_tokens == 9);
    const Answer without = assemble({{1, R"({"usage":{"prompt_tokens":4}})"}, {2, R"({"usage":{"total_tokens":4}})"}});
    CHECK(without.usage_json == R"({"total_tokens":4})");
    CHECK_FALSE(without.input_tokens.has_value());
    CHECK_FALSE(without.output_tokens.has_value());
  }
}

TEST_CASE("completions: the first model seen is the answer's", "[completions]") {
  const Answer answer = assemble({
      {1, R"({"choices":[]})"},
      {2, R"({"model":"first","choices":[]})"},
      {3, R"({"model":"second","choices":[]})"},
  });
  CHECK(answer.model == "first");
}

TEST_CASE("completions: token events are the events whose choice-0 text is not empty",
          "[completions]") {
  const Answer answer = assemble({
      {100, chunk(R"("")")},  // vLLM's first chunk may carry no text
      {250, chunk(R"("Hello")")},
      {300, ""},  // keep-alive
      {420, chunk(R"("")")},
      {500, chunk(R"(",")")},
      {900, R"({"choices":[{"index":1,"text":"other choice"}]})"},
      {1000, chunk(R"(" world")")},
      {1100, chunk(R"("")", R"("stop")")},
      {1200, R"({"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":3}})"},
      {1300, "[DONE]"},
  });
  CHECK(answer.content == "Hello, world");
  CHECK(answer.events == 10);
  CHECK(answer.token_events == 3);
  CHECK(answer.first_event_ts == 100);
  CHECK(answer.first_token_ts == 250);
  CHECK(answer.last_token_ts == 1000);
  CHECK(answer.last_event_ts == 1300);
  CHECK(answer.token_gaps_us == std::vector<std::uint32_t>{250, 500});
  CHECK(answer.finish_reason == "stop");
  CHECK(answer.bad_events == 0);
}

TEST_CASE("completions: text over the cap is cut at a UTF-8 boundary and flagged", "[completions]") {
  const std::string almost(Answer::kMaxTextBytes - 1, 'a');
  const Answer answer = assemble({
      {1, chunk("\"" + almost + "\"")},
      {2, chunk(R"("\u00e9")")},  // 2 bytes: does not fit, and is not cut in half
  });
  CHECK(answer.content.size() == Answer::kMaxTextBytes - 1);
  CHECK(answer.content.back() == 'a');
  CHECK(answer.text_truncated);
  CHECK(answer.token_events == 2);
}

TEST_CASE("completions: start() forgets everything", "[completions]") {
  CompletionsReader reader;
  feed(reader, engine_death_stream());
  reader.start();
  const Answer& answer = reader.answer();
  CHECK(answer.content.empty());
  CHECK(answer.error_json.empty());
  CHECK(answer.error_ts == 0);
  CHECK(answer.model.empty());
  CHECK_FALSE(answer.done);
  CHECK(answer.events == 0);
  CHECK(answer.token_events == 0);
  CHECK(answer.first_token_ts == 0);
  CHECK(answer.token_gaps_us.empty());
  // And it assembles a second stream from scratch, the same way.
  feed(reader, vllm_stream());
  check_vllm_answer(reader.answer());
}

// ---------------------------------------------------------------------------------------

TEST_CASE("completions: non-streamed text_completion", "[completions]") {
  Answer answer;
  REQUIRE(assemble_body(
      R"j({"id":"cmpl-5d2e","object":"text_completion","created":1764000000,"model":"Qwen/Qwen2.5-1.5B-Instruct","choices":[{"index":0,"text":" Paris.\nThe capital of France is \"Paris\" \u2014 caf\u00e9 \ud83d\ude80 $(id)","logprobs":null,"finish_reason":"stop","stop_reason":null,"prompt_logprobs":null}],"usage":{"prompt_tokens":6,"total_tokens":16,"completion_tokens":10,"prompt_tokens_details":null},"kv_transfer_params":null}
)j",
      answer));
  CHECK(answer.model == "Qwen/Qwen2.5-1.5B-Instruct");
  CHECK(answer.content ==
        " Paris.\nThe capital of France is \"Paris\" \xE2\x80\x94 caf\xC3\xA9 \xF0\x9F\x9A\x80 $(id)");
  CHECK(answer.finish_reason == "stop");
  CHECK(answer.usage_json ==
        R"({"prompt_tokens":6,"total_tokens":16,"completion_tokens":10,"prompt_tokens_details":null})");
  CHECK(answer.input_tokens == 6);
  CHECK(answer.output_tokens == 10);
  CHECK(answer.error_json.empty());
  CHECK(answer.events == 0);  // a body is no event stream
  CHECK(answer.token_events == 0);
  CHECK_FALSE(answer.done);
  CHECK(answer.bad_events == 0);
}

TEST_CASE("completions: non-streamed n = 2, index after text", "[completions]") {
  Answer answer;
  REQUIRE(assemble_body(
      R"({"choices":[{"text":" one","index":1,"logprobs":null,"finish_reason":"length"},{"text":" zero","logprobs":{"text_offset":[0],"token_logprobs":[-0.2],"tokens":[" zero"],"top_logprobs":[{"text":-0.5," zero":-0.2}]},"finish_reason":"stop","index":0}],"model":"m"})",
      answer));
  CHECK(answer.content == " zero");
  CHECK(answer.finish_reason == "stop");
  CHECK(answer.model == "m");
}

TEST_CASE("completions: non-streamed error bodies keep the whole object", "[completions]") {
  SECTION("vLLM ErrorResponse") {
    const std::string body =
        R"({"object":"error","message":"This model's maximum context length is 2048 tokens. However, you requested 4096 tokens.","type":"BadRequestError","param":null,"code":400})";
    Answer answer;
    CHECK(assemble_body(body + "\n", answer));
    CHECK(answer.error_json == body);
    CHECK(answer.content.empty());
    CHECK(answer.error_ts == 0);  // a body has no event times
  }
  SECTION("OpenAI-style {\"error\": {...}}") {
    const std::string body =
        R"({"error":{"message":"EngineCore encountered an issue.","type":"InternalServerError","param":null,"code":500}})";
    Answer answer;
    CHECK(assemble_body("  " + body, answer));
    CHECK(answer.error_json == body);
  }
}

TEST_CASE("completions: non-streamed bodies that are not a JSON object", "[completions]") {
  for (const char* body : {"", "Internal Server Error", "[]", "{\"choices\":[", "null", "42", "\"text\"",
                           "{\"choices\":[]} {}", R"({"choices":[{"index":0,"text":7}]})"}) {
    INFO("body: " << body);
    Answer answer;
    CHECK_FALSE(assemble_body(body, answer));
    CHECK(answer.content.empty());
  }
}

}  // namespace chatcap
