// Rows of b-bit two's-complement integer codes (2 <= b <= 8) as little-endian bit streams: layout, width, pack, unpack.
#pragma once

// Layout (normative; model files rely on it): code j of a row of n codes occupies bits
// [j * b, j * b + b) of the row, bit i of the row being bit i % 8 of byte i / 8; codes
// are two's complement; the row takes ceil(n * b / 8) bytes and the unused high bits of
// its last byte are 0. For b = 2 and 4 this is core/packed_int.hpp's layout (the earliest
// code in the lowest bits), for b = 8 plain int8.

#include <cstdint>
#include <string>

#include "qlib/core/error.hpp"
#include "qlib/core/tensor_view.hpp"

namespace qlib {

// Bytes of a row of n >= 0 codes b bits wide, ceil(n * b / 8), without forming n * b
// (a file may claim any n).
constexpr index_t packed_bits_row_bytes(index_t n, int bits) noexcept {
  return (n / 8) * bits + ((n % 8) * bits + 7) / 8;
}

// The narrowest width in [2, 8] whose signed range [-2^(b-1), 2^(b-1) - 1] holds
// [lo, hi] (int8 values).
constexpr int signed_bits_for_range(int lo, int hi) noexcept {
  int bits = 2;
  while (bits < 8 && (lo < -(1 << (bits - 1)) || hi > (1 << (bits - 1)) - 1)) ++bits;
  return bits;
}

// The narrowest such width that holds every code.
inline int narrowest_signed_bits(const std::int8_t* codes, index_t n) noexcept {
  int lo = 0, hi = 0;
  for (index_t j = 0; j < n; ++j) {
    lo = codes[j] < lo ? codes[j] : lo;
    hi = codes[j] > hi ? codes[j] : hi;
  }
  return signed_bits_for_range(lo, hi);
}

// Packs n codes into out (packed_bits_row_bytes(n, bits) bytes, all written). A code
// outside the signed b-bit range is errc::out_of_range; nothing is written then.
inline void pack_bits_row(const std::int8_t* codes, index_t n, int bits, std::uint8_t* out) {
  QLIB_CHECK(bits >= 2 && bits <= 8, errc::invalid_argument,
             "pack_bits_row: width " + std::to_string(bits) + " outside [2, 8]");
  for (index_t j = 0; j < n; ++j)
    QLIB_CHECK(codes[j] >= -(1 << (bits - 1)) && codes[j] <= (1 << (bits - 1)) - 1, errc::out_of_range,
               "pack_bits_row: code " + std::to_string(codes[j]) + " at " + std::to_string(j) + " does not fit " +
                   std::to_string(bits) + " bits");
  const index_t bytes = packed_bits_row_bytes(n, bits);
  for (index_t i = 0; i < bytes; ++i) out[i] = 0;
  const unsigned mask = (1u << bits) - 1u;
  for (index_t j = 0; j < n; ++j) {
    const unsigned v = static_cast<unsigned>(codes[j]) & mask;
    const index_t at = j * bits;
    const int shift = static_cast<int>(at % 8);
    out[at / 8] = static_cast<std::uint8_t>(out[at / 8] | (v << shift));
    if (shift + bits > 8) out[at / 8 + 1] = static_cast<std::uint8_t>(out[at / 8 + 1] | (v >> (8 - shift)));
  }
}

// Whether the unused high bits of a packed row's last byte are 0.
inline bool packed_bits_padding_clear(const std::uint8_t* row, index_t n, int bits) noexcept {
  const int used = static_cast<int>((n * bits) % 8);
  return used == 0 || (row[packed_bits_row_bytes(n, bits) - 1] >> used) == 0;
}

// The n codes of a packed row (bits in [2, 8]).
inline void unpack_bits_row(const std::uint8_t* in, index_t n, int bits, std::int8_t* codes) noexcept {
  const unsigned mask = (1u << bits) - 1u, sign = 1u << (bits - 1);
  for (index_t j = 0; j < n; ++j) {
    const index_t at = j * bits;
    const int shift = static_cast<int>(at % 8);
    unsigned v = static_cast<unsigned>(in[at / 8]) >> shift;
    if (shift + bits > 8) v |= static_cast<unsigned>(in[at / 8 + 1]) << (8 - shift);
    v &= mask;
    codes[j] = static_cast<std::int8_t>(static_cast<int>(v ^ sign) - static_cast<int>(sign));
  }
}

}  // namespace qlib
