// AVX-512 (F/BW/VL) affine quantize/dequantize row kernels, 16 floats per zmm, masked tails.
#pragma once

#include "qlib/arch/target.hpp"
#include "qlib/kernels/avx512/lane_mask.hpp"
#include "qlib/kernels/portable/affine_rows.hpp"

#if QLIB_HAS_X86_KERNELS
#include <immintrin.h>

QLIB_KERNEL_BEGIN

namespace qlib {
namespace kernels {
namespace avx512_detail {

// Narrowing stores and widening loads of 16 codes, per storage type. The codes are
// already clamped into the storage range, so truncating vpmov* is exact.
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE void store16(std::int8_t* p, __m512i v, __mmask16 m) {
  _mm512_mask_cvtepi32_storeu_epi8(p, m, v);
}
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE void store16(std::uint8_t* p, __m512i v, __mmask16 m) {
  _mm512_mask_cvtepi32_storeu_epi8(p, m, v);
}
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE void store16(std::int16_t* p, __m512i v, __mmask16 m) {
  _mm512_mask_cvtepi32_storeu_epi16(p, m, v);
}
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE void store16(std::uint16_t* p, __m512i v, __mmask16 m) {
  _mm512_mask_cvtepi32_storeu_epi16(p, m, v);
}
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512i load16(const std::int8_t* p, __mmask16 m) {
  return _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, p));
}
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512i load16(const std::uint8_t* p, __mmask16 m) {
  return _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, p));
}
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512i load16(const std::int16_t* p, __mmask16 m) {
  return _mm512_cvtepi16_epi32(_mm256_maskz_loadu_epi16(m, p));
}
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512i load16(const std::uint16_t* p, __mmask16 m) {
  return _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
}

// Stores 64 codes from four vectors of int32 with two packs and one permute: cheaper
// than four narrowing vpmov* stores, which are slow on some cores (Zen 4). The codes
// are inside the storage range, so the saturating packs never saturate.
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512i dword_order_after_pack() {
  return _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
}
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE void store64(std::int8_t* p, __m512i a, __m512i b, __m512i c, __m512i d) {
  const __m512i v = _mm512_packs_epi16(_mm512_packs_epi32(a, b), _mm512_packs_epi32(c, d));
  _mm512_storeu_si512(p, _mm512_permutexvar_epi32(dword_order_after_pack(), v));
}
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE void store64(std::uint8_t* p, __m512i a, __m512i b, __m512i c, __m512i d) {
  const __m512i v = _mm512_packus_epi16(_mm512_packs_epi32(a, b), _mm512_packs_epi32(c, d));
  _mm512_storeu_si512(p, _mm512_permutexvar_epi32(dword_order_after_pack(), v));
}
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE void store64(std::int16_t* p, __m512i a, __m512i b, __m512i c, __m512i d) {
  const __m512i order = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7);
  _mm512_storeu_si512(p, _mm512_permutexvar_epi64(order, _mm512_packs_epi32(a, b)));
  _mm512_storeu_si512(p + 32, _mm512_permutexvar_epi64(order, _mm512_packs_epi32(c, d)));
}
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE void store64(std::uint16_t* p, __m512i a, __m512i b, __m512i c, __m512i d) {
  const __m512i order = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7);
  _mm512_storeu_si512(p, _mm512_permutexvar_epi64(order, _mm512_packus_epi32(a, b)));
  _mm512_storeu_si512(p + 32, _mm512_permutexvar_epi64(order, _mm512_packus_epi32(c, d)));
}

// Lanes [0, min(left,16)) set.

// Per-run constants of one (scale, zero point).
struct run_consts {
  __m512 scale, inv, lo, hi;
  __m512i zp;
};
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE run_consts make_consts(float scale, std::int32_t zp, std::int32_t qmin,
                                                              std::int32_t qmax) {
  return {_mm512_set1_ps(scale), _mm512_set1_ps(1.0f / scale), _mm512_set1_ps(static_cast<float>(qmin - zp)),
          _mm512_set1_ps(static_cast<float>(qmax - zp)), _mm512_set1_epi32(zp)};
}
// The same constants, lane by lane, for per-element parameters.
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE run_consts load_consts(const float* scale, const std::int32_t* zp,
                                                              std::int32_t qmin, std::int32_t qmax, __mmask16 m) {
  const __m512 s = _mm512_mask_loadu_ps(_mm512_set1_ps(1.0f), m, scale);
  const __m512i z = _mm512_maskz_loadu_epi32(m, zp);
  return {s, _mm512_div_ps(_mm512_set1_ps(1.0f), s),
          _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_set1_epi32(qmin), z)),
          _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_set1_epi32(qmax), z)), z};
}

// quantize_value() on 16 lanes.
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512i quantize16(__m512 x, const run_consts& c) {
  __m512 v = _mm512_mul_ps(x, c.inv);
  const __mmask16 ordered = _mm512_cmp_ps_mask(v, v, _CMP_ORD_Q);
  v = _mm512_maskz_mov_ps(ordered, v);  // NaN -> 0, i.e. the zero point
  v = _mm512_min_ps(_mm512_max_ps(v, c.lo), c.hi);
  return _mm512_add_epi32(_mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), c.zp);
}
// dequantize_value() on 16 lanes.
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512 dequantize16(__m512i q, const run_consts& c) {
  return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q, c.zp)), c.scale);
}

template <class Q>
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE void quantize_run(const float* x, Q* q, index_t n, const run_consts& c) {
  index_t j = 0;
  for (; j + 64 <= n; j += 64) {  // four independent vectors per step
    const __m512i a = quantize16(_mm512_loadu_ps(x + j), c);
    const __m512i b = quantize16(_mm512_loadu_ps(x + j + 16), c);
    const __m512i d = quantize16(_mm512_loadu_ps(x + j + 32), c);
    const __m512i e = quantize16(_mm512_loadu_ps(x + j + 48), c);
    store64(q + j, a, b, d, e);
  }
  for (; j < n; j += 16) {
    const __mmask16 m = tail_mask(n - j);
    store16(q + j, quantize16(_mm512_maskz_loadu_ps(m, x + j), c), m);
  }
}

template <class Q>
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE void dequantize_run(const Q* q, float* x, index_t n, const run_consts& c) {
  index_t j = 0;
  for (; j + 64 <= n; j += 64) {
    const __m512 a = dequantize16(load16(q + j, 0xffff), c);
    const __m512 b = dequantize16(load16(q + j + 16, 0xffff), c);
    const __m512 d = dequantize16(load16(q + j + 32, 0xffff), c);
    const __m512 e = dequantize16(load16(q + j + 48, 0xffff), c);
    _mm512_storeu_ps(x + j, a);
    _mm512_storeu_ps(x + j + 16, b);
    _mm512_storeu_ps(x + j + 32, d);
    _mm512_storeu_ps(x + j + 48, e);
  }
  for (; j < n; j += 16) {
    const __mmask16 m = tail_mask(n - j);
    _mm512_mask_storeu_ps(x + j, m, dequantize16(load16(q + j, m), c));
  }
}

QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE void fake_quantize_run(const float* x, float* y, index_t n,
                                                              const run_consts& c) {
  for (index_t j = 0; j < n; j += 16) {
    const __mmask16 m = tail_mask(n - j);
    _mm512_mask_storeu_ps(y + j, m, dequantize16(quantize16(_mm512_maskz_loadu_ps(m, x + j), c), c));
  }
}

}  // namespace avx512_detail

template <class Q>
QLIB_TARGET_AVX512 void quantize_grouped(arch::avx512, const float* x, Q* q, index_t n, index_t g,
                                         const float* scale, const std::int32_t* zp, std::int32_t qmin,
                                         std::int32_t qmax) noexcept {
  if (g % 16 != 0 || g > 256) {
    for (index_t k = 0, j = 0; j < n; ++k, j += g)
      avx512_detail::quantize_run(x + j, q + j, n - j < g ? n - j : g,
                                  avx512_detail::make_consts(scale[k], zp[k], qmin, qmax));
    return;
  }
  // Small groups (ggml-style g = 32..256): the per-group constants of 16 groups at a
  // time come from one vector division, and each group is whole vectors, unmasked.
  const index_t groups = (n + g - 1) / g;
  alignas(64) float inv_a[16], lo_a[16], hi_a[16];
  alignas(64) std::int32_t zp_a[16];
  for (index_t k0 = 0; k0 < groups; k0 += 16) {
    const index_t kn = groups - k0 < 16 ? groups - k0 : 16;
    const auto c = avx512_detail::load_consts(scale + k0, zp + k0, qmin, qmax, avx512_detail::tail_mask(kn));
    _mm512_store_ps(inv_a, c.inv);
    _mm512_store_ps(lo_a, c.lo);
    _mm512_store_ps(hi_a, c.hi);
    _mm512_store_si512(zp_a, c.zp);
    for (index_t k = 0; k < kn; ++k) {
      const index_t j = (k0 + k) * g;
      const avx512_detail::run_consts ck{_mm512_setzero_ps(), _mm512_set1_ps(inv_a[k]), _mm512_set1_ps(lo_a[k]),
                                         _mm512_set1_ps(hi_a[k]), _mm512_set1_epi32(zp_a[k])};
      if (n - j >= g) {
        for (index_t i = 0; i < g; i += 16)
          avx512_detail::store16(q + j + i, avx512_detail::quantize16(_mm512_loadu_ps(x + j + i), ck), 0xffff);
      } else {
        avx512_detail::quantize_run(x + j, q + j, n - j, ck);
      }
    }
  }
}

template <class Q>
QLIB_TARGET_AVX512 void quantize_per_element(arch::avx512, const float* x, Q* q, index_t n, const float* scale,
                                             const std::int32_t* zp, std::int32_t qmin, std::int32_t qmax) noexcept {
  for (index_t j = 0; j < n; j += 16) {
    const __mmask16 m = avx512_detail::tail_mask(n - j);
    const auto c = avx512_detail::load_consts(scale + j, zp + j, qmin, qmax, m);
    avx512_detail::store16(q + j, avx512_detail::quantize16(_mm512_maskz_loadu_ps(m, x + j), c), m);
  }
}

template <class Q>
QLIB_TARGET_AVX512 void dequantize_grouped(arch::avx512, const Q* q, float* x, index_t n, index_t g,
                                           const float* scale, const std::int32_t* zp) noexcept {
  for (index_t k = 0, j = 0; j < n; ++k, j += g)
    avx512_detail::dequantize_run(q + j, x + j, n - j < g ? n - j : g,
                                  avx512_detail::make_consts(scale[k], zp[k], 0, 1));
}

template <class Q>
QLIB_TARGET_AVX512 void dequantize_per_element(arch::avx512, const Q* q, float* x, index_t n, const float* scale,
                                               const std::int32_t* zp) noexcept {
  for (index_t j = 0; j < n; j += 16) {
    const __mmask16 m = avx512_detail::tail_mask(n - j);
    const __m512 s = _mm512_maskz_loadu_ps(m, scale + j);
    const __m512i z = _mm512_maskz_loadu_epi32(m, zp + j);
    const __m512i v = avx512_detail::load16(q + j, m);
    _mm512_mask_storeu_ps(x + j, m, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(v, z)), s));
  }
}

QLIB_TARGET_AVX512 inline void fake_quantize_grouped(arch::avx512, const float* x, float* y, index_t n, index_t g,
                                                     const float* scale, const std::int32_t* zp, std::int32_t qmin,
                                                     std::int32_t qmax) noexcept {
  for (index_t k = 0, j = 0; j < n; ++k, j += g)
    avx512_detail::fake_quantize_run(x + j, y + j, n - j < g ? n - j : g,
                                     avx512_detail::make_consts(scale[k], zp[k], qmin, qmax));
}

QLIB_TARGET_AVX512 inline void fake_quantize_per_element(arch::avx512, const float* x, float* y, index_t n,
                                                         const float* scale, const std::int32_t* zp,
                                                         std::int32_t qmin, std::int32_t qmax) noexcept {
  for (index_t j = 0; j < n; j += 16) {
    const __mmask16 m = avx512_detail::tail_mask(n - j);
    const auto c = avx512_detail::load_consts(scale + j, zp + j, qmin, qmax, m);
    _mm512_mask_storeu_ps(y + j, m,
                          avx512_detail::dequantize16(avx512_detail::quantize16(_mm512_maskz_loadu_ps(m, x + j), c), c));
  }
}

}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_X86_KERNELS
