// moving_average_minmax_observer: exponential moving average of per-batch min/max (default factor 0.01).
#pragma once

#include <cmath>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "qlib/quant/observers/minmax.hpp"

namespace qlib {
namespace detail {
// m + c * (cur - m) with each operation rounded to float on its own (as PyTorch's tensor
// arithmetic does): the volatile keeps the compiler from contracting it into an FMA,
// which would change the last bit on FMA targets.
inline float ema_step(float m, float cur, float c) noexcept {
  volatile float delta = c * (cur - m);
  return m + delta;
}
}  // namespace detail

// For each parameter group, the first batch that has finite values in the group sets
// (min, max) to that batch's min/max; every later such batch moves them:
//   min += c * (batch_min - min),  max += c * (batch_max - max)      (c = averaging_constant)
// in float, operation by operation (PyTorch's MovingAverageMinMaxObserver formula). A
// batch with no finite value in a group leaves that group unchanged. Batch min/max come
// from the vectorized fold of minmax_observer (NaN/Inf skipped and counted).
//
// merge() is NOT the same as one observer fed every batch (an EMA depends on batch
// order, which shards do not share). It combines the two states per group as the mean
// weighted by how many batches updated each side: exact when both sides agree, and for
// shards of i.i.d. batches a consistent estimate of what a single observer would reach.
// A side with no updates for a group takes the other side's value.
class moving_average_minmax_observer {
 public:
  explicit moving_average_minmax_observer(granularity g = granularity::per_tensor(),
                                          float averaging_constant = 0.01f)
      : layout_(g), c_(averaging_constant) {
    QLIB_CHECK(averaging_constant > 0.0f && averaging_constant <= 1.0f, errc::invalid_argument,
               "averaging constant " + std::to_string(averaging_constant) + " outside (0, 1]");
  }

  template <class T, std::size_t R>
  void observe(tensor_view<T, R> x) {
    static_assert(std::is_same<std::remove_const_t<T>, float>::value, "observers take float tensors");
    const bool nonempty = layout_.accept(x.shape());
    ++counts_.batches;
    if (!nonempty) return;
    const std::size_t n = static_cast<std::size_t>(layout_.param_count());
    if (mins_.empty()) {
      mins_.assign(n, INFINITY);
      maxs_.assign(n, -INFINITY);
      updates_.assign(n, 0);
    }
    std::vector<float> bmin(n, INFINITY), bmax(n, -INFINITY);
    const nonfinite_counts c =
        detail::fold_minmax_by_group(active_isa(), tensor_view<const float, R>(x), gran(), bmin.data(), bmax.data());
    counts_.elements += x.size();
    counts_.nan += c.nan;
    counts_.inf += c.inf;
    for (std::size_t k = 0; k < n; ++k) {
      if (!(bmin[k] <= bmax[k])) continue;  // no finite value of group k in this batch
      if (updates_[k]++ == 0) {
        mins_[k] = bmin[k];
        maxs_[k] = bmax[k];
      } else {
        mins_[k] = detail::ema_step(mins_[k], bmin[k], c_);
        maxs_[k] = detail::ema_step(maxs_[k], bmax[k], c_);
      }
    }
  }
  template <std::size_t R>
  void observe(const tensor<float, R>& x) {
    observe(x.cview());
  }

  // Update-count-weighted mean of the two states, per group (see the class comment).
  void merge(const moving_average_minmax_observer& o) {
    layout_.check_mergeable(o.layout_, "moving_average_minmax_observer::merge");
    QLIB_CHECK(c_ == o.c_, errc::invalid_argument, "moving_average_minmax_observer::merge: averaging constants differ");
    counts_ += o.counts_;
    if (o.mins_.empty()) return;
    if (mins_.empty()) {
      layout_ = o.layout_;
      mins_ = o.mins_;
      maxs_ = o.maxs_;
      updates_ = o.updates_;
      return;
    }
    for (std::size_t k = 0; k < mins_.size(); ++k) {
      const index_t a = updates_[k], b = o.updates_[k];
      if (b == 0) continue;
      if (a == 0) {
        mins_[k] = o.mins_[k];
        maxs_[k] = o.maxs_[k];
      } else {
        const double wa = static_cast<double>(a), wb = static_cast<double>(b);
        mins_[k] = static_cast<float>((wa * mins_[k] + wb * o.mins_[k]) / (wa + wb));
        maxs_[k] = static_cast<float>((wa * maxs_[k] + wb * o.maxs_[k]) / (wa + wb));
      }
      updates_[k] = a + b;
    }
  }

  const std::vector<float>& min() const noexcept { return mins_; }
  const std::vector<float>& max() const noexcept { return maxs_; }
  // How many batches updated each group.
  const std::vector<index_t>& updates() const noexcept { return updates_; }
  std::pair<std::vector<float>, std::vector<float>> ranges() const {
    return detail::checked_ranges(mins_, maxs_, counts_, "moving_average_minmax_observer");
  }
  template <class S>
  quant_params params(const affine_scheme<S>& scheme) const {
    const auto r = ranges();
    return params_from_ranges(scheme, gran(), r.first, r.second);
  }

  float averaging_constant() const noexcept { return c_; }
  bool has_data() const noexcept { return !mins_.empty(); }
  const granularity& gran() const noexcept { return layout_.gran(); }
  index_t param_count() const noexcept { return layout_.param_count(); }
  const observer_counts& counts() const noexcept { return counts_; }
  void reset() {
    layout_.reset();
    mins_.clear();
    maxs_.clear();
    updates_.clear();
    counts_ = {};
  }

 private:
  detail::observer_layout layout_;
  float c_;
  std::vector<float> mins_, maxs_;
  std::vector<index_t> updates_;
  observer_counts counts_;
};

}  // namespace qlib
