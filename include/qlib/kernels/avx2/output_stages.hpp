// AVX2 GEMM epilogue: output stages on 8 lanes (ymm), portable fallback for the rest.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <type_traits>
#include <utility>

#include "qlib/arch/target.hpp"
#include "qlib/gemm/pipeline.hpp"
#include "qlib/gemm/zero_point_correction.hpp"
#include "qlib/kernels/portable/output_stages.hpp"

#if QLIB_HAS_X86_KERNELS
#include <immintrin.h>

QLIB_KERNEL_BEGIN

// Same scheme as kernels/avx512/output_stages.hpp on 8 lanes. Single-rounding fixed
// point needs 64-bit arithmetic shifts that AVX2 lacks; it deliberately has no
// overload here and runs through the portable fallback.
namespace qlib {
namespace kernels {
namespace avx2_stages {

struct lanes {
  index_t row;
  index_t col;
  int count;      // real lanes, 1..8
  __m256i mask;   // all-ones in the real lanes, for maskload
};

// The register type a value of type T travels in.
template <class T>
struct vec {
  using type = __m256i;
};
template <>
struct vec<float> {
  using type = __m256;
};
template <class T>
using vec_t = typename vec<T>::type;

QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256i lane_mask(int count) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256i load_i32(const std::int32_t* p, const lanes& at) {
  return at.count == 8 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)) : _mm256_maskload_epi32(p, at.mask);
}
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256 load_f32(const float* p, const lanes& at) {
  return at.count == 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, at.mask);
}

QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256i saturation_value(__m256i sign_of) {
  return _mm256_xor_si256(_mm256_srai_epi32(sign_of, 31), _mm256_set1_epi32(std::numeric_limits<std::int32_t>::max()));
}
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256i saturating_add(__m256i a, __m256i b) {
  const __m256i r = _mm256_add_epi32(a, b);
  const __m256i t = _mm256_and_si256(_mm256_xor_si256(a, r), _mm256_xor_si256(b, r));
  return _mm256_blendv_epi8(r, saturation_value(a), _mm256_srai_epi32(t, 31));
}

// multiply_by_quantized_multiplier(), double rounding, per-lane multiplier and shift.
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256i mbqm_double(__m256i x, __m256i multiplier, __m256i shift) {
  const __m256i zero = _mm256_setzero_si256(), one = _mm256_set1_epi32(1);
  const __m256i left = _mm256_max_epi32(shift, zero);
  const __m256i right = _mm256_max_epi32(_mm256_sub_epi32(zero, shift), zero);
  const __m256i shifted = _mm256_sllv_epi32(x, left);
  const __m256i kept = _mm256_cmpeq_epi32(_mm256_srav_epi32(shifted, left), x);
  const __m256i xs = _mm256_blendv_epi8(saturation_value(x), shifted, kept);
  // (x * m + 2^30) >> 31: bits 31..62 of the 64-bit sum, which a logical shift
  // delivers to the low half as well as an arithmetic one would.
  const __m256i nudge = _mm256_set1_epi64x(std::int64_t{1} << 30);
  const __m256i pe = _mm256_srli_epi64(_mm256_add_epi64(_mm256_mul_epi32(xs, multiplier), nudge), 31);
  const __m256i po = _mm256_srli_epi64(
      _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(xs, 32), _mm256_srli_epi64(multiplier, 32)), nudge), 31);
  const __m256i high = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
  const __m256i mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, right), one);
  const __m256i remainder = _mm256_and_si256(high, mask);
  const __m256i threshold = _mm256_add_epi32(_mm256_srli_epi32(mask, 1), _mm256_srli_epi32(high, 31));
  // cmpgt gives -1 where the remainder rounds up.
  return _mm256_sub_epi32(_mm256_srav_epi32(high, right), _mm256_cmpgt_epi32(remainder, threshold));
}

QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256i requantize_float8(__m256i x, __m256 multiplier, std::int32_t zp,
                                                              std::int32_t qmin, std::int32_t qmax) {
  __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(x), multiplier);
  v = _mm256_max_ps(v, _mm256_set1_ps(static_cast<float>(qmin - zp)));
  v = _mm256_min_ps(v, _mm256_set1_ps(static_cast<float>(qmax - zp)));
  v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);  // ties to even, whatever MXCSR says
  return _mm256_add_epi32(_mm256_cvtps_epi32(v), _mm256_set1_epi32(zp));
}

// ---- the stages ----

QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256i apply(const gemm::weight_zero_point_correction& s, __m256i x,
                                                  const lanes& at) {
  const __m256i zb = s.per_channel ? load_i32(s.weight_zero_point + at.col, at)
                                   : _mm256_set1_epi32(s.weight_zero_point[0]);
  return _mm256_sub_epi32(x, _mm256_mullo_epi32(zb, _mm256_set1_epi32(s.row_sum[at.row - s.row_begin])));
}

QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256i apply(const gemm::bias_add& s, __m256i x, const lanes& at) {
  return _mm256_add_epi32(x, load_i32(s.bias + at.col, at));
}

QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256i apply(
    const gemm::requantize_fixed_point<fixed_point_rounding::double_rounding>& s, __m256i x, const lanes&) {
  return saturating_add(mbqm_double(x, _mm256_set1_epi32(s.multiplier), _mm256_set1_epi32(s.shift)),
                        _mm256_set1_epi32(s.zero_point));
}

QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256i apply(
    const gemm::requantize_fixed_point_per_channel<fixed_point_rounding::double_rounding>& s, __m256i x,
    const lanes& at) {
  return saturating_add(mbqm_double(x, load_i32(s.multiplier + at.col, at), load_i32(s.shift + at.col, at)),
                        _mm256_set1_epi32(s.zero_point));
}

QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256i apply(const gemm::requantize_float& s, __m256i x, const lanes&) {
  return requantize_float8(x, _mm256_set1_ps(s.multiplier), s.zero_point, s.qmin, s.qmax);
}

QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256i apply(const gemm::requantize_float_per_channel& s, __m256i x,
                                                  const lanes& at) {
  return requantize_float8(x, load_f32(s.multiplier + at.col, at), s.zero_point, s.qmin, s.qmax);
}

QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256i apply(const gemm::clamp& s, __m256i x, const lanes&) {
  return _mm256_min_epi32(_mm256_max_epi32(x, _mm256_set1_epi32(s.lo)), _mm256_set1_epi32(s.hi));
}

QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256 apply(const gemm::clamp_float& s, __m256 x, const lanes&) {
  return _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(s.lo)), _mm256_set1_ps(s.hi));
}

template <class T>
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256i apply(const gemm::saturating_cast<T>&, __m256i x, const lanes&) {
  return _mm256_min_epi32(_mm256_max_epi32(x, _mm256_set1_epi32(std::numeric_limits<T>::min())),
                          _mm256_set1_epi32(std::numeric_limits<T>::max()));
}

QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256 apply(const gemm::dequantize& s, __m256i x, const lanes&) {
  return _mm256_mul_ps(_mm256_cvtepi32_ps(x), _mm256_set1_ps(s.scale));
}

QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256 apply(const gemm::dequantize_per_channel& s, __m256i x, const lanes& at) {
  const __m256 channel = load_f32(s.channel_scale + at.col, at);
  return _mm256_mul_ps(_mm256_cvtepi32_ps(x), _mm256_mul_ps(_mm256_set1_ps(s.input_scale), channel));
}

// ---- running a pipeline ----

template <class S, class V, class = void>
struct has_apply : std::false_type {};
template <class S, class V>
struct has_apply<S, V, decltype((void)apply(std::declval<const S&>(), std::declval<V>(), std::declval<const lanes&>()))>
    : std::true_type {};

template <class T>
using lane_t = std::conditional_t<std::is_same<T, float>::value, float, std::int32_t>;

QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE void spill(__m256i v, std::int32_t* p) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
}
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE void spill(__m256 v, float* p) { _mm256_storeu_ps(p, v); }
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256i reload(const std::int32_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256 reload(const float* p) { return _mm256_loadu_ps(p); }

template <class S, class V>
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE vec_t<typename S::output_type> fallback(const S& s, V v, const lanes& at) {
  using in_t = typename S::input_type;
  using out_t = typename S::output_type;
  alignas(32) lane_t<in_t> in[8];
  alignas(32) lane_t<out_t> out[8] = {};
  spill(v, in);
  for (int l = 0; l < at.count; ++l)
    out[l] = static_cast<lane_t<out_t>>(s.eval(static_cast<in_t>(in[l]), at.row, at.col + l));
  return reload(out);
}

template <std::size_t I, class Pipeline, class V>
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE auto run_stages(const Pipeline& p, V v, const lanes& at) {
  if constexpr (I == std::tuple_size<Pipeline>::value) {
    return v;
  } else {
    using S = std::tuple_element_t<I, Pipeline>;
    if constexpr (has_apply<S, V>::value) return run_stages<I + 1>(p, apply(std::get<I>(p), v, at), at);
    else return run_stages<I + 1>(p, fallback(std::get<I>(p), v, at), at);
  }
}

QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE void store(std::int32_t* p, __m256i v, const lanes& at) {
  if (at.count == 8) _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
  else _mm256_maskstore_epi32(p, at.mask, v);
}
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE void store(float* p, __m256 v, const lanes& at) {
  if (at.count == 8) _mm256_storeu_ps(p, v);
  else _mm256_maskstore_ps(p, at.mask, v);
}
// 8 int32 lanes already inside the narrow type's range, packed in order.
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m128i narrow16(__m256i v, bool is_unsigned) {
  const __m256i p = is_unsigned ? _mm256_packus_epi32(v, v) : _mm256_packs_epi32(v, v);
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(p, 0x08));  // qwords 0, 2
}
template <class T>
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE void store_narrow(T* p, __m128i packed, const lanes& at) {
  alignas(16) T buf[16 / sizeof(T)];
  _mm_store_si128(reinterpret_cast<__m128i*>(buf), packed);
  std::memcpy(p, buf, sizeof(T) * static_cast<std::size_t>(at.count));
}
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE void store(std::int16_t* p, __m256i v, const lanes& at) {
  store_narrow(p, narrow16(v, false), at);
}
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE void store(std::uint16_t* p, __m256i v, const lanes& at) {
  store_narrow(p, narrow16(v, true), at);
}
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE void store(std::int8_t* p, __m256i v, const lanes& at) {
  const __m128i w = narrow16(v, false);
  store_narrow(p, _mm_packs_epi16(w, w), at);
}
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE void store(std::uint8_t* p, __m256i v, const lanes& at) {
  const __m128i w = narrow16(v, false);  // 0..255 fits int16
  store_narrow(p, _mm_packus_epi16(w, w), at);
}

}  // namespace avx2_stages

// See kernels/portable/output_stages.hpp for the contract.
template <class Pipeline, class Out>
QLIB_TARGET_AVX2 void store_tile(arch::avx2, const Pipeline& pipeline_in, const std::int32_t* tile, index_t ld,
                                 index_t rows, index_t cols, Out* c, index_t ldc, index_t row0, index_t col0) {
  if constexpr (!simd_lane_types_only<Pipeline>::value) {
    store_tile(arch::portable{}, pipeline_in, tile, ld, rows, cols, c, ldc, row0, col0);
  } else {
    const Pipeline pipeline = pipeline_in;  // see kernels/avx512/output_stages.hpp
    for (index_t r = 0; r < rows; ++r) {
      for (index_t j = 0; j < cols; j += 8) {
        const int count = cols - j >= 8 ? 8 : static_cast<int>(cols - j);
        const avx2_stages::lanes at{row0 + r, col0 + j, count, avx2_stages::lane_mask(count)};
        const __m256i acc = avx2_stages::load_i32(tile + r * ld + j, at);
        avx2_stages::store(c + r * ldc + j, avx2_stages::run_stages<0>(pipeline, acc, at), at);
      }
    }
  }
}

}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_X86_KERNELS
