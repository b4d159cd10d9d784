#include "chatcap/capture.hpp"

#include <pcap/pcap.h>

#include <cerrno>
#include <cstring>
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
