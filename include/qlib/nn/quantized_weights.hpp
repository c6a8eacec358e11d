// The int8 weights of a quantized conv2d / linear: values, scales, int32 bias, GEMM panels per group.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <cstdint>
#include <limits>
#include <vector>

#include "qlib/core/tensor.hpp"
#include "qlib/gemm/packed_weights.hpp"
#include "qlib/quant/affine.hpp"
#include "qlib/quant/scheme.hpp"

namespace qlib {
namespace nn {

// Activations between quantized layers: uint8 NHWC values with one scale and zero point
// (PyTorch's quint8 per-tensor activations).
struct qactivation {
  tensor<std::uint8_t, 4> values;
  float scale = 1.0f;
  std::int32_t zero_point = 0;
};

// Per-tensor activation parameters recorded at conversion.
struct activation_qparams {
  float scale = 1.0f;
  std::int32_t zero_point = 0;
};

// Weights [out][K] (K = kernel_h * kernel_w * in / groups for a convolution, in
// features for a linear layer) as int8 with per-tensor or per-output-channel
// parameters, the int32 bias (scale = input scale * weight scale of the channel) and
// the weights packed for the GEMM, one packed object per group.
struct quantized_weights {
  tensor<std::int8_t, 2> values;  // [out][K]
  quant_params params;            // per_tensor or per_channel(axis 0)
  std::vector<std::int32_t> bias;  // [out]
  std::vector<gemm::packed_weights> packed;  // one per group: K x out/groups

  index_t out_channels() const noexcept { return values.shape(0); }
  index_t k() const noexcept { return values.shape(1); }
  float scale(index_t o) const noexcept { return params.scale[params.size() > 1 ? static_cast<std::size_t>(o) : 0]; }
  std::int32_t zero_point(index_t o) const noexcept {
    return params.zero_point[params.size() > 1 ? static_cast<std::size_t>(o) : 0];
  }

  // (Re)builds the GEMM panels from values and params (after loading from a file).
  // Checks the bias length and the parameter count against the values.
  void validate(const char* who) const {
    QLIB_CHECK(static_cast<index_t>(bias.size()) == out_channels(), errc::shape_mismatch,
               std::string(who) + ": bias has " + std::to_string(bias.size()) + " entries for " +
                   std::to_string(out_channels()) + " output channels");
    QLIB_CHECK(params.size() == 1 || params.size() == out_channels(), errc::shape_mismatch,
               std::string(who) + ": weight parameter count does not match the output channels");
  }
  // max over output channels of sum_k |w - zw|: with |x - zx| <= 255, the largest
  // accumulator magnitude is 255 times this.
  std::int64_t max_abs_row_sum() const {
    std::int64_t m = 0;
    for (index_t o = 0; o < out_channels(); ++o) {
      std::int64_t s = 0;
      for (index_t kk = 0; kk < k(); ++kk) s += std::llabs(std::int64_t{values(o, kk)} - zero_point(o));
      m = std::max(m, s);
    }
    return m;
  }

  void pack_groups(index_t groups) {
    QLIB_CHECK(groups > 0 && out_channels() % groups == 0, errc::invalid_argument,
               "quantized_weights: groups must divide the output channels");
    QLIB_CHECK(params.size() == 1 || params.size() == out_channels(), errc::shape_mismatch,
               "quantized_weights: " + std::to_string(params.size()) + " scales for " +
                   std::to_string(out_channels()) + " output channels (need 1 or one per channel)");
    QLIB_CHECK(static_cast<index_t>(params.zero_point.size()) == params.size(), errc::shape_mismatch,
               "quantized_weights: scale and zero point counts differ");
    const index_t cog = out_channels() / groups;
    packed.clear();
    for (index_t g = 0; g < groups; ++g) packed.push_back(gemm::pack(group_view(g, cog), group_params(g, cog)));
  }

  // Group g's weights as the GEMM's K x cog matrix B, and their parameters along B's
  // columns (axis 1), for gemm::pack and the sparse formats.
  tensor_view<const std::int8_t, 2> group_view(index_t g, index_t cog) const {
    return tensor_view<const std::int8_t, 2>(values.data() + g * cog * k(), {k(), cog}, {1, k()});
  }
  quant_params group_params(index_t g, index_t cog) const {
    quant_params pg = params;
    if (params.gran.type == granularity::kind::per_channel) {  // also with one output channel
      pg.gran = granularity::per_channel(1);
      pg.scale.assign(params.scale.begin() + g * cog, params.scale.begin() + (g + 1) * cog);
      pg.zero_point.assign(params.zero_point.begin() + g * cog, params.zero_point.begin() + (g + 1) * cog);
    }
    return pg;
  }
};

// x rounded to the nearest integer, ties to even, without the FP rounding mode.
inline double round_half_even_double(double x) noexcept {
  const double f = std::floor(x), d = x - f;
  if (d > 0.5 || (d == 0.5 && std::fmod(f, 2.0) != 0.0)) return f + 1.0;
  return f;
}

// Quantizes float weights [out][K] and a float bias (may be empty) for an input of
// scale input_scale: per output channel or per tensor, with `scheme` (symmetric int8 by
// default, so weight zero points are 0 and the GEMM needs no row sums). The bias is
// round_half_even(b / (input_scale * weight_scale)), refused if it leaves int32.
inline quantized_weights quantize_weights(tensor_view<const float, 2> w, const std::vector<float>& bias,
                                          float input_scale, bool per_channel, index_t groups,
                                          const affine_scheme<std::int8_t>& scheme = schemes::s8_symmetric) {
  QLIB_CHECK(std::isfinite(input_scale) && input_scale > 0.0f, errc::invalid_argument,
             "quantize_weights: input scale must be finite and > 0");
  quantized_weights q;
  const granularity g = per_channel ? granularity::per_channel(0) : granularity::per_tensor();
  q.params = choose_params(w, scheme, g);
  q.values = tensor<std::int8_t, 2>(w.shape());
  quantize(w, q.values.view(), q.params);
  const index_t oc = w.shape(0);
  QLIB_CHECK(bias.empty() || static_cast<index_t>(bias.size()) == oc, errc::shape_mismatch,
             "quantize_weights: bias has " + std::to_string(bias.size()) + " entries for " + std::to_string(oc) +
                 " output channels");
  q.bias.assign(static_cast<std::size_t>(oc), 0);
  for (index_t o = 0; o < oc && !bias.empty(); ++o) {
    const double s = static_cast<double>(input_scale) * static_cast<double>(q.scale(o));
    const float b = bias[static_cast<std::size_t>(o)];
    QLIB_CHECK(std::isfinite(b), errc::non_finite, "quantize_weights: bias " + std::to_string(o) + " is not finite");
    // The quotient rounded in double: above 2^24 a float copy of it is off by up to 1.
    const double v = round_half_even_double(static_cast<double>(b) / s);
    QLIB_CHECK(std::fabs(v) < 2147483520.0, errc::overflow,
               "quantize_weights: bias " + std::to_string(o) + " does not fit int32 at this scale");
    q.bias[static_cast<std::size_t>(o)] = static_cast<std::int32_t>(v);
  }
  q.pack_groups(groups);
  return q;
}

// multiplier[o] = input_scale * weight_scale[o] / output_scale, the float requantization
// factor of each output channel (PyTorch/FBGEMM's rule).
inline std::vector<float> requantize_multipliers(const quantized_weights& w, float input_scale, float output_scale) {
  std::vector<float> m(static_cast<std::size_t>(w.out_channels()));
  for (index_t o = 0; o < w.out_channels(); ++o)
    m[static_cast<std::size_t>(o)] = static_cast<float>(static_cast<double>(input_scale) * w.scale(o) / output_scale);
  return m;
}

}  // namespace nn
}  // namespace qlib
