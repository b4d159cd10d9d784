#include "chatcap/capture.hpp"

#include <linux/filter.h>
#include <pcap/pcap.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <chrono>
#include <optional>
#include <fstream>

#include <fmt/format.h>

namespace chatcap {
namespace {

timestamp_us to_micros(const timeval& tv) {
  return static_cast<timestamp_us>(tv.tv_sec) * kMicrosPerSecond + tv.tv_usec;
}

}  // namespace

OfflineCapture::OfflineCapture(const std::string& path) : path_(path) {
  std::ifstream probe(path, std::ios::binary);
  if (!probe) {
    throw CaptureError(fmt::format("cannot open {}: {} — check the path and that you may read it", path,
                                   std::strerror(errno)));
  }
  char errbuf[PCAP_ERRBUF_SIZE] = {};
  handle_ = pcap_open_offline_with_tstamp_precision(path.c_str(), PCAP_TSTAMP_PRECISION_MICRO, errbuf);
  if (handle_ == nullptr) {
    throw CaptureError(fmt::format("cannot read {} as a capture: {} — give a pcap or pcapng file (tcpdump -w writes one)",
                                   path, errbuf));
  }
  linktype_ = pcap_datalink(handle_);
  if (!is_supported_linktype(linktype_)) {
    const char* name = pcap_datalink_val_to_name(linktype_);
    std::string link = name ? name : std::to_string(linktype_);
    pcap_close(handle_);
    handle_ = nullptr;
    throw CaptureError(fmt::format("{} has link type {}, which chatcap cannot decode — capture on an Ethernet, "
                                   "loopback, raw-IP or Linux cooked (-i any) interface",
                                   path, link));
  }
}

OfflineCapture::~OfflineCapture() {
  if (handle_ != nullptr) pcap_close(handle_);
}

OfflineResult OfflineCapture::run(Pipeline& pipeline) {
  OfflineResult result;
  pcap_pkthdr* header = nullptr;
  const u_char* data = nullptr;
  for (;;) {
    int rc = pcap_next_ex(handle_, &header, &data);
    if (rc == 1) {
      ++result.packets;
      timestamp_us ts = to_micros(header->ts);
      result.last_ts = std::max(result.last_ts, ts);
      pipeline.on_packet(ts, std::span<const std::uint8_t>(data, header->caplen), header->len);
      continue;
    }
    if (rc == PCAP_ERROR) {
      // libpcap reports a file cut inside a packet as an error; everything before it is good.
      result.truncated = true;
      result.warning = pcap_geterr(handle_);
    }
    break;  // PCAP_ERROR_BREAK: end of file
  }
  return result;
}

}  // namespace chatcap

// ---- live capture ---------------------------------------------------------------------------

namespace chatcap {
namespace {

std::string activation_error(pcap* handle, int rc, const std::string& interface) {
  std::string detail = pcap_geterr(handle);
  switch (rc) {
    case PCAP_ERROR_NO_SUCH_DEVICE:
      return fmt::format("cannot capture on {}: no such interface — list interfaces with `ip link` and pass --interface",
                         interface);
    case PCAP_ERROR_PERM_DENIED:
      return fmt::format("cannot capture on {}: permission denied — run as root or grant CAP_NET_RAW "
                         "(e.g. setcap cap_net_raw,cap_net_admin+ep chatcap)",
                         interface);
    case PCAP_ERROR_IFACE_NOT_UP:
      return fmt::format("cannot capture on {}: the interface is down — bring it up (ip link set {} up)", interface,
                         interface);
    default:
      return fmt::format("cannot capture on {}: {} — check the interface and that chatcap runs as root", interface,
                         detail.empty() ? pcap_statustostr(rc) : detail);
  }
}

void on_packet(u_char* user, const pcap_pkthdr* header, const u_char* bytes) {
  auto* queue = reinterpret_cast<PacketQueue*>(user);
  queue->push(to_micros(header->ts), header->len, std::span<const std::uint8_t>(bytes, header->caplen));
}

}  // namespace

std::string build_capture_filter(const std::vector<std::uint16_t>& ports, const std::vector<std::string>& hosts) {
  std::string filter = "tcp";
  auto join = [](const auto& items, const char* word) {
    std::string out;
    for (const auto& item : items) out += fmt::format("{}{} {}", out.empty() ? "" : " or ", word, item);
    return out;
  };
  if (!ports.empty()) filter += fmt::format(" and ({})", join(ports, "port"));
  if (!hosts.empty()) filter += fmt::format(" and ({})", join(hosts, "host"));
  return filter;
}

LiveCapture::LiveCapture(LiveCaptureConfig config) : config_(std::move(config)) {
  char errbuf[PCAP_ERRBUF_SIZE] = {};
  handle_ = pcap_create(config_.interface.c_str(), errbuf);
  if (handle_ == nullptr) {
    throw CaptureError(fmt::format("cannot capture on {}: {} — check --interface", config_.interface, errbuf));
  }
  pcap_set_snaplen(handle_, config_.snaplen);
  pcap_set_promisc(handle_, 0);
  // Not immediate mode: the kernel hands packets over in blocks, at the latest after
  // delivery_timeout_ms. Per-packet wake-ups cost ~30 µs of system time each and made the
  // kernel drop packets at 160k packets/s; a block every few milliseconds still puts a
  // request on disk within that time of its last byte.
  pcap_set_immediate_mode(handle_, 0);
  pcap_set_buffer_size(handle_, config_.buffer_bytes);
  pcap_set_timeout(handle_, config_.delivery_timeout_ms);
  pcap_set_tstamp_precision(handle_, PCAP_TSTAMP_PRECISION_MICRO);
  int rc = pcap_activate(handle_);
  if (rc < 0) {
    std::string message = activation_error(handle_, rc, config_.interface);
    pcap_close(handle_);
    handle_ = nullptr;
    throw CaptureError(message);
  }
  linktype_ = pcap_datalink(handle_);
  if (!is_supported_linktype(linktype_)) {
    const char* name = pcap_datalink_val_to_name(linktype_);
    pcap_close(handle_);
    handle_ = nullptr;
    throw CaptureError(fmt::format("cannot decode {}'s link type {} — capture on lo, an Ethernet interface or `any`",
                                   config_.interface, name ? name : "unknown"));
  }
  if (!install_filter(config_.filter)) {
    std::string message = fmt::format("cannot use capture filter \"{}\": {} — check --port and --host", config_.filter,
                                      pcap_geterr(handle_));
    pcap_close(handle_);
    handle_ = nullptr;
    throw CaptureError(message);
  }
  if (is_loopback(config_.interface)) drop_outgoing_copies();
}

// On a loopback interface the kernel shows each packet twice, as it leaves and as it
// arrives; libpcap drops the first copy only once the kernel has copied it into the ring.
// With `inbound` in the kernel's filter it costs neither ring space nor wake-ups. That
// filter is attached to the socket directly: through pcap_setfilter, libpcap would also
// run it in user space over the block under way, where `inbound` (kernel metadata, not
// packet bytes) rejects every packet. Best effort: without it, libpcap still drops the copy.
// (Not on other interfaces, where outgoing packets are half the conversation.)
void LiveCapture::drop_outgoing_copies() {
  static_assert(sizeof(sock_filter) == sizeof(bpf_insn), "libpcap's BPF is the kernel's");
  bpf_program program{};
  const std::string expression = fmt::format("inbound and ({})", config_.filter);
  if (pcap_compile(handle_, &program, expression.c_str(), 1, PCAP_NETMASK_UNKNOWN) != 0) return;
  sock_fprog kernel_program{static_cast<unsigned short>(program.bf_len),
                            reinterpret_cast<sock_filter*>(program.bf_insns)};
  ::setsockopt(pcap_fileno(handle_), SOL_SOCKET, SO_ATTACH_FILTER, &kernel_program, sizeof kernel_program);
  pcap_freecode(&program);
}

bool LiveCapture::install_filter(const std::string& expression) {
  bpf_program program{};
  if (pcap_compile(handle_, &program, expression.c_str(), 1, PCAP_NETMASK_UNKNOWN) != 0) return false;
  const bool installed = pcap_setfilter(handle_, &program) == 0;
  pcap_freecode(&program);
  return installed;
}

bool LiveCapture::is_loopback(const std::string& interface) {
  char errbuf[PCAP_ERRBUF_SIZE] = {};
  pcap_if_t* devices = nullptr;
  if (pcap_findalldevs(&devices, errbuf) != 0) return false;
  bool loopback = false;
  for (pcap_if_t* d = devices; d != nullptr; d = d->next) {
    if (interface == d->name) loopback = (d->flags & PCAP_IF_LOOPBACK) != 0;
  }
  pcap_freealldevs(devices);
  return loopback;
}

LiveCapture::~LiveCapture() {
  stop();
  if (handle_ != nullptr) pcap_close(handle_);
}

void LiveCapture::start(PacketQueue& queue) {
  thread_ = std::thread([this, &queue] { loop(queue); });
}

void LiveCapture::stop() {
  if (!thread_.joinable()) return;
  stopping_.store(true);
  pcap_breakloop(handle_);
  thread_.join();
}

void LiveCapture::loop(PacketQueue& queue) {
  // The processing thread is woken per batch of kernel blocks, not per block. Each wake-up
  // costs far more than the context switch: the thread comes back to caches the capture
  // path and the sender have filled meanwhile and refetches its per-connection state. At
  // top speed, waking it every 1 MiB / 20 ms cost 0.2 ms of its CPU per wake-up (98 wakes,
  // 200 ms per replay; 40 wakes every 50 ms: 175 ms). So a batch is handed over once a
  // quarter of the queue waits or kWakeDelay has passed since its first block; if the wire
  // falls quiet first, the processing thread's own timer (250 ms) takes it. A queue half
  // full still wakes it at once (PacketQueue::push).
  const std::size_t wake_backlog = queue.capacity() / 4;
  constexpr auto kWakeDelay = std::chrono::milliseconds(50);
  auto* user = reinterpret_cast<u_char*>(&queue);
  auto last_stats = std::chrono::steady_clock::now();
  std::optional<std::chrono::steady_clock::time_point> batch_since;  // first block not handed over
  while (!stopping_.load(std::memory_order_relaxed)) {
    int rc = pcap_dispatch(handle_, -1, on_packet, user);
    if (rc == PCAP_ERROR) {
      failure_ = fmt::format("capture on {} failed: {}", config_.interface, pcap_geterr(handle_));
      failed_.store(true);
      break;
    }
    auto now = std::chrono::steady_clock::now();
    if (rc > 0 && !batch_since) batch_since = now;
    if (batch_since && (queue.backlog_bytes() >= wake_backlog || now - *batch_since >= kWakeDelay)) {
      queue.notify();
      batch_since.reset();
    }
    if (now - last_stats >= std::chrono::milliseconds(250)) {
      publish_stats();
      last_stats = now;
    }
  }
  publish_stats();
}

void LiveCapture::publish_stats() {
  pcap_stat stats{};
  if (pcap_stats(handle_, &stats) != 0) return;
  received_.store(stats.ps_recv, std::memory_order_relaxed);
  kernel_dropped_.store(stats.ps_drop, std::memory_order_relaxed);
  interface_dropped_.store(stats.ps_ifdrop, std::memory_order_relaxed);
}

CaptureCounters LiveCapture::counters() const {
  return CaptureCounters{received_.load(), kernel_dropped_.load(), interface_dropped_.load()};
}

std::string LiveCapture::failure() const { return failed_.load() ? failure_ : std::string(); }

}  // namespace chatcap
