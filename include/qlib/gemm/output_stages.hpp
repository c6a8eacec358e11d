// GEMM output stages: small data-only structs, each with its portable (scalar) definition.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <type_traits>

#include "qlib/core/tensor_view.hpp"
#include "qlib/quant/fixed_point.hpp"
#include "qlib/quant/rounding.hpp"

// A pipeline (gemm/pipeline.hpp) is a std::tuple of stages run on each int32
// accumulator C[row][col] = sum_k (A[row][k] - za) * (B[k][col] - zb[col]) before it
// is stored. Every stage declares
//
//   using input_type = ...;  using output_type = ...;
//   output_type eval(input_type x, index_t row, index_t col) const;  // THE definition
//   void validate(index_t rows, index_t cols) const;                   // at the API boundary
//
// and int32 -> int32 stages whose result can be larger than their input also declare
//   std::int64_t max_magnitude(std::int64_t input_bound) const;
// which gemm() uses to prove that no int32 overflows. eval() is the portable path and
// the reference; ISA paths (kernels/<isa>/output_stages.hpp) must match it bit for bit,
// and a stage without an ISA implementation runs eval() lane by lane on that ISA. A stage
// you write yourself needs only the members above.
//
// Per-channel arrays are indexed by the output column (the weights' output channel) and
// must hold one value per column of C; they are not copied, so they must outlive the
// gemm() call.
namespace qlib {
namespace gemm {

namespace detail {
inline std::int32_t wrapping_add(std::int32_t a, std::int32_t b) noexcept {
  return static_cast<std::int32_t>(static_cast<std::uint32_t>(a) + static_cast<std::uint32_t>(b));
}
inline std::int32_t wrapping_sub(std::int32_t a, std::int32_t b) noexcept {
  return static_cast<std::int32_t>(static_cast<std::uint32_t>(a) - static_cast<std::uint32_t>(b));
}
inline std::int32_t wrapping_mul(std::int32_t a, std::int32_t b) noexcept {
  return static_cast<std::int32_t>(static_cast<std::uint32_t>(a) * static_cast<std::uint32_t>(b));
}
inline void check_channel_array(const void* p, index_t size, index_t cols, const char* stage, const char* what) {
  QLIB_CHECK(p != nullptr, errc::invalid_argument, std::string(stage) + ": null " + what + " array");
  QLIB_CHECK(size == cols, errc::shape_mismatch,
             std::string(stage) + ": " + what + " has " + std::to_string(size) + " entries, C has " +
                 std::to_string(cols) + " columns");
}
inline void check_fixed_point(std::int32_t multiplier, int shift, const char* stage) {
  QLIB_CHECK(multiplier >= 0, errc::invalid_argument,
             std::string(stage) + ": fixed-point multiplier " + std::to_string(multiplier) + " is negative");
  QLIB_CHECK(shift >= min_fixed_point_shift && shift <= max_fixed_point_shift, errc::invalid_argument,
             std::string(stage) + ": shift " + std::to_string(shift) + " outside [-31, 30]");
}
// Bounds of requantize_float: |qmin|, |qmax| <= 2^23 keeps qmin - zp and qmax - zp exact
// in float, so the float clamp cannot round past them.
inline void check_float_requant(float multiplier, std::int32_t zp, std::int32_t qmin, std::int32_t qmax,
                                const char* stage) {
  QLIB_CHECK(std::isfinite(multiplier) && multiplier > 0.0f, errc::invalid_argument,
             std::string(stage) + ": multiplier must be finite and > 0, got " + std::to_string(multiplier));
  constexpr std::int32_t lim = 1 << 23;
  QLIB_CHECK(qmin < qmax && qmin >= -lim && qmax <= lim, errc::invalid_argument,
             std::string(stage) + ": [qmin, qmax] = [" + std::to_string(qmin) + ", " + std::to_string(qmax) +
                 "] must be non-empty and inside [-2^23, 2^23]");
  QLIB_CHECK(zp >= qmin && zp <= qmax, errc::invalid_argument,
             std::string(stage) + ": zero point " + std::to_string(zp) + " outside [qmin, qmax]");
}
}  // namespace detail

// C += bias[col] (int32, one per output channel). Exact: gemm() refuses inputs for which
// |accumulator| + |bias| could exceed int32.
struct bias_add {
  using input_type = std::int32_t;
  using output_type = std::int32_t;
  const std::int32_t* bias = nullptr;
  index_t size = 0;

  std::int32_t eval(std::int32_t x, index_t, index_t col) const noexcept { return detail::wrapping_add(x, bias[col]); }
  void validate(index_t, index_t cols) const { detail::check_channel_array(bias, size, cols, "bias_add", "bias"); }
  std::int64_t max_magnitude(std::int64_t in) const noexcept {
    std::int64_t m = 0;
    for (index_t i = 0; i < size; ++i) m = std::max<std::int64_t>(m, std::llabs(bias[i]));
    return in + m;
  }
};

// q = saturating_add(multiply_by_quantized_multiplier(x, multiplier, shift), zero_point),
// one (multiplier, shift) for the whole tensor (TFLite's per-tensor requantization; see
// quant/fixed_point.hpp for the exact rounding).
template <fixed_point_rounding Rounding = fixed_point_rounding::double_rounding>
struct requantize_fixed_point {
  using input_type = std::int32_t;
  using output_type = std::int32_t;
  std::int32_t multiplier = 0;
  int shift = 0;
  std::int32_t zero_point = 0;

  std::int32_t eval(std::int32_t x, index_t, index_t) const noexcept {
    return saturating_add(multiply_by_quantized_multiplier(x, multiplier, shift, Rounding), zero_point);
  }
  void validate(index_t, index_t) const { detail::check_fixed_point(multiplier, shift, "requantize_fixed_point"); }
};

// The same with one (multiplier, shift) per output channel.
template <fixed_point_rounding Rounding = fixed_point_rounding::double_rounding>
struct requantize_fixed_point_per_channel {
  using input_type = std::int32_t;
  using output_type = std::int32_t;
  const std::int32_t* multiplier = nullptr;
  const std::int32_t* shift = nullptr;
  index_t size = 0;
  std::int32_t zero_point = 0;

  std::int32_t eval(std::int32_t x, index_t, index_t col) const noexcept {
    return saturating_add(multiply_by_quantized_multiplier(x, multiplier[col], shift[col], Rounding), zero_point);
  }
  void validate(index_t, index_t cols) const {
    detail::check_channel_array(multiplier, size, cols, "requantize_fixed_point_per_channel", "multiplier");
    detail::check_channel_array(shift, size, cols, "requantize_fixed_point_per_channel", "shift");
    for (index_t i = 0; i < size; ++i)
      detail::check_fixed_point(multiplier[i], shift[i], "requantize_fixed_point_per_channel");
  }
};

// q = quantize_value(float(x), multiplier, zero_point, qmin, qmax) (quant/rounding.hpp):
// float(x) * multiplier rounded half to even, plus the zero point, clamped to
// [qmin, qmax]. multiplier = scale_a * scale_w / scale_out (PyTorch/FBGEMM-style).
struct requantize_float {
  using input_type = std::int32_t;
  using output_type = std::int32_t;
  float multiplier = 1.0f;
  std::int32_t zero_point = 0;
  std::int32_t qmin = -128, qmax = 127;

  std::int32_t eval(std::int32_t x, index_t, index_t) const noexcept {
    return quantize_value(static_cast<float>(x), multiplier, zero_point, qmin, qmax);
  }
  void validate(index_t, index_t) const {
    detail::check_float_requant(multiplier, zero_point, qmin, qmax, "requantize_float");
  }
  std::int64_t max_magnitude(std::int64_t) const noexcept { return std::max(std::llabs(qmin), std::llabs(qmax)); }
};

// The same with one float multiplier per output channel.
struct requantize_float_per_channel {
  using input_type = std::int32_t;
  using output_type = std::int32_t;
  const float* multiplier = nullptr;
  index_t size = 0;
  std::int32_t zero_point = 0;
  std::int32_t qmin = -128, qmax = 127;

  std::int32_t eval(std::int32_t x, index_t, index_t col) const noexcept {
    return quantize_value(static_cast<float>(x), multiplier[col], zero_point, qmin, qmax);
  }
  void validate(index_t, index_t cols) const {
    detail::check_channel_array(multiplier, size, cols, "requantize_float_per_channel", "multiplier");
    for (index_t i = 0; i < size; ++i)
      detail::check_float_requant(multiplier[i], zero_point, qmin, qmax, "requantize_float_per_channel");
  }
  std::int64_t max_magnitude(std::int64_t) const noexcept { return std::max(std::llabs(qmin), std::llabs(qmax)); }
};

// x clamped to [lo, hi] (int32). ReLU and ReLU6 of quantized values are clamps (relu(),
// relu6() below).
struct clamp {
  using input_type = std::int32_t;
  using output_type = std::int32_t;
  std::int32_t lo = std::numeric_limits<std::int32_t>::min();
  std::int32_t hi = std::numeric_limits<std::int32_t>::max();

  std::int32_t eval(std::int32_t x, index_t, index_t) const noexcept { return x < lo ? lo : (x > hi ? hi : x); }
  void validate(index_t, index_t) const {
    QLIB_CHECK(lo <= hi, errc::invalid_argument,
               "clamp: lo = " + std::to_string(lo) + " > hi = " + std::to_string(hi));
  }
  std::int64_t max_magnitude(std::int64_t in) const noexcept {
    auto c = [&](std::int64_t v) { return v < lo ? std::int64_t{lo} : (v > hi ? std::int64_t{hi} : v); };
    return std::max(std::llabs(c(-in)), std::llabs(c(in)));
  }
};

// x clamped to [lo, hi] in float, written so that a NaN x gives lo, as vmaxps/vminps do.
struct clamp_float {
  using input_type = float;
  using output_type = float;
  float lo = -std::numeric_limits<float>::infinity();
  float hi = std::numeric_limits<float>::infinity();

  float eval(float x, index_t, index_t) const noexcept {
    const float v = x > lo ? x : lo;
    return v < hi ? v : hi;
  }
  void validate(index_t, index_t) const {
    QLIB_CHECK(!std::isnan(lo) && !std::isnan(hi) && lo <= hi, errc::invalid_argument,
               "clamp_float: needs lo <= hi, got [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
};

// ReLU on quantized outputs with zero point zp: [zp, +inf).
inline clamp relu(std::int32_t zero_point) noexcept { return {zero_point, std::numeric_limits<std::int32_t>::max()}; }
// ReLU6 on quantized outputs: [zp, zp + round_half_even(6 / scale)].
inline clamp relu6(std::int32_t zero_point, float scale) {
  QLIB_CHECK(std::isfinite(scale) && scale > 0.0f, errc::invalid_argument,
             "relu6: scale must be finite and > 0, got " + std::to_string(scale));
  const double top = std::nearbyint(6.0 / static_cast<double>(scale)) + zero_point;
  const double cap = static_cast<double>(std::numeric_limits<std::int32_t>::max());
  return {zero_point, static_cast<std::int32_t>(top < cap ? top : cap)};
}
inline clamp_float relu_float() noexcept { return {0.0f, std::numeric_limits<float>::infinity()}; }
inline clamp_float relu6_float() noexcept { return {0.0f, 6.0f}; }

// int32 -> T saturating to T's range (T = int8_t, uint8_t, int16_t, uint16_t).
template <class T>
struct saturating_cast {
  static_assert(std::is_integral<T>::value && sizeof(T) <= 2, "saturating_cast targets 8- or 16-bit integers");
  using input_type = std::int32_t;
  using output_type = T;

  T eval(std::int32_t x, index_t, index_t) const noexcept {
    constexpr std::int32_t lo = std::numeric_limits<T>::min(), hi = std::numeric_limits<T>::max();
    return static_cast<T>(x < lo ? lo : (x > hi ? hi : x));
  }
  void validate(index_t, index_t) const noexcept {}
};

// float(x) * scale: the real value of the accumulator when scale = scale_a * scale_w.
struct dequantize {
  using input_type = std::int32_t;
  using output_type = float;
  float scale = 1.0f;

  float eval(std::int32_t x, index_t, index_t) const noexcept { return static_cast<float>(x) * scale; }
  void validate(index_t, index_t) const {
    QLIB_CHECK(std::isfinite(scale), errc::non_finite, "dequantize: scale is not finite");
  }
};

// float(x) * (input_scale * channel_scale[col]) with the product taken in float first:
// the activation scale times per-channel weight scales (packed_weights::scales()).
struct dequantize_per_channel {
  using input_type = std::int32_t;
  using output_type = float;
  float input_scale = 1.0f;
  const float* channel_scale = nullptr;
  index_t size = 0;

  float eval(std::int32_t x, index_t, index_t col) const noexcept {
    return static_cast<float>(x) * (input_scale * channel_scale[col]);
  }
  void validate(index_t, index_t cols) const {
    detail::check_channel_array(channel_scale, size, cols, "dequantize_per_channel", "channel_scale");
    QLIB_CHECK(std::isfinite(input_scale), errc::non_finite, "dequantize_per_channel: input_scale is not finite");
    for (index_t i = 0; i < size; ++i)
      QLIB_CHECK(std::isfinite(channel_scale[i]), errc::non_finite,
                 "dequantize_per_channel: channel_scale[" + std::to_string(i) + "] is not finite");
  }
};

}  // namespace gemm
}  // namespace qlib
