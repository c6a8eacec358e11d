// AVX2 affine quantize/dequantize row kernels, 8 floats per ymm, reference tails.
#pragma once

#include "qlib/arch/target.hpp"
#include "qlib/kernels/portable/affine_rows.hpp"

#if QLIB_HAS_X86_KERNELS
#include <immintrin.h>

QLIB_KERNEL_BEGIN

namespace qlib {
namespace kernels {
namespace avx2_detail {

// Narrowing stores and widening loads of 8 codes (already inside the storage range, so
// the saturating packs never saturate).
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m128i pack16(__m256i v) {
  return _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
}
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE void store8(std::int8_t* p, __m256i v) {
  const __m128i w = pack16(v);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packs_epi16(w, w));
}
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE void store8(std::uint8_t* p, __m256i v) {
  const __m128i w = pack16(v);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packus_epi16(w, w));
}
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE void store8(std::int16_t* p, __m256i v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), pack16(v));
}
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE void store8(std::uint16_t* p, __m256i v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                   _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)));
}
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256i load8(const std::int8_t* p) {
  return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256i load8(const std::uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256i load8(const std::int16_t* p) {
  return _mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256i load8(const std::uint16_t* p) {
  return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

struct run_consts {
  __m256 scale, inv, lo, hi;
  __m256i zp;
};
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE run_consts make_consts(float scale, std::int32_t zp, std::int32_t qmin,
                                                            std::int32_t qmax) {
  return {_mm256_set1_ps(scale), _mm256_set1_ps(1.0f / scale), _mm256_set1_ps(static_cast<float>(qmin - zp)),
          _mm256_set1_ps(static_cast<float>(qmax - zp)), _mm256_set1_epi32(zp)};
}
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE run_consts load_consts(const float* scale, const std::int32_t* zp,
                                                            std::int32_t qmin, std::int32_t qmax) {
  const __m256 s = _mm256_loadu_ps(scale);
  const __m256i z = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(zp));
  return {s, _mm256_div_ps(_mm256_set1_ps(1.0f), s),
          _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_set1_epi32(qmin), z)),
          _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_set1_epi32(qmax), z)), z};
}

// quantize_value() on 8 lanes (explicit round-to-nearest-even, not MXCSR).
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256i quantize8(__m256 x, const run_consts& c) {
  __m256 v = _mm256_mul_ps(x, c.inv);
  v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q));  // NaN -> 0, i.e. the zero point
  v = _mm256_min_ps(_mm256_max_ps(v, c.lo), c.hi);
  v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm256_add_epi32(_mm256_cvttps_epi32(v), c.zp);
}
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256 dequantize8(__m256i q, const run_consts& c) {
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q, c.zp)), c.scale);
}

template <class Q>
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE void quantize_run(const float* x, Q* q, index_t n, const run_consts& c,
                                                       float scale, std::int32_t zp, std::int32_t qmin,
                                                       std::int32_t qmax) {
  index_t j = 0;
  for (; j + 32 <= n; j += 32) {
    const __m256i a = quantize8(_mm256_loadu_ps(x + j), c);
    const __m256i b = quantize8(_mm256_loadu_ps(x + j + 8), c);
    const __m256i d = quantize8(_mm256_loadu_ps(x + j + 16), c);
    const __m256i e = quantize8(_mm256_loadu_ps(x + j + 24), c);
    store8(q + j, a);
    store8(q + j + 8, b);
    store8(q + j + 16, d);
    store8(q + j + 24, e);
  }
  for (; j + 8 <= n; j += 8) store8(q + j, quantize8(_mm256_loadu_ps(x + j), c));
  const float inv = 1.0f / scale;
  for (; j < n; ++j) q[j] = static_cast<Q>(quantize_value(x[j], inv, zp, qmin, qmax));
}

template <class Q>
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE void dequantize_run(const Q* q, float* x, index_t n, const run_consts& c,
                                                         float scale, std::int32_t zp) {
  index_t j = 0;
  for (; j + 32 <= n; j += 32) {
    const __m256 a = dequantize8(load8(q + j), c);
    const __m256 b = dequantize8(load8(q + j + 8), c);
    const __m256 d = dequantize8(load8(q + j + 16), c);
    const __m256 e = dequantize8(load8(q + j + 24), c);
    _mm256_storeu_ps(x + j, a);
    _mm256_storeu_ps(x + j + 8, b);
    _mm256_storeu_ps(x + j + 16, d);
    _mm256_storeu_ps(x + j + 24, e);
  }
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(x + j, dequantize8(load8(q + j), c));
  for (; j < n; ++j) x[j] = dequantize_value(q[j], scale, zp);
}

}  // namespace avx2_detail

template <class Q>
QLIB_TARGET_AVX2 void quantize_grouped(arch::avx2, const float* x, Q* q, index_t n, index_t g, const float* scale,
                                       const std::int32_t* zp, std::int32_t qmin, std::int32_t qmax) noexcept {
  for (index_t k = 0, j = 0; j < n; ++k, j += g)
    avx2_detail::quantize_run(x + j, q + j, n - j < g ? n - j : g,
                              avx2_detail::make_consts(scale[k], zp[k], qmin, qmax), scale[k], zp[k], qmin, qmax);
}

template <class Q>
QLIB_TARGET_AVX2 void quantize_per_element(arch::avx2, const float* x, Q* q, index_t n, const float* scale,
                                           const std::int32_t* zp, std::int32_t qmin, std::int32_t qmax) noexcept {
  index_t j = 0;
  for (; j + 8 <= n; j += 8)
    avx2_detail::store8(q + j, avx2_detail::quantize8(_mm256_loadu_ps(x + j),
                                                      avx2_detail::load_consts(scale + j, zp + j, qmin, qmax)));
  for (; j < n; ++j) q[j] = static_cast<Q>(quantize_value(x[j], 1.0f / scale[j], zp[j], qmin, qmax));
}

template <class Q>
QLIB_TARGET_AVX2 void dequantize_grouped(arch::avx2, const Q* q, float* x, index_t n, index_t g, const float* scale,
                                         const std::int32_t* zp) noexcept {
  for (index_t k = 0, j = 0; j < n; ++k, j += g)
    avx2_detail::dequantize_run(q + j, x + j, n - j < g ? n - j : g, avx2_detail::make_consts(scale[k], zp[k], 0, 1),
                                scale[k], zp[k]);
}

template <class Q>
QLIB_TARGET_AVX2 void dequantize_per_element(arch::avx2, const Q* q, float* x, index_t n, const float* scale,
                                             const std::int32_t* zp) noexcept {
  index_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256i z = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(zp + j));
    _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(avx2_detail::load8(q + j), z)),
                                          _mm256_loadu_ps(scale + j)));
  }
  for (; j < n; ++j) x[j] = dequantize_value(q[j], scale[j], zp[j]);
}

QLIB_TARGET_AVX2 inline void fake_quantize_grouped(arch::avx2, const float* x, float* y, index_t n, index_t g,
                                                   const float* scale, const std::int32_t* zp, std::int32_t qmin,
                                                   std::int32_t qmax) noexcept {
  for (index_t k = 0, j = 0; j < n; ++k, j += g) {
    const index_t len = n - j < g ? n - j : g;
    const auto c = avx2_detail::make_consts(scale[k], zp[k], qmin, qmax);
    index_t i = 0;
    for (; i + 8 <= len; i += 8)
      _mm256_storeu_ps(y + j + i, avx2_detail::dequantize8(avx2_detail::quantize8(_mm256_loadu_ps(x + j + i), c), c));
    const float inv = 1.0f / scale[k];
    for (; i < len; ++i) y[j + i] = fake_quantize_value(x[j + i], scale[k], inv, zp[k], qmin, qmax);
  }
}

QLIB_TARGET_AVX2 inline void fake_quantize_per_element(arch::avx2, const float* x, float* y, index_t n,
                                                       const float* scale, const std::int32_t* zp, std::int32_t qmin,
                                                       std::int32_t qmax) noexcept {
  index_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const auto c = avx2_detail::load_consts(scale + j, zp + j, qmin, qmax);
    _mm256_storeu_ps(y + j, avx2_detail::dequantize8(avx2_detail::quantize8(_mm256_loadu_ps(x + j), c), c));
  }
  for (; j < n; ++j) y[j] = fake_quantize_value(x[j], scale[j], 1.0f / scale[j], zp[j], qmin, qmax);
}

}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_X86_KERNELS
