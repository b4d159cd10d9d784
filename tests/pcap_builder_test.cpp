// Checks the test pcap builder against an independent decoder: every capture it writes is read
// back with tshark, which must reassemble the same bytes, agree on sequence numbers, lengths
// and checksums, and find nothing malformed. tshark runs through popen with fixed command
// lines built from a temp path of our own making, never from packet data.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "support/pcap_builder.hpp"

using namespace chatcap;
using namespace chatcap::testing;

namespace {

constexpr timestamp_us kStart = 1'700'000'000'000'000;  // 2023-11-14T22:13:20Z

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "chatcap-pcap-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const char* name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// Runs tshark on `file` with `args` (string literals from this file) and returns its stdout.
std::string tshark(const std::string& file, const std::string& args) {
  const std::string cmd = "tshark -n -r '" + file + "' " + args + " 2>/dev/null";
  FILE* pipe = popen(cmd.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string out;
  char buf[4096];
  for (std::size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  INFO(cmd);
  REQUIRE(pclose(pipe) == 0);
  return out;
}

// Turns checksum validation on (tshark's default is off) so bad checksums show up.
const std::string kValidate =
    "-o ip.check_checksum:TRUE -o tcp.check_checksum:TRUE -o udp.check_checksum:TRUE ";

// Frame numbers of malformed packets or expert errors (bad checksums included).
std::string bad_frames(const std::string& file) {
  return tshark(file, kValidate + "-Y '_ws.malformed || _ws.expert.severity >= error' -T fields -e frame.number");
}

// One row per packet, one column per `-e` field.
std::vector<std::vector<std::string>> rows(const std::string& file, const std::string& fields) {
  std::vector<std::vector<std::string>> out;
  std::istringstream in(tshark(file, kValidate + "-T fields " + fields));
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> cols;
    std::istringstream cs(line);
    for (std::string c; std::getline(cs, c, '\t');) cols.push_back(c);
    if (!line.empty() && line.back() == '\t') cols.emplace_back();
    out.push_back(cols);
  }
  return out;
}

std::vector<std::string> column(const std::string& file, const std::string& field) {
  std::vector<std::string> out;
  for (auto& r : rows(file, "-e " + field)) out.push_back(r.empty() ? "" : r[0]);
  return out;
}

struct Followed {
  std::string node0, node1, data0, data1;  // node 0 is the first packet's source
};

// tshark's own TCP reassembly of stream 0: hex lines, node 1's indented by a tab.
Followed follow(const std::string& file) {
  Followed f;
  std::istringstream in(tshark(file, "-q -z follow,tcp,raw,0"));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("Node 0: ", 0) == 0) { f.node0 = line.substr(8); continue; }
    if (line.rfind("Node 1: ", 0) == 0) { f.node1 = line.substr(8); continue; }
    if (f.node1.empty() || line.empty() || line[0] == '=') continue;
    const bool second = line[0] == '\t';
    std::string& data = second ? f.data1 : f.data0;
    for (std::size_t i = second ? 1 : 0; i + 1 < line.size(); i += 2)
      data.push_back(static_cast<char>(std::stoi(line.substr(i, 2), nullptr, 16)));
  }
  return f;
}

Endpoint client_of(int family) {
  return {family == 6 ? IpAddress::v6_loopback() : IpAddress::v4(127, 0, 0, 1), 39866};
}
Endpoint server_of(int family) {
  return {family == 6 ? IpAddress::v6_loopback() : IpAddress::v4(127, 0, 0, 1), 8077};
}

std::string pattern(std::size_t n, char seed) {
  std::string s;
  for (std::size_t i = 0; i < n; ++i) s.push_back(static_cast<char>('a' + (seed + i * 7) % 26));
  return s;
}

const std::string kRequest =
    "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8077\r\nContent-Type: application/json\r\n"
    "Content-Length: 240\r\n\r\n" + pattern(240, 1);
const std::string kResponse = "HTTP/1.1 200 OK\r\nContent-Length: 900\r\n\r\n" + pattern(900, 3);

// A complete exchange with small segments so every stage sees several of them.
TcpConversation exchange(int family, std::uint32_t client_isn = 1000, std::uint32_t server_isn = 5000) {
  TcpConversation c(client_of(family), server_of(family), client_isn, server_isn, kStart);
  c.handshake();
  c.client_send(kRequest, 100);
  c.advance(2000);
  c.server_send(kResponse, 256);
  c.client_fin();
  c.server_fin();
  return c;
}

}  // namespace

TEST_CASE("pcap_builder: every link type and IP version decodes cleanly", "[pcap_builder][tshark]") {
  const Link link = GENERATE(Link::ethernet, Link::ethernet_vlan, Link::linux_sll, Link::linux_sll2,
                             Link::null_loopback, Link::raw_ip);
  const int family = GENERATE(4, 6);
  CAPTURE(static_cast<int>(link), family);
  TempDir dir;
  const std::string path = dir.file("x.pcap");
  const TcpConversation c = exchange(family);
  const auto packets = render_all(c.segments(), link);
  write_pcap(path, link, packets);

  CHECK(bad_frames(path).empty());
  const Followed f = follow(path);
  CHECK(f.node0 == client_of(family).to_string());
  CHECK(f.data0 == kRequest);
  CHECK(f.data1 == kResponse);

  const auto r = rows(path, "-e frame.len -e frame.cap_len -e tcp.seq_raw -e tcp.ack_raw -e tcp.len "
                            "-e tcp.flags -e tcp.checksum.status -e ip.checksum.status -e frame.protocols");
  REQUIRE(r.size() == c.segments().size());
  for (std::size_t i = 0; i < r.size(); ++i) {
    const TcpSegmentSpec& s = c.segments()[i];
    CAPTURE(i);
    REQUIRE(r[i].size() == 9);
    CHECK(r[i][0] == std::to_string(packets[i].frame.size()));
    CHECK(r[i][1] == r[i][0]);
    CHECK(r[i][2] == std::to_string(s.seq));
    CHECK(r[i][3] == std::to_string(s.ack));
    CHECK(r[i][4] == std::to_string(s.payload.size()));
    CHECK(std::stoi(r[i][5], nullptr, 16) == s.flags);
    CHECK(r[i][6] == "1");                           // good
    CHECK(r[i][7] == (family == 4 ? "1" : ""));      // IPv6 has no header checksum
    const std::string ip = family == 4 ? "ip:tcp" : "ipv6:tcp";
    const char* prefix[] = {"eth:ethertype:", "eth:ethertype:vlan:ethertype:", "sll:ethertype:",
                            "sll:ethertype:", "null:", "raw:"};
    CHECK(r[i][8].rfind(prefix[static_cast<int>(link)] + ip, 0) == 0);  // then maybe http
  }
  CHECK(column(path, "frame.time_epoch").front() == "1700000000.000000000");
}

TEST_CASE("pcap_builder: link header fields", "[pcap_builder][tshark]") {
  TempDir dir;
  const std::string path = dir.file("x.pcap");
  const TcpConversation c = exchange(6);
  RenderOptions o;
  o.vlan_id = 42;
  write_pcap(path, Link::ethernet_vlan, render_all(c.segments(), Link::ethernet_vlan, o));
  CHECK(column(path, "vlan.id").front() == "42");

  write_pcap(path, Link::linux_sll2, render_all(c.segments(), Link::linux_sll2));
  auto r = rows(path, "-e sll.pkttype -e sll.hatype -e sll.ifindex -e sll.etype");
  CHECK(r.front() == std::vector<std::string>{"0", "772", "1", "0x86dd"});

  for (std::uint32_t af : {24u, 28u, 30u}) {
    o.null_af_inet6 = af;
    write_pcap(path, Link::null_loopback, render_all(c.segments(), Link::null_loopback, o));
    CHECK(column(path, "frame.protocols").front() == "null:ipv6:tcp");
    CHECK(follow(path).data1 == kResponse);
  }
}

TEST_CASE("pcap_builder: sequence numbers wrap at 2^32", "[pcap_builder][tshark]") {
  TempDir dir;
  const std::string path = dir.file("x.pcap");
  const TcpConversation c = exchange(4, 0xFFFFFF00, 0xFFFFFFF0);
  CHECK(c.next_seq(Direction::client_to_server) == static_cast<std::uint32_t>(0xFFFFFF01 + kRequest.size() + 1));
  CHECK(c.next_seq(Direction::client_to_server) < 0x1000);
  write_pcap(path, Link::ethernet, render_all(c.segments(), Link::ethernet));
  CHECK(bad_frames(path).empty());
  bool low = false, high = false;
  for (const auto& s : column(path, "tcp.seq_raw")) {
    const auto v = std::stoul(s);
    low |= v < 0x1000;
    high |= v >= 0xFFFFFF00;
  }
  CHECK((low && high));
  const Followed f = follow(path);
  CHECK(f.data0 == kRequest);
  CHECK(f.data1 == kResponse);
}

TEST_CASE("pcap_builder: reordering, retransmission, duplicates and splits", "[pcap_builder][tshark]") {
  TempDir dir;
  const std::string path = dir.file("x.pcap");
  const int family = GENERATE(4, 6);
  TcpConversation c(client_of(family), server_of(family), 7, 9, kStart);
  c.handshake();
  c.set_auto_ack(false);  // ACK after the burst, so reordering never ACKs unseen bytes
  const auto req = c.client_send(kRequest, 50);
  c.server_ack();
  const auto resp = c.server_send(kResponse, 128);
  c.client_ack();
  auto segs = c.segments();
  retransmit(segs, resp[2], segs.size());  // a late copy of a response segment
  split(segs, resp[1], 30);
  shuffle_segments(segs, req.front(), req.back() + 1, 1234);
  retransmit(segs, req[0], req[3]);
  duplicate_all(segs);
  for (std::size_t i = 1; i < segs.size(); ++i) REQUIRE(segs[i - 1].ts <= segs[i].ts);

  write_pcap(path, Link::ethernet, render_all(segs, Link::ethernet));
  CHECK(bad_frames(path).empty());
  const Followed f = follow(path);
  CHECK(f.data0 == kRequest);
  CHECK(f.data1 == kResponse);
  // The request's sequence numbers really are out of order in the file.
  std::vector<std::uint32_t> seqs;
  for (const auto& r : rows(path, "-e tcp.srcport -e tcp.seq_raw -e tcp.len"))
    if (r.at(0) == "39866" && r.at(2) != "0") seqs.push_back(static_cast<std::uint32_t>(std::stoul(r[1])));
  CHECK(seqs.size() == 2 * (req.size() + 1));
  CHECK(!std::is_sorted(seqs.begin(), seqs.end()));
}

TEST_CASE("pcap_builder: -i any shows every loopback packet twice", "[pcap_builder][tshark]") {
  const Link link = GENERATE(Link::linux_sll, Link::linux_sll2);
  TempDir dir;
  const std::string path = dir.file("x.pcap");
  const TcpConversation c = exchange(6);
  write_pcap(path, link, render_as_any(c.segments(), link));
  CHECK(bad_frames(path).empty());
  const auto types = column(path, "sll.pkttype");
  REQUIRE(types.size() == 2 * c.segments().size());
  for (std::size_t i = 0; i < types.size(); ++i) CHECK(types[i] == (i % 2 ? "0" : "4"));
  const Followed f = follow(path);
  CHECK(f.data0 == kRequest);
  CHECK(f.data1 == kResponse);
}

TEST_CASE("pcap_builder: SYN-less pickup, a lost segment, then a clean exchange", "[pcap_builder][tshark]") {
  TempDir dir;
  const std::string path = dir.file("x.pcap");
  TcpConversation c(client_of(4), server_of(4), 100, 200, kStart);  // no handshake()
  const auto first = c.client_send(kRequest, 100);
  c.server_send(kResponse);
  c.client_send("GET /health HTTP/1.1\r\n\r\n");
  c.server_send("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  auto segs = c.segments();
  drop(segs, first[1]);
  write_pcap(path, Link::ethernet, render_all(segs, Link::ethernet));

  CHECK(bad_frames(path).empty());
  CHECK(tshark(path, "-Y 'tcp.flags.syn == 1'").empty());
  CHECK(column(path, "tcp.seq_raw").front() == "101");
  CHECK(!tshark(path, "-Y tcp.analysis.lost_segment").empty());
  CHECK(column(path, "tcp.len").size() == segs.size());
}

TEST_CASE("pcap_builder: pipelining and 100-continue as tshark's HTTP dissector sees them",
          "[pcap_builder][tshark]") {
  TempDir dir;
  const std::string path = dir.file("x.pcap");
  TcpConversation c(client_of(4), server_of(4), 1, 2, kStart);
  c.handshake();
  c.client_send("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n");
  c.server_send("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA");
  c.server_send("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nB");
  c.client_send("POST /c HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
  c.server_send("HTTP/1.1 100 Continue\r\n\r\n");
  c.client_send("body");
  c.server_send("HTTP/1.1 204 No Content\r\n\r\n");
  write_pcap(path, Link::ethernet, render_all(c.segments(), Link::ethernet));
  CHECK(bad_frames(path).empty());
  const std::string http = "-d tcp.port==8077,http -T fields ";
  CHECK(tshark(path, http + "-e http.request.uri -Y http.request") == "/a,/b\n/c\n");
  CHECK(tshark(path, http + "-e http.response.code -Y http.response") == "200\n200\n100\n204\n");
}

TEST_CASE("pcap_builder: RST mid-stream", "[pcap_builder][tshark]") {
  TempDir dir;
  const std::string path = dir.file("x.pcap");
  TcpConversation c(client_of(6), server_of(6), 1, 2, kStart);
  c.handshake();
  c.client_send(kRequest);
  c.server_send(kResponse.substr(0, 300), 100);
  const std::uint32_t cut = c.next_seq(Direction::server_to_client);
  c.server_rst();
  write_pcap(path, Link::raw_ip, render_all(c.segments(), Link::raw_ip));
  CHECK(bad_frames(path).empty());
  CHECK(tshark(path, "-Y tcp.flags.reset==1 -T fields -e tcp.seq_raw") == std::to_string(cut) + "\n");
  CHECK(follow(path).data1 == kResponse.substr(0, 300));
}

TEST_CASE("pcap_builder: snaplen truncates caplen, not len", "[pcap_builder][tshark]") {
  TempDir dir;
  const std::string path = dir.file("x.pcap");
  const TcpConversation c = exchange(4);
  auto packets = render_all(c.segments(), Link::linux_sll);
  write_pcap(path, Link::linux_sll, packets, 96);
  CHECK(tshark(path, "-Y _ws.malformed").empty());
  const auto r = rows(path, "-e frame.len -e frame.cap_len");
  REQUIRE(r.size() == packets.size());
  for (std::size_t i = 0; i < r.size(); ++i) {
    CHECK(r[i][0] == std::to_string(packets[i].frame.size()));
    CHECK(r[i][1] == std::to_string(std::min<std::size_t>(96, packets[i].frame.size())));
  }
  // One packet cut by hand: shorter frame, same wire length.
  REQUIRE(!c.segments()[3].payload.empty());
  packets[3].frame.resize(70);
  write_pcap(path, Link::linux_sll, packets);
  CHECK(rows(path, "-e frame.len -e frame.cap_len")[3] ==
        std::vector<std::string>{std::to_string(packets[3].wire_len), "70"});
}

TEST_CASE("pcap_builder: IPv4 options and IPv6 extension headers", "[pcap_builder][tshark]") {
  TempDir dir;
  const std::string path = dir.file("x.pcap");
  RenderOptions o;
  o.ipv4_options = {0x94, 0x04, 0x00, 0x00, 0x01};  // router alert, NOP; EOL-padded to 8
  o.ipv6_ext_headers = {0, 60};                        // hop-by-hop, destination options
  const int family = GENERATE(4, 6);
  const TcpConversation c = exchange(family);
  write_pcap(path, Link::ethernet, render_all(c.segments(), Link::ethernet, o));
  CHECK(bad_frames(path).empty());
  if (family == 4) {
    CHECK(rows(path, "-e ip.hdr_len -e ip.opt.type").front() == std::vector<std::string>{"28", "148,1,0"});
  } else {
    CHECK(rows(path, "-e ipv6.hopopts.len_oct -e ipv6.dstopts.len_oct").front() ==
          std::vector<std::string>{"16", "16"});
  }
  CHECK(column(path, "tcp.checksum.status").back() == "1");
  const Followed f = follow(path);
  CHECK(f.data0 == kRequest);
  CHECK(f.data1 == kResponse);
}

TEST_CASE("pcap_builder: IP fragments reassemble to the original segment", "[pcap_builder][tshark]") {
  TempDir dir;
  const std::string path = dir.file("x.pcap");
  const int family = GENERATE(4, 6);
  RenderOptions o;
  o.ip_id = 77;
  TcpConversation c(client_of(family), server_of(family), 1, 2, kStart);
  const auto sent = c.client_send("GET /fragmented HTTP/1.1\r\nHost: x\r\n\r\n");
  const auto packets = render_fragments(c.segments()[sent[0]], Link::ethernet, 45, o);
  REQUIRE(packets.size() == 2);
  write_pcap(path, Link::ethernet, packets);
  CHECK(bad_frames(path).empty());
  if (family == 4) {
    CHECK(rows(path, "-e ip.flags.mf -e ip.frag_offset -e ip.id") ==
          std::vector<std::vector<std::string>>{{"1", "0", "0x004d"}, {"0", "5", "0x004d"}});
  } else {
    CHECK(rows(path, "-e ipv6.fraghdr.more -e ipv6.fraghdr.offset -e ipv6.fraghdr.ident") ==
          std::vector<std::vector<std::string>>{{"1", "0", "0x0000004d"}, {"0", "5", "0x0000004d"}});
  }
  CHECK(column(path, "tcp.checksum.status") == std::vector<std::string>{"", "1"});
  CHECK(follow(path).data0 == "GET /fragmented HTTP/1.1\r\nHost: x\r\n\r\n");
}

TEST_CASE("pcap_builder: UDP and ICMP noise", "[pcap_builder][tshark]") {
  TempDir dir;
  const std::string path = dir.file("x.pcap");
  const int family = GENERATE(4, 6);
  const Link link = GENERATE(Link::ethernet, Link::linux_sll2);
  const Endpoint peer{client_of(family).address, 40001};  // no dissector claims it
  write_pcap(path, link,
             {render_udp(client_of(family), peer, "noise", kStart, link),
              render_icmp_echo(client_of(family).address, server_of(family).address, kStart + 1, link)});
  CHECK(bad_frames(path).empty());
  const auto r = rows(path, "-e udp.length -e udp.checksum.status -e icmp.checksum.status "
                            "-e icmpv6.checksum.status");
  REQUIRE(r.size() == 2);
  CHECK(r[0][0] == "13");
  CHECK(r[0][1] == "1");
  CHECK(r[1][family == 4 ? 2 : 3] == "1");
}

TEST_CASE("pcap_builder: offloaded TCP checksums are visibly wrong", "[pcap_builder][tshark]") {
  TempDir dir;
  const std::string path = dir.file("x.pcap");
  RenderOptions o;
  o.offloaded_tcp_checksum = true;
  const TcpConversation c = exchange(4);
  write_pcap(path, Link::ethernet, render_all(c.segments(), Link::ethernet, o));
  for (const auto& s : column(path, "tcp.checksum.status")) CHECK(s == "0");  // bad
  CHECK(follow(path).data0 == kRequest);
}

TEST_CASE("pcap_builder: perturbations", "[pcap_builder]") {
  TcpConversation c(client_of(4), server_of(4), 0xFFFFFFFE, 0, kStart);
  c.set_auto_ack(false);
  const auto sent = c.client_send("abcdefghij", 3);  // abc def ghi j
  REQUIRE(sent == std::vector<std::size_t>{0, 1, 2, 3});
  auto segs = c.segments();
  CHECK(segs[1].seq == 0x00000002u);  // 0xFFFFFFFF + 3 wraps
  CHECK(segs[0].flags == tcp_flag::ack);
  CHECK(segs[3].flags == (tcp_flag::ack | tcp_flag::psh));
  CHECK(segs[1].ts == kStart + TcpConversation::kStep);

  SECTION("split") {
    split(segs, 2, 1);  // g | hi
    REQUIRE(segs.size() == 5);
    CHECK(segs[2].payload == "g");
    CHECK(segs[3].payload == "hi");
    CHECK(segs[3].seq == segs[2].seq + 1);
    CHECK(segs[2].ts == segs[3].ts);
    CHECK_THROWS(split(segs, 2, 1));  // a 1-byte payload has no split point
  }
  SECTION("drop and retransmit") {
    drop(segs, 1);
    REQUIRE(segs.size() == 3);
    CHECK(segs[1].payload == "ghi");
    retransmit(segs, 0, 3);
    CHECK(segs[3].payload == "abc");
    CHECK(segs[3].ts == segs[2].ts);
    CHECK_THROWS(drop(segs, 9));
  }
  SECTION("shuffle is a seeded permutation; times stay in place") {
    auto a = segs, b = segs;
    shuffle_segments(a, 0, 4, 42);
    shuffle_segments(b, 0, 4, 42);
    std::string order;
    for (std::size_t i = 0; i < a.size(); ++i) {
      CHECK(a[i].payload == b[i].payload);
      CHECK(a[i].ts == segs[i].ts);
      order += a[i].payload;
    }
    std::sort(order.begin(), order.end());
    CHECK(order == "abcdefghij");
  }
  SECTION("swap and duplicate") {
    swap_segments(segs, 0, 3);
    CHECK(segs[0].payload == "j");
    CHECK(segs[0].ts == kStart);
    duplicate_all(segs);
    REQUIRE(segs.size() == 8);
    CHECK(segs[6].payload == segs[7].payload);
  }
  SECTION("handshake only first; mixed families rejected") {
    CHECK_THROWS(c.handshake());
    CHECK_THROWS(TcpConversation(client_of(4), server_of(6), 1, 1, kStart));
  }
}
