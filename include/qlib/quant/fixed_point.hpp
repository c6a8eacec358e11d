// Fixed-point requantization math (gemmlowp/TFLite): the scalar definitions every SIMD path matches.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "qlib/core/error.hpp"

// A real multiplier r > 0 is written r = multiplier * 2^(shift - 31) with multiplier a
// Q0.31 integer in [2^30, 2^31) (quantize_multiplier). Applying it to an int32
// accumulator x comes in two TFLite flavours:
//
//  - double rounding (gemmlowp; TFLite's default build):
//      RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x << left, multiplier), right)
//    with left = max(shift, 0), right = max(-shift, 0). The first rounding breaks ties
//    upwards (toward +inf), the second away from zero.
//  - single rounding (TFLite built with TFLITE_SINGLE_ROUNDING):
//      (x * multiplier + 2^(30 - shift)) >> (31 - shift)      (64-bit, ties toward +inf)
//
// Where TFLite has undefined behaviour qlib saturates: `x << left` in double rounding
// saturates to int32 (TFLite's x * (1 << left) overflows), and the single-rounding
// result saturates to int32 (TFLite only DCHECKs it fits). Elsewhere the results are
// TFLite's bit for bit.
namespace qlib {

enum class fixed_point_rounding {
  double_rounding,  // gemmlowp SaturatingRoundingDoublingHighMul + RoundingDivideByPOT
  single_rounding,  // TFLITE_SINGLE_ROUNDING: one 64-bit product, one rounding shift
};

inline const char* fixed_point_rounding_name(fixed_point_rounding r) noexcept {
  return r == fixed_point_rounding::double_rounding ? "double_rounding" : "single_rounding";
}

// Valid shift exponents: r = multiplier * 2^(shift - 31), shift in [-31, 30] (TFLite's range).
inline constexpr int min_fixed_point_shift = -31;
inline constexpr int max_fixed_point_shift = 30;

// gemmlowp's SaturatingRoundingDoublingHighMul, spelled out as gemmlowp writes it:
// round(a * b / 2^31) with ties toward +inf (the nudge and C++'s truncating division
// combine to that); the single overflowing case a == b == INT32_MIN saturates.
inline std::int32_t saturating_rounding_doubling_high_mul(std::int32_t a, std::int32_t b) noexcept {
  const bool overflow = a == b && a == std::numeric_limits<std::int32_t>::min();
  const std::int64_t ab = static_cast<std::int64_t>(a) * static_cast<std::int64_t>(b);
  const std::int32_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
  const auto high = static_cast<std::int32_t>((ab + nudge) / (std::int64_t{1} << 31));
  return overflow ? std::numeric_limits<std::int32_t>::max() : high;
}

// gemmlowp's RoundingDivideByPOT: x / 2^exponent rounded to nearest, ties away from
// zero. exponent in [0, 31].
inline std::int32_t rounding_divide_by_pot(std::int32_t x, int exponent) noexcept {
  const auto mask = static_cast<std::int32_t>((std::int64_t{1} << exponent) - 1);
  const std::int32_t remainder = x & mask;
  const std::int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

// x * 2^exponent saturated to int32, exponent in [0, 31).
inline std::int32_t saturating_left_shift(std::int32_t x, int exponent) noexcept {
  const std::int64_t v = static_cast<std::int64_t>(x) * (std::int64_t{1} << exponent);
  if (v > std::numeric_limits<std::int32_t>::max()) return std::numeric_limits<std::int32_t>::max();
  if (v < std::numeric_limits<std::int32_t>::min()) return std::numeric_limits<std::int32_t>::min();
  return static_cast<std::int32_t>(v);
}

// a + b saturated to int32.
inline std::int32_t saturating_add(std::int32_t a, std::int32_t b) noexcept {
  const std::int64_t v = static_cast<std::int64_t>(a) + b;
  if (v > std::numeric_limits<std::int32_t>::max()) return std::numeric_limits<std::int32_t>::max();
  if (v < std::numeric_limits<std::int32_t>::min()) return std::numeric_limits<std::int32_t>::min();
  return static_cast<std::int32_t>(v);
}

// TFLite's MultiplyByQuantizedMultiplier (see the top of this file for both roundings).
// multiplier >= 0, shift in [min_fixed_point_shift, max_fixed_point_shift].
inline std::int32_t multiply_by_quantized_multiplier(std::int32_t x, std::int32_t multiplier, int shift,
                                                     fixed_point_rounding rounding) noexcept {
  if (rounding == fixed_point_rounding::double_rounding) {
    const int left = shift > 0 ? shift : 0;
    const int right = shift > 0 ? 0 : -shift;
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(saturating_left_shift(x, left), multiplier),
                                  right);
  }
  const int total_shift = 31 - shift;  // 1..62
  const std::int64_t round = std::int64_t{1} << (total_shift - 1);
  // |x * multiplier| < 2^62 and round <= 2^61: no 64-bit overflow.
  const std::int64_t v = (static_cast<std::int64_t>(x) * multiplier + round) >> total_shift;
  if (v > std::numeric_limits<std::int32_t>::max()) return std::numeric_limits<std::int32_t>::max();
  if (v < std::numeric_limits<std::int32_t>::min()) return std::numeric_limits<std::int32_t>::min();
  return static_cast<std::int32_t>(v);
}

// A real multiplier as (Q0.31 multiplier, shift), as TFLite's QuantizeMultiplier does it.
struct quantized_multiplier {
  std::int32_t multiplier = 0;
  int shift = 0;
};

// Writes real = multiplier * 2^(shift - 31), multiplier in [2^30, 2^31), rounding the
// significand to nearest (ties away from zero, std::round). real must be finite and in
// [0, 2^30); 0 and multipliers too small for shift >= -31 give {0, 0} (everything maps
// to zero, as in TFLite).
inline quantized_multiplier quantize_multiplier(double real) {
  QLIB_CHECK(std::isfinite(real) && real >= 0.0 && real < 1073741824.0, errc::invalid_argument,
             "quantize_multiplier needs a finite real multiplier in [0, 2^30), got " + std::to_string(real));
  if (real == 0.0) return {};
  int exponent = 0;
  const double significand = std::frexp(real, &exponent);  // real = significand * 2^exponent, [0.5, 1)
  auto q = static_cast<std::int64_t>(std::round(significand * 2147483648.0));
  if (q == (std::int64_t{1} << 31)) {  // rounded up to 1.0
    q /= 2;
    ++exponent;
  }
  if (exponent < min_fixed_point_shift) return {};
  QLIB_CHECK(exponent <= max_fixed_point_shift, errc::invalid_argument,
             "real multiplier " + std::to_string(real) + " needs a shift above 30");
  return {static_cast<std::int32_t>(q), exponent};
}

}  // namespace qlib
