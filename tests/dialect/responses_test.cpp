// The Responses API: the reader of typed stream events and whole response objects, against
// the shapes vLLM sends (its openai types dump their fields in declaration order, `type`
// last) and the OpenAI SDK reads.
#include "chatcap/dialect/responses.hpp"

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "chatcap/sse.hpp"

namespace chatcap {
namespace {

// One SSE event as the decoder would hand it over; `token`: it carries generated text (what
// the test expects, not what the reader is told).
struct TimedEvent {
  timestamp_us ts = 0;
  std::string type;  // the `event:` name, "message" for none
  std::string data;
  bool token = false;
};

void feed(ResponsesReader& reader, const std::vector<TimedEvent>& events) {
  for (const TimedEvent& e : events) {
    SseEvent event;
    event.ts = e.ts;
    event.type = e.type;
    event.data = e.data;
    reader.on_sse_event(event);
  }
}

Answer assemble(const std::vector<TimedEvent>& events) {
  ResponsesReader reader;
  feed(reader, events);
  return reader.answer();
}

bool read_body(std::string_view body, Answer& out) {
  ResponsesReader reader;
  return reader.read_body(body, out);
}

// A JSON string literal of `text` (nlohmann writes UTF-8 as it is, escapes " \ and controls).
std::string literal(std::string_view text) { return nlohmann::json(std::string(text)).dump(); }

// `text` in pieces of at most `bytes` bytes, never inside a UTF-8 character (a server's
// deltas are decoded text).
std::vector<std::string> pieces_of(std::string_view text, std::size_t bytes) {
  std::vector<std::string> pieces;
  while (!text.empty()) {
    std::size_t cut = std::min(bytes, text.size());
    while (cut < text.size() && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
    pieces.emplace_back(text.substr(0, cut));
    text.remove_prefix(cut);
  }
  return pieces;
}

std::string as_sse(const std::vector<TimedEvent>& events) {
  std::string text;
  for (const TimedEvent& e : events) {
    if (e.type != "message") text += "event: " + e.type + "\n";
    text += "data: " + e.data + "\n\n";
  }
  return text;
}

// vLLM's response object (ResponsesResponse), with its fields in vLLM's order.
std::string response_object(const std::string& status, const std::string& output, const std::string& usage,
                            const std::string& incomplete_details = "null", const std::string& error = "null") {
  return R"({"id":"resp_7f3a","created_at":1764000000,"incomplete_details":)" + incomplete_details +
         R"(,"instructions":null,"metadata":null,"model":"openai/gpt-oss-120b","object":"response","output":)" +
         output +
         R"(,"parallel_tool_calls":true,"temperature":1.0,"tool_choice":"auto","tools":[{"name":"run_shell","parameters":{"type":"object","properties":{"cmd":{"type":"string"}}},"strict":null,"type":"function","description":null}],"top_p":1.0,"background":false,"max_output_tokens":2048,"max_tool_calls":null,"previous_response_id":null,"prompt":null,"reasoning":null,"service_tier":"auto","status":")" +
         status + R"(","text":null,"top_logprobs":null,"truncation":"disabled","usage":)" + usage +
         R"(,"user":null,"error":)" + error + "}";
}

const std::string kUsage =
    R"({"input_tokens":42,"input_tokens_details":{"cached_tokens":0},"output_tokens":57,"output_tokens_details":{"reasoning_tokens":6},"total_tokens":99})";

// What the model says in the vLLM stream below.
const std::vector<std::string> kReasoningDeltas = {"The user", " wants a ", "rocket."};
const std::string kReasoning = "The user wants a rocket.";
// Content deltas as written in the data (escapes and raw UTF-8), and what they stand for.
const std::vector<std::string> kContentDeltasJson = {R"("Caf\u00e9 ")", R"("\"quoted\" ")",
                                                     R"("back\\slash\n")", "\"\xF0\x9F\x9A\x80 \"", R"x("$(id)")x"};
const std::string kContent = "Caf\xC3\xA9 \"quoted\" back\\slash\n\xF0\x9F\x9A\x80 $(id)";
const std::string kArguments =
    "{\"cmd\": \"echo \\\"$(id)\\\" > /tmp/caf\xC3\xA9\\n\", \"icon\": \"\xF0\x9F\x9A\x80\", \"dir\": \"C:\\\\tmp\"}";

const std::string kReasoningItem =
    R"({"id":"rs_1","summary":[],"type":"reasoning","content":[{"text":")" + kReasoning +
    R"(","type":"reasoning_text"}],"encrypted_content":null,"status":"completed"})";
const std::string kMessageItem = R"({"id":"msg_1","content":[{"annotations":[],"text":)" + literal(kContent) +
                                 R"(,"type":"output_text","logprobs":null}],"role":"assistant","status":"completed","type":"message"})";
const std::string kCallItem = R"({"arguments":)" + literal(kArguments) +
                              R"(,"call_id":"call_f00d","name":"run_shell","type":"function_call","id":"fc_1","status":"completed"})";

// vLLM serving gpt-oss: created, in_progress; a reasoning item, a message item, a function
// call whose arguments come in 7-byte fragments; each with its added/part/done events; then
// response.completed repeating the whole output with usage. Events 100 us apart.
std::vector<TimedEvent> vllm_stream() {
  std::vector<TimedEvent> events;
  int seq = 0;
  auto add = [&events, &seq](const std::string& type, const std::string& fields, bool token = false) {
    const std::string data = "{" + fields + (fields.empty() ? "" : ",") + R"("sequence_number":)" +
                             std::to_string(seq++) + R"(,"type":")" + type + "\"}";
    events.push_back({1000 + 100 * static_cast<timestamp_us>(events.size()), type, data, token});
  };
  const std::string pending = response_object("in_progress", "[]", "null");
  add("response.created", R"("response":)" + pending);
  add("response.in_progress", R"("response":)" + pending);

  add("response.output_item.added",
      R"("item":{"id":"rs_1","summary":[],"type":"reasoning","content":null,"encrypted_content":null,"status":"in_progress"},"output_index":0)");
  add("response.content_part.added",
      R"("content_index":0,"item_id":"rs_1","output_index":0,"part":{"text":"","type":"reasoning_text"})");
  for (const std::string& delta : kReasoningDeltas) {
    add("response.reasoning_text.delta",
        R"("content_index":0,"delta":)" + literal(delta) + R"(,"item_id":"rs_1","output_index":0)", true);
  }
  add("response.reasoning_text.done",
      R"("content_index":0,"item_id":"rs_1","output_index":0,"text":)" + literal(kReasoning));
  add("response.content_part.done",
      R"("content_index":0,"item_id":"rs_1","output_index":0,"part":{"text":)" + literal(kReasoning) +
          R"(,"type":"reasoning_text"})");
  add("response.output_item.done", R"("item":)" + kReasoningItem + R"(,"output_index":0)");

  add("response.output_item.added",
      R"("item":{"id":"msg_1","content":[],"role":"assistant","status":"in_progress","type":"message"},"output_index":1)");
  add("response.content_part.added",
      R"("content_index":0,"item_id":"msg_1","output_index":1,"part":{"annotations":[],"text":"","type":"output_text","logprobs":null})");
  for (const std::string& delta : kContentDeltasJson) {
    add("response.output_text.delta",
        R"("content_index":0,"delta":)" + delta + R"(,"item_id":"msg_1","logprobs":[],"output_index":1)", true);
  }
  add("response.output_text.done",
      R"("content_index":0,"item_id":"msg_1","logprobs":[],"output_index":1,"text":)" + literal(kContent));
  add("response.content_part.done",
      R"("content_index":0,"item_id":"msg_1","output_index":1,"part":{"annotations":[],"text":)" + literal(kContent) +
          R"(,"type":"output_text","logprobs":null})");
  add("response.output_item.done", R"("item":)" + kMessageItem + R"(,"output_index":1)");

  add("response.output_item.added",
      R"("item":{"arguments":"","call_id":"call_f00d","name":"run_shell","type":"function_call","id":"fc_1","status":"in_progress"},"output_index":2)");
  for (const std::string& piece : pieces_of(kArguments, 7)) {
    add("response.function_call_arguments.delta",
        R"("delta":)" + literal(piece) + R"(,"item_id":"fc_1","output_index":2)", true);
  }
  add("response.function_call_arguments.done",
      R"("arguments":)" + literal(kArguments) + R"(,"item_id":"fc_1","name":"run_shell","output_index":2)");
  add("response.output_item.done", R"("item":)" + kCallItem + R"(,"output_index":2)");

  add("response.completed",
      R"("response":)" + response_object("completed", "[" + kReasoningItem + "," + kMessageItem + "," + kCallItem + "]",
                                         kUsage));
  return events;
}

std::vector<std::uint32_t> expected_gaps(const std::vector<TimedEvent>& events) {
  std::vector<std::uint32_t> gaps;
  timestamp_us last = 0;
  for (const TimedEvent& e : events) {
    if (!e.token) continue;
    if (last != 0) gaps.push_back(static_cast<std::uint32_t>(e.ts - last));
    last = e.ts;
  }
  return gaps;
}

void check_vllm_answer(const Answer& answer) {
  const std::vector<TimedEvent> events = vllm_stream();
  CHECK(answer.model == "openai/gpt-oss-120b");
  CHECK(answer.reasoning == kReasoning);
  CHECK(answer.content == kContent);
  REQUIRE(answer.tool_calls.size() == 1);
  CHECK(answer.tool_calls[0].index == 0);
  CHECK(answer.tool_calls[0].id == "call_f00d");
  CHECK(answer.tool_calls[0].type == "function");
  CHECK(answer.tool_calls[0].name == "run_shell");
  CHECK(answer.tool_calls[0].arguments == kArguments);
  CHECK(answer.finish_reason == "tool_calls");
  CHECK(answer.native_finish_reason == "completed");
  CHECK(answer.usage_json == kUsage);
  CHECK(answer.input_tokens == 42);
  CHECK(answer.output_tokens == 57);
  CHECK(answer.error_json.empty());
  CHECK(answer.error_ts == 0);
  CHECK(answer.done);
  CHECK(answer.events == events.size());
  CHECK(answer.bad_events == 0);
  CHECK_FALSE(answer.text_truncated);
  const auto tokens = std::count_if(events.begin(), events.end(), [](const TimedEvent& e) { return e.token; });
  CHECK(answer.token_events == static_cast<std::uint64_t>(tokens));
}

// Every field of two answers; `times`: the timestamps too.
void check_same_answer(const Answer& got, const Answer& want, bool times) {
  CHECK(got.content == want.content);
  CHECK(got.reasoning == want.reasoning);
  CHECK(got.events == want.events);
  CHECK(got.token_events == want.token_events);
  CHECK(got.done == want.done);
  CHECK(got.text_truncated == want.text_truncated);
  CHECK(got.bad_events == want.bad_events);
  CHECK(got.finish_reason == want.finish_reason);
  CHECK(got.native_finish_reason == want.native_finish_reason);
  CHECK(got.input_tokens == want.input_tokens);
  CHECK(got.output_tokens == want.output_tokens);
  CHECK(got.usage_json == want.usage_json);
  CHECK(got.error_json == want.error_json);
  CHECK(got.model == want.model);
  CHECK(got.dialect == want.dialect);
  CHECK(got.token_gaps_us.size() == want.token_gaps_us.size());
  REQUIRE(got.tool_calls.size() == want.tool_calls.size());
  for (std::size_t i = 0; i < got.tool_calls.size(); ++i) {
    CHECK(got.tool_calls[i].index == want.tool_calls[i].index);
    CHECK(got.tool_calls[i].id == want.tool_calls[i].id);
    CHECK(got.tool_calls[i].type == want.tool_calls[i].type);
    CHECK(got.tool_calls[i].name == want.tool_calls[i].name);
    CHECK(got.tool_calls[i].arguments == want.tool_calls[i].arguments);
  }
  if (!times) return;
  CHECK(got.first_event_ts == want.first_event_ts);
  CHECK(got.first_token_ts == want.first_token_ts);
  CHECK(got.last_token_ts == want.last_token_ts);
  CHECK(got.last_event_ts == want.last_event_ts);
  CHECK(got.error_ts == want.error_ts);
  CHECK(got.token_gaps_us == want.token_gaps_us);
}

// One event named and typed `type`, 100 us after the one before.
struct StreamBuilder {
  std::vector<TimedEvent> events;
  void add(const std::string& type, const std::string& fields, bool named = true) {
    const std::string data = "{" + fields + (fields.empty() ? "" : ",") + R"("type":")" + type + "\"}";
    events.push_back({100 * static_cast<timestamp_us>(events.size() + 1), named ? type : "message", data});
  }
  void text(const std::string& delta) {
    add("response.output_text.delta", R"("content_index":0,"delta":)" + literal(delta) +
                                          R"(,"item_id":"msg_1","output_index":0)");
  }
};

}  // namespace

TEST_CASE("responses: a vLLM stream with reasoning, content and a function call", "[responses]") {
  const std::vector<TimedEvent> events = vllm_stream();
  const Answer answer = assemble(events);
  check_vllm_answer(answer);
  // The 7-byte fragments are the stream (and are more than one).
  CHECK(pieces_of(kArguments, 7).size() > 5);

  SECTION("times: first event, first and last token, the gaps between token events") {
    CHECK(answer.first_event_ts == events.front().ts);
    CHECK(answer.last_event_ts == events.back().ts);
    const auto first_token = std::find_if(events.begin(), events.end(), [](const TimedEvent& e) { return e.token; });
    const auto last_token = std::find_if(events.rbegin(), events.rend(), [](const TimedEvent& e) { return e.token; });
    CHECK(answer.first_token_ts == first_token->ts);
    CHECK(answer.last_token_ts == last_token->ts);
    CHECK(answer.token_gaps_us == expected_gaps(events));
    CHECK(answer.token_gaps_us.front() == 100);
  }
}

TEST_CASE("responses: the same stream as SSE bytes, split at every byte", "[responses]") {
  const std::vector<TimedEvent> events = vllm_stream();
  const Answer want = assemble(events);
  const std::string stream = as_sse(events);

  SECTION("two fragments, split anywhere") {
    for (std::size_t split = 0; split <= stream.size(); ++split) {
      SseDecoder decoder;
      ResponsesReader reader;
      decoder.feed(1, std::string_view(stream).substr(0, split), reader);
      decoder.feed(2, std::string_view(stream).substr(split), reader);
      decoder.finish();
      INFO("split at " << split);
      REQUIRE(decoder.discarded_tail_bytes() == 0);
      check_same_answer(reader.answer(), want, false);
      check_vllm_answer(reader.answer());
    }
  }
  SECTION("one byte at a time, each at its event's time") {
    SseDecoder decoder;
    ResponsesReader reader;
    std::size_t at = 0;
    for (const TimedEvent& e : events) {
      const std::string bytes = as_sse({e});
      for (char byte : bytes) decoder.feed(e.ts, std::string_view(&byte, 1), reader);
      at += bytes.size();
    }
    REQUIRE(at == stream.size());
    decoder.finish();
    check_same_answer(reader.answer(), want, true);
    check_vllm_answer(reader.answer());
  }
  SECTION("CRLF line ends, one fragment") {
    std::string crlf;
    for (char c : stream) {
      if (c == '\n') crlf += '\r';
      crlf += c;
    }
    SseDecoder decoder;
    ResponsesReader reader;
    decoder.feed(1, crlf, reader);
    check_same_answer(reader.answer(), want, false);
  }
}

TEST_CASE("responses: with no event: names, the data's type (last in vLLM's JSON) says the kind",
          "[responses]") {
  std::vector<TimedEvent> events = vllm_stream();
  for (TimedEvent& e : events) e.type = "message";
  check_same_answer(assemble(events), assemble(vllm_stream()), true);
  check_vllm_answer(assemble(events));
}

TEST_CASE("responses: an incomplete response", "[responses]") {
  auto stream = [](const std::string& incomplete_details) {
    StreamBuilder s;
    s.add("response.created", R"("response":)" + response_object("in_progress", "[]", "null"));
    s.text("Hello");
    s.text(" wor");
    s.add("response.incomplete",
          R"("response":)" +
              response_object("incomplete",
                              R"([{"id":"msg_1","content":[{"annotations":[],"text":"Hello wor","type":"output_text"}],"role":"assistant","status":"incomplete","type":"message"}])",
                              R"({"input_tokens":5,"output_tokens":2,"total_tokens":7})", incomplete_details));
    return assemble(s.events);
  };
  SECTION("max_output_tokens: length") {
    const Answer answer = stream(R"({"reason":"max_output_tokens"})");
    CHECK(answer.content == "Hello wor");  // not again from the final output
    CHECK(answer.finish_reason == "length");
    CHECK(answer.native_finish_reason == "incomplete:max_output_tokens");
    CHECK(answer.done);
    CHECK(answer.input_tokens == 5);
    CHECK(answer.output_tokens == 2);
    CHECK(answer.token_events == 2);
    CHECK(answer.error_json.empty());
    CHECK(answer.error_ts == 0);
  }
  SECTION("content_filter") {
    const Answer answer = stream(R"({"reason":"content_filter"})");
    CHECK(answer.finish_reason == "content_filter");
    CHECK(answer.native_finish_reason == "incomplete:content_filter");
  }
  SECTION("another reason, and none") {
    CHECK(stream(R"({"reason":"engine_preempted"})").finish_reason == "length");
    CHECK(stream(R"({"reason":"engine_preempted"})").native_finish_reason == "incomplete:engine_preempted");
    CHECK(stream("null").finish_reason == "length");
    CHECK(stream("null").native_finish_reason == "incomplete");
  }
}

TEST_CASE("responses: a completed answer with no function call stops", "[responses]") {
  StreamBuilder s;
  s.text("Hi");
  s.add("response.completed", R"("response":{"status":"completed","output":[],"usage":null})");
  const Answer answer = assemble(s.events);
  CHECK(answer.finish_reason == "stop");
  CHECK(answer.native_finish_reason == "completed");
  CHECK(answer.usage_json.empty());
  CHECK_FALSE(answer.input_tokens);
  CHECK(answer.done);
}

TEST_CASE("responses: errors in a stream", "[responses]") {
  const std::string error =
      R"({"code":"InternalServerError","message":"EngineCore encountered an issue. See stack trace (above) for the root cause.","param":null,"sequence_number":7,"type":"error"})";
  SECTION("vLLM's error event after some text") {
    StreamBuilder s;
    s.text("par");
    s.text("tial");
    s.events.push_back({900, "error", error});
    const Answer answer = assemble(s.events);
    CHECK(answer.error_json == error);
    CHECK(answer.error_ts == 900);
    CHECK(answer.content == "partial");
    CHECK_FALSE(answer.done);
    CHECK(answer.finish_reason.empty());
    CHECK(answer.bad_events == 0);
    CHECK(answer.events == 3);
  }
  SECTION("with no event: name, told by its type") {
    const Answer answer = assemble({{50, "message", R"({"type":"response.output_text.delta","delta":"x"})"},
                                    {60, "message", error}});
    CHECK(answer.error_json == error);
    CHECK(answer.error_ts == 60);
    CHECK(answer.content == "x");
  }
  SECTION("an error event whose data is not JSON is kept as a JSON string") {
    const Answer answer = assemble({{5, "error", "upstream \"died\""}});
    CHECK(answer.error_json == R"("upstream \"died\"")");
    CHECK(answer.error_ts == 5);
    CHECK(answer.bad_events == 0);
  }
  SECTION("response.failed: its response's error") {
    StreamBuilder s;
    s.add("response.created", R"("response":)" + response_object("in_progress", "[]", "null"));
    s.text("ab");
    s.add("response.failed",
          R"("response":)" + response_object("failed", "[]", "null", "null",
                                             R"({"code":"server_error","message":"The engine died."})"));
    const Answer answer = assemble(s.events);
    CHECK(answer.error_json == R"({"code":"server_error","message":"The engine died."})");
    CHECK(answer.error_ts == 300);
    CHECK(answer.finish_reason == "error");
    CHECK(answer.native_finish_reason == "failed");
    CHECK(answer.done);
    CHECK(answer.content == "ab");
    CHECK(answer.model == "openai/gpt-oss-120b");
  }
  SECTION("an error event then response.failed: the first error is kept, and dated") {
    StreamBuilder s;
    s.text("a");
    s.events.push_back({500, "error", error});
    s.events.push_back({600, "response.failed",
                        R"({"response":{"status":"failed","error":{"code":"server_error","message":"x"}},"type":"response.failed"})"});
    const Answer answer = assemble(s.events);
    CHECK(answer.error_json == error);
    CHECK(answer.error_ts == 500);
    CHECK(answer.finish_reason == "error");
  }
}

TEST_CASE("responses: unreadable data is counted, changes nothing, and the stream goes on",
          "[responses]") {
  const Answer answer = assemble({
      {1, "response.output_text.delta", R"({"delta":"a","type":"response.output_text.delta"})"},
      {2, "response.output_text.delta", "not json"},
      {3, "response.output_text.delta", R"({"delta":"b)"},                  // unterminated
      {4, "response.output_text.delta", R"({"delta":"b","item_id":"m")"},   // no closing brace
      {5, "response.output_text.delta", "[1, 2]"},
      {6, "response.output_text.delta", R"({"delta":"x","type":"response.output_text.delta"} trailing)"},
      {7, "message", R"({"delta":"y","type":"response.output_text.delta"},)"},
      {8, "response.output_text.delta", ""},  // an empty event is a keep-alive, not an error
      {9, "message", R"({"delta":"c","type":"response.output_text.delta"})"},
      {10, "response.some_future_event", R"({"type":"response.some_future_event","delta":"no"})"},
      {11, "response.output_text.delta", R"({"delta":17,"type":"response.output_text.delta"})"},  // not text
  });
  CHECK(answer.content == "ac");
  CHECK(answer.bad_events == 6);
  CHECK(answer.events == 11);
  CHECK(answer.token_events == 2);
  CHECK(answer.last_token_ts == 9);
  CHECK(answer.error_json.empty());
  CHECK_FALSE(answer.done);
}

TEST_CASE("responses: a stream cut in the middle of an event gives what came before", "[responses]") {
  const std::string stream = as_sse(vllm_stream());
  // Cut inside the third content delta's data.
  const std::size_t third = stream.find("back\\\\slash");
  REQUIRE(third != std::string::npos);
  SseDecoder decoder;
  ResponsesReader reader;
  decoder.feed(1, std::string_view(stream).substr(0, third + 4), reader);
  decoder.finish();
  CHECK(decoder.discarded_tail_bytes() > 0);
  const Answer& answer = reader.answer();
  CHECK(answer.reasoning == kReasoning);
  CHECK(answer.content == "Caf\xC3\xA9 \"quoted\" ");
  CHECK(answer.tool_calls.empty());
  CHECK_FALSE(answer.done);
  CHECK(answer.finish_reason.empty());
  CHECK(answer.usage_json.empty());
  CHECK(answer.model == "openai/gpt-oss-120b");
  CHECK(answer.bad_events == 0);
}

TEST_CASE("responses: deltas for items no added event named still land", "[responses]") {
  StreamBuilder s;
  s.add("response.reasoning_summary_text.delta", R"("delta":"Sum","item_id":"rs_1","output_index":0,"summary_index":0)");
  s.add("response.reasoning.delta", R"("delta":"mary","item_id":"rs_1","output_index":0)");  // an older name
  s.add("response.reasoning.delta", R"("delta":{"content":"not text"},"item_id":"rs_1","output_index":0)");
  s.add("response.output_text.delta", R"("delta":"Hi","item_id":"msg_1","output_index":1)");
  s.add("response.function_call_arguments.delta", R"("delta":"{\"a\":","item_id":"fc_9","output_index":2)");
  s.add("response.function_call_arguments.delta", R"("delta":"1}","item_id":"fc_9","output_index":2)");
  s.add("response.function_call_arguments.done",
        R"("arguments":"{\"a\":1}","item_id":"fc_9","name":"f","output_index":2)");
  // The final response repeats it all, and says one more call.
  s.add("response.completed",
        R"("response":{"model":"m","status":"completed","output":[)"
        R"({"id":"rs_1","type":"reasoning","summary":[{"type":"summary_text","text":"Sum"}],"content":null},)"
        R"({"id":"msg_1","type":"message","content":[{"type":"output_text","text":"Hi","annotations":[]}]},)"
        R"({"id":"fc_9","type":"function_call","call_id":"call_9","name":"f","arguments":"{\"a\":1}"},)"
        R"({"id":"fc_10","type":"function_call","call_id":"call_10","name":"g","arguments":"{}"}]})");
  const Answer answer = assemble(s.events);
  CHECK(answer.reasoning == "Summary");
  CHECK(answer.content == "Hi");
  REQUIRE(answer.tool_calls.size() == 2);
  CHECK(answer.tool_calls[0].index == 0);
  CHECK(answer.tool_calls[0].id == "call_9");
  CHECK(answer.tool_calls[0].name == "f");
  CHECK(answer.tool_calls[0].arguments == R"({"a":1})");
  CHECK(answer.tool_calls[1].index == 1);
  CHECK(answer.tool_calls[1].id == "call_10");
  CHECK(answer.tool_calls[1].type == "function");
  CHECK(answer.tool_calls[1].name == "g");
  CHECK(answer.tool_calls[1].arguments == "{}");
  CHECK(answer.finish_reason == "tool_calls");
  CHECK(answer.model == "m");
  CHECK(answer.token_events == 5);
}

TEST_CASE("responses: function_call items that say neither id nor position", "[responses]") {
  const Answer answer = assemble({
      {1, "response.output_item.added", R"({"item":{"type":"function_call","call_id":"c1","name":"f","arguments":""}})"},
      {2, "response.function_call_arguments.delta", R"({"delta":"{\"a\":"})"},  // the last call's
      {3, "response.function_call_arguments.delta", R"({"delta":"1}"})"},
      // A second added item is a call of its own; arguments as an object are kept as text.
      {4, "response.output_item.added",
       R"({"item":{"type":"function_call","call_id":"c2","name":"g","arguments":{"b": [true, null]}}})"},
  });
  REQUIRE(answer.tool_calls.size() == 2);
  CHECK(answer.tool_calls[0].id == "c1");
  CHECK(answer.tool_calls[0].arguments == R"({"a":1})");
  CHECK(answer.tool_calls[1].index == 1);
  CHECK(answer.tool_calls[1].id == "c2");
  CHECK(answer.tool_calls[1].arguments == R"({"b": [true, null]})");
  CHECK(answer.bad_events == 0);
}

TEST_CASE("responses: whole arguments are taken once, and only where no delta came", "[responses]") {
  StreamBuilder s;
  s.add("response.output_item.added",
        R"("item":{"arguments":"","call_id":"call_a","name":"a","type":"function_call","id":"fc_a"},"output_index":0)");
  s.add("response.function_call_arguments.done", R"("arguments":"{\"x\":1}","item_id":"fc_a","name":"a","output_index":0)");
  s.add("response.output_item.done",
        R"("item":{"arguments":"{\"x\":1}","call_id":"call_a","name":"a","type":"function_call","id":"fc_a"},"output_index":0)");
  // A call whose added item already holds arguments, and then deltas: the deltas are the stream.
  s.add("response.output_item.added",
        R"("item":{"arguments":"{\"early\":0}","call_id":"call_b","name":"b","type":"function_call","id":"fc_b"},"output_index":1)");
  s.add("response.function_call_arguments.delta", R"("delta":"{\"y\":","item_id":"fc_b","output_index":1)");
  s.add("response.function_call_arguments.delta", R"("delta":"2}","item_id":"fc_b","output_index":1)");
  s.add("response.function_call_arguments.done", R"("arguments":"{\"y\":2}","item_id":"fc_b","name":"b","output_index":1)");
  // A .done that says other than its deltas: the deltas were the stream, and stay.
  s.add("response.function_call_arguments.delta", R"("delta":"[]","item_id":"fc_c","output_index":2)");
  s.add("response.function_call_arguments.done", R"("arguments":"{\"z\":3}","item_id":"fc_c","name":"c","output_index":2)");
  const std::string final_response =
      R"("response":{"status":"completed","output":[)"
      R"({"arguments":"{\"x\":1}","call_id":"call_a","name":"a","type":"function_call","id":"fc_a"},)"
      R"({"arguments":"{\"y\":2}","call_id":"call_b","name":"b","type":"function_call","id":"fc_b"},)"
      R"({"arguments":"{\"z\":3}","call_id":"call_c","name":"c","type":"function_call","id":"fc_c"}]})";
  s.add("response.completed", final_response);
  s.add("response.completed", final_response);  // said twice: nothing doubles
  const Answer answer = assemble(s.events);
  REQUIRE(answer.tool_calls.size() == 3);
  CHECK(answer.tool_calls[0].id == "call_a");
  CHECK(answer.tool_calls[0].arguments == R"({"x":1})");
  CHECK(answer.tool_calls[1].id == "call_b");
  CHECK(answer.tool_calls[1].arguments == R"({"y":2})");
  CHECK(answer.tool_calls[2].id == "call_c");
  CHECK(answer.tool_calls[2].name == "c");
  CHECK(answer.tool_calls[2].arguments == "[]");
  CHECK(answer.token_events == 3);
}

TEST_CASE("responses: a server that sends only the final response", "[responses]") {
  // Over kKeptBufferBytes: read with a parser of its own, the text taken before it goes.
  const std::string big(2 * 1024 * 1024, 'w');
  const std::string output =
      R"([{"type":"reasoning","content":[{"type":"reasoning_text","text":"Think."}],"summary":[{"type":"summary_text","text":"Sum."}]},)"
      R"({"type":"message","content":[{"type":"output_text","text":"Caf\u00e9 )" + big + R"("}]},)"
      R"({"type":"function_call","call_id":"call_1","name":"f","arguments":"{}"}])";
  const std::vector<TimedEvent> events = {
      {10, "response.completed", R"({"response":)" + response_object("completed", output, kUsage) +
                                     R"(,"sequence_number":0,"type":"response.completed"})"}};
  const Answer answer = assemble(events);
  CHECK(answer.reasoning == "Think.");  // the summary of the same thought is not added
  CHECK(answer.content == "Caf\xC3\xA9 " + big);
  REQUIRE(answer.tool_calls.size() == 1);
  CHECK(answer.tool_calls[0].id == "call_1");
  CHECK(answer.tool_calls[0].arguments == "{}");
  CHECK(answer.finish_reason == "tool_calls");
  CHECK(answer.usage_json == kUsage);
  CHECK(answer.done);
  CHECK(answer.token_events == 0);
  CHECK(answer.bad_events == 0);
}

TEST_CASE("responses: start() forgets the stream before", "[responses]") {
  ResponsesReader reader;
  feed(reader, vllm_stream());
  reader.start();
  const Answer& answer = reader.answer();
  CHECK(answer.content.empty());
  CHECK(answer.reasoning.empty());
  CHECK(answer.tool_calls.empty());
  CHECK(answer.usage_json.empty());
  CHECK(answer.model.empty());
  CHECK(answer.finish_reason.empty());
  CHECK_FALSE(answer.done);
  CHECK(answer.events == 0);
  // A second stream assembles from scratch: the same text, once; call index 0 again.
  feed(reader, vllm_stream());
  check_vllm_answer(reader.answer());
}

TEST_CASE("responses: function calls past kMaxToolCalls are not kept, and that is flagged",
          "[responses]") {
  std::string output;
  for (std::size_t i = 0; i < Answer::kMaxToolCalls + 10; ++i) {
    if (!output.empty()) output += ',';
    output += R"({"type":"function_call","id":"fc_)" + std::to_string(i) + R"(","call_id":"c)" + std::to_string(i) +
              R"(","name":"f","arguments":"{}"})";
  }
  Answer answer;
  REQUIRE(read_body(R"({"object":"response","status":"completed","output":[)" + output + "]}", answer));
  CHECK(answer.tool_calls.size() == Answer::kMaxToolCalls);
  CHECK(answer.text_truncated);
  CHECK(answer.tool_calls.back().id == "c" + std::to_string(Answer::kMaxToolCalls - 1));
}

// ---------------------------------------------------------------------------------------

TEST_CASE("responses: a non-streamed response with every item type", "[responses]") {
  const std::string output =
      R"([{"id":"rs_1","summary":[{"text":"A summary.","type":"summary_text"}],"type":"reasoning","content":[{"text":"Think ","type":"reasoning_text"},{"text":"twice.","type":"reasoning_text"}],"encrypted_content":null,"status":"completed"},)"
      R"({"id":"rs_2","summary":[{"text":"Only a summary.","type":"summary_text"}],"type":"reasoning","content":null},)"
      R"({"id":"msg_1","content":[{"annotations":[{"type":"url_citation","url":"https://example.com","title":"text"}],"text":"Hello, \"w\u00f6rld\"\n","type":"output_text","logprobs":null},{"refusal":"no","type":"refusal"},{"annotations":[],"text":"\ud83d\ude80","type":"output_text"}],"role":"assistant","status":"completed","type":"message"},)"
      R"({"arguments":"{\"city\": \"Paris\"}","call_id":"call_1","name":"get_weather","type":"function_call","id":"fc_1","status":"completed"},)"
      R"({"type":"web_search_call","id":"ws_1","status":"completed"},)"
      R"({"arguments":"{}","call_id":"call_2","name":"get_time","type":"function_call","id":"fc_2","status":"completed"}])";
  Answer answer;
  REQUIRE(read_body(response_object("completed", output, kUsage) + "\n", answer));
  CHECK(answer.model == "openai/gpt-oss-120b");
  CHECK(answer.reasoning == "Think twice.Only a summary.");
  CHECK(answer.content == "Hello, \"w\xC3\xB6rld\"\n\xF0\x9F\x9A\x80");
  REQUIRE(answer.tool_calls.size() == 2);
  CHECK(answer.tool_calls[0].index == 0);
  CHECK(answer.tool_calls[0].id == "call_1");
  CHECK(answer.tool_calls[0].type == "function");
  CHECK(answer.tool_calls[0].name == "get_weather");
  CHECK(answer.tool_calls[0].arguments == R"({"city": "Paris"})");
  CHECK(answer.tool_calls[1].index == 1);
  CHECK(answer.tool_calls[1].id == "call_2");
  CHECK(answer.tool_calls[1].name == "get_time");
  CHECK(answer.tool_calls[1].arguments == "{}");
  CHECK(answer.finish_reason == "tool_calls");
  CHECK(answer.native_finish_reason == "completed");
  CHECK(answer.usage_json == kUsage);
  CHECK(answer.input_tokens == 42);
  CHECK(answer.output_tokens == 57);
  CHECK(answer.error_json.empty());
  CHECK_FALSE(answer.text_truncated);
}

TEST_CASE("responses: non-streamed incomplete and failed responses", "[responses]") {
  SECTION("incomplete") {
    Answer answer;
    REQUIRE(read_body(response_object("incomplete",
                                      R"([{"type":"message","content":[{"type":"output_text","text":"Hel"}]}])",
                                      R"({"input_tokens":3,"output_tokens":1})", R"({"reason":"max_output_tokens"})"),
                      answer));
    CHECK(answer.content == "Hel");
    CHECK(answer.finish_reason == "length");
    CHECK(answer.native_finish_reason == "incomplete:max_output_tokens");
    CHECK(answer.output_tokens == 1);
  }
  SECTION("failed: the response's error") {
    Answer answer;
    REQUIRE(read_body(response_object("failed", "[]", "null", "null", R"({"code":"server_error","message":"boom"})"),
                      answer));
    CHECK(answer.error_json == R"({"code":"server_error","message":"boom"})");
    CHECK(answer.finish_reason == "error");
    CHECK(answer.native_finish_reason == "failed");
  }
}

TEST_CASE("responses: non-streamed error bodies keep the whole object", "[responses]") {
  SECTION("vLLM ErrorResponse") {
    const std::string body =
        R"({"object":"error","message":"max_output_tokens must be at least 1, got 0.","type":"BadRequestError","param":null,"code":400})";
    Answer answer;
    CHECK(read_body(body + "\n", answer));
    CHECK(answer.error_json == body);
    CHECK(answer.content.empty());
    CHECK(answer.finish_reason.empty());
  }
  SECTION("OpenAI-style {\"error\": {...}}") {
    const std::string body =
        R"({"error":{"message":"EngineDeadError","type":"InternalServerError","param":null,"code":500}})";
    Answer answer;
    CHECK(read_body(body, answer));
    CHECK(answer.error_json == body);
  }
}

TEST_CASE("responses: non-streamed bodies that are not a JSON object", "[responses]") {
  for (const char* body : {"", "Internal Server Error", "[]", R"({"output":[)", "null", R"({"status":"completed"} x)"}) {
    INFO("body: " << body);
    Answer answer;
    CHECK_FALSE(read_body(body, answer));
    CHECK(answer.finish_reason.empty());
  }
}

}  // namespace chatcap

namespace chatcap {

TEST_CASE("responses: a `data: [DONE]` after the stream, as some servers send, is neither bad nor the end",
          "[responses]") {
  ResponsesReader reader;
  reader.start();
  SseEvent event;
  event.ts = 7;
  event.type = "message";
  event.data = "[DONE]";
  reader.on_sse_event(event);
  CHECK(reader.answer().events == 1);
  CHECK(reader.answer().bad_events == 0);
  CHECK_FALSE(reader.answer().done);
}

}  // namespace chatcap
