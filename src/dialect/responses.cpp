#include "chatcap/dialect/responses.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "chatcap/json_read.hpp"
#include "chatcap/json_writer.hpp"

namespace chatcap {
namespace {

using namespace json_read;

// ---------------------------------------------------------------------------------------
// What an event is, by its type.

enum class Kind : std::uint8_t {
  unknown,          // any other type: ignored
  response_update,  // response.created, .in_progress, .queued: a response not yet done
  item_added,       // response.output_item.added
  item_done,        // response.output_item.done
  content_delta,    // response.output_text.delta
  reasoning_delta,  // response.reasoning_text.delta, .reasoning_summary_text.delta (and older names)
  arguments_delta,  // response.function_call_arguments.delta
  arguments_done,   // response.function_call_arguments.done
  completed,        // response.completed   the stream's own end, each with the
  incomplete,       // response.incomplete  whole response object
  failed,           // response.failed
  error,            // error
};

Kind kind_of(std::string_view type) {
  constexpr std::string_view kPrefix = "response.";
  if (!type.starts_with(kPrefix)) return type == "error" ? Kind::error : Kind::unknown;
  type.remove_prefix(kPrefix.size());
  if (type == "output_text.delta") return Kind::content_delta;
  if (type == "reasoning_text.delta" || type == "reasoning_summary_text.delta") return Kind::reasoning_delta;
  // Older names some servers (early vLLM among them) sent.
  if (type == "reasoning.delta" || type == "reasoning_summary.delta") return Kind::reasoning_delta;
  if (type == "function_call_arguments.delta") return Kind::arguments_delta;
  if (type == "function_call_arguments.done") return Kind::arguments_done;
  if (type == "output_item.added") return Kind::item_added;
  if (type == "output_item.done") return Kind::item_done;
  if (type == "completed") return Kind::completed;
  if (type == "incomplete") return Kind::incomplete;
  if (type == "failed") return Kind::failed;
  if (type == "created" || type == "in_progress" || type == "queued") return Kind::response_update;
  return Kind::unknown;
}

// The status a terminal event stands for when its response does not say.
std::string_view status_of(Kind kind) {
  switch (kind) {
    case Kind::completed: return "completed";
    case Kind::incomplete: return "incomplete";
    case Kind::failed: return "failed";
    default: return "";
  }
}

enum class ItemType : std::uint8_t { other, message, reasoning, function_call };

ItemType item_type_of(const Text& type) {
  if (!type.present) return ItemType::other;
  if (type.view == "message") return ItemType::message;
  if (type.view == "reasoning") return ItemType::reasoning;
  if (type.view == "function_call") return ItemType::function_call;
  return ItemType::other;
}

// A content part's type; a part that says none is taken by its item's type.
enum class PartType : std::uint8_t { unsaid, output_text, reasoning_text, summary_text, other };

PartType part_type_of(const Text& type) {
  if (!type.present) return PartType::unsaid;
  if (type.view == "output_text") return PartType::output_text;
  if (type.view == "reasoning_text") return PartType::reasoning_text;
  if (type.view == "summary_text") return PartType::summary_text;
  return PartType::other;  // refusal, ...
}

// ---------------------------------------------------------------------------------------
// An event or body as read: views into the parsed document (its padded copy and the
// parser's string buffer), applied to the answer only once the document has been read whole
// (read_then_apply), while the parser that holds them is still alive.

// The keys of one object met so far: of repeated keys, the first counts.
class Seen {
 public:
  bool first(int key) {
    const std::uint32_t bit = std::uint32_t{1} << key;
    const bool fresh = (bits_ & bit) == 0;
    bits_ |= bit;
    return fresh;
  }

 private:
  std::uint32_t bits_ = 0;
};

struct ItemView {
  ItemType type = ItemType::other;
  Text id;
  Text call_id;
  Text name;
  Text arguments;              // a string, or other JSON kept as text
  std::int64_t position = -1;  // in output[]
};

struct PartView {
  std::size_t item = 0;  // its item in ResponseView::items
  PartType type = PartType::unsaid;
  bool in_summary = false;  // under the item's `summary`, not its `content`
  std::string_view text;
};

struct ResponseView {
  static constexpr std::size_t kKeptViews = 4096;  // past this, the vectors are freed after use

  Text object;
  Text status;
  Text incomplete_reason;
  Text model;
  std::string_view error;  // raw JSON of a non-null error; empty: none
  std::string_view usage;  // raw JSON of a usage object; empty: none
  bool output_seen = false;
  std::vector<ItemView> items;
  std::vector<PartView> parts;  // every item's text parts, in item order

  void clear() {
    object = {};
    status = {};
    incomplete_reason = {};
    model = {};
    error = {};
    usage = {};
    output_seen = false;
    items.clear();
    parts.clear();
  }
  void release_if_large() {
    if (items.capacity() > kKeptViews) std::vector<ItemView>().swap(items);
    if (parts.capacity() > kKeptViews) std::vector<PartView>().swap(parts);
  }
};

// The thread's response view, reused by every reader: one event at a time is read.
ResponseView& reused_response_view() {
  thread_local ResponseView view;
  view.clear();
  return view;
}

struct EventView {
  Kind kind = Kind::unknown;
  Text delta;
  Text arguments;
  Text name;
  Text item_id;
  std::optional<std::int64_t> output_index;
  ItemView item;                      // `item` of output_item.added / .done (not its text)
  ResponseView* response = nullptr;   // `response`
};

// ---------------------------------------------------------------------------------------
// Reading. Each returns false only when the JSON is broken; values of another type are
// skipped (json_read.hpp).

// `arguments`: a string, or an object some servers send instead, kept as its text.
bool read_arguments(ondemand::value& value, Text& out) {
  out.present = false;
  ondemand::json_type type;
  if (!type_of(value, type)) return false;
  if (type == ondemand::json_type::null) return true;
  if (type == ondemand::json_type::string) return text_if_any(value, out);
  if (!raw_text(value, out.view)) return false;
  out.present = true;
  return true;
}

// The raw JSON of a value unless it is null.
bool raw_unless_null(ondemand::value& value, std::string_view& out) {
  ondemand::json_type type;
  if (!type_of(value, type)) return false;
  if (type == ondemand::json_type::null) return true;
  return raw_text(value, out);
}

// An item's `content` or `summary`: parts {type, text}.
CHATCAP_COLD bool read_parts(ondemand::value value, std::size_t item, bool in_summary,
                             std::vector<PartView>& parts) {
  ondemand::array array;
  bool found = false;
  if (!array_if_any(value, array, found)) return false;
  if (!found) return true;
  for (auto element_result : array) {
    ondemand::value element;
    if (std::move(element_result).get(element) != SUCCESS) return false;
    ondemand::object part;
    if (!object_if_any(element, part, found)) return false;
    if (!found) continue;
    Seen seen;
    Text type;
    Text text;
    for (auto field_result : part) {
      ondemand::field field;
      if (std::move(field_result).get(field) != SUCCESS) return false;
      const ondemand::raw_json_string key = field.key();
      if (key_is<"type">(key)) {
        if (seen.first(0) && !text_if_any(field.value(), type)) return false;
      } else if (key_is<"text">(key)) {
        if (seen.first(1) && !text_if_any(field.value(), text)) return false;
      }
    }
    if (text.present) parts.push_back({item, part_type_of(type), in_summary, text.view});
  }
  return true;
}

// One output item. Its text parts go to `parts` (as item `item_no`) when given.
CHATCAP_COLD bool read_item(ondemand::value value, ItemView& item, std::vector<PartView>* parts,
                            std::size_t item_no) {
  ondemand::object object;
  bool found = false;
  if (!object_if_any(value, object, found)) return false;
  if (!found) return true;
  enum : int { kType, kId, kCallId, kName, kArguments, kContent, kSummary };
  Seen seen;
  Text type;
  for (auto field_result : object) {
    ondemand::field field;
    if (std::move(field_result).get(field) != SUCCESS) return false;
    const ondemand::raw_json_string key = field.key();
    ondemand::value& field_value = field.value();
    bool ok = true;
    switch (first_byte(key)) {
      case 't':
        if (key_is<"type">(key) && seen.first(kType)) ok = text_if_any(field_value, type);
        break;
      case 'i':
        if (key_is<"id">(key) && seen.first(kId)) ok = text_if_any(field_value, item.id);
        break;
      case 'c':
        if (key_is<"call_id">(key)) {
          if (seen.first(kCallId)) ok = text_if_any(field_value, item.call_id);
        } else if (key_is<"content">(key)) {
          if (parts != nullptr && seen.first(kContent)) ok = read_parts(field_value, item_no, false, *parts);
        }
        break;
      case 'n':
        if (key_is<"name">(key) && seen.first(kName)) ok = text_if_any(field_value, item.name);
        break;
      case 'a':
        if (key_is<"arguments">(key) && seen.first(kArguments)) ok = read_arguments(field_value, item.arguments);
        break;
      case 's':
        if (key_is<"summary">(key) && parts != nullptr && seen.first(kSummary)) {
          ok = read_parts(field_value, item_no, true, *parts);
        }
        break;
      default:
        break;
    }
    if (!ok) return false;
  }
  item.type = item_type_of(type);
  return true;
}

CHATCAP_COLD bool read_output(ondemand::value value, ResponseView& response) {
  ondemand::array array;
  bool found = false;
  if (!array_if_any(value, array, found)) return false;
  if (!found) return true;
  response.output_seen = true;
  std::int64_t position = 0;
  for (auto element_result : array) {
    ondemand::value element;
    if (std::move(element_result).get(element) != SUCCESS) return false;
    response.items.emplace_back();
    response.items.back().position = position++;
    if (!read_item(element, response.items.back(), &response.parts, response.items.size() - 1)) return false;
  }
  return true;
}

CHATCAP_COLD bool read_incomplete_reason(ondemand::value value, Text& reason) {
  ondemand::object details;
  bool found = false;
  if (!object_if_any(value, details, found)) return false;
  if (!found) return true;
  bool reason_seen = false;
  for (auto field_result : details) {
    ondemand::field field;
    if (std::move(field_result).get(field) != SUCCESS) return false;
    if (key_is<"reason">(field.key()) && !reason_seen) {
      reason_seen = true;
      if (!text_if_any(field.value(), reason)) return false;
    }
  }
  return true;
}

// A response object's fields: a whole body's, or an event's `response`.
CHATCAP_COLD bool read_response_fields(ondemand::object& object, ResponseView& response) {
  enum : int { kObject, kOutput, kStatus, kIncomplete, kError, kUsage, kModel };
  Seen seen;
  for (auto field_result : object) {
    ondemand::field field;
    if (std::move(field_result).get(field) != SUCCESS) return false;
    const ondemand::raw_json_string key = field.key();
    ondemand::value& value = field.value();
    bool ok = true;
    switch (first_byte(key)) {
      case 'o':
        if (key_is<"object">(key)) {
          if (seen.first(kObject)) ok = text_if_any(value, response.object);
        } else if (key_is<"output">(key)) {
          if (seen.first(kOutput)) ok = read_output(value, response);
        }
        break;
      case 's':
        if (key_is<"status">(key) && seen.first(kStatus)) ok = text_if_any(value, response.status);
        break;
      case 'i':
        if (key_is<"incomplete_details">(key) && seen.first(kIncomplete)) {
          ok = read_incomplete_reason(value, response.incomplete_reason);
        }
        break;
      case 'e':
        if (key_is<"error">(key) && seen.first(kError)) ok = raw_unless_null(value, response.error);
        break;
      case 'u':
        if (key_is<"usage">(key) && seen.first(kUsage)) {
          ondemand::json_type type;
          ok = type_of(value, type) && (type != ondemand::json_type::object || raw_text(value, response.usage));
        }
        break;
      case 'm':
        if (key_is<"model">(key) && seen.first(kModel)) ok = text_if_any(value, response.model);
        break;
      default:
        break;
    }
    if (!ok) return false;
  }
  return true;
}

CHATCAP_COLD bool read_response(ondemand::value value, ResponseView& response) {
  ondemand::object object;
  bool found = false;
  if (!object_if_any(value, object, found)) return false;
  return !found || read_response_fields(object, response);
}

// An event's fields, its kind known. Every event has few: the deltas' are read inline.
CHATCAP_HOT bool read_event_fields(ondemand::object& top, EventView& view) {
  enum : int { kDelta, kItemId, kItem, kOutputIndex, kArguments, kName, kResponse };
  Seen seen;
  for (auto field_result : top) {
    ondemand::field field;
    if (std::move(field_result).get(field) != SUCCESS) return false;
    const ondemand::raw_json_string key = field.key();
    ondemand::value& value = field.value();
    bool ok = true;
    switch (first_byte(key)) {
      case 'd':
        if (key_is<"delta">(key) && seen.first(kDelta)) ok = text_if_any(value, view.delta);
        break;
      case 'i':
        if (key_is<"item_id">(key)) {
          if (seen.first(kItemId)) ok = text_if_any(value, view.item_id);
        } else if (key_is<"item">(key)) {
          if (seen.first(kItem)) ok = read_item(value, view.item, nullptr, 0);
        }
        break;
      case 'o':
        if (key_is<"output_index">(key) && seen.first(kOutputIndex)) ok = int_if_any(value, view.output_index);
        break;
      case 'a':
        if (key_is<"arguments">(key) && seen.first(kArguments)) ok = read_arguments(value, view.arguments);
        break;
      case 'n':
        if (key_is<"name">(key) && seen.first(kName)) ok = text_if_any(value, view.name);
        break;
      case 'r':
        if (key_is<"response">(key) && seen.first(kResponse)) ok = read_response(value, *view.response);
        break;
      default:
        break;
    }
    if (!ok) return false;
  }
  return true;
}

// The kind an event's data says in its `type` (for an event with no `event:` name). Reads
// the whole object, so that a broken one is told.
CHATCAP_COLD bool read_kind(ondemand::object& top, Kind& kind) {
  bool type_seen = false;
  for (auto field_result : top) {
    ondemand::field field;
    if (std::move(field_result).get(field) != SUCCESS) return false;
    if (type_seen || !key_is<"type">(field.key())) continue;
    type_seen = true;
    Text type;
    if (!text_if_any(field.value(), type)) return false;
    if (type.present) kind = kind_of(type.view);
  }
  return true;
}

CHATCAP_HOT bool read_event(ondemand::object& top, EventView& view) {
  if (view.kind == Kind::unknown) {
    if (!read_kind(top, view.kind)) return false;
    if (view.kind == Kind::unknown) return true;  // an event we do not read
    bool has_fields = false;  // back to the first field, to read them knowing the kind
    if (top.reset().get(has_fields) != SUCCESS) return false;
    if (!has_fields) return true;
  }
  return read_event_fields(top, view);
}


// input_tokens and output_tokens of a usage object's text, with a parser of their own (the
// event's views live in the other), kept small: a usage object past kMaxUsageBytes (some
// 200 bytes are usual) is left to the recorder, which reads the counts from usage_json too.
constexpr std::size_t kMaxUsageBytes = 64 * 1024;

void read_token_counts(std::string_view usage, Answer& answer) {
  if (usage.size() > kMaxUsageBytes) return;
  thread_local std::string padded;
  thread_local ondemand::parser parser;
  ondemand::document document;
  if (parser.iterate(padded_copy(usage, padded)).get(document) != SUCCESS) return;
  ondemand::object object;
  if (document.get_object().get(object) != SUCCESS) return;
  std::optional<std::int64_t> input;
  std::optional<std::int64_t> output;
  bool input_seen = false;
  bool output_seen = false;
  for (auto field_result : object) {
    ondemand::field field;
    if (std::move(field_result).get(field) != SUCCESS) return;
    const ondemand::raw_json_string key = field.key();
    if (key_is<"input_tokens">(key) && !input_seen) {
      input_seen = true;
      if (!int_if_any(field.value(), input)) return;
    } else if (key_is<"output_tokens">(key) && !output_seen) {
      output_seen = true;
      if (!int_if_any(field.value(), output)) return;
    }
  }
  if (input) answer.input_tokens = input;
  if (output) answer.output_tokens = output;
}

// ---------------------------------------------------------------------------------------
// Applying what was read.

enum class Target : std::uint8_t { none, content, reasoning, summary };

// Where a part's text goes: by its own type, else by its item's and where it sits.
Target target_of(const PartView& part, const ItemView& item) {
  switch (part.type) {
    case PartType::output_text: return Target::content;
    case PartType::reasoning_text: return Target::reasoning;
    case PartType::summary_text: return Target::summary;
    case PartType::other: return Target::none;
    case PartType::unsaid: break;
  }
  if (item.type == ItemType::message) return part.in_summary ? Target::none : Target::content;
  if (item.type == ItemType::reasoning) return part.in_summary ? Target::summary : Target::reasoning;
  return Target::none;
}

class Assembler {
 public:
  static constexpr std::size_t kMaxItemIdBytes = 256;  // longer item ids are not kept

  Assembler(Answer& answer, ResponsesProgress& progress, timestamp_us ts)
      : answer_(answer), progress_(progress), ts_(ts) {}

  // One stream event, read whole; `data` is its text.
  void apply_event(const EventView& view, std::string_view data) {
    switch (view.kind) {
      case Kind::unknown:
        return;
      case Kind::response_update:
        take_model(*view.response);
        return;
      case Kind::content_delta:
        take_text_delta(answer_.content, progress_.content_taken, view.delta);
        return;
      case Kind::reasoning_delta:
        take_text_delta(answer_.reasoning, progress_.reasoning_taken, view.delta);
        return;
      case Kind::arguments_delta:
        take_arguments_delta(view);
        return;
      case Kind::arguments_done:
        if (ProgressCall* call = call_for(view.item_id, view.output_index)) {
          ToolCall& slot = slot_of(*call);
          if (slot.name.empty()) assign_text(slot.name, view.name);
          take_whole_arguments(*call, view.arguments);
        }
        return;
      case Kind::item_added:
      case Kind::item_done:
        if (view.item.type != ItemType::function_call) return;
        // An added item is a new one even when it says neither its id nor its position.
        if (ProgressCall* call = call_for(view.item.id, view.output_index, view.kind == Kind::item_done)) {
          fill_call(*call, view.item);
        }
        return;
      case Kind::completed:
      case Kind::incomplete:
      case Kind::failed:
        answer_.done = true;
        take_response(*view.response, status_of(view.kind));
        return;
      case Kind::error:
        take_error(data, true);
        return;
    }
  }

  // An `error` event: its data is the error, kept as a JSON string when it is not JSON.
  void take_error(std::string_view data, bool is_json) {
    note_error_event(answer_, ts_);
    if (!answer_.error_json.empty()) return;  // the first error said is the one kept
    if (is_json) {
      answer_.error_json.assign(data);
    } else {
      JsonWriter(answer_.error_json).string(data);
    }
  }

  // A whole body: a response object, or an error (kept whole, `body`).
  void apply_body(const ResponseView& response, std::string_view body) {
    const bool is_response = response.object.view == "response" || response.status.present;
    if (response.object.view == "error" || (!response.error.empty() && !is_response)) {
      answer_.error_json.assign(body);
    }
    take_response(response, "");
  }

 private:
  using ProgressCall = ResponsesProgress::Call;

  void take_text_delta(std::string& field, bool& taken, const Text& delta) {
    if (!delta.present) return;
    taken = true;
    if (append_answer_text(answer_, field, delta.view)) note_token_event(answer_, ts_);
  }

  void take_arguments_delta(const EventView& view) {
    if (!view.delta.present) return;
    ProgressCall* call = call_for(view.item_id, view.output_index);
    if (call == nullptr) return;
    ToolCall& slot = slot_of(*call);
    if (!call->delta_seen) {
      call->delta_seen = true;  // the deltas are the stream: whole arguments met before go
      if (call->whole_arguments) slot.arguments.clear();
      call->whole_arguments = false;
    }
    if (append_answer_text(answer_, slot.arguments, view.delta.view)) note_token_event(answer_, ts_);
  }

  // A final response (terminal event or whole body). `fallback`: the status its event
  // stands for when the response says none.
  void take_response(const ResponseView& response, std::string_view fallback) {
    take_model(response);
    take_output(response);
    if (!response.usage.empty()) {
      answer_.usage_json.assign(response.usage);
      read_token_counts(response.usage, answer_);
    }
    const std::string_view status = response.status.present ? response.status.view : fallback;
    take_status(status, response.incomplete_reason);
    if (!response.error.empty() || status == "failed") note_error_event(answer_, ts_);
    if (!response.error.empty() && answer_.error_json.empty()) answer_.error_json.assign(response.error);
  }

  void take_model(const ResponseView& response) {
    if (answer_.model.empty() && response.model.nonempty()) assign_text(answer_.model, response.model);
  }

  // The output's text where no delta brought it (a server that sends only the final
  // response), and its function calls merged with those the stream named.
  void take_output(const ResponseView& response) {
    if (!response.output_seen) return;
    const bool content = !progress_.content_taken;
    const bool reasoning = !progress_.reasoning_taken;
    const std::vector<PartView>& parts = response.parts;
    for (std::size_t first = 0; first < parts.size();) {
      // One item's parts (contiguous): its reasoning_text, else its summary.
      const ItemView& item = response.items[parts[first].item];
      std::size_t end = first;
      bool has_reasoning_text = false;
      for (; end < parts.size() && parts[end].item == parts[first].item; ++end) {
        has_reasoning_text = has_reasoning_text || target_of(parts[end], item) == Target::reasoning;
      }
      for (std::size_t i = first; i < end; ++i) {
        switch (target_of(parts[i], item)) {
          case Target::content:
            if (content) append_answer_text(answer_, answer_.content, parts[i].text);
            break;
          case Target::reasoning:
            if (reasoning) append_answer_text(answer_, answer_.reasoning, parts[i].text);
            break;
          case Target::summary:
            if (reasoning && !has_reasoning_text) append_answer_text(answer_, answer_.reasoning, parts[i].text);
            break;
          case Target::none:
            break;
        }
      }
      first = end;
    }
    progress_.content_taken = true;  // a repeated final response adds nothing
    progress_.reasoning_taken = true;
    for (const ItemView& item : response.items) {
      if (item.type != ItemType::function_call) continue;
      if (ProgressCall* call = call_for(item.id, item.position)) fill_call(*call, item);
    }
  }

  void take_status(std::string_view status, const Text& reason) {
    if (status.empty()) return;
    if (status == "completed") {
      answer_.finish_reason = answer_.tool_calls.empty() ? "stop" : "tool_calls";
    } else if (status == "incomplete") {
      answer_.finish_reason = reason.view == "content_filter" ? "content_filter" : "length";
    } else if (status == "failed") {
      answer_.finish_reason = "error";
    }
    // Another status (cancelled, in_progress ...) normalises to nothing, and is said as is.
    answer_.native_finish_reason.clear();
    if (!append_capped(answer_.native_finish_reason, status)) answer_.text_truncated = true;
    if (status == "incomplete" && reason.nonempty()) {
      answer_.native_finish_reason.push_back(':');
      if (!append_capped(answer_.native_finish_reason, reason.view)) answer_.text_truncated = true;
    }
  }

  // The call of the function_call item with this id (else at this position in output[]),
  // made when no event named it before, in the order met; with neither, the last call
  // (`or_last`). Null past Answer::kMaxToolCalls (the answer is then marked cut).
  ProgressCall* call_for(const Text& item_id, std::optional<std::int64_t> output_index, bool or_last = true) {
    auto& calls = progress_.calls;
    const std::string_view id = item_id.present && item_id.view.size() <= kMaxItemIdBytes ? item_id.view : "";
    if (!id.empty()) {
      for (ProgressCall& call : calls) {
        if (call.item_id == id) {
          if (call.output_index < 0 && output_index) call.output_index = *output_index;
          return &call;
        }
      }
    }
    if (output_index) {
      for (ProgressCall& call : calls) {
        if (call.output_index == *output_index && (call.item_id.empty() || id.empty())) {
          if (call.item_id.empty()) call.item_id.assign(id);
          return &call;
        }
      }
    }
    if (or_last && id.empty() && !output_index && !calls.empty()) return &calls.back();
    if (calls.size() >= Answer::kMaxToolCalls) {
      answer_.text_truncated = true;
      return nullptr;
    }
    const auto index = static_cast<std::int64_t>(calls.size());
    ToolCall* slot = tool_call_slot(answer_, index);
    if (slot == nullptr) return nullptr;
    slot->type = "function";
    ProgressCall call;
    call.index = index;
    call.output_index = output_index.value_or(-1);
    call.item_id.assign(id);
    calls.push_back(std::move(call));
    return &calls.back();
  }

  ToolCall& slot_of(const ProgressCall& call) {
    // Made with the call: found, never made here.
    return *tool_call_slot(answer_, call.index);
  }

  // What a function_call item says, where the call does not have it yet.
  void fill_call(ProgressCall& call, const ItemView& item) {
    ToolCall& slot = slot_of(call);
    if (slot.id.empty()) assign_text(slot.id, item.call_id);
    if (slot.name.empty()) assign_text(slot.name, item.name);
    take_whole_arguments(call, item.arguments);
  }

  // Whole arguments (an item's, a .done event's): taken only for a call no delta came for.
  void take_whole_arguments(ProgressCall& call, const Text& arguments) {
    if (call.delta_seen || !arguments.nonempty()) return;
    ToolCall& slot = slot_of(call);
    slot.arguments.clear();
    if (!append_capped(slot.arguments, arguments.view)) answer_.text_truncated = true;
    call.whole_arguments = true;
  }

  void assign_text(std::string& out, const Text& text) {
    if (!text.nonempty()) return;
    out.clear();
    if (!append_capped(out, text.view)) answer_.text_truncated = true;
  }

  Answer& answer_;
  ResponsesProgress& progress_;
  timestamp_us ts_;
};

void take_event(Answer& answer, ResponsesProgress& progress, std::string& scratch, const SseEvent& event) {
  note_event(answer, event.ts);
  const std::string_view data = trim_whitespace(event.data);
  // The `event:` name says the kind; with none (or one unknown), the data's `type` does.
  const Kind named = kind_of(event.type);
  // Servers that end every stream as chat's (vLLM's other dialects do): not bad, and not
  // this dialect's own end (`done` is a terminal response event's).
  if (data == "[DONE]" && named != Kind::error) return;
  ResponseView& response = reused_response_view();
  EventView view;
  view.kind = named;
  view.response = &response;
  Assembler assembler(answer, progress, event.ts);
  const bool read_ok =
      !data.empty() && read_then_apply(
                           data, scratch, [&view](ondemand::object& top) { return read_event(top, view); },
                           [&assembler, &view, data] { assembler.apply_event(view, data); });
  response.release_if_large();
  release_if_large(scratch);
  if (read_ok) return;
  if (named == Kind::error) {
    assembler.take_error(data, false);
  } else if (!data.empty()) {
    ++answer.bad_events;  // empty data: a keep-alive, not bad
  }
}

}  // namespace

void ResponsesReader::on_sse_event(const SseEvent& event) {
  try {
    take_event(answer_, progress_, scratch_, event);
  } catch (...) {  // allocation failure: count it and go on with the stream
    ++answer_.bad_events;
  }
}

void ResponsesReader::start() {
  answer_.clear();
  progress_.clear();
}

bool ResponsesReader::read_body(std::string_view body, Answer& out) {
  try {
    thread_local std::string padded;
    ResponsesProgress progress;  // the body's own: a stream's is left as it is
    ResponseView& response = reused_response_view();
    Assembler assembler(out, progress, 0);
    const std::string_view whole = trim_whitespace(body);
    const bool read_ok = read_then_apply(
        body, padded, [&response](ondemand::object& top) { return read_response_fields(top, response); },
        [&assembler, &response, whole] { assembler.apply_body(response, whole); });
    response.release_if_large();
    release_if_large(padded);
    return read_ok;
  } catch (...) {
    return false;
  }
}

}  // namespace chatcap
