// The hand-off between the capture thread and the processing thread.
//
// A single-producer single-consumer ring of bytes: each packet is copied once, by the
// capture thread, into the ring (a 16-byte header and the captured bytes, 16-byte aligned),
// and read in place by the processing thread — no allocation per packet, no lock. The
// producer never waits: when the ring is full the packet is dropped and counted (those
// drops are reported like kernel drops). The consumer sleeps on an eventfd the producer
// signals only when the consumer said it is about to sleep, so a busy pipeline costs no
// system call per packet, and the producer signals once per batch, not per packet.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>

#include "chatcap/types.hpp"

namespace chatcap {

class PacketQueue {
 public:
  static constexpr std::size_t kDefaultBytes = 16 * 1024 * 1024;

  explicit PacketQueue(std::size_t capacity_bytes = kDefaultBytes);
  ~PacketQueue();
  PacketQueue(const PacketQueue&) = delete;
  PacketQueue& operator=(const PacketQueue&) = delete;

  // Producer side. Returns false (and counts a drop) when the packet does not fit now.
  bool push(timestamp_us ts, std::uint32_t wire_length, std::span<const std::uint8_t> frame);
  // Producer side, after a batch of pushes: wakes the consumer if it sleeps.
  void notify();

  // Consumer side: calls fn(ts, frame, wire_length) for up to `max` queued packets, in order;
  // the frame is valid only during the call. Returns how many were handled.
  template <class Fn>
  std::size_t drain(Fn&& fn, std::size_t max);

  // Consumer side, before sleeping: true when it may sleep (the queue is empty and the
  // producer will signal wake_fd() on the next push).
  bool prepare_to_sleep();
  // Consumer side, after waking: clears the eventfd.
  void woke();
  int wake_fd() const { return wake_fd_; }

  std::uint64_t drops() const { return drops_.load(std::memory_order_relaxed); }
  std::uint64_t pushed() const { return pushed_.load(std::memory_order_relaxed); }
  std::size_t capacity() const { return capacity_; }
  // Bytes pushed and not yet drained (the producer's view).
  std::size_t backlog_bytes() const {
    return static_cast<std::size_t>(head_.load(std::memory_order_relaxed) - tail_.load(std::memory_order_acquire));
  }

 private:
  struct Header {
    timestamp_us ts;
    std::uint32_t caplen;  // kWrapMarker: the rest of the ring is unused, continue at 0
    std::uint32_t wire_length;
  };
  static_assert(sizeof(Header) == 16);
  static constexpr std::uint32_t kWrapMarker = 0xFFFFFFFFu;
  static constexpr std::size_t kAlign = 16;
  static std::size_t record_size(std::size_t caplen) { return (sizeof(Header) + caplen + kAlign - 1) & ~(kAlign - 1); }

  // The consumer publishes its progress every this many packets (and at the end of a
  // drain), not after each: the line holding tail_ then crosses between the two cores once
  // per group instead of twice per packet. The space withheld is a few hundred KiB at most.
  static constexpr std::size_t kPublishEvery = 64;

  std::size_t capacity_;
  struct Unmap {
    std::size_t bytes;
    void operator()(std::uint8_t* p) const;
  };
  std::unique_ptr<std::uint8_t[], Unmap> ring_;
  int wake_fd_ = -1;
  alignas(64) std::atomic<std::uint64_t> head_{0};  // written by the producer
  std::uint64_t tail_seen_ = 0;                     // the producer's last read of tail_
  std::atomic<std::uint64_t> pushed_{0};            // written by the producer only
  alignas(64) std::atomic<std::uint64_t> tail_{0};  // written by the consumer
  alignas(64) std::atomic<bool> consumer_sleeping_{false};
  std::atomic<std::uint64_t> drops_{0};
};

template <class Fn>
std::size_t PacketQueue::drain(Fn&& fn, std::size_t max) {
  std::uint64_t tail = tail_.load(std::memory_order_relaxed);
  const std::uint64_t head = head_.load(std::memory_order_acquire);
  std::size_t handled = 0;
  while (tail < head && handled < max) {
    std::size_t offset = static_cast<std::size_t>(tail % capacity_);
    Header header;
    std::memcpy(&header, &ring_[offset], sizeof header);
    if (header.caplen == kWrapMarker) {
      tail += capacity_ - offset;
      continue;
    }
    fn(header.ts, std::span<const std::uint8_t>(&ring_[offset + sizeof(Header)], header.caplen), header.wire_length);
    tail += record_size(header.caplen);
    if (++handled % kPublishEvery == 0) tail_.store(tail, std::memory_order_release);
  }
  tail_.store(tail, std::memory_order_release);
  return handled;
}

}  // namespace chatcap
