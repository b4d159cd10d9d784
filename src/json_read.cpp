#include "chatcap/json_read.hpp"

namespace chatcap::json_read {

bool is_valid_json(std::string_view text) {
  // simdjson's DOM parser validates all of it, with the CPU's best kernel; its buffers keep
  // the largest size seen up to kKeptBufferBytes, a larger document gets a parser of its own.
  simdjson::dom::element ignored;
  if (text.size() <= kKeptBufferBytes) {
    thread_local simdjson::dom::parser parser;
    return parser.parse(text.data(), text.size(), true).get(ignored) == SUCCESS;
  }
  simdjson::dom::parser own_parser;
  return own_parser.parse(text.data(), text.size(), true).get(ignored) == SUCCESS;
}

}  // namespace chatcap::json_read
