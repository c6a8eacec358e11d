// The observer concept (what a calibration observer provides), its counters and its batch-layout check.
#pragma once

#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "qlib/core/tensor_view.hpp"
#include "qlib/quant/granularity.hpp"

// An observer streams over calibration batches and then proposes quantization
// parameters. qlib's observers (minmax_observer, moving_average_minmax_observer,
// histogram_observer) and any user-written one have this shape:
//
//   struct my_observer {
//     // Accumulate one batch. Called once per batch, for every rank R the observer
//     // supports; T is float or const float.
//     template <class T, std::size_t R> void observe(qlib::tensor_view<T, R> batch);
//     // Combine with an observer of the same configuration fed other batches
//     // (data-parallel calibration: shard, observe, merge).
//     void merge(const my_observer& other);
//     // Parameters for a scheme, from what was observed so far.
//     template <class S> qlib::quant_params params(const qlib::affine_scheme<S>& scheme) const;
//   };
//
// Only observe() is needed to drive an observer with qlib::calibrate()
// (quant/observers/calibrate.hpp); params() is what qlib::quantize_observed() and user
// code call afterwards to quantize. Nothing else (no base class, no registration) is
// required, so a user observer lives entirely in user code.
//
// Conventions qlib's own observers follow (recommended for user observers too):
//  - NaN and +/-Inf in a batch are skipped and counted (observer_counts), never folded
//    into a range: one bad activation cannot poison a calibration run;
//  - an empty batch is a no-op (it is counted, and its shape must still be valid for the
//    granularity);
//  - the first non-empty batch fixes the parameter layout: later batches must give the
//    same parameter count (and, per-group, the same parameter shape), else
//    errc::shape_mismatch; the batch size along other axes may change;
//  - params() before any finite data is errc::empty_tensor; a parameter group that saw
//    only non-finite values is errc::non_finite;
//  - an observer is not synchronized: calibrate in parallel with one observer per thread
//    (or machine) and merge() them afterwards.
namespace qlib {

// What an observer has seen.
struct observer_counts {
  index_t batches = 0;   // observe() calls, empty batches included
  index_t elements = 0;  // elements seen, skipped ones included
  index_t nan = 0;       // NaN elements skipped
  index_t inf = 0;       // +/-Inf elements skipped

  index_t skipped() const noexcept { return nan + inf; }
  observer_counts& operator+=(const observer_counts& o) noexcept {
    batches += o.batches;
    elements += o.elements;
    nan += o.nan;
    inf += o.inf;
    return *this;
  }
};

// True if O has observe(tensor_view<const float, R>) (all calibrate() needs).
template <class O, std::size_t R, class = void>
struct can_observe : std::false_type {};
template <class O, std::size_t R>
struct can_observe<O, R, std::void_t<decltype(std::declval<O&>().observe(std::declval<tensor_view<const float, R>>()))>>
    : std::true_type {};

namespace detail {

// The parameter layout an observer fixes on its first non-empty batch.
class observer_layout {
 public:
  explicit observer_layout(const granularity& g) : gran_(g) {}

  const granularity& gran() const noexcept { return gran_; }
  bool initialized() const noexcept { return count_ > 0; }
  index_t param_count() const noexcept { return count_; }

  // Checks a batch shape against the granularity and the layout fixed so far. Returns
  // false for an empty batch (nothing to fold), true otherwise.
  template <std::size_t R>
  bool accept(const extents<R>& shape) {
    const index_t count = gran_.param_count(shape);  // validates axis and group size
    if (detail::checked_numel(shape) == 0) return false;
    std::vector<index_t> pshape;
    if (gran_.type == granularity::kind::per_group) {
      const extents<R> p = gran_.param_shape(shape);
      pshape.assign(p.begin(), p.end());
    }
    if (!initialized()) {
      count_ = count;
      pshape_ = std::move(pshape);
      return true;
    }
    QLIB_CHECK(count == count_ && pshape == pshape_, errc::shape_mismatch,
               "batch of shape " + extents_string(shape) + " gives " + std::to_string(count) + " parameters for " +
                   gran_.describe() + ", but earlier batches gave " + std::to_string(count_));
    return true;
  }

  // Two observers can merge if their granularities are equal and their layouts agree
  // (or one of them has seen no data).
  void check_mergeable(const observer_layout& o, const char* what) const {
    QLIB_CHECK(gran_ == o.gran_, errc::invalid_argument,
               std::string(what) + ": cannot merge " + gran_.describe() + " with " + o.gran_.describe());
    QLIB_CHECK(!initialized() || !o.initialized() || (count_ == o.count_ && pshape_ == o.pshape_),
               errc::shape_mismatch,
               std::string(what) + ": cannot merge observers with " + std::to_string(count_) + " and " +
                   std::to_string(o.count_) + " parameters");
  }

  void reset() noexcept {
    count_ = 0;
    pshape_.clear();
  }

 private:
  granularity gran_;
  index_t count_ = 0;
  std::vector<index_t> pshape_;
};

}  // namespace detail
}  // namespace qlib
