// The floor: libpcap's own read loop over a capture file with a callback that does nothing.
// No recorder can read a capture for less, so scripts/bench states chatcap's CPU time as a
// multiple of this program's, measured in the same run on the same file.
//
//   floor FILE.pcap
#include <pcap/pcap.h>

#include <cstdio>

namespace {

void ignore_packet(u_char*, const pcap_pkthdr*, const u_char*) {}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: floor FILE.pcap\n");
    return 2;
  }
  char error[PCAP_ERRBUF_SIZE] = {};
  pcap_t* pcap = pcap_open_offline(argv[1], error);
  if (pcap == nullptr) {
    std::fprintf(stderr, "floor: %s\n", error);
    return 1;
  }
  int rc = pcap_loop(pcap, -1, ignore_packet, nullptr);
  if (rc == PCAP_ERROR) std::fprintf(stderr, "floor: %s\n", pcap_geterr(pcap));
  pcap_close(pcap);
  return rc == PCAP_ERROR ? 1 : 0;
}
