// Per-parameter min/max fold of a tensor, vectorized and dispatched to the active ISA.
#pragma once

#include "qlib/arch/isa.hpp"
#include "qlib/kernels/avx2/minmax_rows.hpp"
#include "qlib/kernels/avx512/minmax_rows.hpp"
#include "qlib/kernels/portable/minmax_rows.hpp"
#include "qlib/quant/observers/minmax_fold.hpp"
#include "qlib/quant/observers/param_rows.hpp"

namespace qlib {
namespace detail {

// reference::fold_minmax_by_group, bit for bit, on the row kernels of ISA i. Rows whose
// last axis is not unit-stride use the scalar fold.
template <std::size_t R>
nonfinite_counts fold_minmax_by_group(isa i, tensor_view<const float, R> x, const granularity& g, float* mn,
                                      float* mx) {
  nonfinite_counts skipped;
  if (x.empty()) return skipped;
  // Per-channel on the last axis of a dense tensor (channels-last activations): every row
  // folds into the same per-column state, so the column kernels keep it in registers.
  if (R >= 2 && g.type == granularity::kind::per_channel && g.axis == R - 1 && x.is_contiguous()) {
    const index_t n = x.shape(R - 1), rows = x.size() / n;
    dispatch_isa(i, [&](auto tag) { kernels::minmax_columns(tag, x.data(), rows, n, n, mn, mx, skipped); });
    return skipped;
  }
  dispatch_isa(i, [&](auto tag) {
    for_each_param_row(x, g, [&](const float* row, index_t xs, index_t n, const row_params& rp) {
      if (n == 1 || xs == 1) {
        if (rp.per_element) kernels::minmax_per_element(tag, row, n, mn + rp.offset, mx + rp.offset, skipped);
        else kernels::minmax_grouped(tag, row, n, rp.group, mn + rp.offset, mx + rp.offset, skipped);
        return;
      }
      for (index_t j = 0; j < n; ++j) {
        const index_t k = rp.at(j);
        fold_minmax(row[j * xs], mn[k], mx[k], skipped);
      }
    });
  });
  return skipped;
}

}  // namespace detail
}  // namespace qlib
