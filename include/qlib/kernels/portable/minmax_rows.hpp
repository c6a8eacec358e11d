// Portable min/max fold row kernels for observers: xsimd at the build's baseline ISA.
#pragma once

#include <cmath>
#include <xsimd/xsimd.hpp>

#include "qlib/arch/isa.hpp"
#include "qlib/core/tensor_view.hpp"
#include "qlib/quant/observers/minmax_fold.hpp"

// Every min/max row kernel here and in kernels/<isa>/minmax_rows.hpp has one of two forms
// (the same run patterns as the affine row kernels):
//  - "grouped": n contiguous elements in groups of g; group k folds into mn[k], mx[k]
//    (per-tensor is one group of n);
//  - "per_element": element j folds into mn[j], mx[j];
//  - "columns": `rows` rows of n elements, row r at x + r * row_stride; element (r, j)
//    folds into mn[j], mx[j] (per_element over every row in turn, i.e. per-channel on
//    the last axis; the SIMD versions keep a block of columns in registers across rows).
// Each adds the values it skipped to `skipped` and gives exactly the state that
// qlib::fold_minmax applied element by element gives (quant/observers/minmax_fold.hpp).
namespace qlib {
namespace kernels {
namespace portable_minmax_detail {

using fbatch = xsimd::batch<float>;
constexpr index_t lanes = static_cast<index_t>(fbatch::size);

// Folds x[0, n) into (mn, mx). Whole batches of finite values take the vector path; a
// batch holding a NaN or an Inf is folded value by value.
inline void fold_run(const float* x, index_t n, float& mn, float& mx, nonfinite_counts& skipped) noexcept {
  fbatch vmn(INFINITY), vmx(-INFINITY);
  index_t j = 0;
  for (; j + lanes <= n; j += lanes) {
    const fbatch v = fbatch::load_unaligned(x + j);
    if (QLIB_LIKELY(xsimd::all(xsimd::isfinite(v)))) {
      vmn = xsimd::min(vmn, v);
      vmx = xsimd::max(vmx, v);
    } else {
      for (index_t l = 0; l < lanes; ++l) fold_minmax(x[j + l], mn, mx, skipped);
    }
  }
  for (; j < n; ++j) fold_minmax(x[j], mn, mx, skipped);
  alignas(64) float a[fbatch::size], b[fbatch::size];
  vmn.store_aligned(a);
  vmx.store_aligned(b);
  for (index_t l = 0; l < lanes; ++l) fold_minmax_pair(a[l], b[l], mn, mx);
}

}  // namespace portable_minmax_detail

inline void minmax_grouped(arch::portable, const float* x, index_t n, index_t g, float* mn, float* mx,
                           nonfinite_counts& skipped) noexcept {
  for (index_t k = 0, j = 0; j < n; ++k, j += g)
    portable_minmax_detail::fold_run(x + j, n - j < g ? n - j : g, mn[k], mx[k], skipped);
}

inline void minmax_per_element(arch::portable, const float* x, index_t n, float* mn, float* mx,
                               nonfinite_counts& skipped) noexcept {
  for (index_t j = 0; j < n; ++j) fold_minmax(x[j], mn[j], mx[j], skipped);
}

inline void minmax_columns(arch::portable, const float* x, index_t rows, index_t row_stride, index_t n, float* mn,
                           float* mx, nonfinite_counts& skipped) noexcept {
  for (index_t r = 0; r < rows; ++r) minmax_per_element(arch::portable{}, x + r * row_stride, n, mn, mx, skipped);
}

}  // namespace kernels
}  // namespace qlib
