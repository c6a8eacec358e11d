// AVX2 + F16C fp16/bf16 <-> float bulk conversion kernels (8 lanes, scalar tail).
#pragma once

#include <cstdint>

#include "qlib/arch/target.hpp"
#include "qlib/kernels/portable/half_convert.hpp"

#if QLIB_HAS_X86_KERNELS
#include <immintrin.h>

namespace qlib {
namespace kernels {
namespace avx2_detail {

// float bits -> bf16 in the top 16 bits of each 32-bit lane: round to nearest even on
// the low 16 bits; NaN lanes get the quiet bit instead (never rounded into Inf).
QLIB_TARGET_AVX2 inline __m256i bf16_round_hi(__m256i u) noexcept {
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), lsb);
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF)),
                                         _mm256_set1_epi32(0x7F800000));
  const __m256i q = _mm256_or_si256(u, _mm256_set1_epi32(0x00400000));
  return _mm256_blendv_epi8(r, q, nan);
}

// 16 floats -> 16 bf16 in order.
QLIB_TARGET_AVX2 inline __m256i bf16_pack16(__m256i u0, __m256i u1) noexcept {
  const __m256i a = _mm256_srli_epi32(bf16_round_hi(u0), 16);
  const __m256i b = _mm256_srli_epi32(bf16_round_hi(u1), 16);
  // packus works per 128-bit lane: a0-3 b0-3 | a4-7 b4-7; reorder the 64-bit quarters.
  return _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xD8);
}

// 8 floats -> 8 bf16 in order.
QLIB_TARGET_AVX2 inline __m128i bf16_pack8(__m256i u) noexcept {
  const __m256i a = _mm256_srli_epi32(bf16_round_hi(u), 16);
  return _mm_packus_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
}

// Elements (0..7, at most n) to handle before p is 32-byte aligned.
inline index_t head_count(const float* p, index_t n) noexcept {
  const index_t head = static_cast<index_t>((32 - (reinterpret_cast<std::uintptr_t>(p) & 31)) & 31) / 4;
  return head < n ? head : n;
}

}  // namespace avx2_detail

// Each kernel first converts a few elements with the scalar reference so that the float
// stream (the larger one) is 32-byte aligned, then 16 and 8 lanes at a time, then the
// remaining 0..7 elements with the scalar reference again.

// vcvtps2ph with an explicit round-to-nearest-even immediate: MXCSR.RC is not used, and
// FTZ/DAZ do not change the results (float subnormals round to +/-0 either way).
QLIB_TARGET_AVX2 inline void convert_f32_to_f16(arch::avx2, const float* src, fp16* dst,
                                                index_t n) noexcept {
  index_t i = 0;
  const index_t head = avx2_detail::head_count(src, n);
  for (; i < head; ++i) dst[i] = fp16::from_bits(float_to_fp16_bits(src[i]));
  for (; i + 16 <= n; i += 16) {
    const __m128i h0 = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    const __m128i h1 = _mm256_cvtps_ph(_mm256_loadu_ps(src + i + 8), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h0);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i + 8), h1);
  }
  if (i + 8 <= n) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
    i += 8;
  }
  for (; i < n; ++i) dst[i] = fp16::from_bits(float_to_fp16_bits(src[i]));
}

QLIB_TARGET_AVX2 inline void convert_f16_to_f32(arch::avx2, const fp16* src, float* dst,
                                                index_t n) noexcept {
  index_t i = 0;
  const index_t head = avx2_detail::head_count(dst, n);
  for (; i < head; ++i) dst[i] = fp16_bits_to_float(src[i].bits());
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm256_castsi256_si128(h)));
    _mm256_storeu_ps(dst + i + 8, _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)));
  }
  if (i + 8 <= n) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    i += 8;
  }
  for (; i < n; ++i) dst[i] = fp16_bits_to_float(src[i].bits());
}

// Integer emulation of the reference rounding: exact for every input, subnormals included.
QLIB_TARGET_AVX2 inline void convert_f32_to_bf16(arch::avx2, const float* src, bf16* dst,
                                                 index_t n) noexcept {
  index_t i = 0;
  const index_t head = avx2_detail::head_count(src, n);
  for (; i < head; ++i) dst[i] = bf16::from_bits(float_to_bf16_bits(src[i]));
  for (; i + 16 <= n; i += 16) {
    const __m256i u0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    const __m256i u1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + 8));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), avx2_detail::bf16_pack16(u0, u1));
  }
  if (i + 8 <= n) {
    const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), avx2_detail::bf16_pack8(u));
    i += 8;
  }
  for (; i < n; ++i) dst[i] = bf16::from_bits(float_to_bf16_bits(src[i]));
}

QLIB_TARGET_AVX2 inline void convert_bf16_to_f32(arch::avx2, const bf16* src, float* dst,
                                                 index_t n) noexcept {
  index_t i = 0;
  const index_t head = avx2_detail::head_count(dst, n);
  for (; i < head; ++i) dst[i] = bf16_bits_to_float(src[i].bits());
  for (; i + 16 <= n; i += 16) {
    const __m128i b0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    const __m128i b1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 8));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                        _mm256_slli_epi32(_mm256_cvtepu16_epi32(b0), 16));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i + 8),
                        _mm256_slli_epi32(_mm256_cvtepu16_epi32(b1), 16));
  }
  if (i + 8 <= n) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                        _mm256_slli_epi32(_mm256_cvtepu16_epi32(b), 16));
    i += 8;
  }
  for (; i < n; ++i) dst[i] = bf16_bits_to_float(src[i].bits());
}

}  // namespace kernels
}  // namespace qlib

#endif  // QLIB_HAS_X86_KERNELS
