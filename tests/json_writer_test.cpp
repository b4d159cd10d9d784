// The record writer's JSON: every string round-trips through a real JSON parser.
#include <catch2/catch.hpp>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "chatcap/json_writer.hpp"

using namespace chatcap;

TEST_CASE("json writer: objects, arrays, numbers and escapes parse back exactly", "[json_writer]") {
  std::string out;
  JsonWriter w(out);
  std::string nasty = "quote \" backslash \\ newline \n tab \t nul";
  nasty.push_back('\0');
  nasty += " \x01\x1f del \x7f é 日本 🚀 </script>";
  w.begin_object()
      .field("s", nasty)
      .field("i", -42)
      .field("u", 18446744073709551615ull)
      .field("d", 12.5)
      .field("b", true);
  w.key("n").null();
  w.key("a").begin_array().number(std::int64_t{1}).string("x").begin_object().end_object().end_array();
  w.key("raw").raw(R"({"k":[1,2]})");
  w.end_object();
  nlohmann::json parsed = nlohmann::json::parse(out);
  CHECK(parsed["s"] == nasty);
  CHECK(parsed["i"] == -42);
  CHECK(parsed["u"] == 18446744073709551615ull);
  CHECK(parsed["d"] == 12.5);
  CHECK(parsed["b"] == true);
  CHECK(parsed["n"].is_null());
  CHECK(parsed["a"] == nlohmann::json::parse(R"([1,"x",{}])"));
  CHECK(parsed["raw"]["k"][1] == 2);
}

// Timings are written from integer microseconds; the text must be what the double
// micros / 1000.0 was written as before (records compared across versions stay equal).
TEST_CASE("json writer: millis writes what number(micros / 1000.0) writes", "[json_writer]") {
  auto as_millis = [](std::int64_t micros) {
    std::string out;
    JsonWriter(out).millis(micros);
    return out;
  };
  auto as_double = [](std::int64_t micros) {
    std::string out;
    JsonWriter(out).number(static_cast<double>(micros) / 1000.0);
    return out;
  };
  std::vector<std::int64_t> cases = {0, 1, 9, 10, 15, 100, 999, 1000, 1001, 1010, 1100, 2500, 169079, 1315431,
                                     -1, -15, -1000, -2500, 4294967295, 999'999'999'999'999, -999'999'999'999'999,
                                     1'000'000'000'000'000, -1'000'000'000'000'000, INT64_MAX, INT64_MIN + 1};
  std::mt19937_64 random(11);
  for (int digits = 1; digits <= 18; ++digits) {
    std::int64_t bound = 1;
    for (int i = 0; i < digits; ++i) bound *= 10;
    std::uniform_int_distribution<std::int64_t> pick(-bound, bound);
    for (int i = 0; i < 2000; ++i) cases.push_back(pick(random));
  }
  for (std::int64_t micros : cases) {
    INFO(micros << " µs");
    CHECK(as_millis(micros) == as_double(micros));
  }
  // In a container, commas as for any value.
  std::string out;
  JsonWriter(out).begin_array().millis(1).millis(-2000).end_array();
  CHECK(out == "[0.001,-2]");
}

TEST_CASE("json writer: random valid UTF-8 round-trips; invalid bytes stay valid JSON", "[json_writer]") {
  std::mt19937 rng(5);
  for (int round = 0; round < 500; ++round) {
    std::string text;
    for (int i = 0; i < 64; ++i) {
      switch (rng() % 4) {
        case 0: text += static_cast<char>(rng() % 0x80); break;       // any ASCII, controls included
        case 1: text += "\xc3\xa9"; break;                             // é
        case 2: text += "\xe2\x82\xac"; break;                         // €
        default: text += "\xf0\x9f\x98\x80"; break;                    // 😀
      }
    }
    std::string out;
    JsonWriter(out).string(text);
    CHECK(nlohmann::json::parse(out) == text);
  }
  std::string latin1 = "caf\xe9 \xff\xfe";
  std::string out;
  JsonWriter(out).string(latin1);
  CHECK(nlohmann::json::parse(out) == "caf\u00e9 \u00ff\u00fe");
}

TEST_CASE("json writer: short strings of every length, plain or not, round-trip", "[json_writer]") {
  // Short strings take a plain-ASCII shortcut: any byte that needs escaping, or is not ASCII,
  // at any position, must send them the long way.
  const std::string alphabet = std::string("aZ09 ~\x7f/\"\\\n\t\x01\x1f", 14) + "\xc3\xa9";
  std::mt19937 rng(11);
  for (std::size_t length = 0; length <= 80; ++length) {
    for (int round = 0; round < 40; ++round) {
      std::string text;
      while (text.size() < length) {
        const std::size_t at = rng() % (alphabet.size() - 1);
        text += at == alphabet.size() - 2 ? alphabet.substr(at, 2) : alphabet.substr(at, 1);
      }
      if (round % 2 == 0) text = std::string(text.size(), 'p');  // plain throughout
      if (round % 5 == 1) text.insert(rng() % 2 == 0 ? 0 : text.size(), 1, '"');  // not inside an é
      std::string out;
      JsonWriter(out).string(text);
      INFO("length " << length << ": " << out);
      CHECK(nlohmann::json::parse(out) == text);
    }
  }
}

TEST_CASE("json writer: one byte of each value at each position of a plain short string", "[json_writer]") {
  // The shortcut looks at eight bytes at a time: no byte that needs care may hide in any
  // lane of any word, or in the padded last one.
  for (std::size_t length : {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 16, 17, 23, 24, 25, 31, 32, 33, 63, 64}) {
    for (std::size_t at = 0; at < length; ++at) {
      for (int value = 0; value < 256; ++value) {
        std::string text(length, 'p');
        text[at] = static_cast<char>(value);
        std::string out;
        JsonWriter(out).string(text);
        INFO("length " << length << ", byte " << value << " at " << at << ": " << out);
        nlohmann::json back = nlohmann::json::parse(out);  // valid JSON whatever the byte
        if (value < 0x80) {
          REQUIRE(back == text);
        } else {  // alone, not UTF-8: kept as the Latin-1 code point of the same value
          std::string latin1 = text.substr(0, at) + static_cast<char>(0xC0 | (value >> 6)) +
                               static_cast<char>(0x80 | (value & 0x3F)) + text.substr(at + 1);
          REQUIRE(back == latin1);
        }
      }
    }
  }
}
