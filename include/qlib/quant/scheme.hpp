// affine_scheme<Storage>: symmetric or asymmetric, bit width, full or restricted range.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>

#include "qlib/core/error.hpp"

namespace qlib {

// Symmetric schemes fix the zero point at the middle of the integer range, so real 0
// maps to it and the range is [-amax, amax]; asymmetric ones fit [min, max].
enum class symmetry { asymmetric, symmetric };

// full: every code of the bit width ([-128,127] for signed 8-bit).
// restricted: drops the lowest code ([-127,127]; [1,255] unsigned), so the range is
// symmetric around the zero point (TFLite, ONNX Runtime and TensorRT weights use it).
enum class int_range { full, restricted };

template <class T>
struct is_quant_storage
    : std::integral_constant<bool, std::is_same<T, std::int8_t>::value || std::is_same<T, std::uint8_t>::value ||
                                       std::is_same<T, std::int16_t>::value ||
                                       std::is_same<T, std::uint16_t>::value> {};

// The integer side of affine quantization. Storage is the element type quantized data is
// kept in; bits (2..8 for 8-bit storage, 2..16 for 16-bit) narrows the range inside it.
// Sub-byte values are stored one per element here; pack them with core/packed_int.hpp.
template <class Storage>
struct affine_scheme {
  static_assert(is_quant_storage<Storage>::value,
                "affine_scheme storage must be int8_t, uint8_t, int16_t or uint16_t");
  using storage_type = Storage;
  static constexpr bool is_signed = std::is_signed<Storage>::value;
  static constexpr int max_bits = 8 * static_cast<int>(sizeof(Storage));

  symmetry sym = symmetry::asymmetric;
  int bits = max_bits;
  int_range range = int_range::full;

  constexpr std::int32_t qmin() const noexcept {
    const std::int32_t lowest = is_signed ? -(std::int32_t{1} << (bits - 1)) : 0;
    return range == int_range::restricted ? lowest + 1 : lowest;
  }
  constexpr std::int32_t qmax() const noexcept {
    return is_signed ? (std::int32_t{1} << (bits - 1)) - 1 : (std::int32_t{1} << bits) - 1;
  }
  // The zero point of a symmetric scheme: 0 signed, the middle code unsigned (128 for
  // 8 bits, as PyTorch's symmetric quint8).
  constexpr std::int32_t symmetric_zero_point() const noexcept {
    const std::int32_t s = qmin() + qmax() + 1;
    return s >= 0 ? s / 2 : -((-s + 1) / 2);  // floor division
  }

  void validate() const {
    QLIB_CHECK(bits >= 2 && bits <= max_bits, errc::invalid_argument,
               "bit width " + std::to_string(bits) + " outside [2," + std::to_string(max_bits) +
                   "] for this storage type");
  }
};

// Named schemes for the common cases.
namespace schemes {
// Activations: asymmetric uint8 over [0,255] (PyTorch quint8, gemmlowp).
inline constexpr affine_scheme<std::uint8_t> u8_asymmetric{symmetry::asymmetric, 8, int_range::full};
// Activations: asymmetric int8 over [-128,127] (TFLite int8 activations, ONNX QDQ int8).
inline constexpr affine_scheme<std::int8_t> s8_asymmetric{symmetry::asymmetric, 8, int_range::full};
// Weights: symmetric int8 in [-127,127], scale = amax/127 (TFLite, ONNX Runtime, TensorRT).
inline constexpr affine_scheme<std::int8_t> s8_symmetric{symmetry::symmetric, 8, int_range::restricted};
// Weights: symmetric int8 over all of [-128,127], scale = amax/127.5 (PyTorch qint8).
inline constexpr affine_scheme<std::int8_t> s8_symmetric_full{symmetry::symmetric, 8, int_range::full};
// 7-bit weights, symmetric in [-63,63]: on CPUs with AVX2 but no VNNI the int8 GEMM runs
// them on its vpmaddubsw kernel, about 1.8x the speed of 8-bit weights (gemm::packed_weights::fits_7_bits).
inline constexpr affine_scheme<std::int8_t> s7_symmetric{symmetry::symmetric, 7, int_range::restricted};
// 4-bit weights, symmetric in [-7,7].
inline constexpr affine_scheme<std::int8_t> s4_symmetric{symmetry::symmetric, 4, int_range::restricted};
// 4-bit weights, asymmetric in [0,15].
inline constexpr affine_scheme<std::uint8_t> u4_asymmetric{symmetry::asymmetric, 4, int_range::full};
// 16-bit activations, symmetric.
inline constexpr affine_scheme<std::int16_t> s16_symmetric{symmetry::symmetric, 16, int_range::restricted};
}  // namespace schemes

}  // namespace qlib
