// The normative scalar min/max fold of calibration data: non-finite values skipped and counted.
#pragma once

#include <cmath>

#include "qlib/core/tensor_view.hpp"

namespace qlib {

// How many values a fold skipped because they were not finite.
struct nonfinite_counts {
  index_t nan = 0;  // NaN (quiet or signalling)
  index_t inf = 0;  // +Inf or -Inf

  index_t total() const noexcept { return nan + inf; }
  nonfinite_counts& operator+=(const nonfinite_counts& o) noexcept {
    nan += o.nan;
    inf += o.inf;
    return *this;
  }
};

// Folds one value into a running (mn, mx), the definition every vectorized path matches
// bit for bit:
//  - NaN and +/-Inf are skipped and counted: calibration data with a stray NaN or an
//    overflowed activation never poisons a range (qlib's one policy for observers);
//  - -0.0 is folded as +0.0, so the result does not depend on the order of a reduction
//    (min(-0, +0) would otherwise depend on which came first);
//  - mn = v < mn ? v : mn and mx = v > mx ? v : mx (what vminps/vmaxps compute).
// An empty fold leaves (mn, mx) = (+Inf, -Inf).
inline void fold_minmax(float v, float& mn, float& mx, nonfinite_counts& skipped) noexcept {
  if (std::isnan(v)) {
    ++skipped.nan;
    return;
  }
  if (std::isinf(v)) {
    ++skipped.inf;
    return;
  }
  v = v + 0.0f;  // -0 -> +0, every other value unchanged
  mn = v < mn ? v : mn;
  mx = v > mx ? v : mx;
}

// Folds an already reduced (min, max) pair of finite values (or +Inf/-Inf for "none").
inline void fold_minmax_pair(float lo, float hi, float& mn, float& mx) noexcept {
  lo = lo + 0.0f;
  hi = hi + 0.0f;
  mn = lo < mn ? lo : mn;
  mx = hi > mx ? hi : mx;
}

}  // namespace qlib
