// minmax_observer: running min/max per parameter group, vectorized, exactly mergeable.
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
#include "qlib/quant/observers/observer.hpp"

namespace qlib {
namespace detail {
// The ranges of an observer's state, checked: data was seen and every group saw a finite
// value (a group of only NaN/Inf has min = +Inf > max = -Inf).
inline std::pair<std::vector<float>, std::vector<float>> checked_ranges(const std::vector<float>& mins,
                                                                        const std::vector<float>& maxs,
                                                                        const observer_counts& counts,
                                                                        const char* who) {
  QLIB_CHECK(!mins.empty(), errc::empty_tensor,
             std::string(who) + ": no data observed yet (" + std::to_string(counts.batches) + " batches, all empty)");
  for (std::size_t k = 0; k < mins.size(); ++k)
    QLIB_CHECK(mins[k] <= maxs[k], errc::non_finite,
               std::string(who) + ": parameter " + std::to_string(k) + " saw no finite value (" +
                   std::to_string(counts.nan) + " NaN and " + std::to_string(counts.inf) +
                   " Inf skipped in all)");
  return {mins, maxs};
}
}  // namespace detail

// Tracks the minimum and maximum of the finite values of every parameter group
// (per-tensor, per-channel on any axis, per-group) over all batches. The fold is the
// vectorized qlib::fold_minmax (NaN/Inf skipped and counted; bit-exact with
// reference::fold_minmax_by_group on every ISA). merge() is exact: observers fed
// disjoint shards and merged hold the same state, bit for bit, as one fed everything.
class minmax_observer {
 public:
  explicit minmax_observer(granularity g = granularity::per_tensor()) : layout_(g) {}

  // Folds one batch (any rank and strides; T is float or const float).
  template <class T, std::size_t R>
  void observe(tensor_view<T, R> x) {
    static_assert(std::is_same<std::remove_const_t<T>, float>::value, "observers take float tensors");
    const bool nonempty = layout_.accept(x.shape());
    ++counts_.batches;
    if (!nonempty) return;
    if (mins_.empty()) {
      mins_.assign(static_cast<std::size_t>(layout_.param_count()), INFINITY);
      maxs_.assign(mins_.size(), -INFINITY);
    }
    const nonfinite_counts c =
        detail::fold_minmax_by_group(active_isa(), tensor_view<const float, R>(x), gran(), mins_.data(), maxs_.data());
    counts_.elements += x.size();
    counts_.nan += c.nan;
    counts_.inf += c.inf;
  }
  template <std::size_t R>
  void observe(const tensor<float, R>& x) {
    observe(x.cview());
  }

  // Adds the state of an observer with the same granularity fed other batches.
  void merge(const minmax_observer& o) {
    layout_.check_mergeable(o.layout_, "minmax_observer::merge");
    counts_ += o.counts_;
    if (o.mins_.empty()) return;
    if (mins_.empty()) {
      layout_ = o.layout_;
      mins_ = o.mins_;
      maxs_ = o.maxs_;
      return;
    }
    for (std::size_t k = 0; k < mins_.size(); ++k) fold_minmax_pair(o.mins_[k], o.maxs_[k], mins_[k], maxs_[k]);
  }

  // Raw state: per parameter, min and max of the finite values (+Inf/-Inf where none yet);
  // empty before the first non-empty batch.
  const std::vector<float>& min() const noexcept { return mins_; }
  const std::vector<float>& max() const noexcept { return maxs_; }
  // (min, max) per parameter; errc::empty_tensor before any data, errc::non_finite for a
  // group that saw no finite value.
  std::pair<std::vector<float>, std::vector<float>> ranges() const {
    return detail::checked_ranges(mins_, maxs_, counts_, "minmax_observer");
  }
  // qlib's parameters (choose_scale_zero_point) for each group's [min, max].
  template <class S>
  quant_params params(const affine_scheme<S>& scheme) const {
    const auto r = ranges();
    return params_from_ranges(scheme, gran(), r.first, r.second);
  }

  bool has_data() const noexcept { return !mins_.empty(); }
  const granularity& gran() const noexcept { return layout_.gran(); }
  index_t param_count() const noexcept { return layout_.param_count(); }
  const observer_counts& counts() const noexcept { return counts_; }
  void reset() {
    layout_.reset();
    mins_.clear();
    maxs_.clear();
    counts_ = {};
  }

 private:
  detail::observer_layout layout_;
  std::vector<float> mins_, maxs_;
  observer_counts counts_;
};

}  // namespace qlib
