// AVX-512 codebook (quantile) row kernels: vpermps table lookups for codebooks of up to 16 levels.
#pragma once

#include <cmath>

#include "qlib/arch/target.hpp"
#include "qlib/kernels/avx512/lane_mask.hpp"
#include "qlib/kernels/portable/codebook_rows.hpp"

#if QLIB_HAS_X86_KERNELS
#include <immintrin.h>

QLIB_KERNEL_BEGIN

namespace qlib {
namespace kernels {
namespace avx512_codebook_detail {

using avx512_detail::tail_mask;

// The L - 1 thresholds padded with +Inf to 16 lanes (y > +Inf is never true, so the
// padding is never counted).
// (Masked loads straight from the codebook: no store-to-load round trip per group.)
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512 threshold_table(const float* t, int L) {
  return _mm512_mask_loadu_ps(_mm512_set1_ps(INFINITY), static_cast<__mmask16>((1u << (L - 1)) - 1), t);
}
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512 level_table(const float* levels, int L) {
  return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << L) - 1), levels);
}

// codebook_index on 16 lanes: a branchless binary search, one vpermps probe per level bit.
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512i index16(__m512 x, __m512 inv, __m512 tab, int L) {
  __m512 y = _mm512_mul_ps(x, inv);
  y = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y, y, _CMP_ORD_Q), y);  // NaN -> 0
  __m512i idx = _mm512_setzero_si512();
  for (int step = L / 2; step >= 1; step /= 2) {
    const __m512i probe = _mm512_add_epi32(idx, _mm512_set1_epi32(step - 1));
    const __mmask16 gt = _mm512_cmp_ps_mask(y, _mm512_permutexvar_ps(probe, tab), _CMP_GT_OQ);
    idx = _mm512_mask_add_epi32(idx, gt, idx, _mm512_set1_epi32(step));
  }
  return idx;
}

// codebook_value on 16 lanes of indices (bits above the codebook's masked off).
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512 value16(__m512i idx, __m512i mask, __m512 tab, __m512 scale) {
  return _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_and_si512(idx, mask), tab), scale);
}

// 16 packed nibbles (8 bytes, low nibble first) as 16 dword lanes: each byte widened to a
// qword, then OR-ed with itself shifted left by 28, puts the low nibble in the low dword's
// bits 0-3 and the high nibble in the high dword's bits 0-3 (higher bits are masked off).
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512i nibbles16(__m128i bytes8) {
  const __m512i v = _mm512_cvtepu8_epi64(bytes8);
  return _mm512_or_si512(v, _mm512_slli_epi64(v, 28));
}

}  // namespace avx512_codebook_detail

QLIB_TARGET_AVX512 inline void codebook_quantize_run(arch::avx512, const float* x, std::uint8_t* q, index_t n,
                                                     float inv_scale, const float* t, int L) noexcept {
  using namespace avx512_codebook_detail;
  if (L > 16) return codebook_quantize_run(arch::portable{}, x, q, n, inv_scale, t, L);
  const __m512 tab = threshold_table(t, L), inv = _mm512_set1_ps(inv_scale);
  index_t j = 0;
  for (; j + 32 <= n; j += 32) {
    const __m512i a = index16(_mm512_loadu_ps(x + j), inv, tab, L);
    const __m512i b = index16(_mm512_loadu_ps(x + j + 16), inv, tab, L);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + j), _mm512_cvtepi32_epi8(a));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + j + 16), _mm512_cvtepi32_epi8(b));
  }
  for (; j < n; j += 16) {
    const __mmask16 m = tail_mask(n - j);
    _mm512_mask_cvtepi32_storeu_epi8(q + j, m, index16(_mm512_maskz_loadu_ps(m, x + j), inv, tab, L));
  }
}

QLIB_TARGET_AVX512 inline void codebook_dequantize_run(arch::avx512, const std::uint8_t* q, float* x, index_t n,
                                                       float scale, const float* levels, int L) noexcept {
  using namespace avx512_codebook_detail;
  if (L > 16) return codebook_dequantize_run(arch::portable{}, q, x, n, scale, levels, L);
  const __m512 tab = level_table(levels, L), s = _mm512_set1_ps(scale);
  const __m512i mask = _mm512_set1_epi32(L - 1);
  index_t j = 0;
  for (; j + 64 <= n; j += 64) {
    const __m512i bytes = _mm512_loadu_si512(q + j);
    const __m512 a = value16(_mm512_cvtepu8_epi32(_mm512_castsi512_si128(bytes)), mask, tab, s);
    const __m512 b = value16(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(bytes, 1)), mask, tab, s);
    const __m512 c = value16(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(bytes, 2)), mask, tab, s);
    const __m512 d = value16(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(bytes, 3)), mask, tab, s);
    _mm512_storeu_ps(x + j, a);
    _mm512_storeu_ps(x + j + 16, b);
    _mm512_storeu_ps(x + j + 32, c);
    _mm512_storeu_ps(x + j + 48, d);
  }
  for (; j < n; j += 16) {
    const __mmask16 m = tail_mask(n - j);
    const __m512i idx = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, q + j));
    _mm512_mask_storeu_ps(x + j, m, value16(idx, mask, tab, s));
  }
}

QLIB_TARGET_AVX512 inline void codebook_dequantize_run_u4(arch::avx512, const std::uint8_t* packed, float* x,
                                                          index_t n, float scale, const float* levels,
                                                          int L) noexcept {
  using namespace avx512_codebook_detail;
  if (L > 16) return codebook_dequantize_run_u4(arch::portable{}, packed, x, n, scale, levels, L);
  const __m512 tab = level_table(levels, L), s = _mm512_set1_ps(scale);
  const __m512i mask = _mm512_set1_epi32(L - 1);
  index_t j = 0;
  for (; j + 64 <= n; j += 64) {  // 32 bytes -> 64 floats
    const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(packed + j / 2));
    const __m128i lo = _mm256_castsi256_si128(bytes), hi = _mm256_extracti128_si256(bytes, 1);
    _mm512_storeu_ps(x + j, value16(nibbles16(lo), mask, tab, s));
    _mm512_storeu_ps(x + j + 16, value16(nibbles16(_mm_unpackhi_epi64(lo, lo)), mask, tab, s));
    _mm512_storeu_ps(x + j + 32, value16(nibbles16(hi), mask, tab, s));
    _mm512_storeu_ps(x + j + 48, value16(nibbles16(_mm_unpackhi_epi64(hi, hi)), mask, tab, s));
  }
  for (; j < n; j += 16) {
    const index_t left = n - j;
    const index_t nbytes = left >= 16 ? 8 : (left + 1) / 2;
    const __m128i bytes = _mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << nbytes) - 1), packed + j / 2);
    _mm512_mask_storeu_ps(x + j, tail_mask(left), value16(nibbles16(bytes), mask, tab, s));
  }
}

}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_X86_KERNELS
