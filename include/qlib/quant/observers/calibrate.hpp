// calibrate(): drives observers over calibration batches with a progress/cancel callback.
#pragma once

#include <cstddef>
#include <functional>
#include <iterator>
#include <utility>

#include "qlib/core/tensor.hpp"
#include "qlib/quant/observers/observer.hpp"

namespace qlib {

// Receives the fraction of the run done, in [0, 1] (0 before the first step, then
// (i + 1) / count after step i, so the last call is exactly 1). Returning false cancels
// the run before the next step. qlib itself never prints: reporting is the caller's.
using progress_callback = std::function<bool(double progress)>;

struct calibration_result {
  std::size_t steps_done = 0;  // steps (batches) completed
  bool cancelled = false;      // the callback returned false
};

// Runs step(i) for i in [0, count), reporting progress after each. `step` does whatever
// one calibration step is (feed one batch to several observers, run a model layer...).
// Work done before a cancellation stays in the observers: they remain usable.
template <class Step>
calibration_result run_calibration(std::size_t count, Step&& step, const progress_callback& progress = {}) {
  calibration_result r;
  if (progress && !progress(0.0)) {
    r.cancelled = true;
    return r;
  }
  for (std::size_t i = 0; i < count; ++i) {
    step(i);
    r.steps_done = i + 1;
    const double done = i + 1 == count ? 1.0 : static_cast<double>(i + 1) / static_cast<double>(count);
    if (progress && !progress(done) && i + 1 < count) {
      r.cancelled = true;
      return r;
    }
  }
  return r;
}

namespace detail {
template <class O, class T, std::size_t R>
void observe_one(O& obs, const tensor_view<T, R>& b) {
  obs.observe(tensor_view<const float, R>(b));
}
template <class O, class T, std::size_t R>
void observe_one(O& obs, const tensor<T, R>& b) {
  obs.observe(b.cview());
}
}  // namespace detail

// Feeds every batch of `batches` (a container of tensor_view<float or const float, R> or
// tensor<float, R>) to `obs` in order. obs needs only observe() (see observer.hpp), so
// qlib's observers, the compatibility presets and user observers all work.
template <class Observer, class Batches>
calibration_result calibrate(Observer& obs, const Batches& batches, const progress_callback& progress = {}) {
  const std::size_t n = static_cast<std::size_t>(std::distance(std::begin(batches), std::end(batches)));
  auto it = std::begin(batches);
  return run_calibration(
      n,
      [&](std::size_t) {
        detail::observe_one(obs, *it);
        ++it;
      },
      progress);
}

}  // namespace qlib
