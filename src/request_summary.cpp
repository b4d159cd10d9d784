#include "chatcap/request_summary.hpp"

#include <algorithm>
#include <array>

#include "chatcap/json_read.hpp"
#include "chatcap/json_writer.hpp"

namespace chatcap {
namespace {

using namespace json_read;

// Fields of a request whose value is copied verbatim into the summary: the structured-output
// and tool-choice options, the ones whose bad values have killed vLLM's engine.
constexpr std::array<std::string_view, 10> kStructuredOutputKeys = {
    "response_format",  "structured_outputs",      "guided_json",
    "guided_regex",     "guided_choice",           "guided_grammar",
    "guided_decoding",  "guided_decoding_backend", "guided_whitespace_pattern",
    "tool_choice",
};

// `logprobs` as a count: an integer as sent (completions), 1 for true (chat), else 0.
bool logprobs_if_any(ondemand::value& value, std::int64_t& out) {
  std::optional<std::int64_t> number;
  if (!int_if_any(value, number)) return false;
  if (number) {
    out = *number;
    return true;
  }
  std::optional<bool> flag;
  if (!bool_if_any(value, flag)) return false;
  out = flag.value_or(false) ? 1 : 0;
  return true;
}

// Whether the value is anything but null.
bool present_not_null(ondemand::value& value, bool& out) {
  ondemand::json_type type;
  if (!type_of(value, type)) return false;
  out = type != ondemand::json_type::null;
  return true;
}

bool is_structured_output_key(std::string_view key) {
  return std::find(kStructuredOutputKeys.begin(), kStructuredOutputKeys.end(), key) !=
         kStructuredOutputKeys.end();
}

// Appends `"key":raw` to the summary's object text (opened here, closed by the caller). A
// value that is not valid JSON is kept as a JSON string of its bytes: the operator still
// sees what was sent, and the record stays parseable. False for such a value.
bool append_structured_field(std::string& out, std::string_view key, std::string_view raw) {
  out.push_back(out.empty() ? '{' : ',');
  out.push_back('"');
  out.append(key);  // one of kStructuredOutputKeys: nothing to escape
  out.append("\":");
  if (is_valid_json(raw)) {
    out.append(raw);
    return true;
  }
  JsonWriter(out).string(raw);
  return false;
}

// A string counts as one item (a prompt, an input), a list as its elements.
bool count_items(ondemand::value& value, std::optional<std::int64_t>& out) {
  ondemand::json_type type;
  if (!type_of(value, type)) return false;
  if (type == ondemand::json_type::string) {
    out = 1;
    return true;
  }
  std::int64_t count = 0;
  if (type != ondemand::json_type::array || !count_if_array(value, count)) return type != ondemand::json_type::array;
  out = count;
  return true;
}

struct RequestReader {
  RequestSummary& summary;
  Dialect dialect = Dialect::unknown;
  std::optional<std::int64_t> max_tokens;
  std::optional<std::int64_t> max_completion_tokens;
  std::optional<std::int64_t> max_output_tokens;
  bool structured_field_invalid = false;  // not valid JSON although on-demand skipped it unchecked

  bool read(ondemand::object& top) {
    for (auto field_result : top) {
      std::string_view key;
      ondemand::value value;
      if (!split_field(field_result, key, value) || !read_field(key, value)) return false;
    }
    return true;
  }

  bool read_field(std::string_view key, ondemand::value& value) {
    if (key == "model") {
      std::optional<std::string_view> model;
      if (!string_if_any(value, model)) return false;
      if (model) summary.model.assign(*model);
      return true;
    }
    if (key == "stream") return bool_if_any(value, summary.stream);
    if (key == "max_tokens") return int_if_any(value, max_tokens);
    if (key == "max_completion_tokens") return int_if_any(value, max_completion_tokens);
    if (key == "max_output_tokens") return int_if_any(value, max_output_tokens);  // Responses
    if (key == "input") return count_items(value, summary.input_items);          // Responses
    if (key == "prompt") return count_items(value, summary.prompts);             // completions
    // Responses put the output format under text.format: kept with the other
    // structured-output fields.
    if (key == "text" && dialect == Dialect::responses) return keep_structured(key, value);
    if (key == "n") return int_if_any(value, summary.n);
    if (key == "messages") return count_if_array(value, summary.messages);
    if (key == "tools") return count_if_array(value, summary.tools);
    // The sizes and switches that known engine killers are made of (risks.hpp).
    if (key == "logit_bias") return count_if_object(value, summary.logit_bias_entries);
    if (key == "allowed_token_ids") return count_if_array(value, summary.allowed_token_ids);
    if (key == "stop_token_ids") return count_if_array(value, summary.stop_token_ids);
    if (key == "echo") return bool_if_any(value, summary.echo);
    if (key == "logprobs") return logprobs_if_any(value, summary.logprobs);
    if (key == "priority") return present_not_null(value, summary.priority);
    if (is_structured_output_key(key)) return keep_structured(key, value);
    return true;
  }

  // Present with value null counts too: {"structured_outputs": {"json": null}} is exactly
  // the kind of request this field exists to show.
  bool keep_structured(std::string_view key, ondemand::value& value) {
    std::string_view raw;
    if (!raw_text(value, raw)) return false;
    if (!append_structured_field(summary.structured_output_json, key, raw)) structured_field_invalid = true;
    return true;
  }
};

}  // namespace

RequestSummary summarize_request(std::string_view body, Dialect dialect) {
  RequestSummary summary;
  summary.dialect = dialect;
  try {
    thread_local std::string padded;
    RequestReader reader{summary, dialect, {}, {}, {}, false};
    summary.json_valid =
        parse_object(body, padded, [&reader](ondemand::object& top) { return reader.read(top); }) &&
        !reader.structured_field_invalid;
    release_if_large(padded);
    summary.max_tokens = reader.max_tokens       ? reader.max_tokens
                         : reader.max_completion_tokens ? reader.max_completion_tokens
                                                        : reader.max_output_tokens;
  } catch (...) {  // allocation failure: the summary says what it could read
    summary.json_valid = false;
  }
  if (!summary.structured_output_json.empty()) summary.structured_output_json.push_back('}');
  return summary;
}


}  // namespace chatcap
