// AVX-512 min/max fold row kernels for observers: 64 floats per step, fpclass finite test, masked tails.
#pragma once

#include "qlib/arch/target.hpp"
#include "qlib/kernels/avx512/lane_mask.hpp"
#include "qlib/kernels/portable/minmax_rows.hpp"

#if QLIB_HAS_X86_KERNELS
#include <immintrin.h>

QLIB_KERNEL_BEGIN

namespace qlib {
namespace kernels {
namespace avx512_minmax_detail {

// vfpclassps categories: QNaN 0x01, SNaN 0x80, +Inf 0x08, -Inf 0x10.
constexpr int nan_class = 0x81;
constexpr int inf_class = 0x18;
constexpr int nonfinite_class = nan_class | inf_class;

using avx512_detail::tail_mask;

// Folds the lanes `m` of v into (mn, mx), skipping and counting non-finite lanes.
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE void fold_masked(__m512 v, __mmask16 m, __m512& mn, __m512& mx,
                                                        nonfinite_counts& skipped) {
  const __mmask16 nan = _mm512_fpclass_ps_mask(v, nan_class) & m;
  const __mmask16 inf = _mm512_fpclass_ps_mask(v, inf_class) & m;
  if (QLIB_UNLIKELY((nan | inf) != 0)) {
    skipped.nan += _mm_popcnt_u32(nan);
    skipped.inf += _mm_popcnt_u32(inf);
    m = static_cast<__mmask16>(m & ~(nan | inf));
  }
  mn = _mm512_mask_min_ps(mn, m, mn, v);
  mx = _mm512_mask_max_ps(mx, m, mx, v);
}

// Folds x[0, n) into (out_mn, out_mx). The hot loop tests four vectors for NaN/Inf at once
// and only then takes the masked path, so clean data costs one min and one max per vector.
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE void fold_run(const float* x, index_t n, float& out_mn, float& out_mx,
                                                     nonfinite_counts& skipped) {
  __m512 mn0 = _mm512_set1_ps(INFINITY), mn1 = mn0, mn2 = mn0, mn3 = mn0;
  __m512 mx0 = _mm512_set1_ps(-INFINITY), mx1 = mx0, mx2 = mx0, mx3 = mx0;
  index_t j = 0;
  for (; j + 64 <= n; j += 64) {
    const __m512 a = _mm512_loadu_ps(x + j);
    const __m512 b = _mm512_loadu_ps(x + j + 16);
    const __m512 c = _mm512_loadu_ps(x + j + 32);
    const __m512 d = _mm512_loadu_ps(x + j + 48);
    const __mmask16 bad = static_cast<__mmask16>(
        _mm512_fpclass_ps_mask(a, nonfinite_class) | _mm512_fpclass_ps_mask(b, nonfinite_class) |
        _mm512_fpclass_ps_mask(c, nonfinite_class) | _mm512_fpclass_ps_mask(d, nonfinite_class));
    if (QLIB_LIKELY(bad == 0)) {
      mn0 = _mm512_min_ps(mn0, a);
      mx0 = _mm512_max_ps(mx0, a);
      mn1 = _mm512_min_ps(mn1, b);
      mx1 = _mm512_max_ps(mx1, b);
      mn2 = _mm512_min_ps(mn2, c);
      mx2 = _mm512_max_ps(mx2, c);
      mn3 = _mm512_min_ps(mn3, d);
      mx3 = _mm512_max_ps(mx3, d);
    } else {
      fold_masked(a, 0xffff, mn0, mx0, skipped);
      fold_masked(b, 0xffff, mn1, mx1, skipped);
      fold_masked(c, 0xffff, mn2, mx2, skipped);
      fold_masked(d, 0xffff, mn3, mx3, skipped);
    }
  }
  for (; j < n; j += 16) {
    const __mmask16 m = tail_mask(n - j);
    fold_masked(_mm512_maskz_loadu_ps(m, x + j), m, mn0, mx0, skipped);
  }
  mn0 = _mm512_min_ps(_mm512_min_ps(mn0, mn1), _mm512_min_ps(mn2, mn3));
  mx0 = _mm512_max_ps(_mm512_max_ps(mx0, mx1), _mm512_max_ps(mx2, mx3));
  // Only the sign of a zero can depend on the reduction order; fold_minmax_pair folds it.
  fold_minmax_pair(_mm512_reduce_min_ps(mn0), _mm512_reduce_max_ps(mx0), out_mn, out_mx);
}

}  // namespace avx512_minmax_detail

QLIB_TARGET_AVX512 inline void minmax_grouped(arch::avx512, const float* x, index_t n, index_t g, float* mn,
                                              float* mx, nonfinite_counts& skipped) noexcept {
  using namespace avx512_minmax_detail;
  index_t k = 0, j = 0;
  if (g % 16 == 0 && g <= 64) {
    // Small groups (per-group weights, g = 16..64): whole vectors, two accumulators and
    // one horizontal reduction per group; a group holding NaN/Inf takes the full fold.
    for (; j + g <= n; ++k, j += g) {
      __m512 a = _mm512_loadu_ps(x + j), b = a;
      __mmask16 bad = _mm512_fpclass_ps_mask(a, nonfinite_class);
      for (index_t i = 16; i < g; i += 16) {
        const __m512 v = _mm512_loadu_ps(x + j + i);
        bad = static_cast<__mmask16>(bad | _mm512_fpclass_ps_mask(v, nonfinite_class));
        a = _mm512_min_ps(a, v);
        b = _mm512_max_ps(b, v);
      }
      if (QLIB_LIKELY(bad == 0)) fold_minmax_pair(_mm512_reduce_min_ps(a), _mm512_reduce_max_ps(b), mn[k], mx[k]);
      else fold_run(x + j, g, mn[k], mx[k], skipped);
    }
  }
  for (; j < n; ++k, j += g) fold_run(x + j, n - j < g ? n - j : g, mn[k], mx[k], skipped);
}

QLIB_TARGET_AVX512 inline void minmax_per_element(arch::avx512, const float* x, index_t n, float* mn, float* mx,
                                                  nonfinite_counts& skipped) noexcept {
  using namespace avx512_minmax_detail;
  const __m512 zero = _mm512_setzero_ps();
  for (index_t j = 0; j < n; j += 16) {
    __mmask16 m = tail_mask(n - j);
    __m512 v = _mm512_maskz_loadu_ps(m, x + j);
    const __mmask16 nan = _mm512_fpclass_ps_mask(v, nan_class) & m;
    const __mmask16 inf = _mm512_fpclass_ps_mask(v, inf_class) & m;
    skipped.nan += _mm_popcnt_u32(nan);
    skipped.inf += _mm_popcnt_u32(inf);
    const __mmask16 fin = static_cast<__mmask16>(m & ~(nan | inf));
    v = _mm512_add_ps(v, zero);  // -0 -> +0, as fold_minmax
    // min(v, cur) = v < cur ? v : cur, exactly the scalar fold.
    const __m512 cmn = _mm512_maskz_loadu_ps(m, mn + j), cmx = _mm512_maskz_loadu_ps(m, mx + j);
    _mm512_mask_storeu_ps(mn + j, fin, _mm512_min_ps(v, cmn));
    _mm512_mask_storeu_ps(mx + j, fin, _mm512_max_ps(v, cmx));
  }
}

// Blocks of 8 rows x 64 columns: the running min/max of 64 columns stay in registers
// while 8 rows stream past, so the state is loaded and stored once per 8 rows.
QLIB_TARGET_AVX512 inline void minmax_columns(arch::avx512, const float* x, index_t rows, index_t row_stride, index_t n,
                                              float* mn, float* mx, nonfinite_counts& skipped) noexcept {
  using namespace avx512_minmax_detail;
  const __m512 zero = _mm512_setzero_ps();
  constexpr index_t block_rows = 8;
  for (index_t r0 = 0; r0 < rows; r0 += block_rows) {
    const index_t rn = rows - r0 < block_rows ? rows - r0 : block_rows;
    const float* xb = x + r0 * row_stride;
    index_t j = 0;
    for (; j + 64 <= n; j += 64) {
      __m512 a0 = _mm512_loadu_ps(mn + j), a1 = _mm512_loadu_ps(mn + j + 16);
      __m512 a2 = _mm512_loadu_ps(mn + j + 32), a3 = _mm512_loadu_ps(mn + j + 48);
      __m512 b0 = _mm512_loadu_ps(mx + j), b1 = _mm512_loadu_ps(mx + j + 16);
      __m512 b2 = _mm512_loadu_ps(mx + j + 32), b3 = _mm512_loadu_ps(mx + j + 48);
      for (index_t r = 0; r < rn; ++r) {
        const float* p = xb + r * row_stride + j;
        const __m512 v0 = _mm512_loadu_ps(p), v1 = _mm512_loadu_ps(p + 16);
        const __m512 v2 = _mm512_loadu_ps(p + 32), v3 = _mm512_loadu_ps(p + 48);
        const __mmask16 bad = static_cast<__mmask16>(
            _mm512_fpclass_ps_mask(v0, nonfinite_class) | _mm512_fpclass_ps_mask(v1, nonfinite_class) |
            _mm512_fpclass_ps_mask(v2, nonfinite_class) | _mm512_fpclass_ps_mask(v3, nonfinite_class));
        if (QLIB_LIKELY(bad == 0)) {
          // min(v, acc) = v < acc ? v : acc, the scalar fold's order of operands.
          a0 = _mm512_min_ps(v0, a0), b0 = _mm512_max_ps(v0, b0);
          a1 = _mm512_min_ps(v1, a1), b1 = _mm512_max_ps(v1, b1);
          a2 = _mm512_min_ps(v2, a2), b2 = _mm512_max_ps(v2, b2);
          a3 = _mm512_min_ps(v3, a3), b3 = _mm512_max_ps(v3, b3);
        } else {
          fold_masked(v0, 0xffff, a0, b0, skipped);
          fold_masked(v1, 0xffff, a1, b1, skipped);
          fold_masked(v2, 0xffff, a2, b2, skipped);
          fold_masked(v3, 0xffff, a3, b3, skipped);
        }
      }
      // Only zero signs can differ from the scalar fold; adding +0 folds them to +0.
      _mm512_storeu_ps(mn + j, _mm512_add_ps(a0, zero)), _mm512_storeu_ps(mn + j + 16, _mm512_add_ps(a1, zero));
      _mm512_storeu_ps(mn + j + 32, _mm512_add_ps(a2, zero)), _mm512_storeu_ps(mn + j + 48, _mm512_add_ps(a3, zero));
      _mm512_storeu_ps(mx + j, _mm512_add_ps(b0, zero)), _mm512_storeu_ps(mx + j + 16, _mm512_add_ps(b1, zero));
      _mm512_storeu_ps(mx + j + 32, _mm512_add_ps(b2, zero)), _mm512_storeu_ps(mx + j + 48, _mm512_add_ps(b3, zero));
    }
    for (; j < n; j += 16) {
      const __mmask16 m = tail_mask(n - j);
      __m512 a = _mm512_maskz_loadu_ps(m, mn + j), b = _mm512_maskz_loadu_ps(m, mx + j);
      for (index_t r = 0; r < rn; ++r) fold_masked(_mm512_maskz_loadu_ps(m, xb + r * row_stride + j), m, a, b, skipped);
      _mm512_mask_storeu_ps(mn + j, m, _mm512_add_ps(a, zero));
      _mm512_mask_storeu_ps(mx + j, m, _mm512_add_ps(b, zero));
    }
  }
}

}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_X86_KERNELS
