// Choosing scale and zero point from a real range (min, max), keeping real 0 exact.
#pragma once

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "qlib/quant/checks.hpp"
#include "qlib/quant/param_layout.hpp"
#include "qlib/quant/params.hpp"
#include "qlib/quant/rounding.hpp"

namespace qlib {

struct scale_zero_point {
  float scale;
  std::int32_t zero_point;
};

// qlib's rule for one range:
//  - the range is first widened to include 0: lo = min(rmin, 0), hi = max(rmax, 0);
//  - asymmetric: S = (hi - lo) / (qmax - qmin), Z = qmin - round_half_even(lo / S),
//    clamped into [qmin, qmax];
//  - symmetric: S = 2 * max(-lo, hi) / (qmax - qmin), Z = the scheme's middle code
//    (this is amax/127 on [-127,127] and amax/127.5 on [-128,127]);
//  - S is computed in double and rounded to float once; a range of zero width
//    (min == max == 0) gives S = 1; S below min_scale is raised to min_scale.
// Non-finite bounds or rmin > rmax are errors.
template <class S>
scale_zero_point choose_scale_zero_point(const affine_scheme<S>& scheme, float rmin, float rmax) {
  scheme.validate();
  QLIB_CHECK(std::isfinite(rmin) && std::isfinite(rmax), errc::non_finite,
             "range [" + std::to_string(rmin) + ", " + std::to_string(rmax) + "] is not finite");
  QLIB_CHECK(rmin <= rmax, errc::invalid_argument,
             "range min " + std::to_string(rmin) + " is above max " + std::to_string(rmax));
  const double lo = rmin < 0.0f ? rmin : 0.0;
  const double hi = rmax > 0.0f ? rmax : 0.0;
  const std::int32_t qmin = scheme.qmin(), qmax = scheme.qmax();
  const double steps = static_cast<double>(qmax - qmin);
  if (scheme.sym == symmetry::symmetric) {
    const double amax = -lo > hi ? -lo : hi;
    float scale = static_cast<float>(2.0 * amax / steps);
    if (amax == 0.0) scale = 1.0f;
    if (scale < min_scale) scale = min_scale;
    return {scale, scheme.symmetric_zero_point()};
  }
  float scale = static_cast<float>((hi - lo) / steps);
  if (hi == lo) scale = 1.0f;
  if (scale < min_scale) scale = min_scale;
  const double z = static_cast<double>(qmin) - static_cast<double>(round_half_even(static_cast<float>(lo / scale)));
  const std::int32_t zp = static_cast<std::int32_t>(z < qmin ? qmin : (z > qmax ? qmax : z));
  return {scale, zp};
}

// Parameters for every group of a granularity from per-parameter ranges.
template <class S>
quant_params params_from_ranges(const affine_scheme<S>& scheme, granularity g, const std::vector<float>& mins,
                                const std::vector<float>& maxs) {
  QLIB_CHECK(mins.size() == maxs.size(), errc::shape_mismatch,
             std::to_string(mins.size()) + " minima but " + std::to_string(maxs.size()) + " maxima");
  QLIB_CHECK(!mins.empty(), errc::empty_tensor, "no ranges given");
  std::vector<float> scales(mins.size());
  std::vector<std::int32_t> zps(mins.size());
  for (std::size_t i = 0; i < mins.size(); ++i) {
    const scale_zero_point sz = choose_scale_zero_point(scheme, mins[i], maxs[i]);
    scales[i] = sz.scale;
    zps[i] = sz.zero_point;
  }
  return quant_params::make(scheme, g, std::move(scales), std::move(zps));
}

// Minimum and maximum of the elements of each parameter group. NaN or Inf in x is an
// error naming the first offending element (calibration observers offer other policies).
template <class TX, std::size_t R>
std::pair<std::vector<float>, std::vector<float>> minmax_by_group(tensor_view<TX, R> x, granularity g) {
  detail::check_elementwise(x, x, "minmax_by_group");
  const index_t np = g.param_count(x.shape());
  std::vector<float> mins(static_cast<std::size_t>(np), INFINITY), maxs(static_cast<std::size_t>(np), -INFINITY);
  detail::param_indexer<R> pi(g, x.shape());
  const index_t n = x.shape(R - 1), xs = x.stride(R - 1);
  detail::for_each_row(x.shape(), [&](const extents<R>& idx) {
    const detail::row_params rp = pi.row(idx);
    const TX* row = &x[idx];
    for (index_t j = 0; j < n; ++j) {
      const float v = row[j * xs];
      if (QLIB_UNLIKELY(!std::isfinite(v))) {
        extents<R> at = idx;
        at[R - 1] = j;
        raise_error(errc::non_finite, "non-finite value " + std::to_string(v) + " at index " +
                                          detail::extents_string(at));
      }
      const std::size_t k = static_cast<std::size_t>(rp.at(j));
      mins[k] = v < mins[k] ? v : mins[k];
      maxs[k] = v > maxs[k] ? v : maxs[k];
    }
  });
  return {std::move(mins), std::move(maxs)};
}

// Parameters for x from its min/max per group (the simplest calibration).
template <class S, class TX, std::size_t R>
quant_params choose_params(tensor_view<TX, R> x, const affine_scheme<S>& scheme, granularity g) {
  auto mm = minmax_by_group(x, g);
  return params_from_ranges(scheme, g, mm.first, mm.second);
}

}  // namespace qlib
