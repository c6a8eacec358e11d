// Zhu & Gupta's gradual pruning schedule: the sparsity to reach at each training step.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "qlib/core/error.hpp"
#include "qlib/core/tensor_view.hpp"

namespace qlib {
namespace prune {

// "To prune, or not to prune" (Zhu & Gupta 2017): from step t0 the sparsity rises from
// s_i to s_f over n pruning steps spaced dt apart,
//   s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3   for t in [t0, t0 + n * dt],
// evaluated at the latest pruning step t0 + k * dt <= t (masks change only then); s_i
// before t0, s_f after t0 + n * dt. Fast at first, slow near the end.
struct gradual_schedule {
  double initial_sparsity = 0.0;  // s_i
  double final_sparsity = 0.0;    // s_f
  index_t begin_step = 0;         // t0
  index_t pruning_steps = 1;      // n
  index_t frequency = 1;          // dt

  gradual_schedule() = default;
  gradual_schedule(double s_i, double s_f, index_t t0, index_t n, index_t dt)
      : initial_sparsity(s_i), final_sparsity(s_f), begin_step(t0), pruning_steps(n), frequency(dt) {
    validate();
  }

  // 0 <= s_i <= s_f <= 1 (masks only grow), t0 >= 0, n >= 1, dt >= 1, and t0 + n * dt fits.
  void validate() const {
    QLIB_CHECK(initial_sparsity >= 0.0 && initial_sparsity <= final_sparsity && final_sparsity <= 1.0,
               errc::invalid_argument,
               "prune::gradual_schedule: needs 0 <= initial <= final <= 1, got " + std::to_string(initial_sparsity) +
                   " -> " + std::to_string(final_sparsity));
    QLIB_CHECK(begin_step >= 0 && pruning_steps >= 1 && frequency >= 1, errc::invalid_argument,
               "prune::gradual_schedule: needs begin_step >= 0, pruning_steps >= 1 and frequency >= 1");
    QLIB_CHECK(pruning_steps <= (PTRDIFF_MAX - begin_step) / frequency, errc::overflow,
               "prune::gradual_schedule: begin_step + pruning_steps * frequency overflows");
  }

  index_t end_step() const noexcept { return begin_step + pruning_steps * frequency; }

  // True at t0, t0 + dt, ..., t0 + n * dt: the steps where the mask is recomputed.
  bool is_pruning_step(index_t t) const noexcept {
    return t >= begin_step && t <= end_step() && (t - begin_step) % frequency == 0;
  }

  // The target sparsity at step t (any t; see above).
  double sparsity_at(index_t t) const {
    validate();
    if (t < begin_step) return initial_sparsity;
    if (t >= end_step()) return final_sparsity;
    const index_t k = (t - begin_step) / frequency;  // pruning steps done
    const double r = 1.0 - static_cast<double>(k) / static_cast<double>(pruning_steps);
    const double s = final_sparsity + (initial_sparsity - final_sparsity) * r * r * r;
    return s < initial_sparsity ? initial_sparsity : (s > final_sparsity ? final_sparsity : s);
  }
};

}  // namespace prune
}  // namespace qlib
