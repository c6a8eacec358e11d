// A conv2d / linear layer's weights as the [out][K] matrix the weight quantizers see, and a weight scheme at b bits.
#pragma once

#include <cstdint>
#include <string>
#include <variant>

#include "qlib/nn/sequential.hpp"
#include "qlib/quant/scheme.hpp"

namespace qlib {
namespace nn {

// conv2d weights [out, kh, kw, in/groups] as [out][kh * kw * in/groups]; linear [out, in] as is.
inline tensor_view<const float, 2> weight_matrix(const conv2d& c) {
  return {c.weight.data(), {c.out_channels(), c.weight.size() / c.out_channels()}};
}
inline tensor_view<float, 2> weight_matrix(conv2d& c) {
  return {c.weight.data(), {c.out_channels(), c.weight.size() / c.out_channels()}};
}
inline tensor_view<const float, 2> weight_matrix(const linear& f) { return f.weight.cview(); }
inline tensor_view<float, 2> weight_matrix(linear& f) { return f.weight.view(); }

inline bool has_weight_matrix(const layer& l) noexcept {
  return std::holds_alternative<conv2d>(l) || std::holds_alternative<linear>(l);
}
// The same for a layer of a model; a layer other than conv2d / linear is an error.
inline tensor_view<const float, 2> weight_matrix(const layer& l) {
  QLIB_CHECK(has_weight_matrix(l), errc::invalid_argument,
             std::string("nn::weight_matrix: a ") + layer_kind(l) + " has no weight matrix");
  if (const auto* c = std::get_if<conv2d>(&l)) return weight_matrix(*c);
  return weight_matrix(std::get<linear>(l));
}
inline tensor_view<float, 2> weight_matrix(layer& l) {
  QLIB_CHECK(has_weight_matrix(l), errc::invalid_argument,
             std::string("nn::weight_matrix: a ") + layer_kind(l) + " has no weight matrix");
  if (auto* c = std::get_if<conv2d>(&l)) return weight_matrix(*c);
  return weight_matrix(std::get<linear>(l));
}

// `base` with `bits` bits (its symmetry and range kept): one layer's scheme in a model
// with per-layer weight bit widths. The bit-width search and the static quantizer both
// take a layer's scheme from here, so they quantize it alike. A width outside [2, 8] is
// an error that starts with `who`.
inline affine_scheme<std::int8_t> weight_scheme_at_bits(affine_scheme<std::int8_t> base, int bits,
                                                        const std::string& who) {
  QLIB_CHECK(bits >= 2 && bits <= 8, errc::invalid_argument,
             who + ": weight bit width " + std::to_string(bits) + " is outside [2, 8]");
  base.bits = bits;
  return base;
}

// Whether weight_scheme_at_bits gives a and b the same scheme at every bit width.
inline bool same_weight_scheme_family(const affine_scheme<std::int8_t>& a, const affine_scheme<std::int8_t>& b) noexcept {
  return a.sym == b.sym && a.range == b.range;
}

}  // namespace nn
}  // namespace qlib
