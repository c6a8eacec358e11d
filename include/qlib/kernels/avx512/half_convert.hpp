// AVX-512 fp16/bf16 <-> float bulk conversion kernels (16 lanes, masked tails).
#pragma once

#include <cstdint>

#include "qlib/arch/target.hpp"
#include "qlib/kernels/avx512/lane_mask.hpp"
#include "qlib/kernels/avx2/half_convert.hpp"

#if QLIB_HAS_X86_KERNELS
#include <immintrin.h>

QLIB_KERNEL_BEGIN  // see arch/target.hpp: g++ 12.2 false -Wmaybe-uninitialized (PR105593)

namespace qlib {
namespace kernels {
namespace avx512_detail {


// Elements (0..15, at most n) to handle before p is 64-byte aligned.
inline index_t head_count(const float* p, index_t n) noexcept {
  const index_t head = static_cast<index_t>((64 - (reinterpret_cast<std::uintptr_t>(p) & 63)) & 63) / 4;
  return head < n ? head : n;
}

// 16 floats (as bits) -> 16 bf16 in the high halves of the lanes. Round to nearest even
// by integer addition, NaN lanes quieted instead. This deliberately avoids AVX512_BF16
// vcvtneps2bf16, which flushes subnormal inputs and outputs to zero.
QLIB_TARGET_AVX512 inline __m512i bf16_round_hi(__m512i u) noexcept {
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb);
  const __mmask16 nan = _mm512_cmpgt_epi32_mask(
      _mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF)), _mm512_set1_epi32(0x7F800000));
  return _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x00400000));
}

// The odd 16-bit words of a (indices 1, 3, .. 31) then of b (33, .. 63): the high halves.
QLIB_TARGET_AVX512 inline __m512i odd_words_index() noexcept {
  return _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33,  //
                          31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
}

}  // namespace avx512_detail

// Each kernel first runs one masked step so that the float stream (the larger one) is
// 64-byte aligned, then whole 32-element steps, then masked 16-element steps: a 64-byte
// access that splits two cache lines costs about as much as the conversion itself.

// zmm vcvtps2ph with an explicit round-to-nearest-even immediate (MXCSR.RC unused).
QLIB_TARGET_AVX512 inline void convert_f32_to_f16(arch::avx512, const float* src, fp16* dst,
                                                  index_t n) noexcept {
  const auto step = [](const float* s, fp16* d, __mmask16 m) QLIB_TARGET_AVX512 {
    const __m256i h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, s), _MM_FROUND_TO_NEAREST_INT);
    _mm256_mask_storeu_epi16(d, m, h);
  };
  index_t i = avx512_detail::head_count(src, n);
  if (i > 0) step(src, dst, avx512_detail::tail_mask(i));
  for (; i + 32 <= n; i += 32) {
    const __m256i h0 = _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    const __m256i h1 = _mm512_cvtps_ph(_mm512_loadu_ps(src + i + 16), _MM_FROUND_TO_NEAREST_INT);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), h0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i + 16), h1);
  }
  for (; i < n; i += 16) step(src + i, dst + i, avx512_detail::tail_mask(n - i < 16 ? n - i : 16));
}

QLIB_TARGET_AVX512 inline void convert_f16_to_f32(arch::avx512, const fp16* src, float* dst,
                                                  index_t n) noexcept {
  const auto step = [](const fp16* s, float* d, __mmask16 m) QLIB_TARGET_AVX512 {
    _mm512_mask_storeu_ps(d, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, s)));
  };
  index_t i = avx512_detail::head_count(dst, n);
  if (i > 0) step(src, dst, avx512_detail::tail_mask(i));
  for (; i + 32 <= n; i += 32) {
    const __m512i h = _mm512_loadu_si512(src + i);
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm512_castsi512_si256(h)));
    _mm512_storeu_ps(dst + i + 16, _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1)));
  }
  for (; i < n; i += 16) step(src + i, dst + i, avx512_detail::tail_mask(n - i < 16 ? n - i : 16));
}

QLIB_TARGET_AVX512 inline void convert_f32_to_bf16(arch::avx512, const float* src, bf16* dst,
                                                   index_t n) noexcept {
  const auto step = [](const float* s, bf16* d, __mmask16 m) QLIB_TARGET_AVX512 {
    const __m512i r = avx512_detail::bf16_round_hi(_mm512_maskz_loadu_epi32(m, s));
    _mm512_mask_cvtepi32_storeu_epi16(d, m, _mm512_srli_epi32(r, 16));
  };
  const __m512i odd = avx512_detail::odd_words_index();
  index_t i = avx512_detail::head_count(src, n);
  if (i > 0) step(src, dst, avx512_detail::tail_mask(i));
  for (; i + 32 <= n; i += 32) {
    const __m512i r0 = avx512_detail::bf16_round_hi(_mm512_loadu_si512(src + i));
    const __m512i r1 = avx512_detail::bf16_round_hi(_mm512_loadu_si512(src + i + 16));
    _mm512_storeu_si512(dst + i, _mm512_permutex2var_epi16(r0, odd, r1));
  }
  for (; i < n; i += 16) step(src + i, dst + i, avx512_detail::tail_mask(n - i < 16 ? n - i : 16));
}

QLIB_TARGET_AVX512 inline void convert_bf16_to_f32(arch::avx512, const bf16* src, float* dst,
                                                   index_t n) noexcept {
  const auto step = [](const bf16* s, float* d, __mmask16 m) QLIB_TARGET_AVX512 {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, s));
    _mm512_mask_storeu_epi32(d, m, _mm512_slli_epi32(w, 16));
  };
  index_t i = avx512_detail::head_count(dst, n);
  if (i > 0) step(src, dst, avx512_detail::tail_mask(i));
  for (; i + 32 <= n; i += 32) {
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + 16));
    _mm512_storeu_si512(dst + i, _mm512_slli_epi32(_mm512_cvtepu16_epi32(b0), 16));
    _mm512_storeu_si512(dst + i + 16, _mm512_slli_epi32(_mm512_cvtepu16_epi32(b1), 16));
  }
  for (; i < n; i += 16) step(src + i, dst + i, avx512_detail::tail_mask(n - i < 16 ? n - i : 16));
}

}  // namespace kernels
}  // namespace qlib

QLIB_KERNEL_END

#endif  // QLIB_HAS_X86_KERNELS
