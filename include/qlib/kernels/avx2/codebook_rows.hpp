// AVX2 codebook (quantile) row kernels: two-register vpermps table lookups for up to 16 levels.
#pragma once

#include <cmath>
#include <cstring>

#include "qlib/arch/target.hpp"
#include "qlib/kernels/portable/codebook_rows.hpp"

#if QLIB_HAS_X86_KERNELS
#include <immintrin.h>

QLIB_KERNEL_BEGIN

namespace qlib {
namespace kernels {
namespace avx2_codebook_detail {

// A 16-entry table as two 8-lane halves.
struct table16 {
  __m256 lo, hi;
};
// The first `count` (<= 16) values of v, then `pad`: masked loads, no store round trip.
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE table16 make_table(const float* v, int count, float pad) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i lo_mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(count), lane);
  const __m256i hi_mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(count - 8), lane);
  const __m256 p = _mm256_set1_ps(pad);
  return {_mm256_blendv_ps(p, _mm256_maskload_ps(v, lo_mask), _mm256_castsi256_ps(lo_mask)),
          _mm256_blendv_ps(p, _mm256_maskload_ps(v + 8, hi_mask), _mm256_castsi256_ps(hi_mask))};
}
// tab[idx] for idx in [0, 16): vpermps on both halves, blended on bit 3.
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256 lookup(const table16& tab, __m256i idx) {
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(tab.lo, idx), _mm256_permutevar8x32_ps(tab.hi, idx),
                          _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

// codebook_index on 8 lanes (binary search, padding thresholds are +Inf).
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256i index8(__m256 x, __m256 inv, const table16& tab, int L) {
  __m256 y = _mm256_mul_ps(x, inv);
  y = _mm256_and_ps(y, _mm256_cmp_ps(y, y, _CMP_ORD_Q));  // NaN -> 0
  __m256i idx = _mm256_setzero_si256();
  for (int step = L / 2; step >= 1; step /= 2) {
    const __m256i probe = _mm256_add_epi32(idx, _mm256_set1_epi32(step - 1));
    const __m256 gt = _mm256_cmp_ps(y, lookup(tab, probe), _CMP_GT_OQ);
    idx = _mm256_add_epi32(idx, _mm256_and_si256(_mm256_castps_si256(gt), _mm256_set1_epi32(step)));
  }
  return idx;
}

QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE void store8(std::uint8_t* q, __m256i idx) {
  const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(idx), _mm256_extracti128_si256(idx, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(q), _mm_packus_epi16(w, w));
}

QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256 value8(__m256i idx, __m256i mask, const table16& tab, __m256 scale) {
  return _mm256_mul_ps(lookup(tab, _mm256_and_si256(idx, mask)), scale);
}

}  // namespace avx2_codebook_detail

QLIB_TARGET_AVX2 inline void codebook_quantize_run(arch::avx2, const float* x, std::uint8_t* q, index_t n,
                                                   float inv_scale, const float* t, int L) noexcept {
  using namespace avx2_codebook_detail;
  if (L > 16) return codebook_quantize_run(arch::portable{}, x, q, n, inv_scale, t, L);
  const table16 tab = make_table(t, L - 1, INFINITY);
  const __m256 inv = _mm256_set1_ps(inv_scale);
  index_t j = 0;
  for (; j + 8 <= n; j += 8) store8(q + j, index8(_mm256_loadu_ps(x + j), inv, tab, L));
  for (; j < n; ++j) q[j] = codebook_index(x[j], inv_scale, t, L);
}

QLIB_TARGET_AVX2 inline void codebook_dequantize_run(arch::avx2, const std::uint8_t* q, float* x, index_t n,
                                                     float scale, const float* levels, int L) noexcept {
  using namespace avx2_codebook_detail;
  if (L > 16) return codebook_dequantize_run(arch::portable{}, q, x, n, scale, levels, L);
  const table16 tab = make_table(levels, L, 0.0f);
  const __m256 s = _mm256_set1_ps(scale);
  const __m256i mask = _mm256_set1_epi32(L - 1);
  index_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + j));
    _mm256_storeu_ps(x + j, value8(_mm256_cvtepu8_epi32(bytes), mask, tab, s));
    _mm256_storeu_ps(x + j + 8, value8(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(bytes, bytes)), mask, tab, s));
  }
  for (; j < n; ++j) x[j] = codebook_value(q[j], scale, levels, L);
}

QLIB_TARGET_AVX2 inline void codebook_dequantize_run_u4(arch::avx2, const std::uint8_t* packed, float* x, index_t n,
                                                        float scale, const float* levels, int L) noexcept {
  using namespace avx2_codebook_detail;
  if (L > 16) return codebook_dequantize_run_u4(arch::portable{}, packed, x, n, scale, levels, L);
  const table16 tab = make_table(levels, L, 0.0f);
  const __m256 s = _mm256_set1_ps(scale);
  const __m256i mask = _mm256_set1_epi32(L - 1);
  index_t j = 0;
  for (; j + 8 <= n; j += 8) {  // 4 bytes -> 8 nibbles, each byte widened to a qword
    std::int32_t four;
    std::memcpy(&four, packed + j / 2, 4);
    const __m256i v = _mm256_cvtepu8_epi64(_mm_cvtsi32_si128(four));
    _mm256_storeu_ps(x + j, value8(_mm256_or_si256(v, _mm256_slli_epi64(v, 28)), mask, tab, s));
  }
  for (; j < n; ++j) x[j] = codebook_value((packed[j / 2] >> (4 * (j & 1))) & 0xfu, scale, levels, L);
}

}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_X86_KERNELS
