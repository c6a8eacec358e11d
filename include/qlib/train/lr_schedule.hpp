// Learning-rate schedules: cosine annealing (PyTorch's CosineAnnealingLR closed form) with an optional linear warm-up.
#pragma once

#include <cmath>

#include "qlib/core/tensor_view.hpp"

namespace qlib {
namespace train {

// lr at `step` of `total_steps`: a linear ramp from base_lr / warmup_steps to base_lr
// over the first warmup_steps, then min_lr + (base_lr - min_lr) (1 + cos(pi s / S)) / 2
// with s the steps since warm-up and S the remaining steps; min_lr from total_steps on.
struct cosine_schedule {
  float base_lr = 1e-3f;
  index_t total_steps = 1;
  float min_lr = 0.0f;
  index_t warmup_steps = 0;

  float operator()(index_t step) const {
    QLIB_CHECK(total_steps > 0 && warmup_steps >= 0 && warmup_steps < total_steps && std::isfinite(base_lr) &&
                   std::isfinite(min_lr),
               errc::invalid_argument,
               "train::cosine_schedule: needs total_steps > warmup_steps >= 0 and finite rates");
    if (step < 0) step = 0;
    if (step < warmup_steps) return base_lr * static_cast<float>(step + 1) / static_cast<float>(warmup_steps);
    if (step >= total_steps) return min_lr;
    const double t = static_cast<double>(step - warmup_steps) / static_cast<double>(total_steps - warmup_steps);
    const double pi = 3.14159265358979323846;
    return static_cast<float>(min_lr + (static_cast<double>(base_lr) - min_lr) * 0.5 * (1.0 + std::cos(pi * t)));
  }
};

}  // namespace train
}  // namespace qlib
