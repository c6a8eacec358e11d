// NF4 (4-bit NormalFloat, QLoRA): the fixed 16-level codebook preset with per-group absmax scales.
#pragma once

#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "qlib/arch/isa.hpp"
#include "qlib/quant/observers/group_minmax.hpp"
#include "qlib/quant/quantile_params.hpp"

namespace qlib {

// The 16 NF4 levels as published (Dettmers et al., "QLoRA", 2023; bitsandbytes'
// NF4 table): quantiles of N(0, 1) normalized to [-1, 1], with an exact 0.
inline constexpr double nf4_published_levels[16] = {
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0};

// NF4 parameters with the given per-group scales: one shared codebook (the levels above
// as float), thresholds at the midpoints of neighbouring levels (computed in double from
// the published values, so ties go to the lower level like bitsandbytes' comparisons).
inline codebook_params nf4_codebook_params(const granularity& g, std::vector<float> scales) {
  codebook_params p;
  p.gran = g;
  p.bits = 4;
  p.shared = true;
  for (int i = 0; i < 16; ++i) p.levels.push_back(static_cast<float>(nf4_published_levels[i]));
  for (int i = 0; i < 15; ++i)
    p.thresholds.push_back(static_cast<float>((nf4_published_levels[i] + nf4_published_levels[i + 1]) / 2.0));
  p.scale = std::move(scales);
  p.validate();
  return p;
}

// NF4 parameters for x: each group's scale is its absmax (blocks of 64 along the last
// axis are QLoRA's choice: granularity::per_group(R - 1, 64)). A group whose absmax is 0
// (or subnormal) gets scale 1, so it quantizes to the exact 0 level. NaN or Inf in x is
// errc::non_finite.
template <class TX, std::size_t R>
codebook_params nf4_params(tensor_view<TX, R> x, const granularity& g) {
  QLIB_CHECK(!x.empty(), errc::empty_tensor, "nf4_params: empty tensor " + detail::extents_string(x.shape()));
  const std::size_t np = static_cast<std::size_t>(g.param_count(x.shape()));
  std::vector<float> mn(np, INFINITY), mx(np, -INFINITY);
  const nonfinite_counts bad =
      detail::fold_minmax_by_group(active_isa(), tensor_view<const float, R>(x), g, mn.data(), mx.data());
  QLIB_CHECK(bad.total() == 0, errc::non_finite,
             "nf4_params: " + std::to_string(bad.nan) + " NaN and " + std::to_string(bad.inf) + " Inf values in x");
  std::vector<float> scales(np);
  for (std::size_t k = 0; k < np; ++k) {
    const float amax = std::fmax(std::fabs(mn[k]), std::fabs(mx[k]));
    scales[k] = amax >= min_scale ? amax : 1.0f;
  }
  return nf4_codebook_params(g, std::move(scales));
}

}  // namespace qlib
