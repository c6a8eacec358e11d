// AVX-512 (F/BW/DQ) GEMM epilogue: each output stage on 16 lanes, portable fallback for the rest.
#pragma once

#include <cstdint>
#include <limits>
#include <tuple>
#include <type_traits>
#include <utility>

#include "qlib/arch/target.hpp"
#include "qlib/kernels/avx512/lane_mask.hpp"
#include "qlib/gemm/pipeline.hpp"
#include "qlib/gemm/zero_point_correction.hpp"
#include "qlib/kernels/portable/output_stages.hpp"

#if QLIB_HAS_X86_KERNELS
#include <immintrin.h>

QLIB_KERNEL_BEGIN

// A row segment of up to 16 accumulators stays in one zmm through every stage and is
// stored once. Integer values of any width travel as int32 lanes (the final store
// narrows them), floats as float lanes. Each stage here equals its eval() bit for bit.
// store_tile goes 16 columns at a time: a stage first prepares what depends only on
// those columns (prepare(): per-channel vectors, shift amounts, rounding constants),
// then runs on each row with that kept in registers (run()). A stage with neither a
// prepare() nor an apply() overload below (e.g. one you wrote) is evaluated by spilling
// the 16 lanes, running eval() on each, and reloading.
namespace qlib {
namespace kernels {
namespace avx512_stages {

// Where a vector sits in C: its row, its first column, which lanes are real.
struct lanes {
  index_t row;
  index_t col;
  __mmask16 mask;
};

// The register type a value of type T travels in.
template <class T>
struct vec {
  using type = __m512i;
};
template <>
struct vec<float> {
  using type = __m512;
};
template <class T>
using vec_t = typename vec<T>::type;

using avx512_detail::tail_mask;

// Lanes where v < 0.
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __mmask16 negative(__m512i v) { return _mm512_movepi32_mask(v); }
// INT32_MAX for non-negative lanes of `sign_of`, INT32_MIN for negative ones.
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512i saturation_value(__m512i sign_of) {
  return _mm512_xor_si512(_mm512_srai_epi32(sign_of, 31), _mm512_set1_epi32(std::numeric_limits<std::int32_t>::max()));
}
// saturating_add() on 16 lanes.
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512i saturating_add(__m512i a, __m512i b) {
  const __m512i r = _mm512_add_epi32(a, b);
  // Overflow iff a and b share a sign that r does not: sign bit of (a ^ r) & (b ^ r).
  const __m512i t = _mm512_and_si512(_mm512_xor_si512(a, r), _mm512_xor_si512(b, r));
  return _mm512_mask_mov_epi32(r, negative(t), saturation_value(a));
}

// The low 32 bits of each 64-bit lane of `even`, and those of `odd` in the high halves
// (one shuffle that copies each odd lane's low half up, merged under a mask).
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512i merge_even_odd(__m512i even, __m512i odd) {
  return _mm512_mask_shuffle_epi32(even, 0xAAAA, odd, _MM_PERM_CCAA);
}

// multiply_by_quantized_multiplier(), double rounding, with per-lane multiplier and shift.
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512i mbqm_double(__m512i x, __m512i multiplier, __m512i shift) {
  const __m512i zero = _mm512_setzero_si512();
  const __m512i right = _mm512_max_epi32(_mm512_sub_epi32(zero, shift), zero);
  // saturating_left_shift: shift, shift back, and saturate lanes that lost bits.
  const __m512i left = _mm512_max_epi32(shift, zero);
  const __m512i shifted = _mm512_sllv_epi32(x, left);
  const __mmask16 lost = _mm512_cmpneq_epi32_mask(_mm512_srav_epi32(shifted, left), x);
  const __m512i xs = _mm512_mask_mov_epi32(shifted, lost, saturation_value(x));
  // SaturatingRoundingDoublingHighMul = (x * m + 2^30) >> 31 (floor) for every pair but
  // INT32_MIN * INT32_MIN, which multiplier >= 0 rules out.
  const __m512i nudge = _mm512_set1_epi64(std::int64_t{1} << 30);
  const __m512i pe = _mm512_srai_epi64(_mm512_add_epi64(_mm512_mul_epi32(xs, multiplier), nudge), 31);
  const __m512i po = _mm512_srai_epi64(
      _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(xs, 32), _mm512_srli_epi64(multiplier, 32)), nudge), 31);
  const __m512i high = merge_even_odd(pe, po);
  // RoundingDivideByPOT: threshold = mask / 2 + (x < 0).
  const __m512i mask = _mm512_sub_epi32(_mm512_sllv_epi32(_mm512_set1_epi32(1), right), _mm512_set1_epi32(1));
  const __m512i remainder = _mm512_and_si512(high, mask);
  const __m512i threshold = _mm512_add_epi32(_mm512_srli_epi32(mask, 1), _mm512_srli_epi32(high, 31));
  const __m512i q = _mm512_srav_epi32(high, right);
  return _mm512_mask_add_epi32(q, _mm512_cmpgt_epi32_mask(remainder, threshold), q, _mm512_set1_epi32(1));
}

// multiply_by_quantized_multiplier(), single rounding: one 64-bit product, one rounding
// shift by 31 - shift, saturated to int32.
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512i mbqm_single(__m512i x, __m512i multiplier, __m512i shift) {
  const __m512i total = _mm512_sub_epi32(_mm512_set1_epi32(31), shift);  // 1..62
  const __m512i low32 = _mm512_set1_epi64(0xffffffffLL);
  const __m512i te = _mm512_and_si512(total, low32), to = _mm512_srli_epi64(total, 32);
  const __m512i one = _mm512_set1_epi64(1);
  const __m512i re = _mm512_sllv_epi64(one, _mm512_sub_epi64(te, one));
  const __m512i ro = _mm512_sllv_epi64(one, _mm512_sub_epi64(to, one));
  const __m512i lo = _mm512_set1_epi64(std::numeric_limits<std::int32_t>::min());
  const __m512i hi = _mm512_set1_epi64(std::numeric_limits<std::int32_t>::max());
  __m512i pe = _mm512_srav_epi64(_mm512_add_epi64(_mm512_mul_epi32(x, multiplier), re), te);
  __m512i po = _mm512_srav_epi64(
      _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(x, 32), _mm512_srli_epi64(multiplier, 32)), ro), to);
  pe = _mm512_min_epi64(_mm512_max_epi64(pe, lo), hi);
  po = _mm512_min_epi64(_mm512_max_epi64(po, lo), hi);
  return merge_even_odd(pe, po);
}

// quantize_value(float(x), multiplier, zp, qmin, qmax) for non-NaN products (the product
// of an int32 and a finite positive multiplier is never NaN).
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512i requantize_float16(__m512i x, __m512 multiplier, std::int32_t zp,
                                                                 std::int32_t qmin, std::int32_t qmax) {
  __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(x), multiplier);
  v = _mm512_max_ps(v, _mm512_set1_ps(static_cast<float>(qmin - zp)));
  v = _mm512_min_ps(v, _mm512_set1_ps(static_cast<float>(qmax - zp)));
  return _mm512_add_epi32(_mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                          _mm512_set1_epi32(zp));
}

// ---- stages with scalar parameters: apply() per row ----

QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512i apply(const gemm::requantize_float& s, __m512i x, const lanes&) {
  return requantize_float16(x, _mm512_set1_ps(s.multiplier), s.zero_point, s.qmin, s.qmax);
}

QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512i apply(const gemm::clamp& s, __m512i x, const lanes&) {
  return _mm512_min_epi32(_mm512_max_epi32(x, _mm512_set1_epi32(s.lo)), _mm512_set1_epi32(s.hi));
}

// vmaxps(x, lo) is x > lo ? x : lo and vminps(v, hi) is v < hi ? v : hi: clamp_float's eval.
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512 apply(const gemm::clamp_float& s, __m512 x, const lanes&) {
  return _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(s.lo)), _mm512_set1_ps(s.hi));
}

template <class T>
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512i apply(const gemm::saturating_cast<T>&, __m512i x, const lanes&) {
  return _mm512_min_epi32(_mm512_max_epi32(x, _mm512_set1_epi32(std::numeric_limits<T>::min())),
                          _mm512_set1_epi32(std::numeric_limits<T>::max()));
}

QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512 apply(const gemm::dequantize& s, __m512i x, const lanes&) {
  return _mm512_mul_ps(_mm512_cvtepi32_ps(x), _mm512_set1_ps(s.scale));
}

// ---- running a pipeline ----

template <class S, class V, class = void>
struct has_apply : std::false_type {};
template <class S, class V>
struct has_apply<S, V, decltype((void)apply(std::declval<const S&>(), std::declval<V>(), std::declval<const lanes&>()))>
    : std::true_type {};

// Lanes of any value type as int32 or float, for the fallback.
template <class T>
using lane_t = std::conditional_t<std::is_same<T, float>::value, float, std::int32_t>;

QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE void spill(__m512i v, std::int32_t* p) { _mm512_storeu_si512(p, v); }
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE void spill(__m512 v, float* p) { _mm512_storeu_ps(p, v); }
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512i reload(const std::int32_t* p) { return _mm512_loadu_si512(p); }
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512 reload(const float* p) { return _mm512_loadu_ps(p); }

// A stage without an AVX-512 implementation: its portable eval() on each real lane.
template <class S, class V>
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE vec_t<typename S::output_type> fallback(const S& s, V v, const lanes& at) {
  using in_t = typename S::input_type;
  using out_t = typename S::output_type;
  alignas(64) lane_t<in_t> in[16];
  alignas(64) lane_t<out_t> out[16] = {};
  spill(v, in);
  for (int l = 0; l < 16; ++l)
    if ((at.mask >> l) & 1) out[l] = static_cast<lane_t<out_t>>(s.eval(static_cast<in_t>(in[l]), at.row, at.col + l));
  return reload(out);
}

// ---- stages with per-column parameters: prepare() once per 16 columns, run() per row ----
// With narrow tiles (24 rows x 16 columns) and short K the epilogue is most of a GEMM's
// work, so what depends only on the columns is not redone for every row. A stage
// without its own prepare() keeps a pointer to itself and runs apply() (or the
// fallback) per row.
template <class S>
struct unprepared {
  const S* s;
};
template <class S>
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE unprepared<S> prepare(const S& s, const lanes&) {
  return {&s};
}
template <class S, class V>
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE auto run(const unprepared<S>& p, V v, const lanes& at) {
  if constexpr (has_apply<S, V>::value) return apply(*p.s, v, at);
  else return fallback(*p.s, v, at);
}

struct zero_point_columns {
  __m512i zb;
  const std::int32_t* row_sum;
  index_t row_begin;
};
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE zero_point_columns prepare(const gemm::weight_zero_point_correction& s,
                                                                 const lanes& at) {
  const __m512i zb = s.per_channel ? _mm512_maskz_loadu_epi32(at.mask, s.weight_zero_point + at.col)
                                   : _mm512_set1_epi32(s.weight_zero_point[0]);
  return {zb, s.row_sum, s.row_begin};
}
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512i run(const zero_point_columns& p, __m512i x, const lanes& at) {
  return _mm512_sub_epi32(x, _mm512_mullo_epi32(p.zb, _mm512_set1_epi32(p.row_sum[at.row - p.row_begin])));
}

struct bias_columns {
  __m512i bias;
};
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE bias_columns prepare(const gemm::bias_add& s, const lanes& at) {
  return {_mm512_maskz_loadu_epi32(at.mask, s.bias + at.col)};
}
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512i run(const bias_columns& p, __m512i x, const lanes&) {
  return _mm512_add_epi32(x, p.bias);
}

// Fixed-point requantize: multipliers, shifts and rounding constants once per 16
// columns, the products and roundings per row. When every real lane shifts right (e = -shift
// >= 1, the usual multiplier < 0.5) and |zp| < 2^30, the result fits without any
// saturation and each rounding folds into one 64-bit add and shift of the product
// ab = x * m (|ab| < 2^62, so nothing overflows):
//  - single rounding: (ab + 2^(30+e)) >> (31+e), mbqm_single() without its clamps;
//  - double rounding: SaturatingRoundingDoublingHighMul is h = floor((ab + 2^30) / 2^31)
//    (m >= 0), and RoundingDivideByPOT(h, e) rounds h / 2^e half away from zero, which
//    is floor((h + 2^(e-1) - [h < 0]) / 2^e); the two floors nest into one:
//    (ab + 2^30 + 2^(30+e) - [ab < -2^30] * 2^31) >> (31+e).
// Even and odd int32 lanes go through vpmuldq separately (64-bit products) and are
// merged by one masked shuffle. Otherwise (left shifts, a large zp) the full
// computation with its saturations runs. test_gemm_stages checks both against eval()
// for every shift, extreme multipliers and accumulators.
template <fixed_point_rounding R>
struct fixed_point_columns {
  __m512i multiplier, multiplier_odd, shift, zp;  // multiplier_odd: odd lanes' multipliers in the even halves
  __m512i add_even, add_odd, shift_even, shift_odd;  // the 64-bit rounding add and shift per product
  bool right_only;  // every real lane shifts right and |zp| < 2^30: the short path above
};
template <fixed_point_rounding R>
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE fixed_point_columns<R> prepare_fixed(__m512i multiplier, __m512i shift,
                                                                           std::int32_t zp, __mmask16 real) {
  fixed_point_columns<R> p;
  p.multiplier = multiplier;
  p.multiplier_odd = _mm512_srli_epi64(multiplier, 32);
  p.shift = shift;
  p.zp = _mm512_set1_epi32(zp);
  p.right_only = (_mm512_cmpge_epi32_mask(shift, _mm512_setzero_si512()) & real) == 0 && zp > -(1 << 30) &&
                 zp < (1 << 30);
  // e = max(-shift, 0) per int32 lane, then per 64-bit lane for the even and odd products.
  const __m512i e = _mm512_max_epi32(_mm512_sub_epi32(_mm512_setzero_si512(), shift), _mm512_setzero_si512());
  const __m512i e_even = _mm512_and_si512(e, _mm512_set1_epi64(0xffffffffLL)), e_odd = _mm512_srli_epi64(e, 32);
  const __m512i bias = _mm512_set1_epi64(R == fixed_point_rounding::double_rounding ? std::int64_t{1} << 30 : 0);
  const __m512i half = _mm512_set1_epi64(std::int64_t{1} << 30);
  p.add_even = _mm512_add_epi64(_mm512_sllv_epi64(half, e_even), bias);
  p.add_odd = _mm512_add_epi64(_mm512_sllv_epi64(half, e_odd), bias);
  p.shift_even = _mm512_add_epi64(e_even, _mm512_set1_epi64(31));
  p.shift_odd = _mm512_add_epi64(e_odd, _mm512_set1_epi64(31));
  return p;
}
template <fixed_point_rounding R>
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE fixed_point_columns<R> prepare(const gemm::requantize_fixed_point<R>& s,
                                                                     const lanes&) {
  return prepare_fixed<R>(_mm512_set1_epi32(s.multiplier), _mm512_set1_epi32(s.shift), s.zero_point,
                          __mmask16(0xffff));
}
template <fixed_point_rounding R>
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE fixed_point_columns<R> prepare(
    const gemm::requantize_fixed_point_per_channel<R>& s, const lanes& at) {
  return prepare_fixed<R>(_mm512_maskz_loadu_epi32(at.mask, s.multiplier + at.col),
                          _mm512_maskz_loadu_epi32(at.mask, s.shift + at.col), s.zero_point, at.mask);
}
template <fixed_point_rounding R>
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512i run(const fixed_point_columns<R>& p, __m512i x, const lanes&) {
  if (!p.right_only) {  // left shifts or a large zero point: the full computation with saturations
    if constexpr (R == fixed_point_rounding::double_rounding)
      return saturating_add(mbqm_double(x, p.multiplier, p.shift), p.zp);
    else
      return saturating_add(mbqm_single(x, p.multiplier, p.shift), p.zp);
  }
  const __m512i pe = _mm512_mul_epi32(x, p.multiplier);
  const __m512i po = _mm512_mul_epi32(_mm512_srli_epi64(x, 32), p.multiplier_odd);
  __m512i ue = _mm512_add_epi64(pe, p.add_even), uo = _mm512_add_epi64(po, p.add_odd);
  if constexpr (R == fixed_point_rounding::double_rounding) {
    // - [ab < -2^30] * 2^31, here as - [x < 0] * 2^31: the two differ only when
    // -2^30 <= ab < 0, where both results are 0 (e >= 1). Sign tests of the even and
    // odd halves of x are cheaper than 64-bit compares of the products.
    const __m512i step = _mm512_set1_epi64(std::int64_t{1} << 31);
    ue = _mm512_mask_sub_epi64(ue, _mm512_test_epi64_mask(x, _mm512_set1_epi64(0x80000000LL)), ue, step);
    uo = _mm512_mask_sub_epi64(uo, _mm512_movepi64_mask(x), uo, step);
  }
  const __m512i re = _mm512_srav_epi64(ue, p.shift_even), ro = _mm512_srav_epi64(uo, p.shift_odd);
  return _mm512_add_epi32(merge_even_odd(re, ro), p.zp);
}

struct float_multiplier_columns {
  __m512 multiplier;
  std::int32_t zp, qmin, qmax;
};
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE float_multiplier_columns prepare(const gemm::requantize_float_per_channel& s,
                                                                       const lanes& at) {
  return {_mm512_maskz_loadu_ps(at.mask, s.multiplier + at.col), s.zero_point, s.qmin, s.qmax};
}
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512i run(const float_multiplier_columns& p, __m512i x, const lanes&) {
  return requantize_float16(x, p.multiplier, p.zp, p.qmin, p.qmax);
}

struct dequantize_columns {
  __m512 scale;  // input_scale * channel_scale, in float as eval() takes it
};
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE dequantize_columns prepare(const gemm::dequantize_per_channel& s,
                                                                 const lanes& at) {
  const __m512 channel = _mm512_maskz_loadu_ps(at.mask, s.channel_scale + at.col);
  return {_mm512_mul_ps(_mm512_set1_ps(s.input_scale), channel)};
}
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512 run(const dequantize_columns& p, __m512i x, const lanes&) {
  return _mm512_mul_ps(_mm512_cvtepi32_ps(x), p.scale);
}

// A saturating_cast that ends the pipeline: store() saturates (vpmovsdb, vpmovusdb and
// the 16-bit forms), so only an unsigned type's lower bound is left to apply here.
template <class T>
struct cast_on_store {};
template <class T>
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __m512i run(const cast_on_store<T>&, __m512i x, const lanes&) {
  if constexpr (std::is_signed<T>::value) return x;
  else return _mm512_max_epi32(x, _mm512_setzero_si512());
}
template <class S>
struct is_saturating_cast : std::false_type {};
template <class T>
struct is_saturating_cast<gemm::saturating_cast<T>> : std::true_type {};

template <std::size_t I, class Pipeline>
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE auto prepare_stage(const Pipeline& p, const lanes& at) {
  using S = std::tuple_element_t<I, Pipeline>;
  if constexpr (I + 1 == std::tuple_size<Pipeline>::value && is_saturating_cast<S>::value)
    return cast_on_store<typename S::output_type>{};
  else
    return prepare(std::get<I>(p), at);
}
template <class Pipeline, std::size_t... I>
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE auto prepare_stages(const Pipeline& p, const lanes& at,
                                                          std::index_sequence<I...>) {
  return std::make_tuple(prepare_stage<I>(p, at)...);
}

template <std::size_t I, class Prepared, class V>
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE auto run_stages(const Prepared& p, V v, const lanes& at) {
  if constexpr (I == std::tuple_size<Prepared>::value) return v;
  else return run_stages<I + 1>(p, run(std::get<I>(p), v, at), at);
}

// Stores 16 lanes (masked) as the pipeline's output type.
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE void store(std::int32_t* p, __m512i v, __mmask16 m) {
  _mm512_mask_storeu_epi32(p, m, v);
}
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE void store(float* p, __m512 v, __mmask16 m) { _mm512_mask_storeu_ps(p, m, v); }
// Narrowing stores saturate: the lanes hold values of the narrow type (saturation is
// then the identity) or, after a final saturating_cast (cast_on_store), any int32,
// already >= 0 for unsigned types.
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE void store(std::int8_t* p, __m512i v, __mmask16 m) {
  _mm512_mask_cvtsepi32_storeu_epi8(p, m, v);
}
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE void store(std::uint8_t* p, __m512i v, __mmask16 m) {
  _mm512_mask_cvtusepi32_storeu_epi8(p, m, v);
}
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE void store(std::int16_t* p, __m512i v, __mmask16 m) {
  _mm512_mask_cvtsepi32_storeu_epi16(p, m, v);
}
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE void store(std::uint16_t* p, __m512i v, __mmask16 m) {
  _mm512_mask_cvtusepi32_storeu_epi16(p, m, v);
}

}  // namespace avx512_stages

// See kernels/portable/output_stages.hpp for the contract.
template <class Pipeline, class Out>
QLIB_TARGET_AVX512 void store_tile(arch::avx512, const Pipeline& pipeline_in, const std::int32_t* tile, index_t ld,
                                   index_t rows, index_t cols, Out* c, index_t ldc, index_t row0, index_t col0) {
  if constexpr (!simd_lane_types_only<Pipeline>::value) {
    store_tile(arch::portable{}, pipeline_in, tile, ld, rows, cols, c, ldc, row0, col0);
  } else {
    // A local copy: stores to int8 C may alias the caller's pipeline object, which would
    // make the compiler reload every stage parameter after every store.
    const Pipeline pipeline = pipeline_in;
    // 16 columns at a time, their stage parameters prepared once for all rows.
    for (index_t j = 0; j < cols; j += 16) {
      const __mmask16 m = avx512_stages::tail_mask(cols - j);
      const auto prepared = avx512_stages::prepare_stages(pipeline, avx512_stages::lanes{row0, col0 + j, m},
                                                          std::make_index_sequence<std::tuple_size<Pipeline>::value>{});
      for (index_t r = 0; r < rows; ++r) {
        const avx512_stages::lanes at{row0 + r, col0 + j, m};
        const __m512i acc = _mm512_maskz_loadu_epi32(m, tile + r * ld + j);
        avx512_stages::store(c + r * ldc + j, avx512_stages::run_stages<0>(prepared, acc, at), m);
      }
    }
  }
}

}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_X86_KERNELS
