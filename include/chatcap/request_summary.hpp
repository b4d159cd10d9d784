// What the operator needs to see of a request at a glance, in any dialect: model, stream,
// max tokens, how many messages / input items / prompts and tools, and every
// structured-output field verbatim (the fields that have killed vLLM's engine). Read once
// per request that gets a record (RequestAnalyzer, risks.hpp), with simdjson's on-demand
// API over the top-level fields; the risk table reads the same summary.
//
// Nothing here throws on bad input: a body that is not one JSON object gives a summary with
// json_valid false, which the record leaves out.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "chatcap/answer.hpp"

namespace chatcap {

struct RequestSummary {
  bool json_valid = false;             // body parsed as a JSON object
  Dialect dialect = Dialect::unknown;  // of the request's path
  std::string model;
  std::optional<bool> stream;
  // max_tokens, else max_completion_tokens (chat), else max_output_tokens (Responses)
  std::optional<std::int64_t> max_tokens;
  std::int64_t messages = 0;                 // length of `messages` (chat, Anthropic Messages)
  std::optional<std::int64_t> input_items;   // `input` of a Responses request: a string is one
  std::optional<std::int64_t> prompts;       // `prompt` of a completions request: a string is one
  std::int64_t tools = 0;                    // length of `tools`
  std::optional<std::int64_t> n;
  // A JSON object text holding, verbatim, every structured-output field present:
  // response_format, structured_outputs, guided_json, guided_regex, guided_choice,
  // guided_grammar, guided_decoding, guided_decoding_backend, guided_whitespace_pattern,
  // tool_choice, and a Responses request's `text` (text.format). Empty string when none is
  // present. Example: {"structured_outputs":{"json":null}}
  std::string structured_output_json;
  // Not in the record's summary; what the risk table (risks.hpp) looks at.
  std::int64_t logit_bias_entries = 0;  // members of `logit_bias`
  std::int64_t allowed_token_ids = 0;   // length of `allowed_token_ids`
  std::int64_t stop_token_ids = 0;      // length of `stop_token_ids`
  std::optional<bool> echo;
  std::int64_t logprobs = 0;            // `logprobs` as a count (true = 1)
  bool priority = false;                // a `priority` field, not null
};

RequestSummary summarize_request(std::string_view body, Dialect dialect = Dialect::unknown);

}  // namespace chatcap
