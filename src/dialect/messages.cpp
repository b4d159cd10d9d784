#include "chatcap/dialect/messages.hpp"

#include <optional>
#include <utility>

#include "chatcap/json_read.hpp"
#include "chatcap/json_writer.hpp"

namespace chatcap {
namespace {

using namespace json_read;
using Block = MessagesReader::Block;

// ---------------------------------------------------------------------------------------
// What an event is.

enum class EventKind : std::uint8_t {
  message_start,
  content_block_start,
  content_block_delta,
  content_block_stop,
  message_delta,
  message_stop,
  ping,
  error,
  unnamed,  // no `event:` line: the data's `type` says
  unknown,
};

// By the event's name, the deltas first (most events are).
EventKind kind_of(std::string_view name) {
  if (name == "content_block_delta") return EventKind::content_block_delta;
  if (name == "message") return EventKind::unnamed;
  if (name == "content_block_start") return EventKind::content_block_start;
  if (name == "content_block_stop") return EventKind::content_block_stop;
  if (name == "ping") return EventKind::ping;
  if (name == "message_start") return EventKind::message_start;
  if (name == "message_delta") return EventKind::message_delta;
  if (name == "message_stop") return EventKind::message_stop;
  if (name == "error") return EventKind::error;
  return EventKind::unknown;
}

// By the data's `type`, for an event with no name: "message" there names no event.
EventKind kind_of_type(const Text& type) {
  if (!type.present) return EventKind::unknown;
  const EventKind kind = kind_of(type.view);
  return kind == EventKind::unnamed ? EventKind::unknown : kind;
}

Block::Kind block_kind_of(const Text& type) {
  if (type.view == "text") return Block::Kind::text;
  if (type.view == "thinking") return Block::Kind::thinking;
  if (type.view == "tool_use") return Block::Kind::tool_use;
  return Block::Kind::other;  // redacted_thinking, server_tool_use, ... or no type
}

// Anthropic's stop reasons in the normalised words (answer.hpp); another word as it is.
std::string_view normalised_stop_reason(std::string_view reason) {
  if (reason == "end_turn" || reason == "stop_sequence" || reason == "pause_turn") return "stop";
  if (reason == "max_tokens" || reason == "model_context_window_exceeded") return "length";
  if (reason == "tool_use") return "tool_calls";
  if (reason == "refusal") return "content_filter";
  return reason;
}

// ---------------------------------------------------------------------------------------
// Reading: each object in one forward pass over its fields, in document order, into views
// (into the parser's string buffer or the padded copy of the data) that are applied once the
// whole event has been read. Of a repeated key, the last counts.

struct Usage {
  bool seen = false;
  std::string_view raw;  // the object as written
  std::optional<std::int64_t> input_tokens;
  std::optional<std::int64_t> output_tokens;
};

// A usage object: its counts, then its text (raw_json after the fields were read takes the
// object from its opening brace to the next token). Other types (null) are no usage.
CHATCAP_COLD bool read_usage(ondemand::value value, Usage& out) {
  ondemand::object object;
  bool found = false;
  if (!object_if_any(value, object, found)) return false;
  if (!found) return true;
  Usage usage;
  for (auto field_result : object) {
    ondemand::field field;
    if (std::move(field_result).get(field) != SUCCESS) return false;
    const ondemand::raw_json_string key = field.key();
    if (key_is<"input_tokens">(key)) {
      if (!int_if_any(field.value(), usage.input_tokens)) return false;
    } else if (key_is<"output_tokens">(key)) {
      if (!int_if_any(field.value(), usage.output_tokens)) return false;
    }
  }
  if (object.raw_json().get(usage.raw) != SUCCESS) return false;
  usage.raw = trim_trailing_whitespace(usage.raw);
  usage.seen = true;
  out = usage;
  return true;
}

// A content block: content_block_start's, or one of a whole message's.
struct BlockPieces {
  Text type;
  Text text;
  Text thinking;
  Text id;
  Text name;
  bool input_seen = false;
  std::string_view input;  // tool_use: the input as written
};

CHATCAP_HOT bool read_block(ondemand::object& block, BlockPieces& out) {
  for (auto field_result : block) {
    ondemand::field field;
    if (std::move(field_result).get(field) != SUCCESS) return false;
    const ondemand::raw_json_string key = field.key();
    ondemand::value& value = field.value();
    switch (first_byte(key)) {
      case 't':
        if (key_is<"type">(key)) {
          if (!text_if_any(value, out.type)) return false;
        } else if (key_is<"text">(key)) {
          if (!text_if_any(value, out.text)) return false;
        } else if (key_is<"thinking">(key)) {
          if (!text_if_any(value, out.thinking)) return false;
        }
        break;
      case 'i':
        if (key_is<"id">(key)) {
          if (!text_if_any(value, out.id)) return false;
        } else if (key_is<"input">(key)) {
          if (!raw_text(value, out.input)) return false;
          out.input_seen = true;
        }
        break;
      case 'n':
        if (key_is<"name">(key) && !text_if_any(value, out.name)) return false;
        break;
      default:
        break;
    }
  }
  return true;
}

// content_block_delta's delta (typed) or message_delta's (stop_reason).
struct DeltaPieces {
  Text type;
  Text text;
  Text thinking;
  Text partial_json;
  Text stop_reason;
};

CHATCAP_HOT bool read_delta(ondemand::object& delta, DeltaPieces& out) {
  for (auto field_result : delta) {
    ondemand::field field;
    if (std::move(field_result).get(field) != SUCCESS) return false;
    const ondemand::raw_json_string key = field.key();
    ondemand::value& value = field.value();
    switch (first_byte(key)) {
      case 't':
        if (key_is<"type">(key)) {
          if (!text_if_any(value, out.type)) return false;
        } else if (key_is<"text">(key)) {
          if (!text_if_any(value, out.text)) return false;
        } else if (key_is<"thinking">(key)) {
          if (!text_if_any(value, out.thinking)) return false;
        }
        break;
      case 'p':
        if (key_is<"partial_json">(key) && !text_if_any(value, out.partial_json)) return false;
        break;
      case 's':
        if (key_is<"stop_reason">(key) && !text_if_any(value, out.stop_reason)) return false;
        break;
      default:
        break;
    }
  }
  return true;
}

// message_start's message: its content is [] (blocks come as their own events).
struct MessagePieces {
  Text model;
  Text stop_reason;
  Usage usage;
};

CHATCAP_COLD bool read_message_start(ondemand::value value, MessagePieces& out) {
  ondemand::object message;
  bool found = false;
  if (!object_if_any(value, message, found)) return false;
  if (!found) return true;
  for (auto field_result : message) {
    ondemand::field field;
    if (std::move(field_result).get(field) != SUCCESS) return false;
    const ondemand::raw_json_string key = field.key();
    if (key_is<"model">(key)) {
      if (!text_if_any(field.value(), out.model)) return false;
    } else if (key_is<"stop_reason">(key)) {
      if (!text_if_any(field.value(), out.stop_reason)) return false;
    } else if (key_is<"usage">(key)) {
      if (!read_usage(field.value(), out.usage)) return false;
    }
  }
  return true;
}

CHATCAP_COLD bool read_error(ondemand::value value, bool& seen, std::string_view& out) {
  ondemand::json_type type;
  if (!type_of(value, type)) return false;
  if (type == ondemand::json_type::null) return true;
  if (!raw_text(value, out)) return false;
  seen = true;
  return true;
}

// Everything any event's data may carry; its kind decides what is applied.
struct EventPieces {
  Text type;
  std::optional<std::int64_t> index;
  bool block_seen = false;
  BlockPieces block;
  bool delta_seen = false;
  DeltaPieces delta;
  MessagePieces message;
  Usage usage;  // message_delta's; message_start's too in some vLLM versions
  bool error_seen = false;
  std::string_view error;  // the `error` object as written
};

// `need_type`: the event had no name, so its data's `type` is read too.
CHATCAP_READER bool read_event(ondemand::object top, EventPieces& out, bool need_type) {
  for (auto field_result : top) {
    ondemand::field field;
    if (std::move(field_result).get(field) != SUCCESS) return false;
    const ondemand::raw_json_string key = field.key();
    ondemand::value& value = field.value();
    bool found = false;
    switch (first_byte(key)) {
      case 'i':
        if (key_is<"index">(key) && !int_if_any(value, out.index)) return false;
        break;
      case 'd':
        if (key_is<"delta">(key)) {
          ondemand::object delta;
          if (!object_if_any(value, delta, found)) return false;
          if (found) {
            out.delta = DeltaPieces();
            out.delta_seen = true;
            if (!read_delta(delta, out.delta)) return false;
          }
        }
        break;
      case 'c':
        if (key_is<"content_block">(key)) {
          ondemand::object block;
          if (!object_if_any(value, block, found)) return false;
          if (found) {
            out.block = BlockPieces();
            out.block_seen = true;
            if (!read_block(block, out.block)) return false;
          }
        }
        break;
      case 't':
        if (need_type && key_is<"type">(key) && !text_if_any(value, out.type)) return false;
        break;
      case 'm':
        if (key_is<"message">(key) && !read_message_start(value, out.message)) return false;
        break;
      case 'u':
        if (key_is<"usage">(key) && !read_usage(value, out.usage)) return false;
        break;
      case 'e':
        if (key_is<"error">(key) && !read_error(value, out.error_seen, out.error)) return false;
        break;
      default:
        break;
    }
  }
  return true;
}


// ---------------------------------------------------------------------------------------
// Applying, to streamed and whole answers alike.

void assign_capped(Answer& answer, std::string& field, std::string_view text) {
  field.clear();
  if (!append_capped(field, text)) answer.text_truncated = true;
}

void apply_stop_reason(Answer& answer, const Text& reason) {
  if (!reason.nonempty()) return;  // null until message_delta
  assign_capped(answer, answer.native_finish_reason, reason.view);
  assign_capped(answer, answer.finish_reason, normalised_stop_reason(reason.view));
}

// The last usage seen is the answer's: message_delta's counts are cumulative, and its
// input_tokens, when it has them, supersede message_start's.
void apply_usage(Answer& answer, const Usage& usage) {
  if (!usage.seen) return;
  if (usage.input_tokens) answer.input_tokens = usage.input_tokens;
  if (usage.output_tokens) answer.output_tokens = usage.output_tokens;
  answer.usage_json.assign(usage.raw);
}

// `input` of a tool_use start as vLLM and Anthropic send it, `{}`: no arguments yet.
bool is_empty_input(std::string_view raw) {
  raw = trim_whitespace(raw);
  if (raw == "null") return true;
  if (raw.size() < 2 || raw.front() != '{' || raw.back() != '}') return false;
  return trim_whitespace(raw.substr(1, raw.size() - 2)).empty();
}

// A new tool call for a tool_use block (in block order), in OpenAI's shape. Null past the
// answer's cap on calls (then marked text_truncated).
ToolCall* new_call(Answer& answer, std::int64_t& next_call, std::int64_t& call_index) {
  call_index = next_call++;
  ToolCall* call = tool_call_slot(answer, call_index);
  if (call != nullptr) call->type = "function";
  return call;
}

void apply_tool_use_names(Answer& answer, ToolCall& call, const BlockPieces& block) {
  if (block.id.nonempty()) assign_capped(answer, call.id, block.id.view);
  if (block.name.nonempty()) assign_capped(answer, call.name, block.name.view);
}

// One stream's state, which the reader keeps between events.
struct Stream {
  Answer& answer;
  std::vector<Block>& blocks;
  std::int64_t& next_call;

  Block* find(std::int64_t index) {
    for (auto at = blocks.rbegin(); at != blocks.rend(); ++at) {
      if (at->index == index) return &*at;
    }
    return nullptr;
  }

  // The block with this index, started again if it was known; null past kMaxBlocks.
  Block* remember(std::int64_t index, Block::Kind kind) {
    Block* block = find(index);
    if (block == nullptr) {
      if (blocks.size() >= MessagesReader::kMaxBlocks) {
        answer.text_truncated = true;
        return nullptr;
      }
      block = &blocks.emplace_back();
      block->index = index;
    }
    block->kind = kind;
    block->call = 0;
    block->input_from_start = false;
    return block;
  }

  // content_block_start. True when it carried generated text (a start's text is "" and its
  // input {} as servers send them, but need not be).
  bool start_block(std::int64_t index, const BlockPieces& pieces) {
    const Block::Kind kind = block_kind_of(pieces.type);
    Block* block = remember(index, kind);
    switch (kind) {
      case Block::Kind::text:
        return pieces.text.present && append_answer_text(answer, answer.content, pieces.text.view);
      case Block::Kind::thinking:
        return pieces.thinking.present && append_answer_text(answer, answer.reasoning, pieces.thinking.view);
      case Block::Kind::tool_use: {
        std::int64_t call_index = 0;
        ToolCall* call = new_call(answer, next_call, call_index);
        if (block != nullptr) block->call = call_index;
        if (call == nullptr) return false;
        apply_tool_use_names(answer, *call, pieces);
        if (!pieces.input_seen || is_empty_input(pieces.input)) return false;
        // Arguments whole in the start: kept unless fragments follow, which are the input.
        if (block != nullptr) block->input_from_start = true;
        return append_answer_text(answer, call->arguments, pieces.input);
      }
      case Block::Kind::other:
        break;
    }
    return false;
  }

  // content_block_delta. Text and thinking go by the delta's type whatever the block (one
  // never started is no loss); input JSON to its block's call, made if the block never
  // started. True when it carried generated text.
  bool apply_delta(std::int64_t index, const DeltaPieces& delta) {
    const std::string_view type = delta.type.view;
    if (type == "text_delta") {
      return delta.text.present && append_answer_text(answer, answer.content, delta.text.view);
    }
    if (type == "thinking_delta") {
      return delta.thinking.present && append_answer_text(answer, answer.reasoning, delta.thinking.view);
    }
    if (type != "input_json_delta") return false;  // signature_delta, citations_delta, ...
    Block* block = find(index);
    if (block == nullptr) {
      block = remember(index, Block::Kind::tool_use);
      if (block == nullptr) return false;
      new_call(answer, next_call, block->call);
    }
    if (block->kind != Block::Kind::tool_use) return false;
    ToolCall* call = tool_call_slot(answer, block->call);
    if (call == nullptr) return false;
    if (block->input_from_start) {
      call->arguments.clear();
      block->input_from_start = false;
    }
    return delta.partial_json.present && append_answer_text(answer, call->arguments, delta.partial_json.view);
  }
};

// Applies one event read whole; true when it carried generated text (a token event).
bool apply_event(Stream& stream, EventKind kind, const EventPieces& pieces, std::string_view data,
                 timestamp_us ts) {
  Answer& answer = stream.answer;
  if (kind == EventKind::unnamed) kind = kind_of_type(pieces.type);
  // A block's index is always sent; none reads as 0, as chat's choices do.
  const std::int64_t index = pieces.index.value_or(0);
  switch (kind) {
    case EventKind::content_block_delta:
      return pieces.delta_seen && stream.apply_delta(index, pieces.delta);
    case EventKind::content_block_start:
      return pieces.block_seen && stream.start_block(index, pieces.block);
    case EventKind::message_start:
      if (answer.model.empty() && pieces.message.model.nonempty()) {
        assign_capped(answer, answer.model, pieces.message.model.view);
      }
      apply_stop_reason(answer, pieces.message.stop_reason);
      apply_usage(answer, pieces.message.usage);  // Anthropic's place for it
      apply_usage(answer, pieces.usage);          // beside the message, as some vLLMs put it
      return false;
    case EventKind::message_delta:
      if (pieces.delta_seen) apply_stop_reason(answer, pieces.delta.stop_reason);
      apply_usage(answer, pieces.usage);
      return false;
    case EventKind::message_stop:
      answer.done = true;
      return false;
    case EventKind::error:
      // {"type":"error","error":{...}}: the error object; data with none is the error.
      note_error_event(answer, ts);
      answer.error_json.assign(pieces.error_seen ? pieces.error : data);
      return false;
    case EventKind::content_block_stop:
    case EventKind::ping:
    case EventKind::unnamed:
    case EventKind::unknown:
      break;
  }
  return false;
}

void take_event(Stream& stream, std::string& scratch, const SseEvent& event) {
  Answer& answer = stream.answer;
  note_event(answer, event.ts);
  const EventKind kind = kind_of(event.type);
  switch (kind) {
    case EventKind::message_stop:  // its data says nothing more
      answer.done = true;
      return;
    case EventKind::content_block_stop:
    case EventKind::ping:
    case EventKind::unknown:  // a name we do not know: not ours to judge
      return;
    default:
      break;
  }
  const std::string_view data = trim_whitespace(event.data);
  if (data.empty() && kind != EventKind::error) return;  // a keep-alive, not bad
  // vLLM ends its streams, after message_stop or an error, as it ends chat's: not bad, and
  // not the dialect's own end (`done` is message_stop's).
  if (data == "[DONE]" && kind != EventKind::error) return;

  EventPieces pieces;
  bool carried_text = false;
  auto read = [&pieces, kind](ondemand::object& top) {
    return read_event(top, pieces, kind == EventKind::unnamed);
  };
  auto apply = [&] { carried_text = apply_event(stream, kind, pieces, data, event.ts); };
  const bool read_ok = !data.empty() && read_then_apply(data, scratch, read, apply);
  release_if_large(scratch);
  if (carried_text) note_token_event(answer, event.ts);
  if (read_ok) return;
  if (kind == EventKind::error) {
    // `event: error` whose data is not JSON: the text is the error, kept as a JSON string.
    note_error_event(answer, event.ts);
    answer.error_json.clear();
    JsonWriter(answer.error_json).string(data);
    return;
  }
  ++answer.bad_events;
}

// ---------------------------------------------------------------------------------------
// A whole body: a message, or an error (kept whole, as chat keeps its error bodies).

class BodyReader {
 public:
  BodyReader(Answer& answer, std::string_view whole_text) : answer_(answer), whole_text_(whole_text) {}

  CHATCAP_READER bool read(ondemand::object top) {
    for (auto field_result : top) {
      ondemand::field field;
      if (std::move(field_result).get(field) != SUCCESS) return false;
      const ondemand::raw_json_string key = field.key();
      ondemand::value& value = field.value();
      switch (first_byte(key)) {
        case 'c':
          if (key_is<"content">(key) && !read_content(value)) return false;
          break;
        case 'm':
          if (key_is<"model">(key) && !read_model(value)) return false;
          break;
        case 's':
          if (key_is<"stop_reason">(key)) {
            Text reason;
            if (!text_if_any(value, reason)) return false;
            apply_stop_reason(answer_, reason);
          }
          break;
        case 'u':
          if (key_is<"usage">(key)) {
            Usage usage;
            if (!read_usage(value, usage)) return false;
            apply_usage(answer_, usage);
          }
          break;
        case 't':  // {"type":"error","error":{...}}
        case 'o':  // an OpenAI-shaped {"object":"error",...} from an OpenAI-compatible server
          if ((key_is<"type">(key) || key_is<"object">(key)) && !read_kind(value)) return false;
          break;
        case 'e':
          if (key_is<"error">(key)) {
            bool seen = false;
            std::string_view error;
            if (!read_error(value, seen, error)) return false;
            if (seen) answer_.error_json.assign(whole_text_);
          }
          break;
        default:
          break;
      }
    }
    return true;
  }

 private:
  bool read_model(ondemand::value& value) {
    Text model;
    if (!text_if_any(value, model)) return false;
    if (answer_.model.empty() && model.nonempty()) assign_capped(answer_, answer_.model, model.view);
    return true;
  }

  bool read_kind(ondemand::value& value) {
    Text kind;
    if (!text_if_any(value, kind)) return false;
    if (kind.view == "error") answer_.error_json.assign(whole_text_);
    return true;
  }

  bool read_content(ondemand::value& value) {
    ondemand::array blocks;
    bool found = false;
    if (!array_if_any(value, blocks, found)) return false;
    if (!found) return true;
    for (auto element_result : blocks) {
      ondemand::value element;
      if (std::move(element_result).get(element) != SUCCESS) return false;
      ondemand::object block;
      if (!object_if_any(element, block, found)) return false;
      if (!found) continue;
      BlockPieces pieces;
      if (!read_block(block, pieces)) return false;
      apply_block(pieces);
    }
    return true;
  }

  // Blocks whole: a tool_use's input is its arguments exactly as written, `{}` included.
  void apply_block(const BlockPieces& block) {
    switch (block_kind_of(block.type)) {
      case Block::Kind::text:
        if (block.text.present) append_answer_text(answer_, answer_.content, block.text.view);
        break;
      case Block::Kind::thinking:
        if (block.thinking.present) append_answer_text(answer_, answer_.reasoning, block.thinking.view);
        break;
      case Block::Kind::tool_use: {
        std::int64_t call_index = 0;
        ToolCall* call = new_call(answer_, next_call_, call_index);
        if (call == nullptr) break;
        apply_tool_use_names(answer_, *call, block);
        if (block.input_seen) append_answer_text(answer_, call->arguments, block.input);
        break;
      }
      case Block::Kind::other:
        break;
    }
  }

  Answer& answer_;
  std::string_view whole_text_;
  std::int64_t next_call_ = 0;
};

}  // namespace

void MessagesReader::on_sse_event(const SseEvent& event) {
  try {
    Stream stream{answer_, blocks_, next_call_};
    take_event(stream, scratch_, event);
  } catch (...) {  // allocation failure: count it and go on with the stream
    ++answer_.bad_events;
  }
}

void MessagesReader::start() {
  answer_.clear();
  blocks_.clear();
  next_call_ = 0;
}

bool MessagesReader::read_body(std::string_view body, Answer& out) {
  try {
    thread_local std::string padded;
    BodyReader reader(out, trim_whitespace(body));
    const bool read_ok =
        parse_object(body, padded, [&reader](ondemand::object& top) { return reader.read(top); });
    release_if_large(padded);
    return read_ok;
  } catch (...) {
    return false;
  }
}

}  // namespace chatcap
