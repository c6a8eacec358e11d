// fp16 and bf16 storage types and their scalar float conversions (the bit-exact reference).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace qlib {

// The scalar conversions below are the normative definition that every SIMD kernel
// (kernels/<isa>/half_convert.hpp) matches bit for bit. They are pure integer bit
// manipulation: no intrinsics, no dependence on the rounding mode, DAZ/FTZ or traps.
//
// float -> fp16 (IEEE binary16: 1 sign, 5 exponent bits, 10 mantissa bits)
//   - round to nearest, ties to even, as IEEE 754 with an unbounded exponent:
//     |x| >= 65520 (max finite 65504 plus half an ulp) becomes +/-Inf;
//   - subnormal results (|x| < 2^-14) are produced, rounded to nearest even;
//     |x| <= 2^-25 becomes a signed zero; float subnormals therefore give +/-0;
//   - +/-Inf stays +/-Inf; NaN stays NaN with its sign, the quiet bit set and the top
//     9 payload bits kept (so it never turns into Inf). This is what F16C vcvtps2ph and
//     AArch64 FCVT (default FPCR) produce.
// fp16 -> float is exact; a signalling NaN comes back quiet (quiet bit set, payload and
// sign kept), as vcvtph2ps and FCVT do.
//
// float -> bf16 (1 sign, 8 exponent bits, 7 mantissa bits: the top half of a float)
//   - round to nearest, ties to even on the discarded 16 bits; float subnormals are
//     rounded like any other value (never flushed); values past the largest finite bf16
//     plus half an ulp become +/-Inf;
//   - NaN stays NaN with its sign, the quiet bit set and the top 6 payload bits kept.
// bf16 -> float is exact and keeps every bit (a shift by 16), NaN payloads included.

namespace detail {
inline std::uint32_t float_bits(float f) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float bits_float(std::uint32_t u) noexcept {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
}  // namespace detail

// float -> IEEE binary16 bits, round to nearest even (see above).
inline std::uint16_t float_to_fp16_bits(float f) noexcept {
  const std::uint32_t u = detail::float_bits(f);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t a = u & 0x7FFFFFFFu;
  if (a >= 0x7F800000u) {  // Inf or NaN
    if (a == 0x7F800000u) return static_cast<std::uint16_t>(sign | 0x7C00u);
    return static_cast<std::uint16_t>(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
  }
  if (a >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // >= 65520
  if (a >= 0x38800000u) {  // >= 2^-14: normal result
    // Rebias the exponent (127 -> 15), then round the 13 dropped bits to nearest even;
    // a carry out of the mantissa correctly bumps the exponent.
    const std::uint32_t r = (a - 0x38000000u + 0x0FFFu + ((a >> 13) & 1u)) >> 13;
    return static_cast<std::uint16_t>(sign | r);
  }
  if (a <= 0x33000000u) return static_cast<std::uint16_t>(sign);  // <= 2^-25: ties to 0
  // Subnormal result: value / 2^-24 = m * 2^(e - 126) with the implicit bit restored.
  const std::uint32_t e = a >> 23;  // 102..112
  const std::uint32_t m = (a & 0x007FFFFFu) | 0x00800000u;
  const std::uint32_t shift = 126u - e;  // 14..24
  const std::uint32_t half = 1u << (shift - 1);
  const std::uint32_t rem = m & ((1u << shift) - 1u);
  std::uint32_t q = m >> shift;
  if (rem > half || (rem == half && (q & 1u))) ++q;  // may carry into the smallest normal
  return static_cast<std::uint16_t>(sign | q);
}

// IEEE binary16 bits -> float, exact (a signalling NaN is returned quiet).
inline float fp16_bits_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t e = (h >> 10) & 0x1Fu;
  std::uint32_t m = h & 0x3FFu;
  if (e == 0x1F) {
    if (m == 0) return detail::bits_float(sign | 0x7F800000u);
    return detail::bits_float(sign | 0x7FC00000u | (m << 13));
  }
  if (e != 0) return detail::bits_float(sign | ((e + 112u) << 23) | (m << 13));
  if (m == 0) return detail::bits_float(sign);
  // Subnormal m * 2^-24: normalise so the leading one becomes the implicit bit.
  std::uint32_t exp = 113;  // float exponent field of 2^-14
  while ((m & 0x400u) == 0) {
    m <<= 1;
    --exp;
  }
  return detail::bits_float(sign | (exp << 23) | ((m & 0x3FFu) << 13));
}

// float -> bfloat16 bits, round to nearest even, subnormals rounded (see above).
inline std::uint16_t float_to_bf16_bits(float f) noexcept {
  const std::uint32_t u = detail::float_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
  // Cannot wrap: the largest non-NaN pattern, 0xFF800000, plus 0x8000 fits in 32 bits.
  return static_cast<std::uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// bfloat16 bits -> float, exact.
inline float bf16_bits_to_float(std::uint16_t b) noexcept {
  return detail::bits_float(static_cast<std::uint32_t>(b) << 16);
}

// IEEE binary16 storage: 16 bits, trivially copyable, no arithmetic (convert to float).
struct fp16 {
  fp16() = default;
  explicit fp16(float f) noexcept : bits_(float_to_fp16_bits(f)) {}
  static constexpr fp16 from_bits(std::uint16_t b) noexcept { return fp16(b, raw_tag{}); }
  constexpr std::uint16_t bits() const noexcept { return bits_; }
  explicit operator float() const noexcept { return fp16_bits_to_float(bits_); }

 private:
  struct raw_tag {};
  constexpr fp16(std::uint16_t b, raw_tag) noexcept : bits_(b) {}
  std::uint16_t bits_;
};

// bfloat16 storage: the top 16 bits of a float, trivially copyable, no arithmetic.
struct bf16 {
  bf16() = default;
  explicit bf16(float f) noexcept : bits_(float_to_bf16_bits(f)) {}
  static constexpr bf16 from_bits(std::uint16_t b) noexcept { return bf16(b, raw_tag{}); }
  constexpr std::uint16_t bits() const noexcept { return bits_; }
  explicit operator float() const noexcept { return bf16_bits_to_float(bits_); }

 private:
  struct raw_tag {};
  constexpr bf16(std::uint16_t b, raw_tag) noexcept : bits_(b) {}
  std::uint16_t bits_;
};

static_assert(sizeof(fp16) == 2 && alignof(fp16) == 2, "fp16 must be 16 bits");
static_assert(sizeof(bf16) == 2 && alignof(bf16) == 2, "bf16 must be 16 bits");
static_assert(std::is_trivially_copyable<fp16>::value && std::is_trivial<fp16>::value,
              "fp16 must be trivial");
static_assert(std::is_trivially_copyable<bf16>::value && std::is_trivial<bf16>::value,
              "bf16 must be trivial");
static_assert(std::is_standard_layout<fp16>::value && std::is_standard_layout<bf16>::value,
              "fp16/bf16 must be standard layout");

// Convenience named conversions.
inline fp16 to_fp16(float f) noexcept { return fp16(f); }
inline bf16 to_bf16(float f) noexcept { return bf16(f); }
inline float to_float(fp16 h) noexcept { return fp16_bits_to_float(h.bits()); }
inline float to_float(bf16 b) noexcept { return bf16_bits_to_float(b.bits()); }

}  // namespace qlib
