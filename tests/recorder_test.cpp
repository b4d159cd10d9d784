// The recorder's record formatting: credentials redacted to a fingerprint of their own value.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "chatcap/recorder.hpp"

using namespace chatcap;

namespace {

Exchange request_with_key(const std::string& key) {
  Exchange ex;
  ex.id = "0123456789ab";
  ex.request.method = "POST";
  ex.request.target = "/v1/chat/completions";
  ex.request.complete = true;
  ex.request.headers = {{"Host", "127.0.0.1:8077"}, {"Authorization", "Bearer " + key}, {"Cookie", key}};
  return ex;
}

}  // namespace

TEST_CASE("recorder: each credential is redacted to the fingerprint of its own value", "[recorder]") {
  // More keys than the writer remembers, in turns and back again: a remembered fingerprint
  // must never be handed to another value.
  std::vector<std::string> keys;
  for (int i = 0; i < 7; ++i) keys.push_back("sk-test-" + std::to_string(i) + std::string(static_cast<std::size_t>(i), 'k'));
  keys.push_back(std::string(2000, 'c'));  // longer than what is remembered
  for (int round = 0; round < 3; ++round) {
    for (std::size_t i = 0; i < keys.size(); ++i) {
      const std::string& key = keys[(i * 3 + static_cast<std::size_t>(round)) % keys.size()];
      const std::string line = format_request_record(request_with_key(key), true);
      INFO("key " << key.substr(0, 20) << " round " << round);
      CHECK(line.find(key) == std::string::npos);
      auto headers = nlohmann::json::parse(line)["headers"];
      REQUIRE(headers.size() == 3);
      CHECK(headers[0][1] == "127.0.0.1:8077");
      CHECK(headers[1][1] == redact_value("Bearer " + key));
      CHECK(headers[2][1] == redact_value(key));
    }
  }
  CHECK(redact_value("Bearer a") != redact_value("Bearer b"));
  CHECK_THAT(redact_value("x"), Catch::StartsWith("<redacted sha256:") && Catch::EndsWith(">"));
  // Not redacting keeps the value as sent.
  const std::string plain = format_request_record(request_with_key("sk-visible"), false);
  CHECK(nlohmann::json::parse(plain)["headers"][1][1] == "Bearer sk-visible");
}
