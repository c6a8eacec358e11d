// Scalar affine quantize/dequantize of one value: the normative definition of qlib's numerics.
#pragma once

#include <cmath>
#include <cstdint>

namespace qlib {

// Round half to even, exactly, independent of the floating-point environment.
inline float round_half_even(float v) noexcept {
  if (!(std::fabs(v) < 8388608.0f)) return v;  // |v| >= 2^23 is an integer already (or NaN/Inf)
  const float f = std::floor(v);
  const float d = v - f;  // exact
  if (d > 0.5f || (d == 0.5f && (static_cast<std::int32_t>(f) & 1) != 0)) return f + 1.0f;
  return f;
}

// q = clamp(round_half_even(x * inv_scale) + zp, qmin, qmax), with
//  - inv_scale = 1.0f / scale computed in float (as PyTorch/FBGEMM do): multiplying by it
//    is what every SIMD path does, so all paths agree bit for bit;
//  - NaN -> zp (real 0), +Inf -> qmax, -Inf -> qmin: never a sign flip, never UB.
// The clamp happens in float before the conversion, so no value overflows int32.
inline std::int32_t quantize_value(float x, float inv_scale, std::int32_t zp, std::int32_t qmin,
                                   std::int32_t qmax) noexcept {
  float v = x * inv_scale;
  if (std::isnan(v)) return zp;
  const float lo = static_cast<float>(qmin - zp);
  const float hi = static_cast<float>(qmax - zp);
  v = v < lo ? lo : (v > hi ? hi : v);
  return static_cast<std::int32_t>(round_half_even(v)) + zp;
}

// real = (q - zp) * scale, in float (q - zp is exact).
inline float dequantize_value(std::int32_t q, float scale, std::int32_t zp) noexcept {
  return static_cast<float>(q - zp) * scale;
}

// Quantize then dequantize: the value inference will see.
inline float fake_quantize_value(float x, float scale, float inv_scale, std::int32_t zp, std::int32_t qmin,
                                 std::int32_t qmax) noexcept {
  return dequantize_value(quantize_value(x, inv_scale, zp, qmin, qmax), scale, zp);
}

}  // namespace qlib
