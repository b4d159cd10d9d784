// `chatcap read` as a user runs it: the binary, its exit codes, its messages, on good and
// bad input (garbage on the port, a truncated file, a file that is not a capture).
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "support/pcap_builder.hpp"
#include "support/records.hpp"

using namespace chatcap;
using namespace chatcap::testing;

namespace {

const Endpoint kClient{IpAddress::v4(127, 0, 0, 1), 40000};
const Endpoint kServer{IpAddress::v4(127, 0, 0, 1), 8077};

Records parse_lines(const std::string& out) {
  Records records;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) records.push_back(nlohmann::json::parse(line));
  return records;
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string request(const std::string& body) {
  return "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

}  // namespace

TEST_CASE("cli: read prints JSON Lines and a summary, exit 0", "[cli]") {
  TempDir dir;
  TcpConversation c(kClient, kServer, 1, 2, 1'700'000'000'000'000);
  c.handshake();
  c.client_send(request("{\"model\":\"m\"}"));
  c.server_send("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}");
  write_pcap(dir.file("ok.pcap"), Link::ethernet, render_all(c.segments(), Link::ethernet));
  CommandResult r = run_command({CHATCAP_BINARY, "read", dir.file("ok.pcap")});
  CHECK(r.exit_code == 0);
  Records records = parse_lines(r.out);
  REQUIRE(records.size() == 2);
  CHECK(records[0]["type"] == "request");
  CHECK(records[1]["type"] == "exchange");
  CHECK_THAT(r.err, Catch::Contains("1 requests and 1 exchanges recorded"));
  CommandResult quiet = run_command({CHATCAP_BINARY, "read", "-q", dir.file("ok.pcap")});
  CHECK(quiet.err.empty());
}

TEST_CASE("cli: garbage bytes on the port give honest records, not a crash", "[cli]") {
  TempDir dir;
  std::mt19937 rng(42);
  std::vector<TcpSegmentSpec> all;
  for (int conn = 0; conn < 20; ++conn) {
    TcpConversation c(Endpoint{kClient.address, static_cast<std::uint16_t>(41000 + conn)}, kServer,
                      rng(), rng(), 1'700'000'000'000'000 + conn * 1000);
    if (conn % 2 == 0) c.handshake();
    for (int i = 0; i < 8; ++i) {
      std::string noise(1 + rng() % 3000, '\0');
      for (char& ch : noise) ch = static_cast<char>(rng());
      if (i == 3) noise = "GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n" + noise;  // half-plausible
      if (i % 2 == 0) {
        c.client_send(noise, 700);
      } else {
        c.server_send(noise, 900);
      }
    }
    if (conn % 3 == 0) c.server_rst();
    all.insert(all.end(), c.segments().begin(), c.segments().end());
  }
  write_pcap(dir.file("garbage.pcap"), Link::ethernet, render_all(all, Link::ethernet));
  CommandResult r = run_command({CHATCAP_BINARY, "read", dir.file("garbage.pcap"), "--port", "any", "--endpoint", "/"});
  CHECK(r.exit_code == 0);
  Records records = parse_lines(r.out);  // every line must be valid JSON
  for (const auto& rec : of_type(records, "exchange")) {
    CHECK((rec["state"] == "parse_error" || rec["state"] == "aborted" || rec["state"] == "capture_stopped" ||
           rec["state"] == "complete"));
  }
}

TEST_CASE("cli: a truncated capture file is read up to the cut, with a warning", "[cli]") {
  TempDir dir;
  TcpConversation c(kClient, kServer, 1, 2, 1'700'000'000'000'000);
  c.handshake();
  c.client_send(request("{\"first\":1}"));
  c.server_send("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}");
  c.client_send(request(std::string(5000, 'x')));  // this one will be cut
  write_pcap(dir.file("whole.pcap"), Link::ethernet, render_all(c.segments(), Link::ethernet));
  std::string bytes;
  {
    std::ifstream in(dir.file("whole.pcap"), std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  write_file(dir.file("cut.pcap"), bytes.substr(0, bytes.size() - 3000));
  CommandResult r = run_command({CHATCAP_BINARY, "read", dir.file("cut.pcap")});
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.err, Catch::Contains("ends inside a packet"));
  Records exchanges = of_type(parse_lines(r.out), "exchange");
  REQUIRE(exchanges.size() == 1);
  CHECK(exchanges[0]["state"] == "complete");
}

TEST_CASE("cli: files that are not captures, and missing files, fail with one clear sentence", "[cli]") {
  TempDir dir;
  write_file(dir.file("notes.txt"), "this is not a capture\n");
  CommandResult text = run_command({CHATCAP_BINARY, "read", dir.file("notes.txt")});
  CHECK(text.exit_code == 1);
  CHECK_THAT(text.err, Catch::Contains("cannot read") && Catch::Contains("as a capture") && Catch::Contains("pcap"));
  CHECK(text.out.empty());

  write_file(dir.file("empty.pcap"), "");
  CHECK(run_command({CHATCAP_BINARY, "read", dir.file("empty.pcap")}).exit_code == 1);

  CommandResult missing = run_command({CHATCAP_BINARY, "read", dir.file("nope.pcap")});
  CHECK(missing.exit_code == 1);
  CHECK_THAT(missing.err, Catch::Contains("cannot open") && Catch::Contains("No such file"));
}

TEST_CASE("cli: bad flag values are refused with the fix", "[cli]") {
  TempDir dir;
  write_pcap(dir.file("empty-but-valid.pcap"), Link::ethernet, {});
  CommandResult port = run_command({CHATCAP_BINARY, "read", dir.file("empty-but-valid.pcap"), "--port", "http"});
  CHECK(port.exit_code == 2);
  CHECK_THAT(port.err, Catch::Contains("--port http") && Catch::Contains("any"));
  CommandResult host = run_command({CHATCAP_BINARY, "read", dir.file("empty-but-valid.pcap"), "--host", "localhost"});
  CHECK(host.exit_code == 2);
  CHECK_THAT(host.err, Catch::Contains("--host localhost"));
  CommandResult endpoint = run_command({CHATCAP_BINARY, "read", dir.file("empty-but-valid.pcap"), "-e", "v1/chat"});
  CHECK(endpoint.exit_code == 2);
  CommandResult ok = run_command({CHATCAP_BINARY, "read", dir.file("empty-but-valid.pcap")});
  CHECK(ok.exit_code == 0);
  CHECK(ok.out.empty());
}
