// Choosing a clipping range from a histogram: min/max, L2 (MSE) search, KL divergence (TensorRT), percentile.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "qlib/quant/choose_params.hpp"
#include "qlib/quant/observers/histogram.hpp"

// All methods treat the values of a bin as spread uniformly over the bin, clipped to the
// observed [min, max] (the first and last bins hold nothing beyond them). The range they
// return lies inside [min(min, 0), max(max, 0)]; choose_scale_zero_point() then widens it
// to include 0, exactly as for a min/max range.
namespace qlib {

enum class range_method {
  minmax,         // [min, max]: no clipping
  mse,            // the range whose parameters minimize the expected squared error
  kl_divergence,  // TensorRT's entropy calibration: min KL(P || Q) over |x| thresholds
  percentile,     // clip the tails beyond a percentile
};

inline const char* range_method_name(range_method m) noexcept {
  switch (m) {
    case range_method::minmax: return "minmax";
    case range_method::mse: return "mse";
    case range_method::kl_divergence: return "kl_divergence";
    case range_method::percentile: return "percentile";
  }
  return "?";
}

struct real_range {
  float lo, hi;
};

namespace detail {
// The data range [mn, mx] clipped to [-t, t]: never empty, and its symmetric amax is t
// whenever t <= max(|mn|, |mx|).
inline real_range clip_symmetric(double mn, double mx, double t) noexcept {
  auto clamp = [t](double v) { return v < -t ? -t : (v > t ? t : v); };
  return {static_cast<float>(clamp(mn)), static_cast<float>(clamp(mx))};
}
}  // namespace detail

namespace detail {

// Integral of (t - round t)^2 from -1/2 to t: the rounding error of a unit grid.
inline double sawtooth_integral(double t) noexcept {
  const double n = std::floor(t + 0.5), r = t - n;
  return n / 12.0 + (r * r * r + 0.125) / 3.0;
}

// The squared error of quantizing real x, in units of the scale: t = x / scale, codes
// clamped to [lo_t, hi_t] (qmin - zp, qmax - zp). G is its antiderivative.
struct grid_error {
  double lo_t, hi_t;
  double point(double t) const noexcept {
    double q = std::nearbyint(t);
    q = q < lo_t ? lo_t : (q > hi_t ? hi_t : q);
    return (t - q) * (t - q);
  }
  double antiderivative(double t) const noexcept {
    const double l = lo_t - 0.5, h = hi_t + 0.5;
    if (t < l) {
      const double u = t - lo_t;
      return sawtooth_integral(l) + (0.125 + u * u * u) / 3.0;
    }
    if (t > h) {
      const double u = t - hi_t;
      return sawtooth_integral(h) + (u * u * u - 0.125) / 3.0;
    }
    return sawtooth_integral(t);
  }
  // Mean squared error (in scale units) over t uniform in [ta, tb].
  double mean(double ta, double tb) const noexcept {
    if (tb - ta < 1e-6) return point(0.5 * (ta + tb));
    return (antiderivative(tb) - antiderivative(ta)) / (tb - ta);
  }
};

// Bin i of h clipped to [h.min(), h.max()].
inline void clipped_bin(const grid_histogram& h, index_t i, double& a, double& b) noexcept {
  a = std::max(h.edge(i), static_cast<double>(h.min()));
  b = std::min(h.edge(i + 1), static_cast<double>(h.max()));
}

// The |x| histogram of h: bin k covers [k w, (k + 1) w) (exact, since 0 is a grid edge),
// coarsened by pairs until it has at most h.bins() bins.
struct folded_histogram {
  std::vector<double> counts;
  double width = 0;
  double amax = 0;
};
inline folded_histogram fold_abs(const grid_histogram& h) {
  folded_histogram f;
  f.amax = std::max(std::fabs(static_cast<double>(h.min())), std::fabs(static_cast<double>(h.max())));
  const std::int64_t o = h.origin();
  const std::int64_t hi = o + h.bins();  // absolute indices [o, hi)
  const std::int64_t nfold = std::max<std::int64_t>(hi > 0 ? hi : 0, o < 0 ? -o : 0);
  int shift = 0;
  while ((nfold >> shift) + 1 > h.bins() && shift < 62) ++shift;
  const std::int64_t n = ((nfold - 1) >> shift) + 1;
  f.counts.assign(static_cast<std::size_t>(n > 0 ? n : 1), 0.0);
  f.width = std::ldexp(h.bin_width(), shift);
  for (index_t i = 0; i < h.bins(); ++i) {
    const double c = static_cast<double>(h.counts()[static_cast<std::size_t>(i)]);
    if (c == 0) continue;
    const std::int64_t a = o + i;
    const std::int64_t k = a >= 0 ? a : -a - 1;  // [a w, (a+1) w) folds onto [|a+1| w, |a| w)
    f.counts[static_cast<std::size_t>(k >> shift)] += c;
  }
  return f;
}

// f with every bin split evenly into 2^k bins, the least k giving at least min_bins bins
// (the KL search then sees TensorRT's resolution, 2048 bins over [0, amax], whatever
// part of its bins the grid histogram spends on the signed range).
inline folded_histogram refine(folded_histogram f, index_t min_bins) {
  std::size_t r = 1;
  while (f.counts.size() * r < static_cast<std::size_t>(min_bins)) r *= 2;
  if (r == 1) return f;
  std::vector<double> fine(f.counts.size() * r);
  for (std::size_t i = 0; i < f.counts.size(); ++i)
    for (std::size_t k = 0; k < r; ++k) fine[i * r + k] = f.counts[i] / static_cast<double>(r);
  f.counts.swap(fine);
  f.width /= static_cast<double>(r);
  return f;
}

// The value below which a fraction q of the counts lies, interpolating linearly inside a
// bin whose interval is given by `interval(i, a, b)`.
template <class Counts, class Interval>
double histogram_quantile(const Counts& counts, double total, double q, Interval&& interval) {
  const double target = q * total;
  double cum = 0;
  const std::size_t n = counts.size();
  for (std::size_t i = 0; i < n; ++i) {
    const double c = static_cast<double>(counts[i]);
    if (c == 0) continue;
    if (cum + c >= target) {
      double a, b;
      interval(static_cast<index_t>(i), a, b);
      const double f = (target - cum) / c;
      return a + (b - a) * (f < 0 ? 0 : (f > 1 ? 1 : f));
    }
    cum += c;
  }
  double a, b;
  interval(static_cast<index_t>(n - 1), a, b);
  return b;
}

// Levels available on one side of zero for the KL search: 128 for 8-bit symmetric
// schemes (TensorRT's 128 bins), all 2^bits for one-sided data in an asymmetric scheme,
// half of them for two-sided data.
template <class S>
index_t kl_levels(const affine_scheme<S>& s, bool one_sided) {
  const index_t span = static_cast<index_t>(s.qmax()) - s.qmin() + 1;
  if (s.sym == symmetry::symmetric) return static_cast<index_t>(s.qmax()) - s.symmetric_zero_point() + 1;
  return one_sided ? span : span / 2;
}

// Searches f(fraction) over (0, 1]: a coarse pass of `coarse` points, then `fine` points
// around the best; returns the best fraction (ties keep the larger range).
template <class F>
double search_fraction(F&& f, int coarse, int fine, double& best_value) {
  double best = 1.0;
  best_value = f(1.0);
  for (int j = coarse - 1; j >= 1; --j) {
    const double t = static_cast<double>(j) / coarse;
    const double v = f(t);
    if (v < best_value) best_value = v, best = t;
  }
  const double lo = std::max(best - 1.0 / coarse, 1e-9), hi = std::min(best + 1.0 / coarse, 1.0);
  for (int j = fine; j >= 0; --j) {
    const double t = lo + (hi - lo) * j / fine;
    const double v = f(t);
    if (v < best_value) best_value = v, best = t;
  }
  return best;
}

}  // namespace detail

// Expected mean squared error of quantizing data distributed as h with parameters
// (scale, zero point) over codes [qmin, qmax]; 0 for an empty histogram.
inline double expected_quantization_mse(const grid_histogram& h, float scale, std::int32_t zero_point,
                                        std::int32_t qmin, std::int32_t qmax) {
  if (h.total() == 0) return 0.0;
  const detail::grid_error err{static_cast<double>(qmin) - zero_point, static_cast<double>(qmax) - zero_point};
  const double s = scale;
  double sum = 0;
  for (index_t i = 0; i < h.bins(); ++i) {
    const std::uint64_t c = h.counts()[static_cast<std::size_t>(i)];
    if (c == 0) continue;
    double a, b;
    detail::clipped_bin(h, i, a, b);
    sum += static_cast<double>(c) * err.mean(a / s, b / s);
  }
  return sum * s * s / static_cast<double>(h.total());
}

// [min, max] of the histogram.
inline real_range select_range_minmax(const grid_histogram& h) { return {h.min(), h.max()}; }

// The range whose parameters (choose_scale_zero_point for `scheme`)
// give the least expected squared error. Symmetric schemes search one threshold T
// (range [-T, T] clipped to [min, max]); asymmetric schemes search the negative and
// positive ends alternately (coordinate descent, two rounds). Each 1-D search is a
// coarse grid of 100 points refined by 50 around the best; [min, max] itself is always
// a candidate, so the result is never worse than min/max under the histogram model.
template <class S>
real_range select_range_mse(const grid_histogram& h, const affine_scheme<S>& scheme) {
  const double mn = h.min(), mx = h.max();
  if (h.total() == 0 || mn == mx) return {h.min(), h.max()};
  auto mse_of = [&](double lo, double hi) {
    const scale_zero_point sz = choose_scale_zero_point(scheme, static_cast<float>(lo), static_cast<float>(hi));
    return expected_quantization_mse(h, sz.scale, sz.zero_point, scheme.qmin(), scheme.qmax());
  };
  const int coarse = 100, fine = 50;
  double best;
  if (scheme.sym == symmetry::symmetric) {
    const double amax = std::max(std::fabs(mn), std::fabs(mx));
    auto f = [&](double t) {
      const real_range r = detail::clip_symmetric(mn, mx, t * amax);
      return mse_of(r.lo, r.hi);
    };
    const double t = detail::search_fraction(f, coarse, fine, best);
    return detail::clip_symmetric(mn, mx, t * amax);
  }
  // Fractions of the negative and positive extents (only those that exist are searched).
  double a = 1.0, b = 1.0;
  for (int round = 0; round < 2; ++round) {
    if (mx > 0) b = detail::search_fraction([&](double t) { return mse_of(a * mn, t * mx); }, coarse, fine, best);
    if (mn < 0) a = detail::search_fraction([&](double t) { return mse_of(t * mn, b * mx); }, coarse, fine, best);
  }
  const double lo = mn < 0 ? a * mn : mn, hi = mx > 0 ? b * mx : mx;
  return {static_cast<float>(lo), static_cast<float>(hi)};
}

// TensorRT's entropy calibration (Migacz, "8-bit Inference with TensorRT", 2017) on the
// |x| histogram, first refined (each bin split evenly) to at least kl_bins bins, the
// resolution TensorRT uses over [0, amax]; without that the grid histogram's coarser
// |x| bins make the search stop near its first candidate. Then for each candidate number
// of bins i (from the level count to all bins,
// every `stride` bins), P = the first i bins with the counts beyond folded into bin i-1,
// Q = the first i bins merged into `levels` groups and spread back evenly over each
// group's non-empty bins; the threshold T = i * bin width of the least KL(P || Q) (ties
// keep the larger T; a Q that is zero where P is not is never chosen). levels is 128 for
// an 8-bit symmetric scheme (see detail::kl_levels). The range is [min, max] clipped to
// [-T, T].
template <class S>
real_range select_range_kl(const grid_histogram& h, const affine_scheme<S>& scheme, index_t stride = 1,
                           index_t kl_bins = 2048) {
  QLIB_CHECK(stride >= 1, errc::invalid_argument, "KL search stride must be >= 1");
  const double mn = h.min(), mx = h.max();
  if (h.total() == 0 || mn == mx) return {h.min(), h.max()};
  const detail::folded_histogram f = detail::refine(detail::fold_abs(h), kl_bins);
  const index_t nb = static_cast<index_t>(f.counts.size());
  const index_t levels = detail::kl_levels(scheme, mn >= 0 || mx <= 0);
  double threshold = f.amax;
  if (nb > levels) {
    std::vector<double> suffix(static_cast<std::size_t>(nb) + 1, 0.0);  // counts of bins >= i
    for (index_t i = nb; i-- > 0;) suffix[i] = suffix[i + 1] + f.counts[i];
    const double total = suffix[0];
    double best = std::numeric_limits<double>::infinity();
    index_t best_i = nb;
    std::vector<double> qsum(static_cast<std::size_t>(levels)), qnonzero(static_cast<std::size_t>(levels));
    auto group_of = [&](index_t j, index_t i) { return j * levels / i; };
    std::vector<index_t> candidates;
    for (index_t i = nb; i > levels; i -= stride) candidates.push_back(i);
    candidates.push_back(levels);
    for (const index_t i : candidates) {
      std::fill(qsum.begin(), qsum.end(), 0.0);
      std::fill(qnonzero.begin(), qnonzero.end(), 0.0);
      for (index_t j = 0; j < i; ++j) {
        if (f.counts[j] == 0) continue;
        const index_t gq = group_of(j, i);
        qsum[gq] += f.counts[j];
        qnonzero[gq] += 1;
      }
      // p = P / total (P keeps the outliers in bin i-1); q = Q / (total - outliers).
      const double qtotal = total - suffix[i];
      double kl = 0;
      bool finite = true;
      for (index_t j = 0; j < i; ++j) {
        double p = f.counts[j];
        if (j == i - 1) p += suffix[i];
        if (p == 0) continue;
        const index_t gq = group_of(j, i);
        const double q = f.counts[j] == 0 ? 0.0 : qsum[gq] / qnonzero[gq];
        if (q == 0) {
          finite = false;
          break;
        }
        kl += (p / total) * std::log((p / total) / (q / qtotal));
      }
      if (finite && kl < best) best = kl, best_i = i;
    }
    threshold = std::min(static_cast<double>(best_i) * f.width, f.amax);
  }
  return detail::clip_symmetric(mn, mx, threshold);
}

// Clips the tails beyond `percentile` (in (0, 100]): symmetric schemes take
// T = that percentile of |x| and clip [min, max] to [-T, T]; asymmetric ones take the
// (100 - percentile) and percentile quantiles of x.
template <class S>
real_range select_range_percentile(const grid_histogram& h, const affine_scheme<S>& scheme, double percentile) {
  QLIB_CHECK(percentile > 0.0 && percentile <= 100.0, errc::invalid_argument,
             "percentile " + std::to_string(percentile) + " outside (0, 100]");
  const double mn = h.min(), mx = h.max();
  if (h.total() == 0 || mn == mx) return {h.min(), h.max()};
  const double q = percentile / 100.0;
  const double total = static_cast<double>(h.total());
  if (scheme.sym == symmetry::symmetric) {
    const detail::folded_histogram f = detail::fold_abs(h);
    const double t = detail::histogram_quantile(f.counts, total, q, [&](index_t i, double& a, double& b) {
      a = std::min(static_cast<double>(i) * f.width, f.amax);
      b = std::min(static_cast<double>(i + 1) * f.width, f.amax);
    });
    return detail::clip_symmetric(mn, mx, t);
  }
  auto interval = [&](index_t i, double& a, double& b) { detail::clipped_bin(h, i, a, b); };
  double lo = detail::histogram_quantile(h.counts(), total, 1.0 - q, interval);
  double hi = detail::histogram_quantile(h.counts(), total, q, interval);
  lo = std::max(mn, std::min(lo, mx));
  hi = std::max(lo, std::min(hi, mx));
  return {static_cast<float>(lo), static_cast<float>(hi)};
}

}  // namespace qlib
