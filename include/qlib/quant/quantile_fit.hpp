// Fitting quantile codebooks to data: equal-frequency bins with their means, optional Lloyd-Max refinement.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "qlib/quant/checks.hpp"
#include "qlib/quant/param_layout.hpp"
#include "qlib/quant/quantile_params.hpp"

namespace qlib {

struct quantile_options {
  int bits = 4;              // 2^bits levels per codebook, 1..8
  int lloyd_iterations = 0;  // Lloyd-Max passes after the equal-frequency start (0: none)
};

namespace detail {

// A threshold t with a <= t < b (a < b), as close to their midpoint as float allows; a
// when a == b (ties stay together in the lower bin).
inline float split_between(float a, float b) noexcept {
  if (!(a < b)) return a;
  const float m = static_cast<float>((static_cast<double>(a) + static_cast<double>(b)) / 2.0);
  return (m >= a && m < b) ? m : a;
}

// Levels = the mean of each bin's values (sorted v, thresholds t): the squared-error
// optimal representative of a bin. Empty bins copy the nearest non-empty level below
// (above, for leading empty bins), which keeps the levels ascending.
inline void bin_means(const std::vector<float>& v, const float* t, int L, float* levels) {
  std::vector<double> sum(static_cast<std::size_t>(L), 0.0);
  std::vector<index_t> count(static_cast<std::size_t>(L), 0);
  int k = 0;
  for (float x : v) {  // v ascending: the bin index only grows
    while (k < L - 1 && x > t[k]) ++k;
    sum[static_cast<std::size_t>(k)] += x;
    ++count[static_cast<std::size_t>(k)];
  }
  int first = -1;
  for (int i = 0; i < L; ++i)
    if (count[static_cast<std::size_t>(i)] > 0) {
      levels[i] = static_cast<float>(sum[static_cast<std::size_t>(i)] / static_cast<double>(count[static_cast<std::size_t>(i)]));
      if (first < 0) first = i;
    } else if (first >= 0) {
      levels[i] = levels[i - 1];
    }
  for (int i = 0; i < first; ++i) levels[i] = levels[first];
}

// One codebook for the sorted values v of a group (v non-empty).
inline void fit_codebook(const std::vector<float>& v, int L, int lloyd_iterations, float* levels, float* t) {
  const index_t n = static_cast<index_t>(v.size());
  // Equal frequency: bin k holds sorted elements [floor(k n / L), floor((k + 1) n / L)),
  // so bin sizes differ by at most one; thresholds separate neighbouring bins. A cut that
  // falls inside a run of equal values moves to the nearer end of the run (equal values
  // must share a bin), which keeps the cuts ascending.
  for (int k = 0; k + 1 < L; ++k) {
    index_t j = (static_cast<index_t>(k) + 1) * n / L;  // first element above the cut
    if (j > 0 && j < n && v[static_cast<std::size_t>(j - 1)] == v[static_cast<std::size_t>(j)]) {
      const float tie = v[static_cast<std::size_t>(j)];
      const index_t r0 = std::lower_bound(v.begin(), v.end(), tie) - v.begin();
      const index_t r1 = std::upper_bound(v.begin(), v.end(), tie) - v.begin();
      j = j - r0 <= r1 - j ? r0 : r1;
    }
    if (j == 0) t[k] = -INFINITY;
    else if (j == n) t[k] = INFINITY;
    else t[k] = split_between(v[static_cast<std::size_t>(j - 1)], v[static_cast<std::size_t>(j)]);
  }
  bin_means(v, t, L, levels);
  // Lloyd-Max: thresholds at the midpoints of the levels (nearest level), levels at the
  // means of their bins; neither step can raise the squared error.
  for (int it = 0; it < lloyd_iterations; ++it) {
    for (int k = 0; k + 1 < L; ++k) t[k] = split_between(levels[k], levels[k + 1]);
    std::vector<float> next(levels, levels + L);
    bin_means(v, t, L, next.data());
    // Empty bins keep their level (bin_means would copy a neighbour).
    std::vector<index_t> count(static_cast<std::size_t>(L), 0);
    int k = 0;
    for (float x : v) {
      while (k < L - 1 && x > t[k]) ++k;
      ++count[static_cast<std::size_t>(k)];
    }
    for (int i = 0; i < L; ++i)
      if (count[static_cast<std::size_t>(i)] > 0) levels[i] = next[static_cast<std::size_t>(i)];
  }
}

}  // namespace detail

// Fits one codebook per parameter group of g to the values of x (scale 1): 2^bits
// levels from equal-frequency bins, so every level holds the same share of the group's
// values (within one element; equal values always share a bin, so a run of ties across a
// cut moves that cut to the nearer end of the run), each level the mean of its bin. lloyd_iterations > 0 then refines the codebook toward
// the least squared error (Lloyd-Max), after which the shares are no longer equal and the
// thresholds are the midpoints of the levels. NaN or Inf in x is errc::non_finite.
// Costs a sort of each group.
template <class TX, std::size_t R>
codebook_params fit_quantile_codebook(tensor_view<TX, R> x, const granularity& g, const quantile_options& opt = {}) {
  QLIB_CHECK(!x.empty(), errc::empty_tensor, "fit_quantile_codebook: empty tensor " + detail::extents_string(x.shape()));
  QLIB_CHECK(opt.bits >= 1 && opt.bits <= 8, errc::invalid_argument,
             "codebook bit width " + std::to_string(opt.bits) + " outside [1, 8]");
  QLIB_CHECK(opt.lloyd_iterations >= 0, errc::invalid_argument, "negative Lloyd-Max iteration count");
  const index_t np = g.param_count(x.shape());
  const int L = 1 << opt.bits;
  std::vector<std::vector<float>> groups(static_cast<std::size_t>(np));
  const detail::param_indexer<R> pi(g, x.shape());
  extents<R> idx{};
  do {
    const float v = x[idx];
    QLIB_CHECK(std::isfinite(v), errc::non_finite,
               "fit_quantile_codebook: non-finite value " + std::to_string(v) + " at index " +
                   detail::extents_string(idx));
    groups[static_cast<std::size_t>(pi.at(idx))].push_back(v + 0.0f);
  } while (detail::next_index(idx, x.shape()));
  codebook_params p;
  p.gran = g;
  p.bits = opt.bits;
  p.levels.resize(static_cast<std::size_t>(np * L));
  p.thresholds.resize(static_cast<std::size_t>(np * (L - 1)));
  p.scale.assign(static_cast<std::size_t>(np), 1.0f);
  for (index_t k = 0; k < np; ++k) {
    std::vector<float>& v = groups[static_cast<std::size_t>(k)];
    std::sort(v.begin(), v.end());
    detail::fit_codebook(v, L, opt.lloyd_iterations, p.levels.data() + k * L, p.thresholds.data() + k * (L - 1));
  }
  return p;
}

}  // namespace qlib
