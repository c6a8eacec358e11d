// codebook_params: the codebooks, bin thresholds and scales of quantile (non-linear) quantization.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "qlib/quant/granularity.hpp"
#include "qlib/quant/params.hpp"

namespace qlib {

// Codebook (look-up table) quantization. Each parameter group k of the granularity has a
// scale s[k] and a codebook: L = 2^bits ascending levels and L - 1 ascending bin
// thresholds (one codebook shared by every group, or one per group). Normatively:
//   index(x)  = the number of thresholds t with x * (1 / s[k]) > t   (NaN counts as 0)
//   value(i)  = levels[i] * s[k]
// (1 / s[k] is computed in float, as for affine quantization). With thresholds at the
// midpoints of the levels this is nearest-level quantization (ties go to the lower
// level); data-fitted codebooks put them at the equal-frequency cut points instead, so
// each value maps to the representative of its bin (quant/quantile_fit.hpp).
// Dequantization ignores index bits above `bits` (index & (L - 1)), so every stored byte
// has a defined value on every ISA.
struct codebook_params {
  granularity gran;
  int bits = 4;                    // 1..8
  bool shared = false;             // one codebook for every group (NF4), else one per group
  std::vector<float> levels;       // codebooks() * L
  std::vector<float> thresholds;   // codebooks() * (L - 1)
  std::vector<float> scale;        // one per parameter group

  index_t levels_per_codebook() const noexcept { return index_t{1} << bits; }
  index_t size() const noexcept { return static_cast<index_t>(scale.size()); }
  index_t codebooks() const noexcept { return shared ? 1 : size(); }
  const float* levels_of(index_t k) const noexcept {
    return levels.data() + (shared ? 0 : k * levels_per_codebook());
  }
  const float* thresholds_of(index_t k) const noexcept {
    return thresholds.data() + (shared ? 0 : k * (levels_per_codebook() - 1));
  }

  // Checks sizes, finiteness (thresholds may be +/-Inf, never NaN), order and scales.
  void validate() const {
    QLIB_CHECK(bits >= 1 && bits <= 8, errc::invalid_argument,
               "codebook bit width " + std::to_string(bits) + " outside [1, 8]");
    QLIB_CHECK(!scale.empty(), errc::empty_tensor, "codebook_params has no scales");
    const index_t L = levels_per_codebook();
    QLIB_CHECK(static_cast<index_t>(levels.size()) == codebooks() * L &&
                   static_cast<index_t>(thresholds.size()) == codebooks() * (L - 1),
               errc::shape_mismatch,
               std::to_string(levels.size()) + " levels and " + std::to_string(thresholds.size()) +
                   " thresholds do not make " + std::to_string(codebooks()) + " codebooks of " + std::to_string(L));
    for (std::size_t i = 0; i < scale.size(); ++i)
      QLIB_CHECK(std::isfinite(scale[i]) && scale[i] >= min_scale, errc::invalid_argument,
                 "scale[" + std::to_string(i) + "] = " + std::to_string(scale[i]) +
                     " is not a finite positive normal float");
    for (index_t c = 0; c < codebooks(); ++c) {
      const float* l = levels.data() + c * L;
      const float* t = thresholds.data() + c * (L - 1);
      for (index_t i = 0; i < L; ++i) {
        QLIB_CHECK(std::isfinite(l[i]), errc::non_finite,
                   "codebook " + std::to_string(c) + " level " + std::to_string(i) + " is not finite");
        QLIB_CHECK(i == 0 || l[i - 1] <= l[i], errc::invalid_argument,
                   "codebook " + std::to_string(c) + " levels are not ascending at " + std::to_string(i));
      }
      for (index_t i = 0; i + 1 < L; ++i) {
        QLIB_CHECK(!std::isnan(t[i]), errc::non_finite,
                   "codebook " + std::to_string(c) + " threshold " + std::to_string(i) + " is NaN");
        QLIB_CHECK(i == 0 || t[i - 1] <= t[i], errc::invalid_argument,
                   "codebook " + std::to_string(c) + " thresholds are not ascending at " + std::to_string(i));
      }
    }
  }
  template <std::size_t Rank>
  void validate_for(const extents<Rank>& shape) const {
    validate();
    const index_t want = gran.param_count(shape);
    QLIB_CHECK(want == size(), errc::shape_mismatch,
               gran.describe() + " of shape " + detail::extents_string(shape) + " needs " + std::to_string(want) +
                   " scales, got " + std::to_string(size()));
  }
};

// The normative scalar definition (every vectorized path matches it bit for bit).
// index: the count of thresholds t[0..L-2] below y = x * inv_scale (binary search).
inline std::uint8_t codebook_index(float x, float inv_scale, const float* t, int L) noexcept {
  float y = x * inv_scale;
  if (std::isnan(y)) y = 0.0f;
  int lo = 0, n = L - 1;  // count of t < y over the sorted t[0..n)
  while (n > 0) {
    const int half = n / 2;
    if (y > t[lo + half]) {
      lo += half + 1;
      n -= half + 1;
    } else {
      n = half;
    }
  }
  return static_cast<std::uint8_t>(lo);
}
inline float codebook_value(unsigned index, float scale, const float* levels, int L) noexcept {
  return levels[index & static_cast<unsigned>(L - 1)] * scale;
}

}  // namespace qlib
