// The capture → processing hand-off: order, wraparound, drops when full, wake-ups, and a
// real producer thread against a real consumer.
#include <catch2/catch.hpp>

#include <poll.h>

#include <thread>
#include <vector>

#include "chatcap/packet_queue.hpp"

using namespace chatcap;

namespace {

std::vector<std::uint8_t> packet_of(std::uint32_t n, std::size_t size) {
  std::vector<std::uint8_t> p(size);
  for (std::size_t i = 0; i < size; ++i) p[i] = static_cast<std::uint8_t>(n + i);
  return p;
}

}  // namespace

TEST_CASE("packet queue: packets come out in order, byte-exact, across the ring's end", "[packet_queue]") {
  PacketQueue queue(4096);
  std::uint32_t next_in = 0, next_out = 0;
  for (int round = 0; round < 200; ++round) {
    for (int k = 0; k < 3; ++k, ++next_in) {
      auto p = packet_of(next_in, 100 + (next_in * 37) % 700);
      REQUIRE(queue.push(next_in, static_cast<std::uint32_t>(p.size() + 5), p));
    }
    queue.drain(
        [&](timestamp_us ts, std::span<const std::uint8_t> frame, std::uint32_t wire) {
          auto expected = packet_of(next_out, 100 + (next_out * 37) % 700);
          CHECK(ts == next_out);
          CHECK(wire == expected.size() + 5);
          CHECK(std::vector<std::uint8_t>(frame.begin(), frame.end()) == expected);
          ++next_out;
        },
        1000);
  }
  CHECK(next_out == next_in);
  CHECK(queue.drops() == 0);
}

TEST_CASE("packet queue: a full queue drops and counts, never blocks", "[packet_queue]") {
  PacketQueue queue(4096);
  auto p = packet_of(1, 1000);
  int accepted = 0;
  for (int i = 0; i < 10; ++i) accepted += queue.push(i, 1000, p) ? 1 : 0;
  CHECK(accepted == 4);  // 4 × (16 + 1000 → 1024) fill 4096
  CHECK(queue.drops() == 6);
  CHECK(queue.backlog_bytes() == 4096);  // what the capture thread weighs before a wake-up
  CHECK(queue.drain([](auto, auto, auto) {}, 100) == 4);
  CHECK(queue.backlog_bytes() == 0);
  CHECK(queue.push(99, 1000, p));  // room again
}

TEST_CASE("packet queue: the consumer sleeps only when empty and is woken by a push", "[packet_queue]") {
  PacketQueue queue(1 << 16);
  auto p = packet_of(0, 64);
  queue.push(1, 64, p);
  CHECK_FALSE(queue.prepare_to_sleep());  // not empty: keep working
  queue.drain([](auto, auto, auto) {}, 10);
  REQUIRE(queue.prepare_to_sleep());
  queue.push(2, 64, p);
  pollfd fd{queue.wake_fd(), POLLIN, 0};
  CHECK(::poll(&fd, 1, 0) == 0);  // a push alone does not wake: the batch's end does
  queue.notify();
  CHECK(::poll(&fd, 1, 1000) == 1);
  queue.woke();
  CHECK(::poll(&fd, 1, 0) == 0);
}

TEST_CASE("packet queue: a producer thread and a consumer thread lose nothing when there is room",
          "[packet_queue]") {
  PacketQueue queue(1 << 20);
  constexpr std::uint32_t kPackets = 200'000;
  std::thread producer([&] {
    for (std::uint32_t i = 0; i < kPackets; ++i) {
      auto p = packet_of(i, 40 + i % 200);
      while (!queue.push(i, static_cast<std::uint32_t>(p.size()), p)) std::this_thread::yield();
      if (i % 64 == 63) queue.notify();
    }
    queue.notify();
  });
  std::uint32_t expected = 0;
  bool in_order = true;
  while (expected < kPackets) {
    std::size_t n = queue.drain(
        [&](timestamp_us ts, std::span<const std::uint8_t> frame, std::uint32_t) {
          in_order = in_order && ts == expected && frame.size() == 40 + expected % 200 &&
                     frame[0] == static_cast<std::uint8_t>(expected);
          ++expected;
        },
        4096);
    if (n == 0 && queue.prepare_to_sleep()) {
      pollfd fd{queue.wake_fd(), POLLIN, 0};
      ::poll(&fd, 1, 10);
      queue.woke();
    }
  }
  producer.join();
  CHECK(in_order);
  CHECK(expected == kPackets);
}
