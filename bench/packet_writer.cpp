#include "packet_writer.hpp"

#include <algorithm>
#include <stdexcept>

namespace bench {
namespace {

constexpr std::size_t kEthernet = 14, kIpv4 = 20;
constexpr std::size_t kTcpBase = 20;
constexpr std::size_t kTcpOptionsData = 12;  // NOP NOP TS
constexpr std::size_t kTcpOptionsSyn = 20;   // MSS SACK_PERM TS NOP WS, Linux's order
constexpr std::uint16_t kWindow = 512;       // scaled by 2^7 (the SYNs' window scale)
constexpr std::uint32_t kSnaplen = 262144;

void put16(std::uint8_t* p, std::uint32_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}
void put32(std::uint8_t* p, std::uint32_t v) {
  put16(p, v >> 16);
  put16(p + 2, v & 0xffff);
}

// Ones' complement sum of 16-bit big-endian words (odd length padded with a zero byte).
std::uint64_t sum16(const std::uint8_t* p, std::size_t n, std::uint64_t sum = 0) {
  for (; n >= 2; p += 2, n -= 2) sum += static_cast<std::uint32_t>(p[0] << 8 | p[1]);
  if (n == 1) sum += static_cast<std::uint32_t>(p[0] << 8);
  return sum;
}
std::uint16_t fold(std::uint64_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum & 0xffff);
}

}  // namespace

PcapWriter::PcapWriter(const std::string& path) : path_(path) {
  pcap_ = pcap_open_dead(DLT_EN10MB, kSnaplen);
  if (pcap_ == nullptr) throw std::runtime_error("pcap_open_dead failed");
  dumper_ = pcap_dump_open(pcap_, path.c_str());
  if (dumper_ == nullptr) {
    std::string error = pcap_geterr(pcap_);
    pcap_close(pcap_);
    throw std::runtime_error("cannot write " + path + ": " + error);
  }
}

PcapWriter::~PcapWriter() {
  if (dumper_ != nullptr) pcap_dump_close(dumper_);
  if (pcap_ != nullptr) pcap_close(pcap_);
}

void PcapWriter::close() {
  bool failed = pcap_dump_flush(dumper_) != 0 || std::ferror(pcap_dump_file(dumper_)) != 0;
  pcap_dump_close(dumper_);
  dumper_ = nullptr;
  if (failed) throw std::runtime_error("cannot write " + path_ + " (disk full?)");
}

void PcapWriter::write(const Segment& s) {
  bool syn = (s.flags & tcp_flag::syn) != 0;
  std::size_t tcp_header = kTcpBase + (syn ? kTcpOptionsSyn : kTcpOptionsData);
  std::size_t ip_length = kIpv4 + tcp_header + s.payload.size();
  frame_.resize(kEthernet + ip_length);
  std::uint8_t* f = frame_.data();

  std::fill(f, f + 12, 0);  // both MACs zero, as on lo
  put16(f + 12, 0x0800);

  std::uint8_t* ip = f + kEthernet;
  ip[0] = 0x45;
  ip[1] = 0;
  put16(ip + 2, static_cast<std::uint32_t>(ip_length));
  put16(ip + 4, s.ip_id);
  put16(ip + 6, 0x4000);  // DF, as Linux sets on TCP
  ip[8] = 64;
  ip[9] = 6;
  put16(ip + 10, 0);
  put32(ip + 12, s.src.ip);
  put32(ip + 16, s.dst.ip);
  put16(ip + 10, fold(sum16(ip, kIpv4)));

  std::uint8_t* tcp = ip + kIpv4;
  put16(tcp, s.src.port);
  put16(tcp + 2, s.dst.port);
  put32(tcp + 4, s.seq);
  put32(tcp + 8, s.ack);
  tcp[12] = static_cast<std::uint8_t>((tcp_header / 4) << 4);
  tcp[13] = s.flags;
  put16(tcp + 14, syn ? 65495 : kWindow);
  put16(tcp + 16, 0);
  put16(tcp + 18, 0);
  std::uint8_t* o = tcp + kTcpBase;
  if (syn) {
    o[0] = 2, o[1] = 4, put16(o + 2, 65495);  // MSS
    o[4] = 4, o[5] = 2;                       // SACK permitted
    o[6] = 8, o[7] = 10, put32(o + 8, s.tsval), put32(o + 12, s.tsecr);
    o[16] = 1;                                // NOP
    o[17] = 3, o[18] = 3, o[19] = 7;          // window scale 7
  } else {
    o[0] = 1, o[1] = 1;
    o[2] = 8, o[3] = 10, put32(o + 4, s.tsval), put32(o + 8, s.tsecr);
  }
  std::copy(s.payload.begin(), s.payload.end(), tcp + tcp_header);

  std::uint8_t pseudo[12];
  put32(pseudo, s.src.ip);
  put32(pseudo + 4, s.dst.ip);
  pseudo[8] = 0;
  pseudo[9] = 6;
  put16(pseudo + 10, static_cast<std::uint32_t>(tcp_header + s.payload.size()));
  put16(tcp + 16, fold(sum16(tcp, tcp_header + s.payload.size(), sum16(pseudo, sizeof pseudo))));

  pcap_pkthdr header{};
  header.ts.tv_sec = static_cast<time_t>(s.ts / 1000000);
  header.ts.tv_usec = static_cast<suseconds_t>(s.ts % 1000000);
  header.caplen = static_cast<bpf_u_int32>(frame_.size());
  header.len = header.caplen;
  pcap_dump(reinterpret_cast<u_char*>(dumper_), &header, frame_.data());
  ++packets_;
  bytes_ += 16 + frame_.size();
}

TcpConnection::TcpConnection(Endpoint client, Endpoint server, std::uint32_t client_isn, std::uint32_t server_isn,
                             int ack_every)
    : ack_every_(std::max(1, ack_every)) {
  client_.endpoint = client;
  client_.next_seq = client_isn;
  client_.ip_id = static_cast<std::uint16_t>(client_isn >> 7);
  client_.ts_offset = client_isn * 2654435761u;
  server_.endpoint = server;
  server_.next_seq = server_isn;
  server_.ip_id = 0;
  server_.ts_offset = server_isn * 2654435761u;
}

void TcpConnection::emit(Side from, micros t, std::uint8_t flags, std::string_view payload) {
  Half& me = half(from);
  Half& peer = half(from == Side::client ? Side::server : Side::client);
  // A connection's packets go out in time order; callers may ask for a time slightly before
  // the last one (an ACK delay overlapping the next send), which the wire would serialise.
  if (!pending_.empty()) t = std::max(t, pending_.back().ts);
  Segment s;
  s.ts = t;
  s.src = me.endpoint;
  s.dst = peer.endpoint;
  s.seq = me.next_seq;
  s.ack = (flags & tcp_flag::ack) ? peer.next_seq : 0;
  s.flags = flags;
  s.ip_id = me.ip_id++;
  s.tsval = me.ts_offset + static_cast<std::uint32_t>(t / 1000);
  s.tsecr = peer.last_tsval;
  me.last_tsval = s.tsval;
  s.payload.assign(payload);
  me.next_seq += static_cast<std::uint32_t>(payload.size()) + ((flags & (tcp_flag::syn | tcp_flag::fin)) ? 1 : 0);
  if ((flags & tcp_flag::ack) != 0) me.unacked_small = me.unacked_full = 0;  // this segment ACKs the peer
  pending_.push_back(std::move(s));
}

micros TcpConnection::handshake(micros t) {
  emit(Side::client, t, tcp_flag::syn, {});
  emit(Side::server, t + 12, tcp_flag::syn | tcp_flag::ack, {});
  emit(Side::client, t + 24, tcp_flag::ack, {});
  return t + 24;
}

micros TcpConnection::send(Side from, micros t, std::string_view bytes, micros gap, std::size_t mss) {
  Side to = from == Side::client ? Side::server : Side::client;
  Half& receiver = half(to);
  while (!bytes.empty()) {
    std::size_t n = std::min(mss, bytes.size());
    bool last = n == bytes.size();
    emit(from, t, static_cast<std::uint8_t>(tcp_flag::ack | (last ? tcp_flag::psh : 0)), bytes.substr(0, n));
    bytes.remove_prefix(n);
    // Linux ACKs at once after two full-sized segments; small ones wait for the delayed-ACK
    // logic, which on a busy stream coalesces several.
    if (n >= kLoopbackMss) {
      if (++receiver.unacked_full >= 2) ack(to, t + 2);
    } else if (++receiver.unacked_small >= ack_every_) {
      ack(to, t + 30);
    }
    if (!bytes.empty()) t += gap;
  }
  return t;
}

void TcpConnection::ack(Side from, micros t) {
  const Half& me = half(from);
  if (me.unacked_small + me.unacked_full > 0) emit(from, t, tcp_flag::ack, {});
}

micros TcpConnection::close(micros t) {
  emit(Side::client, t, tcp_flag::fin | tcp_flag::ack, {});
  emit(Side::server, t + 40, tcp_flag::fin | tcp_flag::ack, {});
  emit(Side::client, t + 60, tcp_flag::ack, {});
  return t + 60;
}

}  // namespace bench
