#include "chatcap/risks.hpp"

#include <algorithm>
#include <array>
#include <memory>
#include <string>

#include <simdjson.h>

namespace chatcap {
namespace {

// The fields of a structured-output object that constrain decoding (vLLM's
// StructuredOutputsParams and the legacy GuidedDecodingParams alike).
constexpr std::array<std::string_view, 6> kConstraintFields = {"json",    "json_object", "regex",
                                                               "choice",  "grammar",     "structural_tag"};
// The legacy top-level fields, each a constraint of its own.
constexpr std::array<std::string_view, 4> kLegacyConstraintFields = {"guided_json", "guided_regex", "guided_choice",
                                                                     "guided_grammar"};

bool is_blank(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; });
}

// What vLLM can build a constraint from: not absent, null, false, an empty (or blank) string
// or an empty list. Anything else (a schema object, even {}, true, a pattern) is usable.
bool usable_constraint(simdjson::dom::element value) {
  switch (value.type()) {
    case simdjson::dom::element_type::NULL_VALUE: return false;
    case simdjson::dom::element_type::BOOL: return value.get_bool().value_unsafe();
    case simdjson::dom::element_type::STRING: return !is_blank(value.get_string().value_unsafe());
    case simdjson::dom::element_type::ARRAY: return value.get_array().value_unsafe().size() > 0;
    default: return true;
  }
}

// The summary's object of structured-output fields, read for the entries that look into it.
struct StructuredFields {
  bool lacks_constraint = false;
  std::string response_format_type;  // response_format.type
  std::string tool_choice;           // tool_choice, when a string
};

StructuredFields read_structured_fields(std::string_view json) {
  StructuredFields out;
  if (json.empty()) return out;
  thread_local simdjson::dom::parser parser;
  simdjson::dom::object fields;
  if (parser.parse(json.data(), json.size(), true).get(fields) != simdjson::SUCCESS) return out;
  bool asked = false;   // some field asks for structured output
  bool usable = false;  // and some constraint is usable
  for (auto [key, value] : fields) {
    if (key == "structured_outputs" || key == "guided_decoding") {
      simdjson::dom::object object;
      if (value.get(object) != simdjson::SUCCESS) continue;  // null: not asked
      asked = true;
      for (std::string_view name : kConstraintFields) {
        simdjson::dom::element constraint;
        if (object[name].get(constraint) == simdjson::SUCCESS && usable_constraint(constraint)) usable = true;
      }
    } else if (std::find(kLegacyConstraintFields.begin(), kLegacyConstraintFields.end(), key) !=
               kLegacyConstraintFields.end()) {
      if (value.is_null()) continue;
      asked = true;
      if (usable_constraint(value)) usable = true;
    } else if (key == "response_format") {
      std::string_view type;
      if (value["type"].get(type) == simdjson::SUCCESS) out.response_format_type = type;
    } else if (key == "tool_choice") {
      std::string_view choice;
      if (value.get(choice) == simdjson::SUCCESS) out.tool_choice = choice;
    }
  }
  out.lacks_constraint = asked && !usable;
  return out;
}

// vLLM reads all four generation dialects into the same sampling parameters; the legacy
// completions endpoint alone has echo.
constexpr std::string_view kCompletionsPath = "/v1/completions";

const RiskEntry kTable[] = {
    {"structured_output_without_constraint",
     "a structured_outputs or guided_decoding object, or a top-level guided_json/guided_regex/guided_choice/"
     "guided_grammar, where none of json, json_object, regex, choice, grammar, structural_tag holds a usable "
     "value (absent, null, false, empty or blank string, empty list), e.g. {\"json_object\": false} or {\"json\": \"\"}",
     "V1 engine before the fix of vllm-project/vllm#45346 (2026-06); an empty guided_grammar on 0.10.1-0.10.2 "
     "(vllm-project/vllm#23215)",
     "vllm-project/vllm#45346",
     "a structured-output request with no usable constraint raises \"No valid structured output parameter found\" "
     "inside the engine loop: EngineCore dies and every later request fails",
     [](const RiskInput& r) { return r.structured_lacks_constraint; }},
    {"response_format_text",
     "response_format {\"type\": \"text\"}",
     "0.11.0 (fixed by vllm-project/vllm#26822, 2025-10)",
     "vllm-project/vllm#26639",
     "on vLLM 0.11.0 a response_format of type text is turned into a structured-output request with no "
     "constraint, which raises \"No valid structured output parameter found\" inside EngineCore and takes it down",
     [](const RiskInput& r) { return r.response_format_type == "text"; }},
    {"json_object_with_required_tool_choice",
     "response_format {\"type\": \"json_object\"} together with tool_choice \"required\"",
     "before vllm-project/vllm#32127 (2026-01)",
     "vllm-project/vllm#32127",
     "json_object output combined with a required tool call crashes the engine (reported as "
     "vllm-project/vllm#32006, fixed by this pull request)",
     [](const RiskInput& r) {
       return r.response_format_type == "json_object" && r.tool_choice == "required";
     }},
    {"too_many_logit_bias",
     "a logit_bias object with more than 1024 entries",
     "Model Runner V2 (since vllm-project/vllm#32163, 2026-01); no fix merged as of vllm-project/vllm#55164",
     "vllm-project/vllm#55164",
     "logit_bias is copied into a GPU tensor 1024 entries wide; more raises ValueError inside EngineCore, a fatal "
     "error for the whole server",
     [](const RiskInput& r) { return r.summary.logit_bias_entries > 1024; }},
    {"too_many_allowed_token_ids",
     "an allowed_token_ids list of more than 1024 ids",
     "Model Runner V2 (since vllm-project/vllm#32163, 2026-01); no fix merged as of vllm-project/vllm#55164",
     "vllm-project/vllm#55164",
     "allowed_token_ids is copied into a GPU tensor 1024 ids wide; more raises \"Too many allowed token IDs\" "
     "inside EngineCore and the engine dies (EngineDeadError)",
     [](const RiskInput& r) { return r.summary.allowed_token_ids > 1024; }},
    {"too_many_stop_token_ids",
     "a stop_token_ids list of more than 126 ids (the engine's limit is 128 including the model's own "
     "end-of-sequence ids, which chatcap cannot see)",
     "Model Runner V2 (since vllm-project/vllm#32163, 2026-01); no fix merged as of vllm-project/vllm#55164",
     "vllm-project/vllm#55164",
     "stop token ids (the request's plus the model's end-of-sequence ids) fill a GPU tensor 128 wide; more "
     "raises inside EngineCore and the engine dies",
     [](const RiskInput& r) { return r.summary.stop_token_ids > 126; }},
    {"echo_logprobs_zero_max_tokens",
     "/v1/completions with echo true, logprobs of 1 or more and max_tokens 0",
     "V0 engine (reported on the July 2024 release, ~0.5.x)",
     "vllm-project/vllm#6521",
     "echoing the prompt with logprobs while generating nothing crashes the engine's background loop",
     [](const RiskInput& r) {
       return r.path == kCompletionsPath && r.summary.echo == true && r.summary.logprobs >= 1 &&
              r.summary.max_tokens == 0;
     }},
    {"n_with_priority_scheduling",
     "n of 2 or more in a request that sets priority (only servers started with --scheduling-policy priority "
     "accept priority; chatcap cannot see the server's flags)",
     "V1 engine with priority scheduling, before vllm-project/vllm#29764 (2025-12)",
     "vllm-project/vllm#29747",
     "with priority scheduling, the n sibling requests tie on priority and arrival time and the scheduler's heap "
     "compares two Request objects: TypeError in EngineCore, the engine dies",
     [](const RiskInput& r) { return r.summary.priority && r.summary.n.value_or(1) >= 2; }},
};
static_assert(std::size(kTable) <= kMaxRisks);

}  // namespace

std::span<const RiskEntry> risk_table() { return kTable; }

bool structured_output_lacks_constraint(std::string_view structured_output_json) {
  return read_structured_fields(structured_output_json).lacks_constraint;
}

std::uint32_t assess_risks(const RequestSummary& summary, std::string_view target) {
  const StructuredFields structured = read_structured_fields(summary.structured_output_json);
  const RiskInput input{summary, path_of(target), structured.lacks_constraint, structured.response_format_type,
                        structured.tool_choice};
  std::uint32_t mask = 0;
  for (std::size_t i = 0; i < std::size(kTable); ++i) {
    if (kTable[i].matches(input)) mask |= 1u << i;
  }
  return mask;
}

std::vector<const RiskEntry*> risks_in(std::uint32_t mask) {
  std::vector<const RiskEntry*> out;
  for (std::size_t i = 0; i < std::size(kTable); ++i) {
    if (mask & (1u << i)) out.push_back(&kTable[i]);
  }
  return out;
}

const RiskEntry* first_risk(std::uint32_t mask) {
  for (std::size_t i = 0; i < std::size(kTable); ++i) {
    if (mask & (1u << i)) return &kTable[i];
  }
  return nullptr;
}

void RequestAnalyzer::on_request_complete(Exchange& exchange) {
  RequestPart& request = exchange.request;
  if (exchange.kept() && request.complete && !request.body.truncated && !request.body.bytes.empty()) {
    auto summary = std::make_shared<RequestSummary>(summarize_request(request.body.bytes, dialect_of(request.target)));
    if (summary->json_valid) {
      request.risks = assess_risks(*summary, request.target);
      request.summary = std::move(summary);
      if (request.risks != 0) ++risky_requests_;
    }
  }
  next_.on_request_complete(exchange);
}

}  // namespace chatcap
