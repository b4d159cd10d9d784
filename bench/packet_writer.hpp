// Packets for the load generator: TCP conversations as a Linux loopback stack sends them,
// written to a pcap file with libpcap's dump API.
//
//   PcapWriter out("load.pcap");
//   TcpConnection c({kLoopback, 40000}, {kLoopback, 8077}, isn_c, isn_s, /*ack_every=*/16);
//   micros t = c.handshake(start);
//   t = c.send(Side::client, t, request);   // ≤ MSS per segment; the peer ACKs as Linux does
//   ... out.write(c.pending().front()) for each queued segment, in time order ...
//
// A connection queues its segments (pending()) instead of writing them, so the generator
// can interleave hundreds of connections by timestamp. Sequence and acknowledgement
// numbers, IPv4 total length and TCP data offset are exact; IPv4 and TCP checksums are
// computed too (chatcap ignores them, but tshark and tcpreplay see well-formed packets).
// Frames are Ethernet with zero MACs, as `lo` reports them.
#pragma once

#include <pcap/pcap.h>

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

namespace bench {

using micros = std::int64_t;

constexpr std::uint32_t kLoopback = 0x7f000001;  // 127.0.0.1, host byte order
// lo's MTU 65536 minus the IPv4 header and a TCP header carrying timestamps: the largest
// payload one loopback segment carries.
constexpr std::size_t kLoopbackMss = 65483;

struct Endpoint {
  std::uint32_t ip = kLoopback;  // host byte order
  std::uint16_t port = 0;
};

namespace tcp_flag {
constexpr std::uint8_t fin = 0x01, syn = 0x02, rst = 0x04, psh = 0x08, ack = 0x10;
}

// One TCP segment, everything needed to render it.
struct Segment {
  micros ts = 0;
  Endpoint src, dst;
  std::uint32_t seq = 0, ack = 0;
  std::uint8_t flags = 0;
  std::uint16_t ip_id = 0;
  std::uint32_t tsval = 0, tsecr = 0;  // TCP timestamps option (Linux sends it on every segment)
  std::string payload;
};

class PcapWriter {
 public:
  explicit PcapWriter(const std::string& path);
  ~PcapWriter();
  PcapWriter(const PcapWriter&) = delete;
  PcapWriter& operator=(const PcapWriter&) = delete;

  void write(const Segment& segment);
  void close();  // flushes; throws when the file could not be written completely

  std::uint64_t packets() const { return packets_; }
  std::uint64_t bytes() const { return bytes_; }  // file bytes, pcap headers included

 private:
  pcap_t* pcap_ = nullptr;
  pcap_dumper_t* dumper_ = nullptr;
  std::string path_;
  std::vector<std::uint8_t> frame_;  // reused for every packet
  std::uint64_t packets_ = 0;
  std::uint64_t bytes_ = 24;  // the pcap file header
};

enum class Side { client, server };

// One TCP connection's segments, queued in time order. The receiving side acknowledges as a
// Linux stack does on loopback: every second full-sized segment, and every `ack_every`
// small segments (delayed ACKs coalesce a stream of small SSE segments).
class TcpConnection {
 public:
  TcpConnection(Endpoint client, Endpoint server, std::uint32_t client_isn, std::uint32_t server_isn,
                int ack_every);

  // SYN, SYN-ACK, ACK; returns the time of the last one.
  micros handshake(micros t);
  // `bytes` in segments of at most `mss` bytes (PSH on the last), `gap` apart; the peer's
  // ACKs follow the policy above. Returns the time of the last segment sent.
  micros send(Side from, micros t, std::string_view bytes, micros gap = 5, std::size_t mss = kLoopbackMss);
  // A pure ACK of everything the peer sent so far (a delayed ACK firing); nothing when all
  // of it is acknowledged already (a stack sends no duplicate ACKs on a healthy connection).
  void ack(Side from, micros t);
  // Client FIN, server FIN-ACK, client ACK (httpx closing an idle keep-alive connection).
  micros close(micros t);

  std::deque<Segment>& pending() { return pending_; }
  const Endpoint& client() const { return client_.endpoint; }

 private:
  struct Half {
    Endpoint endpoint;
    std::uint32_t next_seq = 0;
    std::uint16_t ip_id = 0;
    std::uint32_t ts_offset = 0;  // Linux randomises TSval per connection
    std::uint32_t last_tsval = 0;
    int unacked_small = 0;        // small segments received since this side last ACKed
    int unacked_full = 0;         // full-sized segments received since this side last ACKed
  };
  Half& half(Side s) { return s == Side::client ? client_ : server_; }
  void emit(Side from, micros t, std::uint8_t flags, std::string_view payload);

  Half client_, server_;
  int ack_every_;
  std::deque<Segment> pending_;
};

}  // namespace bench
