// NEON (AArch64) GEMM epilogue: output stages on 4 lanes (q registers), portable fallback for the rest.
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

#if QLIB_HAS_ARM_KERNELS
#include <arm_neon.h>

QLIB_KERNEL_BEGIN

// The scheme of kernels/avx2/output_stages.hpp on 4 lanes: a row segment of up to 4
// accumulators stays in one q register through every stage and is stored once; integer
// values of any width travel as int32 lanes (the store narrows them), floats as float
// lanes. Each apply() below equals its stage's eval() bit for bit; a stage without one
// (a stage you wrote) runs eval() on each real lane. Used by arch::neon and, through
// the tag chain, arch::neon_dotprod.
//
// Why the NEON forms are exact:
//  - sqrdmulh is gemmlowp's SaturatingRoundingDoublingHighMul itself: (2ab + 2^31) >> 32
//    = floor((ab + 2^30) / 2^31), INT32_MIN * INT32_MIN saturating.
//  - srshl by -e rounds ties up; RoundingDivideByPOT rounds them away from zero, so
//    negative lanes first lose 1 (gemmlowp's own NEON fixup: the sign bit of x & -e,
//    added with saturation; INT32_MIN stays, and INT32_MIN >> e is right for it).
//  - sqshl by a register is saturating_left_shift; sqadd is saturating_add.
//  - single rounding: smull gives the exact 64-bit product, srshl rounds (x m + 2^(t-1))
//    >> t with ties up as the reference does (no 64-bit overflow: |x m| < 2^62), sqxtn
//    saturates to int32.
//  - fcvtns rounds to nearest even whatever FPCR's rounding mode says, like
//    round_half_even(); scvtf and fmul follow FPCR as the scalar eval() does.
//  - fmax/fmin propagate NaN and order -0 below +0, unlike clamp_float's comparisons
//    (and x86's vmaxps), so clamp_float uses compare + select.
namespace qlib {
namespace kernels {
namespace neon_stages {

// Where a vector sits in C: its row, its first column, how many lanes are real (1..4).
struct lanes {
  index_t row;
  index_t col;
  int count;
};

// The register type a value of type T travels in.
template <class T>
struct vec {
  using type = int32x4_t;
};
template <>
struct vec<float> {
  using type = float32x4_t;
};
template <class T>
using vec_t = typename vec<T>::type;

// Only the first at.count elements at p are read (a tail must not read past the tile or
// a per-channel array); the other lanes are 0.
template <class T>
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE void load_partial(T (&buf)[4], const T* p, int count) {
  buf[0] = p[0];
  buf[1] = count > 1 ? p[1] : T{};
  buf[2] = count > 2 ? p[2] : T{};
  buf[3] = T{};
}
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE int32x4_t load_i32(const std::int32_t* p, const lanes& at) {
  if (at.count == 4) return vld1q_s32(p);
  std::int32_t buf[4];
  load_partial(buf, p, at.count);
  return vld1q_s32(buf);
}
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE float32x4_t load_f32(const float* p, const lanes& at) {
  if (at.count == 4) return vld1q_f32(p);
  float buf[4];
  load_partial(buf, p, at.count);
  return vld1q_f32(buf);
}

// multiply_by_quantized_multiplier(), double rounding, per-lane multiplier and shift
// (see the top of this file for why each instruction is exact).
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE int32x4_t mbqm_double(int32x4_t x, int32x4_t multiplier, int32x4_t shift) {
  const int32x4_t zero = vdupq_n_s32(0);
  const int32x4_t left = vmaxq_s32(shift, zero), minus_right = vminq_s32(shift, zero);
  const int32x4_t high = vqrdmulhq_s32(vqshlq_s32(x, left), multiplier);
  // -1 in lanes that are negative and shift right: ties then round away from zero.
  const int32x4_t fixup = vshrq_n_s32(vandq_s32(high, minus_right), 31);
  return vrshlq_s32(vqaddq_s32(high, fixup), minus_right);
}

// multiply_by_quantized_multiplier(), single rounding; minus_total_* = shift - 31 for
// the low and high two lanes, as 64-bit shift counts.
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE int32x4_t mbqm_single(int32x4_t x, int32x4_t multiplier, int64x2_t minus_total_low,
                                                          int64x2_t minus_total_high) {
  const int64x2_t low = vrshlq_s64(vmull_s32(vget_low_s32(x), vget_low_s32(multiplier)), minus_total_low);
  const int64x2_t high = vrshlq_s64(vmull_high_s32(x, multiplier), minus_total_high);
  return vqmovn_high_s64(vqmovn_s64(low), high);
}

template <fixed_point_rounding R>
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE int32x4_t mbqm(int32x4_t x, int32x4_t multiplier, int32x4_t shift) {
  if constexpr (R == fixed_point_rounding::double_rounding) {
    return mbqm_double(x, multiplier, shift);
  } else {
    const int32x4_t minus_total = vsubq_s32(shift, vdupq_n_s32(31));
    return mbqm_single(x, multiplier, vmovl_s32(vget_low_s32(minus_total)), vmovl_high_s32(minus_total));
  }
}

// quantize_value(float(x), multiplier, zp, qmin, qmax) for non-NaN products (an int32
// times a finite positive multiplier is never NaN, and the clamp bounds are integers,
// so fmax/fmin agree with eval()'s comparisons here).
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE int32x4_t requantize_float4(int32x4_t x, float32x4_t multiplier, std::int32_t zp,
                                                                std::int32_t qmin, std::int32_t qmax) {
  float32x4_t v = vmulq_f32(vcvtq_f32_s32(x), multiplier);
  v = vmaxq_f32(v, vdupq_n_f32(static_cast<float>(qmin - zp)));
  v = vminq_f32(v, vdupq_n_f32(static_cast<float>(qmax - zp)));
  return vaddq_s32(vcvtnq_s32_f32(v), vdupq_n_s32(zp));
}

// ---- the stages ----

QLIB_TARGET_NEON QLIB_ALWAYS_INLINE int32x4_t apply(const gemm::weight_zero_point_correction& s, int32x4_t x,
                                                    const lanes& at) {
  const int32x4_t zb = s.per_channel ? load_i32(s.weight_zero_point + at.col, at) : vdupq_n_s32(s.weight_zero_point[0]);
  return vmlsq_n_s32(x, zb, s.row_sum[at.row - s.row_begin]);  // wrapping, as eval()
}

QLIB_TARGET_NEON QLIB_ALWAYS_INLINE int32x4_t apply(const gemm::bias_add& s, int32x4_t x, const lanes& at) {
  return vaddq_s32(x, load_i32(s.bias + at.col, at));
}

template <fixed_point_rounding R>
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE int32x4_t apply(const gemm::requantize_fixed_point<R>& s, int32x4_t x,
                                                    const lanes&) {
  return vqaddq_s32(mbqm<R>(x, vdupq_n_s32(s.multiplier), vdupq_n_s32(s.shift)), vdupq_n_s32(s.zero_point));
}

template <fixed_point_rounding R>
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE int32x4_t apply(const gemm::requantize_fixed_point_per_channel<R>& s, int32x4_t x,
                                                    const lanes& at) {
  return vqaddq_s32(mbqm<R>(x, load_i32(s.multiplier + at.col, at), load_i32(s.shift + at.col, at)),
                    vdupq_n_s32(s.zero_point));
}

QLIB_TARGET_NEON QLIB_ALWAYS_INLINE int32x4_t apply(const gemm::requantize_float& s, int32x4_t x, const lanes&) {
  return requantize_float4(x, vdupq_n_f32(s.multiplier), s.zero_point, s.qmin, s.qmax);
}

QLIB_TARGET_NEON QLIB_ALWAYS_INLINE int32x4_t apply(const gemm::requantize_float_per_channel& s, int32x4_t x,
                                                    const lanes& at) {
  return requantize_float4(x, load_f32(s.multiplier + at.col, at), s.zero_point, s.qmin, s.qmax);
}

QLIB_TARGET_NEON QLIB_ALWAYS_INLINE int32x4_t apply(const gemm::clamp& s, int32x4_t x, const lanes&) {
  return vminq_s32(vmaxq_s32(x, vdupq_n_s32(s.lo)), vdupq_n_s32(s.hi));
}

// eval()'s x > lo ? x : lo, then v < hi ? v : hi, literally: a NaN gives lo, and of two
// equal zeros the bound wins.
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE float32x4_t apply(const gemm::clamp_float& s, float32x4_t x, const lanes&) {
  const float32x4_t lo = vdupq_n_f32(s.lo), hi = vdupq_n_f32(s.hi);
  const float32x4_t v = vbslq_f32(vcgtq_f32(x, lo), x, lo);
  return vbslq_f32(vcltq_f32(v, hi), v, hi);
}

// (A saturating_cast that ends the pipeline is skipped: store() saturates by itself.)
template <class T>
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE int32x4_t apply(const gemm::saturating_cast<T>&, int32x4_t x, const lanes&) {
  return vminq_s32(vmaxq_s32(x, vdupq_n_s32(std::numeric_limits<T>::min())),
                   vdupq_n_s32(std::numeric_limits<T>::max()));
}

QLIB_TARGET_NEON QLIB_ALWAYS_INLINE float32x4_t apply(const gemm::dequantize& s, int32x4_t x, const lanes&) {
  return vmulq_f32(vcvtq_f32_s32(x), vdupq_n_f32(s.scale));
}

QLIB_TARGET_NEON QLIB_ALWAYS_INLINE float32x4_t apply(const gemm::dequantize_per_channel& s, int32x4_t x,
                                                      const lanes& at) {
  const float32x4_t channel = load_f32(s.channel_scale + at.col, at);
  return vmulq_f32(vcvtq_f32_s32(x), vmulq_f32(vdupq_n_f32(s.input_scale), channel));
}

// ---- running a pipeline ----

template <class S, class V, class = void>
struct has_apply : std::false_type {};
template <class S, class V>
struct has_apply<S, V, decltype((void)apply(std::declval<const S&>(), std::declval<V>(), std::declval<const lanes&>()))>
    : std::true_type {};

// True if stage S runs vectorized here (rather than through the eval() fallback).
template <class S>
inline constexpr bool vectorized = has_apply<S, vec_t<typename S::input_type>>::value;

template <class S>
struct is_saturating_cast : std::false_type {};
template <class T>
struct is_saturating_cast<gemm::saturating_cast<T>> : std::true_type {};


template <class T>
using lane_t = std::conditional_t<std::is_same<T, float>::value, float, std::int32_t>;

QLIB_TARGET_NEON QLIB_ALWAYS_INLINE void spill(int32x4_t v, std::int32_t* p) { vst1q_s32(p, v); }
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE void spill(float32x4_t v, float* p) { vst1q_f32(p, v); }
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE int32x4_t reload(const std::int32_t* p) { return vld1q_s32(p); }
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE float32x4_t reload(const float* p) { return vld1q_f32(p); }

// A stage without a NEON implementation: its portable eval() on each real lane.
template <class S, class V>
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE vec_t<typename S::output_type> fallback(const S& s, V v, const lanes& at) {
  using in_t = typename S::input_type;
  using out_t = typename S::output_type;
  alignas(16) lane_t<in_t> in[4];
  alignas(16) lane_t<out_t> out[4] = {};
  spill(v, in);
  for (int l = 0; l < at.count; ++l)
    out[l] = static_cast<lane_t<out_t>>(s.eval(static_cast<in_t>(in[l]), at.row, at.col + l));
  return reload(out);
}

template <std::size_t I, class Pipeline, class V>
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE auto run_stages(const Pipeline& p, V v, const lanes& at) {
  if constexpr (I == std::tuple_size<Pipeline>::value) {
    return v;
  } else {
    using S = std::tuple_element_t<I, Pipeline>;
    if constexpr (I + 1 == std::tuple_size<Pipeline>::value && is_saturating_cast<S>::value) return v;
    else if constexpr (has_apply<S, V>::value) return run_stages<I + 1>(p, apply(std::get<I>(p), v, at), at);
    else return run_stages<I + 1>(p, fallback(std::get<I>(p), v, at), at);
  }
}

// 4 lanes narrowed with saturation: the identity on values of the narrow type, and a
// final saturating_cast otherwise (sqxtn to int16 then to int8 is a clamp to int8;
// sqxtun to uint16 then uqxtn to uint8 a clamp to [0, 255]).
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE int16x4_t narrow(std::int16_t*, int32x4_t v) { return vqmovn_s32(v); }
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE uint16x4_t narrow(std::uint16_t*, int32x4_t v) { return vqmovun_s32(v); }
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE int8x8_t narrow(std::int8_t*, int32x4_t v) {
  return vqmovn_s16(vcombine_s16(vqmovn_s32(v), vdup_n_s16(0)));
}
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE uint8x8_t narrow(std::uint8_t*, int32x4_t v) {
  return vqmovn_u16(vcombine_u16(vqmovun_s32(v), vdup_n_u16(0)));
}
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE void store_full(std::int32_t* p, int32x4_t v) { vst1q_s32(p, v); }
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE void store_full(float* p, float32x4_t v) { vst1q_f32(p, v); }
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE void store_full(std::int16_t* p, int32x4_t v) { vst1_s16(p, narrow(p, v)); }
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE void store_full(std::uint16_t* p, int32x4_t v) { vst1_u16(p, narrow(p, v)); }
// 4 bytes through memcpy, not vst1_lane_u32 through a cast pointer: C need not be 4-byte aligned.
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE void store_bytes4(void* p, uint8x8_t v) {
  const std::uint32_t word = vget_lane_u32(vreinterpret_u32_u8(v), 0);
  std::memcpy(p, &word, 4);
}
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE void store_full(std::int8_t* p, int32x4_t v) {
  store_bytes4(p, vreinterpret_u8_s8(narrow(p, v)));
}
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE void store_full(std::uint8_t* p, int32x4_t v) { store_bytes4(p, narrow(p, v)); }

// Only the first at.count elements at p are written.
template <class T, class V>
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE void store(T* p, V v, const lanes& at) {
  if (at.count == 4) return store_full(p, v);
  T buf[4];
  store_full(buf, v);
  // Spelled out: as a loop, g++ turns the copy into a call to memcpy.
  p[0] = buf[0];
  if (at.count > 1) p[1] = buf[1];
  if (at.count > 2) p[2] = buf[2];
}

template <class Pipeline, class Out>
QLIB_TARGET_NEON QLIB_ALWAYS_INLINE void store_segment(const Pipeline& pipeline, const std::int32_t* tile, Out* c,
                                                       const lanes& at) {
  store(c, run_stages<0>(pipeline, load_i32(tile, at), at), at);
}

}  // namespace neon_stages
// See kernels/portable/output_stages.hpp for the contract. arch::neon_dotprod derives
// from arch::neon, so its GEMM kernels land here too.
template <class Pipeline, class Out>
QLIB_TARGET_NEON void store_tile(arch::neon, const Pipeline& pipeline_in, const std::int32_t* tile, index_t ld,
                                 index_t rows, index_t cols, Out* c, index_t ldc, index_t row0, index_t col0) {
  if constexpr (!simd_lane_types_only<Pipeline>::value) {
    store_tile(arch::portable{}, pipeline_in, tile, ld, rows, cols, c, ldc, row0, col0);
  } else {
    // A local copy: stores to int8 C may alias the caller's pipeline object, which would
    // make the compiler reload every stage parameter after every store.
    const Pipeline pipeline = pipeline_in;
    const index_t full = cols / 4 * 4;
    for (index_t r = 0; r < rows; ++r) {
      const std::int32_t* t = tile + r * ld;
      Out* cr = c + r * ldc;
      // Whole vectors with a constant count of 4 (no tail tests in this loop), then the tail.
      for (index_t j = 0; j < full; j += 4)
        neon_stages::store_segment(pipeline, t + j, cr + j, neon_stages::lanes{row0 + r, col0 + j, 4});
      if (full < cols)
        neon_stages::store_segment(pipeline, t + full, cr + full,
                                   neon_stages::lanes{row0 + r, col0 + full, static_cast<int>(cols - full)});
    }
  }
}

}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_ARM_KERNELS
