// `chatcap suspects` and `chatcap show ID --curl/--body` as a user runs them: the binary on
// a log directory written here, its output and exit codes; the --curl command run by bash
// against a listener in this process that keeps the request it receives.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <openssl/evp.h>

#include "chatcap/log_reader.hpp"
#include "chatcap/report.hpp"
#include "support/records.hpp"

using namespace chatcap;
using namespace chatcap::testing;
using nlohmann::json;

namespace {

std::string base64(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    std::uint32_t n = static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16;
    if (i + 1 < bytes.size()) n |= static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
    if (i + 2 < bytes.size()) n |= static_cast<unsigned char>(bytes[i + 2]);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += i + 1 < bytes.size() ? kAlphabet[(n >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? kAlphabet[n & 63] : '=';
  }
  return out;
}

std::string sha256(std::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha256(), nullptr);
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) {
    hex += "0123456789abcdef"[digest[i] >> 4];
    hex += "0123456789abcdef"[digest[i] & 15];
  }
  return hex;
}

bool is_utf8(std::string_view s) {
  // Good enough for test bodies: the recorder's rule (valid UTF-8 → text, else base64).
  json probe = s;
  try {
    (void)probe.dump();
    return true;
  } catch (const json::exception&) {
    return false;
  }
}

// A request record as `chatcap run` writes it; the body stored as text or base64 like the recorder.
json request_record(const std::string& id, const std::string& body, const std::string& server = "127.0.0.1:8077",
                    json headers = json::array({json::array({"Host", "127.0.0.1:8077"}),
                                                json::array({"Content-Type", "application/json"})}),
                    const std::string& target = "/v1/chat/completions") {
  json r = {{"type", "request"}, {"id", id}, {"seq", 1}, {"ts", "2026-11-24T15:21:53.758382Z"},
            {"client", "127.0.0.1:39866"}, {"server", server}, {"method", "POST"}, {"target", target},
            {"version", "1.1"}, {"complete", true}, {"headers", std::move(headers)}, {"body_bytes", body.size()},
            {"anomalies", json::array()}};
  if (is_utf8(body)) {
    r["body"] = body;
  } else {
    r["body"] = base64(body);
    r["body_encoding"] = "base64";
  }
  json parsed = json::parse(body, nullptr, false);
  if (parsed.is_object()) {
    json summary = {{"model", parsed.value("model", "")}, {"stream", parsed.value("stream", false)},
                    {"messages", parsed.contains("messages") ? parsed["messages"].size() : 0}, {"tools", 0}};
    if (parsed.contains("structured_outputs")) summary["structured_output"] = {{"structured_outputs", parsed["structured_outputs"]}};
    r["summary"] = summary;
  }
  return r;
}

json exchange_record(const std::string& id, const std::string& state, json anomalies) {
  return {{"type", "exchange"}, {"id", id}, {"ts", "2026-11-24T15:21:54.000000Z"}, {"state", state},
          {"close", "server_rst"}, {"status", 200}, {"reason", "OK"}, {"response_headers", json::array()},
          {"sse", {{"events", 4}, {"done", false}, {"content", "half an answ"}}}, {"anomalies", std::move(anomalies)}};
}

json suspect(const std::string& id, const std::string& why, int tokens) {
  return {{"id", id}, {"seq", 1}, {"client", "127.0.0.1:39866"}, {"request_ts", "2026-11-24T15:21:53.760000Z"},
          {"token_events", tokens}, {"in_flight", true}, {"why", why}};
}

json server_down(const std::string& ts, const std::string& kind, json suspects) {
  return {{"type", "server_down"}, {"ts", ts}, {"server", "127.0.0.1:8077"}, {"kind", kind},
          {"evidence", {"3 responses cut by RST within 40 ms", "SYN refused"}}, {"suspects", std::move(suspects)}};
}

void write_lines(const std::string& path, const std::vector<json>& records) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  for (const json& r : records) out << r.dump() << '\n';
}

std::vector<json> json_lines(const std::string& out) {
  std::vector<json> lines;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) lines.push_back(json::parse(line));
  return lines;
}

const std::string kPoisonBody =
    R"({"model":"m","messages":[{"role":"user","content":"Answer in JSON."}],"stream":true,)"
    R"("structured_outputs":{"json":null}})";

std::string long_body() {
  json messages = json::array();
  for (int i = 0; i < 60; ++i) messages.push_back({{"role", "user"}, {"content", "line " + std::to_string(i)}});
  return json{{"model", "m"}, {"messages", messages}, {"stream", true}}.dump();
}

// Two deaths: an early one (suspect "old1") and the latest (poison first, then a stream with
// tokens, then one whose records were rotated away).
void write_death_log(const TempDir& dir) {
  write_lines(dir.file(kPreviousLogName),
              {request_record("old1", R"({"model":"m","messages":[]})"), exchange_record("old1", "aborted", {"server_down"}),
               server_down("2026-11-24T15:00:00.000000Z", "engine_dead", {suspect("old1", "the only one", 0)})});
  write_lines(dir.file(kCurrentLogName),
              {request_record("stream22", long_body()), request_record("poison11", kPoisonBody),
               exchange_record("stream22", "aborted", {"server_down"}),
               server_down("2026-11-24T15:21:53.900000Z", "process_exit",
                           {suspect("poison11", "arrived 12 ms before the death, no token received", 0),
                            suspect("stream22", "4 tokens received", 4), suspect("gone33", "rotated", 0)})});
}

// One HTTP/1.1 request received on 127.0.0.1 (any port), answered 200.
struct Received {
  std::string head;  // request line and headers
  std::string body;
};

class Listener {
 public:
  Listener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd_, 8) != 0) {
      throw std::runtime_error("cannot listen on 127.0.0.1");
    }
    socklen_t length = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &length);
    port_ = ntohs(addr.sin_port);
  }
  ~Listener() { ::close(fd_); }
  int port() const { return port_; }
  std::string authority() const { return "127.0.0.1:" + std::to_string(port_); }

  // Receives one request (10 s at most); empty when none came.
  std::future<Received> receive_one() {
    return std::async(std::launch::async, [this] {
      Received r;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 10000) != 1) return r;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) return r;
      std::string data;
      char buffer[65536];
      std::size_t end = std::string::npos;
      std::size_t need = 0;
      bool continued = false;
      for (;;) {
        pollfd q{c, POLLIN, 0};
        if (::poll(&q, 1, 10000) != 1) break;
        ssize_t n = ::read(c, buffer, sizeof buffer);
        if (n <= 0) break;
        data.append(buffer, static_cast<std::size_t>(n));
        if (end == std::string::npos && (end = data.find("\r\n\r\n")) != std::string::npos) {
          r.head = data.substr(0, end);
          std::string lower = r.head;
          std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char x) { return std::tolower(x); });
          if (std::size_t cl = lower.find("\r\ncontent-length:"); cl != std::string::npos) {
            need = std::stoul(lower.substr(cl + 17));
          }
          if (lower.find("\r\nexpect: 100-continue") != std::string::npos && !continued) {
            continued = true;
            (void)!::write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
          }
        }
        if (end != std::string::npos && data.size() - end - 4 >= need) break;
      }
      if (end != std::string::npos) r.body = data.substr(end + 4, need);
      const char reply[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
      (void)!::write(c, reply, sizeof reply - 1);
      ::close(c);
      return r;
    });
  }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// Every file in `dir` (the payloads try to create some).
std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

TEST_CASE("suspects: the latest death, suspects in the record's order, joined with their requests",
          "[cli_forensics]") {
  TempDir dir;
  write_death_log(dir);
  CommandResult r = run_command({CHATCAP_BINARY, "suspects", "--log-dir", dir.path()});
  CHECK(r.exit_code == 0);
  CHECK(r.err.empty());
  const std::string& out = r.out;
  CHECK(out.find('\x1b') == std::string::npos);  // not a terminal: no colour
  // The header: when, which server, what kind of death, the evidence.
  CHECK_THAT(out, Catch::Contains("server 127.0.0.1:8077 down at 2026-11-24 15:21:53.900 UTC") &&
                      Catch::Contains("process_exit") && Catch::Contains("evidence  3 responses cut by RST within 40 ms") &&
                      Catch::Contains("evidence  SYN refused") && Catch::Contains("3 suspects, likeliest first"));
  // Only the latest death.
  CHECK(out.find("old1") == std::string::npos);
  CHECK(out.find("engine_dead") == std::string::npos);
  CHECK_THAT(out, Catch::Contains("1 earlier server death") && Catch::Contains("chatcap suspects --all"));
  // In the record's order, with rank, id and why.
  std::size_t p1 = out.find("#1 of 3  id poison11  arrived 12 ms before the death, no token received");
  std::size_t p2 = out.find("#2 of 3  id stream22  4 tokens received");
  std::size_t p3 = out.find("#3 of 3  id gone33  rotated");
  REQUIRE(p1 != std::string::npos);
  REQUIRE(p2 != std::string::npos);
  REQUIRE(p3 != std::string::npos);
  CHECK((p1 < p2 && p2 < p3));
  std::string first = out.substr(p1, p2 - p1);
  std::string second = out.substr(p2, p3 - p2);
  // The poison request: client, time, summary, its structured output on a line of its own,
  // the pretty body; no exchange record yet.
  CHECK_THAT(first, Catch::Contains("client 127.0.0.1:39866") &&
                        Catch::Contains("request sent 2026-11-24 15:21:53.758 UTC") &&
                        Catch::Contains("0 token events before the death") && Catch::Contains("IN FLIGHT") &&
                        Catch::Contains("model m  stream yes  messages 1") &&
                        Catch::Contains("\n  structured_output: {\"structured_outputs\":{\"json\":null}}\n") &&
                        Catch::Contains("request body  ") && Catch::Contains("\"structured_outputs\": {"));
  // The stream: its state and anomalies, no structured output, the body clipped like `last`.
  CHECK_THAT(second, Catch::Contains("aborted (server_rst)") && Catch::Contains("anomalies  server_down") &&
                         Catch::Contains("structured_output: none") && Catch::Contains("half an answ") &&
                         Catch::Contains("more lines (chatcap show stream22)"));
  CHECK_THAT(out.substr(p3), Catch::Contains("not in the log any more") || Catch::Contains("no record of this request"));
}

TEST_CASE("suspects --json and --all: one object per death, each suspect joined", "[cli_forensics]") {
  TempDir dir;
  write_death_log(dir);
  CommandResult r = run_command({CHATCAP_BINARY, "suspects", "--json", "--log-dir", dir.path()});
  CHECK(r.exit_code == 0);
  CHECK(r.err.empty());
  std::vector<json> lines = json_lines(r.out);
  REQUIRE(lines.size() == 1);
  const json& death = lines[0];
  CHECK(death.size() == 2);
  CHECK(death["server_down"]["type"] == "server_down");
  CHECK(death["server_down"]["ts"] == "2026-11-24T15:21:53.900000Z");
  CHECK(death["server_down"]["suspects"].size() == 3);
  const json& suspects = death["suspects"];
  REQUIRE(suspects.size() == 3);
  CHECK(suspects[0]["id"] == "poison11");
  CHECK(suspects[0]["rank"] == 1);
  CHECK(suspects[0]["why"] == "arrived 12 ms before the death, no token received");
  CHECK(suspects[0]["request"]["body"] == kPoisonBody);
  CHECK(suspects[0]["request"]["summary"]["structured_output"] == json{{"structured_outputs", {{"json", nullptr}}}});
  CHECK(suspects[0]["exchange"].is_null());
  CHECK(suspects[1]["id"] == "stream22");
  CHECK(suspects[1]["rank"] == 2);
  CHECK(suspects[1]["exchange"]["state"] == "aborted");
  CHECK(suspects[2]["id"] == "gone33");
  CHECK(suspects[2]["rank"] == 3);
  CHECK(suspects[2]["request"].is_null());
  CHECK(suspects[2]["exchange"].is_null());
  for (const json& s : suspects) CHECK(s.size() == 5);

  CommandResult all = run_command({CHATCAP_BINARY, "suspects", "--json", "--all", "--log-dir", dir.path()});
  CHECK(all.exit_code == 0);
  std::vector<json> deaths = json_lines(all.out);
  REQUIRE(deaths.size() == 2);  // oldest first, across the rotation
  CHECK(deaths[0]["server_down"]["kind"] == "engine_dead");
  CHECK(deaths[0]["suspects"][0]["id"] == "old1");
  CHECK(deaths[0]["suspects"][0]["exchange"]["anomalies"] == json{"server_down"});
  CHECK(deaths[1] == death);

  CommandResult human_all = run_command({CHATCAP_BINARY, "suspects", "--all", "--log-dir", dir.path()});
  CHECK(human_all.exit_code == 0);
  std::size_t old_death = human_all.out.find("down at 2026-11-24 15:00:00.000 UTC");
  std::size_t new_death = human_all.out.find("down at 2026-11-24 15:21:53.900 UTC");
  REQUIRE(old_death != std::string::npos);
  REQUIRE(new_death != std::string::npos);
  CHECK(old_death < new_death);
  CHECK_THAT(human_all.out, Catch::Contains("id old1  the only one") && !Catch::Contains("earlier server death"));
}

TEST_CASE("suspects: no death in the log is an answer, not an error", "[cli_forensics]") {
  TempDir dir;
  write_lines(dir.file(kCurrentLogName), {request_record("aa11", kPoisonBody)});
  for (bool as_json : {false, true}) {
    std::vector<std::string> argv{CHATCAP_BINARY, "suspects", "--log-dir", dir.path()};
    if (as_json) argv.push_back("--json");
    CommandResult r = run_command(argv);
    CHECK(r.exit_code == 0);
    CHECK(r.out.empty());
    CHECK_THAT(r.err, Catch::Contains("no server death recorded in " + dir.path()));
  }
  TempDir empty;
  CommandResult none = run_command({CHATCAP_BINARY, "suspects", "--log-dir", empty.path()});
  CHECK(none.exit_code == 0);
  CHECK_THAT(none.err, Catch::Contains("no server death recorded"));
  CommandResult missing = run_command({CHATCAP_BINARY, "suspects", "--log-dir", empty.file("nope")});
  CHECK(missing.exit_code == 1);
  CHECK_THAT(missing.err, Catch::Contains("does not exist"));
  // `--last` is a command of its own.
  CommandResult both = run_command({CHATCAP_BINARY, "--last", "2", "suspects", "--log-dir", dir.path()});
  CHECK(both.exit_code == 2);
}

TEST_CASE("suspects: captured text cannot drive the terminal", "[cli_forensics]") {
  TempDir dir;
  std::string evil = "\x1b]0;pwned\x07\x1b[2J\u202e";
  json down = server_down("2026-11-24T15:21:53.900000Z", "process_exit", {suspect("ee55", "why " + evil, 0)});
  down["evidence"].push_back("evidence " + evil);
  write_lines(dir.file(kCurrentLogName),
              {request_record("ee55", json{{"model", evil}, {"messages", json::array()}, {"structured_outputs", {{"json", evil}}}}.dump()),
               down});
  CommandResult r = run_command({CHATCAP_BINARY, "suspects", "--log-dir", dir.path()});
  CHECK(r.exit_code == 0);
  CHECK(r.out.find('\x1b') == std::string::npos);
  CHECK(r.out.find('\x07') == std::string::npos);
  CHECK(r.out.find("\u202e") == std::string::npos);
  CHECK_THAT(r.out, Catch::Contains("why \\x1b]0;pwned\\x07"));
}

TEST_CASE("show --body writes the exact request bytes, nothing else", "[cli_forensics]") {
  TempDir dir;
  std::string binary;
  for (int b = 1; b < 256; ++b) binary += static_cast<char>(b);
  binary += std::string("\0tail", 5);
  json cut = request_record("cut3", "{\"model\":\"m\"");
  cut["body_truncated"] = true;
  cut["body_bytes"] = 9000000;
  json partial = request_record("part4", "{\"mo");
  partial["complete"] = false;
  write_lines(dir.file(kCurrentLogName), {request_record("text1", kPoisonBody + "\n\n"),
                                          request_record("bin2", binary), cut, partial});
  CommandResult text = run_command({CHATCAP_BINARY, "show", "text1", "--body", "--log-dir", dir.path()});
  CHECK(text.exit_code == 0);
  CHECK(text.out == kPoisonBody + "\n\n");
  CHECK(text.err.empty());
  CommandResult bin = run_command({CHATCAP_BINARY, "show", "bin", "--body", "--log-dir", dir.path()});
  CHECK(bin.exit_code == 0);
  CHECK(bin.out == binary);

  for (const char* id : {"cut3", "part4"}) {
    for (const char* flag : {"--body", "--curl"}) {
      CommandResult refused = run_command({CHATCAP_BINARY, "show", id, flag, "--log-dir", dir.path()});
      CHECK(refused.exit_code == 1);
      CHECK(refused.out.empty());
      CHECK_THAT(refused.err, Catch::Contains(id) && Catch::Contains("not on disk"));
    }
  }
  CommandResult cut_message = run_command({CHATCAP_BINARY, "show", "cut3", "--curl", "--log-dir", dir.path()});
  CHECK_THAT(cut_message.err, Catch::Contains("--max-body") && Catch::Contains("9000000"));
  CommandResult unknown = run_command({CHATCAP_BINARY, "show", "zz", "--body", "--log-dir", dir.path()});
  CHECK(unknown.exit_code == 1);
  CHECK_THAT(unknown.err, Catch::Contains("no exchange with id zz"));
  CommandResult exclusive = run_command({CHATCAP_BINARY, "show", "text1", "--body", "--curl", "--log-dir", dir.path()});
  CHECK(exclusive.exit_code == 2);
}

TEST_CASE("show --help documents --curl and --body with examples", "[cli_forensics]") {
  CommandResult help = run_command({CHATCAP_BINARY, "show", "--help"});
  CHECK(help.exit_code == 0);
  CHECK_THAT(help.out, Catch::Contains("--curl") && Catch::Contains("--body") &&
                           Catch::Contains("chatcap show 3f2a9c --curl") && Catch::Contains("--body > body.json") &&
                           Catch::Contains("CHATCAP_AUTHORIZATION"));
  CommandResult suspects = run_command({CHATCAP_BINARY, "suspects", "--help"});
  CHECK(suspects.exit_code == 0);
  CHECK_THAT(suspects.out, Catch::Contains("--json") && Catch::Contains("--all") && Catch::Contains("chatcap suspects"));
}

TEST_CASE("shell_quote: bash reads back exactly the bytes, whatever they are", "[cli_forensics]") {
  std::vector<std::string> words = {"", "plain", "it's", "'", "''\\'", "$(touch x) `id` ${HOME} $HOME !! !$ \\ \" \\\"",
                                    "new\nline\r\nCR\rtab\t", "Ünïcödé 日本語 🚀", "\x1b[31mred\x1b[0m", "\xff\xfe\xc0\x80 $'x'",
                                    "\u202eevil", "CHATCAP_BODY_EOF\nEOF\n"};
  std::string all;
  for (int b = 1; b < 256; ++b) all += static_cast<char>(b);
  words.push_back(all);
  for (const std::string& word : words) {
    std::string quoted = shell_quote(word);
    // What a terminal shows of the command: no raw control characters.
    CHECK(std::none_of(quoted.begin(), quoted.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20; }));
    CommandResult r = run_command({"/bin/bash", "-c", "printf %s " + quoted});
    CHECK(r.exit_code == 0);
    CHECK(r.out == word);
  }
  CHECK(shell_quote("a'b") == "'a'\\''b'");
  CHECK_THROWS_AS(shell_quote(std::string("a\0b", 3)), std::invalid_argument);
}

TEST_CASE("decode_base64", "[cli_forensics]") {
  std::string out;
  CHECK(decode_base64("", out));
  CHECK(out.empty());
  CHECK(decode_base64("aGVsbG8=", out));
  CHECK(out == "hello");
  CHECK(decode_base64("aGVsbG8h", out));
  CHECK(out == "hello!");
  CHECK(decode_base64("aGVs\nbG8=\n", out));
  CHECK(out == "hello");
  CHECK(decode_base64("aGk", out));  // unpadded
  CHECK(out == "hi");
  CHECK_FALSE(decode_base64("aGVsbG8=x", out));
  CHECK_FALSE(decode_base64("a", out));
  CHECK_FALSE(decode_base64("a$==", out));
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  CHECK(decode_base64(base64(all), out));
  CHECK(out == all);
}

TEST_CASE("show --curl: bash runs the printed command, the server gets the exact request, nothing else runs",
          "[cli_forensics]") {
  TempDir dir;
  TempDir sandbox;  // where the payloads would create files
  Listener listener;
  const std::string pwn = sandbox.file("pwned");
  std::string nasty = "quotes \" ' '\\'' \\\" ; $(touch " + pwn + "-dollar) `touch " + pwn +
                      "-backtick` ${HOME} !! %s \\n\nline 2\r\nCHATCAP_BODY_EOF\nEOF\n'EOF'\n\tÜnïcödé 🚀 \u2028";
  std::string body = json{{"model", "m"}, {"messages", {{{"role", "user"}, {"content", nasty}}}}}.dump(2) + "\n\n";
  std::string binary = "{\"content\":\"";
  for (int b = 1; b < 256; ++b) binary += static_cast<char>(b);
  binary += " $(touch " + pwn + "-bin) \xff\xfe\"}";
  const std::string server = listener.authority();
  json headers = json::array({json::array({"Host", server}), json::array({"Content-Type", "application/json"}),
                              json::array({"Authorization", "<redacted sha256:1a2b3c4d>"}),
                              json::array({"X-Odd", "a'b\"c $(touch " + pwn + "-header) `touch " + pwn + "-bt` \\ !"}),
                              json::array({"X-Empty", ""}), json::array({"Connection", "keep-alive"}),
                              json::array({"Content-Length", "123"})});
  json odd_target = request_record("target3", "{}", server, headers, "/v1/chat/completions?q=$(touch " + pwn + "-target)`id`'");
  json fragment_target = request_record("frag4", "{}", server, json::array(), "/a b#c\x1b");
  write_lines(dir.file(kCurrentLogName), {request_record("nasty1", body, server, headers),
                                          request_record("bin2", binary, server, headers), odd_target, fragment_target});

  auto replay = [&](const std::string& id, const std::string& prefix = "") {
    CommandResult printed = run_command({CHATCAP_BINARY, "show", id, "--curl", "--log-dir", dir.path()});
    REQUIRE(printed.exit_code == 0);
    CHECK(printed.err.empty());
    // Shown on a terminal as is: no raw control characters in the command.
    CHECK(std::none_of(printed.out.begin(), printed.out.end(),
                       [](char c) { return static_cast<unsigned char>(c) < 0x20 && c != '\n'; }));
    std::future<Received> got = listener.receive_one();
    CommandResult ran = run_command({"/bin/bash", "-c", prefix + printed.out});
    Received received = got.get();
    INFO("command:\n" << printed.out << "\nbash stderr: " << ran.err);
    CHECK(ran.exit_code == 0);
    CHECK(ran.out == "{}");  // the listener's answer, nothing else
    return std::pair{received, ran};
  };

  SECTION("a nasty JSON body, the credential left out while unset") {
    auto [received, ran] = replay("nasty1");
    CHECK(sha256(received.body) == sha256(body));
    CHECK(received.body == body);
    CHECK_THAT(received.head, Catch::StartsWith("POST /v1/chat/completions HTTP/1.1\r\n"));
    CHECK_THAT(received.head, Catch::Contains("\r\nHost: " + server + "\r\n") &&
                                  Catch::Contains("\r\nContent-Type: application/json\r\n") &&
                                  Catch::Contains("\r\nX-Odd: a'b\"c $(touch " + pwn + "-header) `touch " + pwn +
                                                  "-bt` \\ !\r\n") &&
                                  Catch::Contains("\r\nX-Empty:\r\n") &&
                                  Catch::Contains("\r\nContent-Length: " + std::to_string(body.size())));
    CHECK_THAT(received.head, !Catch::Contains("Authorization") && !Catch::Contains("User-Agent") &&
                                  !Catch::Contains("Accept") && !Catch::Contains("Connection") &&
                                  !Catch::Contains("Expect"));
    CHECK_THAT(ran.err, Catch::Contains("CHATCAP_AUTHORIZATION is not set"));
  }
  SECTION("a body that is not UTF-8, the credential from the environment") {
    auto [received, ran] = replay("bin2", "export CHATCAP_AUTHORIZATION='Bearer s3cr3t $(x)'\n");
    CHECK(sha256(received.body) == sha256(binary));
    CHECK(received.body == binary);
    CHECK_THAT(received.head, Catch::Contains("\r\nAuthorization: Bearer s3cr3t $(x)\r\n"));
    CHECK(ran.err.empty());
  }
  SECTION("targets with shell syntax, spaces, fragments and control bytes are sent as recorded") {
    auto [received, ran] = replay("target3");
    CHECK_THAT(received.head,
               Catch::StartsWith("POST /v1/chat/completions?q=$(touch " + pwn + "-target)`id`' HTTP/1.1\r\n"));
    CHECK(received.body == "{}");
    auto [frag, ran2] = replay("frag4");
    CHECK_THAT(frag.head, Catch::StartsWith("POST /a b#c\x1b HTTP/1.1\r\n"));
    CHECK_THAT(frag.head, !Catch::Contains("Content-Type"));
  }
  CHECK(files_in(sandbox.path()).empty());
}

TEST_CASE("show --curl: the command's shape", "[cli_forensics]") {
  TempDir dir;
  json get = request_record("get1", "", "[::1]:8077",
                            json::array({json::array({"Host", "localhost:8077"}), json::array({"User-Agent", "x/1"}),
                                         json::array({"Accept-Encoding", "gzip"})}),
                            "/v1/models");
  get["method"] = "GET";
  get["version"] = "1.0";
  json bad_server = request_record("bad2", "{}", "127.0.0.1:8077/evil?");
  json nul_header = request_record("nul3", "{}", "127.0.0.1:8077",
                                   json::array({json::array({"X-Nul", std::string("a\0b", 3)})}));
  write_lines(dir.file(kCurrentLogName), {get, bad_server, nul_header});
  CommandResult r = run_command({CHATCAP_BINARY, "show", "get1", "--curl", "--log-dir", dir.path()});
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("-X 'GET' 'http://[::1]:8077/v1/models'") &&
                        Catch::Contains("--http1.0") && Catch::Contains("--compressed") &&
                        Catch::Contains("-H 'Host: localhost:8077'") && Catch::Contains("-H 'User-Agent: x/1'") &&
                        Catch::Contains("-H 'Accept:'") && !Catch::Contains("base64 -d") &&
                        !Catch::Contains("--data-binary") && Catch::StartsWith("# chatcap: replay of exchange get1"));
  for (const char* id : {"bad2", "nul3"}) {
    CommandResult refused = run_command({CHATCAP_BINARY, "show", id, "--curl", "--log-dir", dir.path()});
    CHECK(refused.exit_code == 1);
    CHECK(refused.out.empty());
    CHECK_THAT(refused.err, Catch::Contains("cannot be replayed with curl"));
  }
}

TEST_CASE("cli: a killer on another endpoint — suspects, show, --body and --curl from the watched log or its pinned copy",
          "[cli_forensics]") {
  TempDir dir;
  const std::string killer_body =
      R"({"model":"m","prompt":"Answer in JSON.","max_tokens":5,"structured_outputs":{"json_object":false}})";
  json killer = request_record("k1ller", killer_body, "127.0.0.1:8077",
                               json::array({json::array({"Host", "127.0.0.1:8077"}),
                                            json::array({"Content-Type", "application/json"})}),
                               "/v1/completions");
  killer["watched_only"] = true;
  killer["risks"] = json::array({{{"id", "structured_output_without_constraint"},
                                  {"why", "no usable constraint"},
                                  {"ref", "vllm-project/vllm#45346"}}});
  json pinned = killer;
  pinned["pinned"] = true;
  json killer_end = exchange_record("k1ller", "aborted", {"server_down"});
  killer_end["watched_only"] = true;
  json s = suspect("k1ller", "carries a known engine killer: structured_output_without_constraint", 0);
  s["watched_only"] = true;
  s["target"] = "/v1/completions";
  write_lines(dir.file(kCurrentLogName),
              {request_record("chat1", R"({"model":"m","messages":[]})"), pinned,
               server_down("2026-11-24T15:21:54.000000Z", "engine_dead",
                           {s, suspect("chat1", "no token received", 0)})});
  write_lines(dir.file(kWatchedLogName), {killer, killer_end});

  for (bool watched_log_gone : {false, true}) {
    INFO("watched log gone: " << watched_log_gone);
    if (watched_log_gone) std::filesystem::remove(dir.file(kWatchedLogName));
    CommandResult r = run_command({CHATCAP_BINARY, "suspects", "--json", "--log-dir", dir.path()});
    REQUIRE(r.exit_code == 0);
    json out = json::parse(r.out);
    REQUIRE(out["suspects"].size() == 2);
    CHECK(out["suspects"][0]["id"] == "k1ller");
    CHECK(out["suspects"][0]["request"]["target"] == "/v1/completions");
    CHECK(out["suspects"][0]["request"]["body"] == killer_body);
    CHECK(out["suspects"][0]["exchange"].is_null() == watched_log_gone);
    CHECK(out["suspects"][1]["request"]["id"] == "chat1");

    CommandResult body = run_command({CHATCAP_BINARY, "show", "k1ller", "--body", "--log-dir", dir.path()});
    CHECK(body.exit_code == 0);
    CHECK(body.out == killer_body);
    CommandResult curl = run_command({CHATCAP_BINARY, "show", "k1l", "--curl", "--log-dir", dir.path()});
    CHECK(curl.exit_code == 0);
    CHECK_THAT(curl.out, Catch::Contains("'http://127.0.0.1:8077/v1/completions'"));
    CommandResult text = run_command({CHATCAP_BINARY, "suspects", "--log-dir", dir.path()});
    CHECK_THAT(text.out, Catch::Contains("#1 of 2  id k1ller") &&
                             Catch::Contains("known engine killer structured_output_without_constraint"));
  }
  // `last` shows the ring (chat1), and the watched-only killer beside it, marked.
  write_lines(dir.file(kWatchedLogName), {killer, killer_end});
  CommandResult last = run_command({CHATCAP_BINARY, "last", "--full", "--log-dir", dir.path()});
  CHECK(last.exit_code == 0);
  CHECK_THAT(last.out, Catch::Contains("id chat1") && Catch::Contains("id k1ller") &&
                           Catch::Contains("(watched: a POST outside --endpoint)") &&
                           Catch::Contains("⚠ known engine killer structured_output_without_constraint"));
  setenv("COLUMNS", "200", 1);
  CommandResult lines = run_command({CHATCAP_BINARY, "last", "--log-dir", dir.path()});
  unsetenv("COLUMNS");
  CHECK_THAT(lines.out, Catch::Contains(" chat1 ") && Catch::Contains(" k1ller ") && Catch::Contains("(watched) ⚠ structured_output_without_constraint") &&
                            Catch::Contains("server 127.0.0.1:8077 down (engine_dead)  suspect #1 k1ller"));
  CommandResult last_json = run_command({CHATCAP_BINARY, "last", "--json", "--log-dir", dir.path()});
  CHECK(json_lines(last_json.out).size() == 1);  // --json: the ring only, as before
}

TEST_CASE("cli: risks lists the table, as text and as JSON Lines", "[cli_forensics]") {
  CommandResult text = run_command({CHATCAP_BINARY, "risks"});
  CHECK(text.exit_code == 0);
  CHECK_THAT(text.out, Catch::Contains("structured_output_without_constraint  (vllm-project/vllm#45346)"));
  CommandResult lines = run_command({CHATCAP_BINARY, "risks", "--json"});
  CHECK(lines.exit_code == 0);
  std::vector<json> entries = json_lines(lines.out);
  REQUIRE(entries.size() >= 8);
  for (const json& e : entries) {
    CHECK(e.contains("id"));
    CHECK(e.contains("ref"));
    CHECK(e.contains("versions"));
    CHECK(e.contains("shape"));
    CHECK(e.contains("why"));
  }
  CHECK_THAT(run_command({CHATCAP_BINARY, "risks", "--help"}).out, Catch::Contains("Example"));
}
