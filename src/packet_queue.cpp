#include "chatcap/packet_queue.hpp"

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>
#include <stdexcept>
#include <system_error>

namespace chatcap {

namespace {

constexpr std::size_t kHugePage = 2 * 1024 * 1024;

std::size_t mapped_size(std::size_t capacity) { return (capacity + kHugePage - 1) & ~(kHugePage - 1); }

// The ring in its own mapping, asked for huge pages: both threads stream through all of it,
// and 2 MiB pages spare them a TLB miss every 4 KiB. Where the kernel has none to give, it
// is an ordinary mapping.
std::uint8_t* map_ring(std::size_t capacity) {
  void* p = ::mmap(nullptr, mapped_size(capacity), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  ::madvise(p, mapped_size(capacity), MADV_HUGEPAGE);
  return static_cast<std::uint8_t*>(p);
}

}  // namespace

void PacketQueue::Unmap::operator()(std::uint8_t* p) const {
  if (p != nullptr) ::munmap(p, mapped_size(bytes));
}

PacketQueue::PacketQueue(std::size_t capacity_bytes)
    : capacity_((capacity_bytes + kAlign - 1) & ~(kAlign - 1)), ring_(map_ring(capacity_), Unmap{capacity_}) {
  if (capacity_ < 4 * record_size(0)) throw std::invalid_argument("packet queue too small");
  // Touched once now, at start: else the capture thread takes a page fault for every page
  // of the first pass through the ring, in the middle of the first burst of traffic.
  std::memset(ring_.get(), 0, capacity_);
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
}

PacketQueue::~PacketQueue() {
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

bool PacketQueue::push(timestamp_us ts, std::uint32_t wire_length, std::span<const std::uint8_t> frame) {
  const std::size_t need = record_size(frame.size());
  std::uint64_t head = head_.load(std::memory_order_relaxed);
  std::size_t offset = static_cast<std::size_t>(head % capacity_);
  std::size_t to_end = capacity_ - offset;
  // A record never wraps: if it does not fit before the end, mark the rest unused.
  std::size_t waste = need > to_end ? to_end : 0;
  // The consumer's position is read again only when the last one read leaves no room: most
  // pushes touch no line the consumer writes.
  if (head + waste + need - tail_seen_ > capacity_) {
    tail_seen_ = tail_.load(std::memory_order_acquire);
    if (head + waste + need - tail_seen_ > capacity_) {
      drops_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
  }
  if (waste > 0) {
    Header marker{0, kWrapMarker, 0};
    std::memcpy(&ring_[offset], &marker, sizeof marker);
    head += waste;
    offset = 0;
  }
  Header header{ts, static_cast<std::uint32_t>(frame.size()), wire_length};
  std::memcpy(&ring_[offset], &header, sizeof header);
  if (!frame.empty()) std::memcpy(&ring_[offset + sizeof header], frame.data(), frame.size());
  head_.store(head + need, std::memory_order_release);
  pushed_.store(pushed_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);  // one writer
  // The producer wakes the consumer once per batch (notify()); only a queue filling up
  // wakes it in the middle of one, so a burst cannot overflow it while it sleeps.
  if (head + need - tail_seen_ > capacity_ / 2) {
    tail_seen_ = tail_.load(std::memory_order_acquire);  // half full by an old view: look again
    if (head + need - tail_seen_ > capacity_ / 2) notify();
  }
  return true;
}

void PacketQueue::notify() {
  // Only if the consumer announced it is going to sleep: a busy consumer costs no syscall.
  if (consumer_sleeping_.load(std::memory_order_seq_cst) && consumer_sleeping_.exchange(false)) {
    std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
  }
}

bool PacketQueue::prepare_to_sleep() {
  consumer_sleeping_.store(true, std::memory_order_seq_cst);
  // Re-check after announcing: a push that raced with the announcement is not missed.
  if (head_.load(std::memory_order_seq_cst) != tail_.load(std::memory_order_relaxed)) {
    consumer_sleeping_.store(false, std::memory_order_relaxed);
    return false;
  }
  return true;
}

void PacketQueue::woke() {
  consumer_sleeping_.store(false, std::memory_order_relaxed);
  std::uint64_t value = 0;
  [[maybe_unused]] ssize_t n = ::read(wake_fd_, &value, sizeof value);
}

}  // namespace chatcap
