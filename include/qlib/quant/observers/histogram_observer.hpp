// histogram_observer: per-group exact histograms (2048 bins), ranges by MSE search, KL or percentile.
#pragma once

#include <cmath>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "qlib/arch/isa.hpp"
#include "qlib/core/tensor.hpp"
#include "qlib/quant/choose_params.hpp"
#include "qlib/quant/observers/group_minmax.hpp"
#include "qlib/quant/observers/histogram.hpp"
#include "qlib/quant/observers/observer.hpp"
#include "qlib/quant/observers/param_rows.hpp"
#include "qlib/quant/observers/range_selection.hpp"

namespace qlib {

struct histogram_options {
  index_t bins = 2048;                     // bins per parameter group
  range_method method = range_method::mse;  // how params() picks each group's range
  double percentile = 99.99;               // for range_method::percentile, in (0, 100]
  index_t kl_stride = 1;                   // KL search: try every kl_stride-th threshold

  void validate() const {
    QLIB_CHECK(bins >= 2 && bins <= (index_t{1} << 24), errc::invalid_argument,
               "histogram bin count " + std::to_string(bins) + " outside [2, 2^24]");
    QLIB_CHECK(percentile > 0.0 && percentile <= 100.0, errc::invalid_argument,
               "percentile " + std::to_string(percentile) + " outside (0, 100]");
    QLIB_CHECK(kl_stride >= 1, errc::invalid_argument, "KL search stride must be >= 1");
  }
};

// One grid_histogram per parameter group (per-tensor, per-channel on any axis,
// per-group). Each batch is folded in two passes: the vectorized min/max fold widens
// every group's grid (no count is lost, see grid_histogram), then the finite values are
// binned. NaN/Inf are skipped and counted. merge() is exact: shards observed separately
// and merged give the same histograms, bin for bin, as one observer fed everything, so
// params() are identical too.
//
// params() picks each group's range with options().method (or the method passed in) from
// that group's histogram (quant/observers/range_selection.hpp) and turns it into
// parameters with choose_scale_zero_point(). The MSE and KL searches cost
// O(bins x candidates) per group: milliseconds for one tensor, so with thousands of
// channels prefer fewer bins or a larger kl_stride.
class histogram_observer {
 public:
  explicit histogram_observer(granularity g = granularity::per_tensor(), histogram_options o = {})
      : layout_(g), opt_(o) {
    o.validate();
  }

  template <class T, std::size_t R>
  void observe(tensor_view<T, R> x) {
    static_assert(std::is_same<std::remove_const_t<T>, float>::value, "observers take float tensors");
    const bool nonempty = layout_.accept(x.shape());
    ++counts_.batches;
    if (!nonempty) return;
    const std::size_t n = static_cast<std::size_t>(layout_.param_count());
    if (hists_.empty()) hists_.assign(n, grid_histogram(opt_.bins));
    const tensor_view<const float, R> cx(x);
    std::vector<float> bmin(n, INFINITY), bmax(n, -INFINITY);
    const nonfinite_counts c = detail::fold_minmax_by_group(active_isa(), cx, gran(), bmin.data(), bmax.data());
    for (std::size_t k = 0; k < n; ++k)
      if (bmin[k] <= bmax[k]) hists_[k].cover(bmin[k], bmax[k]);
    detail::for_each_param_row(cx, gran(), [&](const float* row, index_t xs, index_t len, const detail::row_params& rp) {
      if (rp.per_element) {
        for (index_t j = 0; j < len; ++j) hists_[static_cast<std::size_t>(rp.offset + j)].add(row + j * xs, 1, 1);
        return;
      }
      detail::for_each_group_run(rp, len, [&](index_t start, index_t count, index_t k) {
        hists_[static_cast<std::size_t>(k)].add(row + start * xs, count, xs);
      });
    });
    counts_.elements += x.size();
    counts_.nan += c.nan;
    counts_.inf += c.inf;
  }
  template <std::size_t R>
  void observe(const tensor<float, R>& x) {
    observe(x.cview());
  }

  // Adds the histograms of an observer with the same granularity and bin count.
  void merge(const histogram_observer& o) {
    layout_.check_mergeable(o.layout_, "histogram_observer::merge");
    QLIB_CHECK(opt_.bins == o.opt_.bins, errc::invalid_argument,
               "histogram_observer::merge: bin counts differ (" + std::to_string(opt_.bins) + " and " +
                   std::to_string(o.opt_.bins) + ")");
    counts_ += o.counts_;
    if (o.hists_.empty()) return;
    if (hists_.empty()) {
      layout_ = o.layout_;
      hists_ = o.hists_;
      return;
    }
    for (std::size_t k = 0; k < hists_.size(); ++k) hists_[k].merge(o.hists_[k]);
  }

  // The histogram of parameter group k.
  const grid_histogram& histogram(index_t k) const {
    QLIB_CHECK(k >= 0 && k < static_cast<index_t>(hists_.size()), errc::out_of_range,
               "histogram " + std::to_string(k) + " of " + std::to_string(hists_.size()));
    return hists_[static_cast<std::size_t>(k)];
  }

  // Each group's chosen range under `method` for `scheme` (the MSE and KL searches
  // depend on the scheme's grid). errc::empty_tensor before any data, errc::non_finite
  // for a group that saw no finite value.
  template <class S>
  std::pair<std::vector<float>, std::vector<float>> ranges(const affine_scheme<S>& scheme,
                                                           range_method method) const {
    scheme.validate();
    QLIB_CHECK(!hists_.empty(), errc::empty_tensor,
               "histogram_observer: no data observed yet (" + std::to_string(counts_.batches) + " batches, all empty)");
    std::vector<float> lo(hists_.size()), hi(hists_.size());
    for (std::size_t k = 0; k < hists_.size(); ++k) {
      const grid_histogram& h = hists_[k];
      QLIB_CHECK(h.has_range(), errc::non_finite,
                 "histogram_observer: parameter " + std::to_string(k) + " saw no finite value (" +
                     std::to_string(counts_.nan) + " NaN and " + std::to_string(counts_.inf) + " Inf skipped in all)");
      real_range r{};
      switch (method) {
        case range_method::minmax: r = select_range_minmax(h); break;
        case range_method::mse: r = select_range_mse(h, scheme); break;
        case range_method::kl_divergence: r = select_range_kl(h, scheme, opt_.kl_stride); break;
        case range_method::percentile: r = select_range_percentile(h, scheme, opt_.percentile); break;
      }
      lo[k] = r.lo;
      hi[k] = r.hi;
    }
    return {std::move(lo), std::move(hi)};
  }
  template <class S>
  std::pair<std::vector<float>, std::vector<float>> ranges(const affine_scheme<S>& scheme) const {
    return ranges(scheme, opt_.method);
  }

  template <class S>
  quant_params params(const affine_scheme<S>& scheme, range_method method) const {
    const auto r = ranges(scheme, method);
    return params_from_ranges(scheme, gran(), r.first, r.second);
  }
  template <class S>
  quant_params params(const affine_scheme<S>& scheme) const {
    return params(scheme, opt_.method);
  }

  const histogram_options& options() const noexcept { return opt_; }
  bool has_data() const noexcept { return !hists_.empty(); }
  const granularity& gran() const noexcept { return layout_.gran(); }
  index_t param_count() const noexcept { return layout_.param_count(); }
  const observer_counts& counts() const noexcept { return counts_; }
  void reset() {
    layout_.reset();
    hists_.clear();
    counts_ = {};
  }

 private:
  detail::observer_layout layout_;
  histogram_options opt_;
  std::vector<grid_histogram> hists_;
  observer_counts counts_;
};

}  // namespace qlib
