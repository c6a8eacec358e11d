// AVX2 min/max fold row kernels for observers: 32 floats per step, |x| < Inf finite test, scalar tails.
#pragma once

#include "qlib/arch/target.hpp"
#include "qlib/kernels/portable/minmax_rows.hpp"

#if QLIB_HAS_X86_KERNELS
#include <immintrin.h>

QLIB_KERNEL_BEGIN

namespace qlib {
namespace kernels {
namespace avx2_minmax_detail {

// All-ones lanes where v is finite: |v| < Inf is false for NaN and +/-Inf.
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256 finite_lanes(__m256 v) {
  const __m256 abs = _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
  return _mm256_cmp_ps(abs, _mm256_set1_ps(INFINITY), _CMP_LT_OQ);
}

// Folds the 8 lanes of v into (mn, mx), skipping and counting non-finite lanes.
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE void fold_checked(__m256 v, __m256& mn, __m256& mx, nonfinite_counts& skipped) {
  const __m256 fin = finite_lanes(v);
  const int fin_bits = _mm256_movemask_ps(fin);
  if (QLIB_UNLIKELY(fin_bits != 0xff)) {
    const int nan_bits = _mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    skipped.nan += _mm_popcnt_u32(static_cast<unsigned>(nan_bits));
    skipped.inf += _mm_popcnt_u32(static_cast<unsigned>(~fin_bits & ~nan_bits & 0xff));
  }
  mn = _mm256_min_ps(mn, _mm256_blendv_ps(_mm256_set1_ps(INFINITY), v, fin));
  mx = _mm256_max_ps(mx, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), v, fin));
}

QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE float hmin(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  m = _mm_min_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

// Folds x[0, n) into (out_mn, out_mx): four vectors per step, tested for NaN/Inf together.
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE void fold_run(const float* x, index_t n, float& out_mn, float& out_mx,
                                                   nonfinite_counts& skipped) {
  __m256 mn0 = _mm256_set1_ps(INFINITY), mn1 = mn0, mn2 = mn0, mn3 = mn0;
  __m256 mx0 = _mm256_set1_ps(-INFINITY), mx1 = mx0, mx2 = mx0, mx3 = mx0;
  index_t j = 0;
  for (; j + 32 <= n; j += 32) {
    const __m256 a = _mm256_loadu_ps(x + j);
    const __m256 b = _mm256_loadu_ps(x + j + 8);
    const __m256 c = _mm256_loadu_ps(x + j + 16);
    const __m256 d = _mm256_loadu_ps(x + j + 24);
    const __m256 ok = _mm256_and_ps(_mm256_and_ps(finite_lanes(a), finite_lanes(b)),
                                    _mm256_and_ps(finite_lanes(c), finite_lanes(d)));
    if (QLIB_LIKELY(_mm256_movemask_ps(ok) == 0xff)) {
      mn0 = _mm256_min_ps(mn0, a);
      mx0 = _mm256_max_ps(mx0, a);
      mn1 = _mm256_min_ps(mn1, b);
      mx1 = _mm256_max_ps(mx1, b);
      mn2 = _mm256_min_ps(mn2, c);
      mx2 = _mm256_max_ps(mx2, c);
      mn3 = _mm256_min_ps(mn3, d);
      mx3 = _mm256_max_ps(mx3, d);
    } else {
      fold_checked(a, mn0, mx0, skipped);
      fold_checked(b, mn1, mx1, skipped);
      fold_checked(c, mn2, mx2, skipped);
      fold_checked(d, mn3, mx3, skipped);
    }
  }
  for (; j + 8 <= n; j += 8) fold_checked(_mm256_loadu_ps(x + j), mn0, mx0, skipped);
  float smn = INFINITY, smx = -INFINITY;
  for (; j < n; ++j) fold_minmax(x[j], smn, smx, skipped);
  mn0 = _mm256_min_ps(_mm256_min_ps(mn0, mn1), _mm256_min_ps(mn2, mn3));
  mx0 = _mm256_max_ps(_mm256_max_ps(mx0, mx1), _mm256_max_ps(mx2, mx3));
  fold_minmax_pair(hmin(mn0), hmax(mx0), out_mn, out_mx);
  fold_minmax_pair(smn, smx, out_mn, out_mx);
}

}  // namespace avx2_minmax_detail

QLIB_TARGET_AVX2 inline void minmax_grouped(arch::avx2, const float* x, index_t n, index_t g, float* mn, float* mx,
                                            nonfinite_counts& skipped) noexcept {
  for (index_t k = 0, j = 0; j < n; ++k, j += g)
    avx2_minmax_detail::fold_run(x + j, n - j < g ? n - j : g, mn[k], mx[k], skipped);
}

QLIB_TARGET_AVX2 inline void minmax_per_element(arch::avx2, const float* x, index_t n, float* mn, float* mx,
                                                nonfinite_counts& skipped) noexcept {
  index_t j = 0;
  const __m256 zero = _mm256_setzero_ps();
  for (; j + 8 <= n; j += 8) {
    __m256 v = _mm256_loadu_ps(x + j);
    const __m256 fin = avx2_minmax_detail::finite_lanes(v);
    const int fin_bits = _mm256_movemask_ps(fin);
    if (QLIB_UNLIKELY(fin_bits != 0xff)) {
      const int nan_bits = _mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
      skipped.nan += _mm_popcnt_u32(static_cast<unsigned>(nan_bits));
      skipped.inf += _mm_popcnt_u32(static_cast<unsigned>(~fin_bits & ~nan_bits & 0xff));
    }
    v = _mm256_add_ps(v, zero);  // -0 -> +0, as fold_minmax
    const __m256 cmn = _mm256_loadu_ps(mn + j), cmx = _mm256_loadu_ps(mx + j);
    // min(v, cur) = v < cur ? v : cur, exactly the scalar fold; skipped lanes keep cur.
    _mm256_storeu_ps(mn + j, _mm256_blendv_ps(cmn, _mm256_min_ps(v, cmn), fin));
    _mm256_storeu_ps(mx + j, _mm256_blendv_ps(cmx, _mm256_max_ps(v, cmx), fin));
  }
  for (; j < n; ++j) fold_minmax(x[j], mn[j], mx[j], skipped);
}

// Blocks of 8 rows x 32 columns, the column state kept in registers across the rows.
QLIB_TARGET_AVX2 inline void minmax_columns(arch::avx2, const float* x, index_t rows, index_t row_stride, index_t n,
                                            float* mn, float* mx, nonfinite_counts& skipped) noexcept {
  using namespace avx2_minmax_detail;
  const __m256 zero = _mm256_setzero_ps();
  constexpr index_t block_rows = 8;
  for (index_t r0 = 0; r0 < rows; r0 += block_rows) {
    const index_t rn = rows - r0 < block_rows ? rows - r0 : block_rows;
    const float* xb = x + r0 * row_stride;
    index_t j = 0;
    for (; j + 32 <= n; j += 32) {
      __m256 a0 = _mm256_loadu_ps(mn + j), a1 = _mm256_loadu_ps(mn + j + 8);
      __m256 a2 = _mm256_loadu_ps(mn + j + 16), a3 = _mm256_loadu_ps(mn + j + 24);
      __m256 b0 = _mm256_loadu_ps(mx + j), b1 = _mm256_loadu_ps(mx + j + 8);
      __m256 b2 = _mm256_loadu_ps(mx + j + 16), b3 = _mm256_loadu_ps(mx + j + 24);
      for (index_t r = 0; r < rn; ++r) {
        const float* p = xb + r * row_stride + j;
        const __m256 v0 = _mm256_loadu_ps(p), v1 = _mm256_loadu_ps(p + 8);
        const __m256 v2 = _mm256_loadu_ps(p + 16), v3 = _mm256_loadu_ps(p + 24);
        const __m256 ok = _mm256_and_ps(_mm256_and_ps(finite_lanes(v0), finite_lanes(v1)),
                                        _mm256_and_ps(finite_lanes(v2), finite_lanes(v3)));
        if (QLIB_LIKELY(_mm256_movemask_ps(ok) == 0xff)) {
          a0 = _mm256_min_ps(v0, a0), b0 = _mm256_max_ps(v0, b0);
          a1 = _mm256_min_ps(v1, a1), b1 = _mm256_max_ps(v1, b1);
          a2 = _mm256_min_ps(v2, a2), b2 = _mm256_max_ps(v2, b2);
          a3 = _mm256_min_ps(v3, a3), b3 = _mm256_max_ps(v3, b3);
        } else {
          fold_checked(v0, a0, b0, skipped);
          fold_checked(v1, a1, b1, skipped);
          fold_checked(v2, a2, b2, skipped);
          fold_checked(v3, a3, b3, skipped);
        }
      }
      _mm256_storeu_ps(mn + j, _mm256_add_ps(a0, zero)), _mm256_storeu_ps(mn + j + 8, _mm256_add_ps(a1, zero));
      _mm256_storeu_ps(mn + j + 16, _mm256_add_ps(a2, zero)), _mm256_storeu_ps(mn + j + 24, _mm256_add_ps(a3, zero));
      _mm256_storeu_ps(mx + j, _mm256_add_ps(b0, zero)), _mm256_storeu_ps(mx + j + 8, _mm256_add_ps(b1, zero));
      _mm256_storeu_ps(mx + j + 16, _mm256_add_ps(b2, zero)), _mm256_storeu_ps(mx + j + 24, _mm256_add_ps(b3, zero));
    }
    if (j < n)
      for (index_t r = 0; r < rn; ++r) minmax_per_element(arch::avx2{}, xb + r * row_stride + j, n - j, mn + j, mx + j, skipped);
  }
}

}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_X86_KERNELS
