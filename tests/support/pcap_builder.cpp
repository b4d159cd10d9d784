#include "support/pcap_builder.hpp"

#include <pcap/pcap.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <stdexcept>

namespace chatcap::testing {
namespace {

using Bytes = std::vector<std::uint8_t>;

constexpr std::uint8_t kProtoIcmp = 1, kProtoTcp = 6, kProtoUdp = 17, kProtoIcmp6 = 58;
constexpr std::uint8_t kIpv6HopByHop = 0, kIpv6Fragment = 44, kIpv6DestOpts = 60;
constexpr std::uint16_t kArphrdLoopback = 772;
constexpr std::uint16_t kLoopbackSynMss = 65495;  // what Linux advertises on lo

void put16(Bytes& b, std::uint32_t v) {
  b.push_back(static_cast<std::uint8_t>(v >> 8));
  b.push_back(static_cast<std::uint8_t>(v));
}
void put32(Bytes& b, std::uint32_t v) {
  put16(b, v >> 16);
  put16(b, v & 0xffff);
}
void set16(Bytes& b, std::size_t at, std::uint16_t v) {
  b[at] = static_cast<std::uint8_t>(v >> 8);
  b[at + 1] = static_cast<std::uint8_t>(v);
}

// RFC 1071: 16-bit one's complement sum; `sum` carries a pseudo-header's partial sum in.
std::uint32_t add_words(const std::uint8_t* p, std::size_t n, std::uint32_t sum = 0) {
  for (std::size_t i = 0; i + 1 < n; i += 2) sum += static_cast<std::uint32_t>(p[i] << 8 | p[i + 1]);
  if (n % 2) sum += static_cast<std::uint32_t>(p[n - 1] << 8);
  return sum;
}
std::uint16_t fold(std::uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(sum);
}

std::size_t addr_len(const IpAddress& a) { return a.family == 6 ? 16 : 4; }

// The pseudo-header TCP, UDP and ICMPv6 checksums cover (RFC 793, RFC 8200 §8.1). Same sum
// for both layouts: addresses, then protocol and upper-layer length as 16-bit words.
std::uint32_t pseudo_sum(const IpAddress& src, const IpAddress& dst, std::uint8_t proto,
                         std::size_t len) {
  std::uint32_t s = add_words(src.bytes.data(), addr_len(src));
  s = add_words(dst.bytes.data(), addr_len(dst), s);
  return s + proto + static_cast<std::uint32_t>(len >> 16) + static_cast<std::uint32_t>(len & 0xffff);
}

// Fills the checksum at `at` over the upper-layer bytes plus the pseudo-header (if any).
void fill_checksum(Bytes& upper, std::size_t at, std::uint32_t pseudo, bool zero_means_none) {
  set16(upper, at, 0);
  std::uint16_t c = static_cast<std::uint16_t>(~fold(add_words(upper.data(), upper.size(), pseudo)));
  if (zero_means_none && c == 0) c = 0xffff;  // UDP: 0 on the wire means "no checksum"
  set16(upper, at, c);
}

void require_same_family(const IpAddress& a, const IpAddress& b) {
  if (a.family != b.family) throw std::invalid_argument("pcap_builder: mixed IPv4/IPv6 endpoints");
}

Bytes tcp_bytes(const TcpSegmentSpec& s, bool offloaded) {
  require_same_family(s.src.address, s.dst.address);
  Bytes opts = s.options;
  while (opts.size() % 4) opts.push_back(0);  // EOL
  if (opts.size() > 40) throw std::invalid_argument("pcap_builder: TCP options exceed 40 bytes");
  Bytes t;
  put16(t, s.src.port);
  put16(t, s.dst.port);
  put32(t, s.seq);
  put32(t, s.ack);
  t.push_back(static_cast<std::uint8_t>((20 + opts.size()) / 4 << 4));
  t.push_back(s.flags);
  put16(t, s.window);
  put32(t, 0);  // checksum, urgent pointer
  t.insert(t.end(), opts.begin(), opts.end());
  t.insert(t.end(), s.payload.begin(), s.payload.end());
  const std::uint32_t pseudo = pseudo_sum(s.src.address, s.dst.address, kProtoTcp, t.size());
  if (offloaded)
    set16(t, 16, fold(pseudo));  // CHECKSUM_PARTIAL: the NIC (there is none on lo) would finish it
  else
    fill_checksum(t, 16, pseudo, false);
  return t;
}

struct Fragment {
  std::size_t offset;  // bytes into the upper layer, a multiple of 8
  bool more;
};

// An IP datagram (header, options or extension headers, then `n` upper-layer bytes).
Bytes ip_packet(const IpAddress& src, const IpAddress& dst, std::uint8_t proto,
                const std::uint8_t* data, std::size_t n, const RenderOptions& o,
                const Fragment* frag) {
  require_same_family(src, dst);
  Bytes h;
  if (src.family == 4) {
    Bytes opt = o.ipv4_options;
    while (opt.size() % 4) opt.push_back(0);  // EOL
    if (opt.size() > 40) throw std::invalid_argument("pcap_builder: IPv4 options exceed 40 bytes");
    const std::size_t hl = 20 + opt.size();
    if (hl + n > 65535) throw std::invalid_argument("pcap_builder: IPv4 datagram exceeds 65535 bytes");
    h.push_back(static_cast<std::uint8_t>(0x40 | hl / 4));
    h.push_back(0);  // DSCP/ECN
    put16(h, static_cast<std::uint32_t>(hl + n));
    put16(h, o.ip_id);
    // DF as Linux sets on TCP; a fragment has DF clear, MF on all but the last.
    put16(h, frag ? (frag->more ? 0x2000u : 0u) | static_cast<std::uint32_t>(frag->offset / 8) : 0x4000u);
    h.push_back(o.ttl);
    h.push_back(proto);
    put16(h, 0);
    h.insert(h.end(), src.bytes.begin(), src.bytes.begin() + 4);
    h.insert(h.end(), dst.bytes.begin(), dst.bytes.begin() + 4);
    h.insert(h.end(), opt.begin(), opt.end());
    set16(h, 10, static_cast<std::uint16_t>(~fold(add_words(h.data(), h.size()))));
  } else {
    std::vector<std::uint8_t> chain = o.ipv6_ext_headers;
    for (auto t : chain)
      if (t != kIpv6HopByHop && t != kIpv6DestOpts)
        throw std::invalid_argument("pcap_builder: only hop-by-hop (0) and destination options (60)");
    if (frag) chain.push_back(kIpv6Fragment);
    Bytes ext;
    for (std::size_t i = 0; i < chain.size(); ++i) {
      ext.push_back(i + 1 < chain.size() ? chain[i + 1] : proto);  // next header
      if (chain[i] == kIpv6Fragment) {
        ext.push_back(0);
        put16(ext, static_cast<std::uint32_t>(frag->offset) | (frag->more ? 1u : 0u));
        put32(ext, o.ip_id);
      } else {
        ext.insert(ext.end(), {1, 1, 12});  // hdr ext len 1 (16 bytes); PadN of 12 bytes
        ext.insert(ext.end(), 12, 0);
      }
    }
    if (ext.size() + n > 65535) throw std::invalid_argument("pcap_builder: IPv6 payload exceeds 65535 bytes");
    put32(h, 0x60000000);  // version, traffic class, flow label
    put16(h, static_cast<std::uint32_t>(ext.size() + n));
    h.push_back(chain.empty() ? proto : chain[0]);
    h.push_back(o.ttl);
    h.insert(h.end(), src.bytes.begin(), src.bytes.end());
    h.insert(h.end(), dst.bytes.begin(), dst.bytes.end());
    h.insert(h.end(), ext.begin(), ext.end());
  }
  h.insert(h.end(), data, data + n);
  return h;
}

Packet frame(Link link, std::uint8_t family, const Bytes& ip, timestamp_us ts, const RenderOptions& o) {
  const std::uint16_t ethertype = family == 6 ? 0x86DD : 0x0800;
  Bytes f;
  switch (link) {
    case Link::ethernet:
    case Link::ethernet_vlan:
      f.assign(12, 0);  // destination and source MAC: lo's are all zero
      if (link == Link::ethernet_vlan) {
        put16(f, 0x8100);
        put16(f, o.vlan_id & 0x0fff);  // PCP 0, DEI 0
      }
      put16(f, ethertype);
      break;
    case Link::linux_sll:  // packet type, ARPHRD, address length, 8-byte address, protocol
      put16(f, o.sll_packet_type);
      put16(f, kArphrdLoopback);
      put16(f, 6);
      f.insert(f.end(), 8, 0);
      put16(f, ethertype);
      break;
    case Link::linux_sll2:  // protocol, reserved, ifindex, ARPHRD, packet type, addr len, addr
      put16(f, ethertype);
      put16(f, 0);
      put32(f, 1);  // lo
      put16(f, kArphrdLoopback);
      f.push_back(o.sll_packet_type);
      f.push_back(6);
      f.insert(f.end(), 8, 0);
      break;
    case Link::null_loopback: {  // host byte order, as the capturing machine wrote it
      const std::uint32_t af = family == 6 ? o.null_af_inet6 : 2;
      f.resize(4);
      std::memcpy(f.data(), &af, 4);
      break;
    }
    case Link::raw_ip:
      break;
  }
  f.insert(f.end(), ip.begin(), ip.end());
  const auto len = static_cast<std::uint32_t>(f.size());
  return Packet{ts, std::move(f), len};
}

Bytes tcp_options(std::uint8_t flags, timestamp_us ts) {
  // Linux on lo: MSS on SYNs; NOP NOP timestamps everywhere (TSval in ms, echoed as TSecr).
  Bytes o;
  if (flags & tcp_flag::syn) o = {2, 4, kLoopbackSynMss >> 8, kLoopbackSynMss & 0xff};
  const auto tsval = static_cast<std::uint32_t>(ts / 1000);
  o.insert(o.end(), {1, 1, 8, 10});
  put32(o, tsval);
  put32(o, (flags & tcp_flag::ack) ? tsval : 0);
  return o;
}

}  // namespace

int dlt_of(Link link) {
  switch (link) {
    case Link::ethernet:
    case Link::ethernet_vlan: return DLT_EN10MB;
    case Link::linux_sll: return DLT_LINUX_SLL;
    case Link::linux_sll2: return DLT_LINUX_SLL2;
    case Link::null_loopback: return DLT_NULL;
    case Link::raw_ip: return DLT_RAW;
  }
  return DLT_RAW;
}

// --- TcpConversation -------------------------------------------------------------------

TcpConversation::TcpConversation(Endpoint client, Endpoint server, std::uint32_t client_isn,
                                 std::uint32_t server_isn, timestamp_us start)
    // The SYN consumes one sequence number: data starts at ISN + 1 (wrapping).
    : client_{client, client_isn + 1}, server_{server, server_isn + 1}, now_(start) {
  require_same_family(client.address, server.address);
}

std::uint32_t TcpConversation::next_seq(Direction d) const {
  return d == Direction::client_to_server ? client_.next : server_.next;
}

std::size_t TcpConversation::emit(Direction d, std::uint8_t flags, std::string_view payload) {
  Side& from = d == Direction::client_to_server ? client_ : server_;
  Side& to = d == Direction::client_to_server ? server_ : client_;
  TcpSegmentSpec s;
  s.direction = d;
  s.src = from.endpoint;
  s.dst = to.endpoint;
  s.seq = from.next;
  s.ack = (flags & tcp_flag::ack) ? to.next : 0;
  s.flags = flags;
  s.options = tcp_options(flags, now_);
  s.payload = payload;
  s.ts = now_;
  now_ += kStep;
  // uint32 arithmetic wraps exactly as TCP sequence numbers do.
  from.next += static_cast<std::uint32_t>(payload.size()) + ((flags & tcp_flag::syn) ? 1 : 0) +
               ((flags & tcp_flag::fin) ? 1 : 0);
  segs_.push_back(std::move(s));
  return segs_.size() - 1;
}

void TcpConversation::handshake() {
  if (!segs_.empty()) throw std::logic_error("pcap_builder: handshake() after other segments");
  client_.next -= 1;  // rewind to the ISN the constructor skipped past
  server_.next -= 1;
  emit(Direction::client_to_server, tcp_flag::syn, {});
  emit(Direction::server_to_client, tcp_flag::syn | tcp_flag::ack, {});
  emit(Direction::client_to_server, tcp_flag::ack, {});
}

static Direction peer(Direction d) {
  return d == Direction::client_to_server ? Direction::server_to_client : Direction::client_to_server;
}

std::vector<std::size_t> TcpConversation::send(Direction d, std::string_view bytes, std::size_t mss) {
  if (mss == 0) throw std::invalid_argument("pcap_builder: mss 0");
  std::vector<std::size_t> sent;
  for (std::size_t off = 0; off < bytes.size(); off += mss) {
    const bool last = off + mss >= bytes.size();
    sent.push_back(emit(d, tcp_flag::ack | (last ? tcp_flag::psh : 0), bytes.substr(off, mss)));
    if (auto_ack_) emit(peer(d), tcp_flag::ack, {});
  }
  return sent;
}

std::size_t TcpConversation::fin(Direction d) {
  const std::size_t i = emit(d, tcp_flag::fin | tcp_flag::ack, {});
  if (auto_ack_) emit(peer(d), tcp_flag::ack, {});
  return i;
}

// --- Perturbations ---------------------------------------------------------------------

void duplicate_all(std::vector<TcpSegmentSpec>& segs) {
  std::vector<TcpSegmentSpec> out;
  out.reserve(segs.size() * 2);
  for (const auto& s : segs) {
    out.push_back(s);
    out.push_back(s);
  }
  segs = std::move(out);
}

void swap_segments(std::vector<TcpSegmentSpec>& segs, std::size_t i, std::size_t j) {
  std::swap(segs.at(i), segs.at(j));
  std::swap(segs[i].ts, segs[j].ts);  // the times stay where they were
}

void shuffle_segments(std::vector<TcpSegmentSpec>& segs, std::size_t first, std::size_t last,
                      std::uint32_t seed) {
  if (first > last || last > segs.size()) throw std::out_of_range("pcap_builder: shuffle range");
  // Hand-rolled Fisher-Yates: std::shuffle's sequence differs between standard libraries.
  std::mt19937 rng(seed);
  for (std::size_t i = last - first; i > 1; --i) swap_segments(segs, first + i - 1, first + rng() % i);
}

void drop(std::vector<TcpSegmentSpec>& segs, std::size_t index) {
  if (index >= segs.size()) throw std::out_of_range("pcap_builder: drop index");
  segs.erase(segs.begin() + static_cast<std::ptrdiff_t>(index));
}

void retransmit(std::vector<TcpSegmentSpec>& segs, std::size_t index, std::size_t insert_at) {
  if (insert_at > segs.size()) throw std::out_of_range("pcap_builder: retransmit position");
  TcpSegmentSpec copy = segs.at(index);
  copy.ts = segs[insert_at > 0 ? insert_at - 1 : 0].ts;
  segs.insert(segs.begin() + static_cast<std::ptrdiff_t>(insert_at), std::move(copy));
}

void split(std::vector<TcpSegmentSpec>& segs, std::size_t index, std::size_t at) {
  TcpSegmentSpec& s = segs.at(index);
  if (at == 0 || at >= s.payload.size()) throw std::out_of_range("pcap_builder: split point");
  TcpSegmentSpec second = s;
  second.seq = s.seq + static_cast<std::uint32_t>(at);
  second.payload = s.payload.substr(at);
  s.payload.resize(at);
  s.flags &= static_cast<std::uint8_t>(~(tcp_flag::fin | tcp_flag::psh));
  segs.insert(segs.begin() + static_cast<std::ptrdiff_t>(index) + 1, std::move(second));
}

// --- Rendering -------------------------------------------------------------------------

Packet render(const TcpSegmentSpec& seg, Link link, const RenderOptions& opts) {
  const Bytes tcp = tcp_bytes(seg, opts.offloaded_tcp_checksum);
  return render_ip(seg.src.address, seg.dst.address, kProtoTcp, tcp, seg.ts, link, opts);
}

std::vector<Packet> render_all(const std::vector<TcpSegmentSpec>& segs, Link link,
                               const RenderOptions& opts) {
  std::vector<Packet> out;
  out.reserve(segs.size());
  for (const auto& s : segs) out.push_back(render(s, link, opts));
  return out;
}

std::vector<Packet> render_as_any(const std::vector<TcpSegmentSpec>& segs, Link link,
                                  const RenderOptions& opts) {
  if (link != Link::linux_sll && link != Link::linux_sll2)
    throw std::invalid_argument("pcap_builder: render_as_any needs linux_sll or linux_sll2");
  RenderOptions out_opts = opts, in_opts = opts;
  out_opts.sll_packet_type = kSllOutgoing;  // lo's transmit path, then its receive path
  in_opts.sll_packet_type = kSllHost;
  std::vector<Packet> out;
  out.reserve(segs.size() * 2);
  for (const auto& s : segs) {
    out.push_back(render(s, link, out_opts));
    out.push_back(render(s, link, in_opts));
  }
  return out;
}

std::vector<Packet> render_fragments(const TcpSegmentSpec& seg, Link link, std::size_t first_bytes,
                                     const RenderOptions& opts) {
  const Bytes tcp = tcp_bytes(seg, opts.offloaded_tcp_checksum);
  const std::size_t cut = first_bytes / 8 * 8;  // fragment offsets count 8-byte units
  if (cut == 0 || cut >= tcp.size()) throw std::out_of_range("pcap_builder: fragment size");
  const Fragment head{0, true}, tail{cut, false};
  const IpAddress &src = seg.src.address, &dst = seg.dst.address;
  return {frame(link, src.family, ip_packet(src, dst, kProtoTcp, &tcp[0], cut, opts, &head), seg.ts, opts),
          frame(link, src.family, ip_packet(src, dst, kProtoTcp, &tcp[cut], tcp.size() - cut, opts, &tail),
                seg.ts, opts)};
}

Packet render_udp(const Endpoint& src, const Endpoint& dst, std::string_view payload,
                  timestamp_us ts, Link link, const RenderOptions& opts) {
  require_same_family(src.address, dst.address);
  Bytes u;
  put16(u, src.port);
  put16(u, dst.port);
  put16(u, static_cast<std::uint32_t>(8 + payload.size()));
  put16(u, 0);
  u.insert(u.end(), payload.begin(), payload.end());
  fill_checksum(u, 6, pseudo_sum(src.address, dst.address, kProtoUdp, u.size()), true);
  return render_ip(src.address, dst.address, kProtoUdp, u, ts, link, opts);
}

Packet render_icmp_echo(const IpAddress& src, const IpAddress& dst, timestamp_us ts, Link link,
                        const RenderOptions& opts) {
  const bool v6 = src.family == 6;
  Bytes m = {static_cast<std::uint8_t>(v6 ? 128 : 8), 0, 0, 0};  // echo request, code 0
  put16(m, 0x4242);  // identifier
  put16(m, 1);       // sequence
  m.insert(m.end(), {'p', 'i', 'n', 'g', ' ', 'n', 'o', 'i', 's', 'e'});
  const std::uint8_t proto = v6 ? kProtoIcmp6 : kProtoIcmp;
  // ICMPv6 covers a pseudo-header, ICMPv4 does not.
  fill_checksum(m, 2, v6 ? pseudo_sum(src, dst, proto, m.size()) : 0, false);
  return render_ip(src, dst, proto, m, ts, link, opts);
}

Packet render_ip(const IpAddress& src, const IpAddress& dst, std::uint8_t protocol,
                 std::span<const std::uint8_t> upper, timestamp_us ts, Link link,
                 const RenderOptions& opts) {
  return frame(link, src.family, ip_packet(src, dst, protocol, upper.data(), upper.size(), opts, nullptr),
               ts, opts);
}

// --- Writing ---------------------------------------------------------------------------

void write_pcap(const std::string& path, Link link, const std::vector<Packet>& packets,
                std::uint32_t snaplen) {
  pcap_t* dead = pcap_open_dead(dlt_of(link), static_cast<int>(snaplen));
  if (!dead) throw std::runtime_error("pcap_open_dead failed");
  pcap_dumper_t* dumper = pcap_dump_open(dead, path.c_str());
  if (!dumper) {
    std::string err = pcap_geterr(dead);
    pcap_close(dead);
    throw std::runtime_error("cannot write " + path + ": " + err);
  }
  for (const Packet& p : packets) {
    pcap_pkthdr h{};
    h.ts.tv_sec = static_cast<time_t>(p.ts / kMicrosPerSecond);
    h.ts.tv_usec = static_cast<suseconds_t>(p.ts % kMicrosPerSecond);
    h.caplen = std::min<std::uint32_t>(static_cast<std::uint32_t>(p.frame.size()), snaplen);
    h.len = std::max<std::uint32_t>(p.wire_len, h.caplen);
    pcap_dump(reinterpret_cast<u_char*>(dumper), &h, p.frame.data());
  }
  const bool flushed = pcap_dump_flush(dumper) == 0;
  pcap_dump_close(dumper);
  pcap_close(dead);
  if (!flushed) throw std::runtime_error("cannot write " + path);
}

}  // namespace chatcap::testing
