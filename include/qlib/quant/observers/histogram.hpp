// grid_histogram: an exact, growable, mergeable histogram on a power-of-two grid anchored at zero.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "qlib/core/error.hpp"
#include "qlib/core/tensor_view.hpp"

namespace qlib {

// Counts of values in `bins` bins of width w = 2^exponent. Bin i covers
// [(origin + i) * w, (origin + i + 1) * w): every edge is an integer multiple of w, so 0 is
// always an edge (folding to |x| is exact) and a coarser grid (2w) is made by adding bin
// pairs, which loses no count.
//
// The grid is a function of the data's min and max only: the exponent is the smallest
// one (not below max|x| * 2^-40, which keeps bin indices inside 2^41) for which
// [min, max] fits in `bins` bins, and origin = floor(min / w). Hence
//  - the range grows as data arrives (cover()) and no count is ever lost or smeared;
//  - two histograms fed disjoint data and merged are identical, bin for bin, to one fed
//    all of it, in any order of batches and merges (the property data-parallel
//    calibration needs).
// Bin indices are computed exactly (a float times a power of two is exact in double).
class grid_histogram {
 public:
  explicit grid_histogram(index_t bins = 2048) : bins_(bins) {
    QLIB_CHECK(bins >= 2 && bins <= (index_t{1} << 24), errc::invalid_argument,
               "histogram bin count " + std::to_string(bins) + " outside [2, 2^24]");
  }

  // Widens the grid to cover [lo, hi] (finite, lo <= hi) and folds them into min()/max().
  void cover(float lo, float hi) {
    QLIB_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo <= hi, errc::invalid_argument,
               "grid_histogram::cover needs finite lo <= hi, got [" + std::to_string(lo) + ", " +
                   std::to_string(hi) + "]");
    const float mn = has_range_ && min_ < lo ? min_ : lo + 0.0f;
    const float mx = has_range_ && max_ > hi ? max_ : hi + 0.0f;
    int e = floor_exponent(mn, mx);
    if (has_range_ && exponent_ > e) e = exponent_;
    while (grid_index(mx, e) - grid_index(mn, e) + 1 > bins_) ++e;
    regrid(e, grid_index(mn, e));
    min_ = mn;
    max_ = mx;
    has_range_ = true;
  }

  // Adds the finite values of x[0], x[stride], ... x[(n-1)*stride] (each inside
  // [min(), max()], i.e. covered first); non-finite values are ignored.
  void add(const float* x, index_t n, index_t stride) {
    if (n <= 0 || !has_range_) return;  // no range yet: no finite value was covered
    const double inv_w = std::ldexp(1.0, -exponent_);
    auto bin_of = [&](float v) {
      // floor without a libm call (baseline x86-64 has no roundsd): |t| < 2^42 here.
      const double t = static_cast<double>(v) * inv_w;
      std::int64_t f = static_cast<std::int64_t>(t);
      f -= t < static_cast<double>(f) ? 1 : 0;
      const std::int64_t i = f - origin_;
      QLIB_ASSERT(i >= 0 && i < bins_);
      return i;
    };
    std::uint64_t added = 0;
    if (n >= 4 * bins_ && n <= (index_t{1} << 30)) {
      // Long runs count into four interleaved 32-bit tables: consecutive values that hit
      // the same bin (concentrated data) then do not wait on each other's increments.
      std::vector<std::uint32_t> sub(4 * static_cast<std::size_t>(bins_), 0);
      std::uint32_t* s = sub.data();
      index_t j = 0;
      for (; j + 4 <= n; j += 4) {
        const float v0 = x[j * stride], v1 = x[(j + 1) * stride], v2 = x[(j + 2) * stride], v3 = x[(j + 3) * stride];
        if (std::isfinite(v0)) ++s[4 * bin_of(v0)], ++added;
        if (std::isfinite(v1)) ++s[4 * bin_of(v1) + 1], ++added;
        if (std::isfinite(v2)) ++s[4 * bin_of(v2) + 2], ++added;
        if (std::isfinite(v3)) ++s[4 * bin_of(v3) + 3], ++added;
      }
      for (; j < n; ++j)
        if (std::isfinite(x[j * stride])) ++s[4 * bin_of(x[j * stride])], ++added;
      for (index_t i = 0; i < bins_; ++i)
        counts_[static_cast<std::size_t>(i)] += std::uint64_t{s[4 * i]} + s[4 * i + 1] + s[4 * i + 2] + s[4 * i + 3];
    } else {
      std::uint64_t* c = counts_.data();
      for (index_t j = 0; j < n; ++j) {
        const float v = x[j * stride];
        if (!std::isfinite(v)) continue;
        ++c[bin_of(v)];
        ++added;
      }
    }
    total_ += added;
  }

  // Adds another histogram of the same bin count (the grid widens as needed).
  void merge(const grid_histogram& o) {
    QLIB_CHECK(o.bins_ == bins_, errc::invalid_argument,
               "cannot merge histograms of " + std::to_string(bins_) + " and " + std::to_string(o.bins_) + " bins");
    if (!o.has_range_) return;
    if (!has_range_) {
      *this = o;
      return;
    }
    cover(o.min_, o.max_);
    if (o.exponent_ > exponent_) {  // o was coarser for its own reasons: match it
      int e = o.exponent_;
      while (grid_index(max_, e) - grid_index(min_, e) + 1 > bins_) ++e;
      regrid(e, grid_index(min_, e));
    }
    const int shift = exponent_ - o.exponent_;
    for (index_t i = 0; i < bins_; ++i) {
      const std::uint64_t c = o.counts_[static_cast<std::size_t>(i)];
      if (c == 0) continue;
      const std::int64_t j = floor_shift(o.origin_ + i, shift) - origin_;
      QLIB_ASSERT(j >= 0 && j < bins_);
      counts_[static_cast<std::size_t>(j)] += c;
    }
    total_ += o.total_;
  }

  index_t bins() const noexcept { return bins_; }
  // True once cover() was called (a range exists; counts may still be all zero).
  bool has_range() const noexcept { return has_range_; }
  // Bin width is 2^exponent().
  int exponent() const noexcept { return exponent_; }
  double bin_width() const noexcept { return std::ldexp(1.0, exponent_); }
  // Bin i covers [edge(i), edge(i + 1)).
  std::int64_t origin() const noexcept { return origin_; }
  double edge(index_t i) const noexcept { return std::ldexp(static_cast<double>(origin_ + i), exponent_); }
  const std::vector<std::uint64_t>& counts() const noexcept { return counts_; }
  // Values counted (finite values added).
  std::uint64_t total() const noexcept { return total_; }
  // The exact min and max covered so far.
  float min() const noexcept { return min_; }
  float max() const noexcept { return max_; }

  bool operator==(const grid_histogram& o) const noexcept {
    if (bins_ != o.bins_ || has_range_ != o.has_range_) return false;
    if (!has_range_) return true;
    return exponent_ == o.exponent_ && origin_ == o.origin_ && min_ == o.min_ && max_ == o.max_ &&
           total_ == o.total_ && counts_ == o.counts_;
  }
  bool operator!=(const grid_histogram& o) const noexcept { return !(*this == o); }

 private:
  // floor(v / 2^e), exactly.
  static std::int64_t grid_index(float v, int e) noexcept {
    return static_cast<std::int64_t>(std::floor(std::ldexp(static_cast<double>(v), -e)));
  }
  // floor(a / 2^d) for d >= 0.
  static std::int64_t floor_shift(std::int64_t a, int d) noexcept {
    if (d == 0) return a;
    if (d >= 63) return a < 0 ? -1 : 0;
    return a >= 0 ? a >> d : -((-a - 1) >> d) - 1;
  }
  // The finest exponent allowed: max|x| * 2^-40, so indices stay below 2^41.
  static int floor_exponent(float mn, float mx) noexcept {
    const float amax = std::fmax(std::fabs(mn), std::fabs(mx));
    int k = -149;  // the smallest subnormal's exponent, for all-zero data
    if (amax > 0.0f) (void)std::frexp(amax, &k);  // amax < 2^k
    return k - 40;
  }
  // Moves the counts to the grid (e >= exponent_, o): pairs of bins merge as e grows.
  void regrid(int e, std::int64_t o) {
    if (!has_range_) {
      counts_.assign(static_cast<std::size_t>(bins_), 0);
      exponent_ = e;
      origin_ = o;
      return;
    }
    if (e == exponent_ && o == origin_) return;
    QLIB_ASSERT(e >= exponent_);
    std::vector<std::uint64_t> next(static_cast<std::size_t>(bins_), 0);
    const int shift = e - exponent_;
    for (index_t i = 0; i < bins_; ++i) {
      const std::uint64_t c = counts_[static_cast<std::size_t>(i)];
      if (c == 0) continue;
      const std::int64_t j = floor_shift(origin_ + i, shift) - o;
      QLIB_ASSERT(j >= 0 && j < bins_);
      next[static_cast<std::size_t>(j)] += c;
    }
    counts_.swap(next);
    exponent_ = e;
    origin_ = o;
  }

  index_t bins_;
  bool has_range_ = false;
  int exponent_ = 0;
  std::int64_t origin_ = 0;
  float min_ = 0.0f, max_ = 0.0f;
  std::uint64_t total_ = 0;
  std::vector<std::uint64_t> counts_;
};

}  // namespace qlib
