// train::rng: a small seeded generator (xoshiro256**) with qlib's own uniform, normal and shuffle, identical on every standard library.
#pragma once

#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "qlib/core/tensor_view.hpp"

namespace qlib {
namespace train {

// splitmix64: expands one 64-bit seed into well-mixed words (seeding xoshiro, deriving streams).
inline std::uint64_t splitmix64(std::uint64_t& state) noexcept {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// xoshiro256** (Blackman and Vigna). std::uniform_real_distribution and friends are not
// used: their output differs between libstdc++, libc++ and MSVC, and the trainer
// promises the same weights from the same seed everywhere.
class rng {
 public:
  // `stream` selects an independent sequence for the same seed (one per layer, per epoch).
  explicit rng(std::uint64_t seed, std::uint64_t stream = 0) noexcept {
    std::uint64_t s = seed ^ (stream * 0xd1b54a32d192ed03ull);
    for (auto& w : s_) w = splitmix64(s);
  }

  std::uint64_t next_u64() noexcept {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, 1) on a grid of 2^-24: every value is exact in float.
  float uniform() noexcept { return static_cast<float>(next_u64() >> 40) * 0x1.0p-24f; }
  // Uniform in [lo, hi).
  float uniform(float lo, float hi) noexcept { return lo + (hi - lo) * uniform(); }

  // Uniform integer in [0, n), n > 0, without modulo bias (rejection on the top bits).
  std::uint64_t below(std::uint64_t n) noexcept {
    if (n <= 1) return 0;
    const std::uint64_t limit = ~std::uint64_t(0) - (~std::uint64_t(0) % n);  // a multiple of n
    std::uint64_t v;
    do v = next_u64();
    while (v >= limit);
    return v % n;
  }

  // Standard normal by Box-Muller in double (std::log/cos/sqrt of glibc and other
  // correctly-rounded-in-practice libms agree on these inputs far below float precision).
  float normal() noexcept {
    // u1 in (0, 1]: log(0) never happens.
    const double u1 = (static_cast<double>(next_u64() >> 11) + 1.0) * 0x1.0p-53;
    const double u2 = static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }
  float normal(float mean, float stddev) noexcept { return mean + stddev * normal(); }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }
  std::uint64_t s_[4];
};

// A permutation of 0..n-1 (Fisher-Yates with rng::below): the epoch's sample order.
inline std::vector<index_t> shuffled_indices(index_t n, rng& g) {
  std::vector<index_t> idx(static_cast<std::size_t>(n > 0 ? n : 0));
  for (index_t i = 0; i < n; ++i) idx[static_cast<std::size_t>(i)] = i;
  for (index_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<std::size_t>(g.below(static_cast<std::uint64_t>(i) + 1));
    std::swap(idx[static_cast<std::size_t>(i)], idx[j]);
  }
  return idx;
}

}  // namespace train
}  // namespace qlib
