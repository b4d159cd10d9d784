// The dialect-neutral answer: token-gap percentiles.
#include "chatcap/answer.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

namespace chatcap {

TEST_CASE("answer: percentiles over known gaps", "[answer]") {
  Answer answer;
  CHECK_FALSE(answer.gap_percentile_ms(50).has_value());
  for (std::uint32_t gap_ms = 100; gap_ms >= 1; --gap_ms) answer.token_gaps_us.push_back(gap_ms * 1000);
  CHECK(answer.gap_percentile_ms(50) == Approx(50.0));
  CHECK(answer.gap_percentile_ms(90) == Approx(90.0));
  CHECK(answer.gap_percentile_ms(99) == Approx(99.0));
  CHECK(answer.gap_percentile_ms(99.5) == Approx(100.0));
  CHECK(answer.gap_percentile_ms(-5) == Approx(1.0));
  CHECK(answer.gap_percentile_ms(500) == Approx(100.0));
  // Called on a const answer: the samples keep their order.
  CHECK(answer.token_gaps_us.front() == 100000);
}

// The record's pair (one copy, the p99 selected among the samples above the median) agrees
// with a full sort, whatever the count and however many samples are equal.
TEST_CASE("answer: median and p99 together agree with a sorted copy", "[answer]") {
  CHECK_FALSE(Answer{}.gap_p50_p99_us().p50_us.has_value());
  CHECK_FALSE(Answer{}.gap_p50_p99_us().p99_us.has_value());
  std::mt19937 random(7);
  for (std::size_t samples = 1; samples <= 400; ++samples) {
    for (std::uint32_t spread : {3u, 1000u}) {  // many equal samples, then few
      Answer answer;
      std::uniform_int_distribution<std::uint32_t> gap(0, spread);
      for (std::size_t i = 0; i < samples; ++i) answer.token_gaps_us.push_back(gap(random) * 1000);
      std::vector<std::uint32_t> sorted = answer.token_gaps_us;
      std::sort(sorted.begin(), sorted.end());
      auto nearest_rank_us = [&](double percentile) {
        auto rank = static_cast<std::size_t>(std::ceil(percentile / 100.0 * static_cast<double>(samples)));
        return sorted[std::max<std::size_t>(rank, 1) - 1];
      };
      const std::vector<std::uint32_t> before = answer.token_gaps_us;
      const Answer::GapMedianP99 both = answer.gap_p50_p99_us();
      INFO(samples << " samples up to " << spread << " ms");
      REQUIRE(both.p50_us.has_value());
      REQUIRE(both.p99_us.has_value());
      CHECK(*both.p50_us == nearest_rank_us(50));
      CHECK(*both.p99_us == nearest_rank_us(99));
      CHECK(*both.p50_us / 1000.0 == answer.gap_percentile_ms(50));
      CHECK(*both.p99_us / 1000.0 == answer.gap_percentile_ms(99));
      CHECK(answer.token_gaps_us == before);
    }
  }
}


}  // namespace chatcap
