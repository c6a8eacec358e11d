// Plain-loop definitions of the int8 layers (qconv2d, qlinear, quantized_sequential): the oracle of the fast paths.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <variant>

#include "qlib/gemm/pipeline.hpp"
#include "qlib/nn/quantized_sequential.hpp"
#include "qlib/quant/reference.hpp"

// What the fast layers compute, written as directly as possible: no im2col, no packing,
// no GEMM. For output pixel p and output channel o of group g,
//
//   acc = sum over the taps inside the input, c < in_c / groups, of
//           (x[n][ih][iw][g * in_c / groups + c] - zx) * (w[o][(kh * kernel_w + kw) * in_c / groups + c] - zw[o])
//
// (a padded tap reads the zero point, so it contributes 0), summed in int64 and refused
// (errc::overflow) if acc, or acc + bias[o], leaves int32; then
// y = gemm::eval_pipeline(layer pipeline, acc, p, o). The weights are read from
// quantized_weights::values and params, never from the packed panels, so a packing bug
// cannot hide here. Tests compare every ISA, thread count and code path (GEMM, 1x1,
// depthwise) against these bit for bit.
namespace qlib {
namespace nn {
namespace reference {

namespace detail {
// Refuses weights whose arrays do not hold what the loops below index.
inline void check_weights(const quantized_weights& w, index_t out_channels, index_t k, const char* who) {
  const std::string s(who);
  QLIB_CHECK(w.values.shape(0) == out_channels && w.values.shape(1) == k, errc::shape_mismatch,
             s + ": weights are " + qlib::detail::extents_string(w.values.shape()) + ", expected [" +
                 std::to_string(out_channels) + "," + std::to_string(k) + "]");
  QLIB_CHECK((w.params.size() == 1 || w.params.size() == out_channels) &&
                 w.params.zero_point.size() == w.params.scale.size(),
             errc::shape_mismatch, s + ": weight parameters must be per tensor or one per output channel");
  QLIB_CHECK(static_cast<index_t>(w.bias.size()) == out_channels, errc::shape_mismatch,
             s + ": bias has " + std::to_string(w.bias.size()) + " entries for " + std::to_string(out_channels) +
                 " output channels");
}

inline void check_input_params(const qactivation& x, const activation_qparams& in, const char* who) {
  QLIB_CHECK(x.zero_point >= 0 && x.zero_point <= 255, errc::invalid_argument,
             std::string(who) + ": input zero point " + std::to_string(x.zero_point) + " outside [0, 255]");
  QLIB_CHECK(x.scale == in.scale && x.zero_point == in.zero_point, errc::invalid_argument,
             std::string(who) + ": input quantized with other parameters than the layer was converted for");
}

// The exact accumulator plus bias, refused when either leaves int32.
inline std::int32_t checked_accumulator(std::int64_t acc, std::int32_t bias, const char* who) {
  constexpr std::int64_t lo = std::numeric_limits<std::int32_t>::min(), hi = std::numeric_limits<std::int32_t>::max();
  QLIB_CHECK(acc >= lo && acc <= hi && acc + bias >= lo && acc + bias <= hi, errc::overflow,
             std::string(who) + ": accumulator " + std::to_string(acc) + " (+ bias " + std::to_string(bias) +
                 ") does not fit int32");
  return static_cast<std::int32_t>(acc);
}

// One output row (a pixel or a batch row) of a linear map: acc over k of (x - zx)(w - zw[o]).
inline std::int64_t dot(const std::uint8_t* x, std::int32_t zx, const quantized_weights& w, index_t o) {
  std::int64_t acc = 0;
  const std::int8_t* wr = w.values.data() + o * w.k();
  for (index_t k = 0; k < w.k(); ++k)
    acc += (std::int64_t{x[k]} - zx) * (std::int64_t{wr[k]} - w.zero_point(o));
  return acc;
}
}  // namespace detail

// qconv2d by direct loops over output pixels, output channels and taps.
inline qactivation forward(const qconv2d& layer, const qactivation& x) {
  const char* who = "nn::reference::qconv2d";
  const extents<4> s = x.values.shape();
  QLIB_CHECK(s[3] == layer.in_channels, errc::shape_mismatch,
             std::string(who) + ": input " + qlib::detail::extents_string(s) + " has " + std::to_string(s[3]) +
                 " channels, the layer expects " + std::to_string(layer.in_channels));
  const conv_geometry g = make_conv_geometry(s, layer.out_channels(), layer.opt, who);
  detail::check_weights(layer.w, g.out_c, g.patch_size(), who);
  QLIB_CHECK(static_cast<index_t>(layer.output.multiplier.size()) == g.out_c, errc::shape_mismatch,
             std::string(who) + ": one requantization multiplier per output channel is needed");
  detail::check_input_params(x, layer.in, who);
  const auto pipe = layer.output.pipeline(layer.w, 0, g.out_c);
  gemm::validate_pipeline(pipe, g.output_pixels(), g.out_c);

  const auto& o = g.opt;
  const index_t cg = g.in_c_per_group(), cog = g.out_c_per_group();
  qactivation y{tensor<std::uint8_t, 4>(extents<4>{g.batch, g.out_h, g.out_w, g.out_c}), layer.output.out.scale,
                layer.output.out.zero_point};
  for (index_t n = 0; n < g.batch; ++n)
    for (index_t oh = 0; oh < g.out_h; ++oh)
      for (index_t ow = 0; ow < g.out_w; ++ow) {
        const index_t pixel = (n * g.out_h + oh) * g.out_w + ow;
        for (index_t oc = 0; oc < g.out_c; ++oc) {
          const index_t c0 = (oc / cog) * cg;  // first input channel of oc's group
          const std::int64_t zw = layer.w.zero_point(oc);
          std::int64_t acc = 0;
          for (index_t kh = 0; kh < o.kernel_h; ++kh)
            for (index_t kw = 0; kw < o.kernel_w; ++kw) {
              const index_t ih = oh * o.stride_h - o.pad_h + kh * o.dilation_h;
              const index_t iw = ow * o.stride_w - o.pad_w + kw * o.dilation_w;
              if (ih < 0 || ih >= g.in_h || iw < 0 || iw >= g.in_w) continue;  // (zx - zx) * w = 0
              const std::uint8_t* px = &x.values(n, ih, iw, c0);
              const std::int8_t* pw = &layer.w.values(oc, (kh * o.kernel_w + kw) * cg);
              for (index_t c = 0; c < cg; ++c) acc += (std::int64_t{px[c]} - x.zero_point) * (std::int64_t{pw[c]} - zw);
            }
          const std::int32_t a = detail::checked_accumulator(acc, layer.w.bias[static_cast<std::size_t>(oc)], who);
          y.values(n, oh, ow, oc) = gemm::eval_pipeline(pipe, a, pixel, oc);
        }
      }
  return y;
}

namespace detail {
inline void check_linear(const qlinear& layer, const qactivation& x, index_t out_size, const char* who) {
  const extents<4> s = x.values.shape();
  QLIB_CHECK(s[0] > 0 && s[1] == 1 && s[2] == 1 && s[3] == layer.in_features(), errc::shape_mismatch,
             std::string(who) + ": expects input [N,1,1," + std::to_string(layer.in_features()) + "], got " +
                 qlib::detail::extents_string(s));
  check_weights(layer.w, layer.out_features(), layer.in_features(), who);
  QLIB_CHECK(out_size == layer.out_features(), errc::shape_mismatch,
             std::string(who) + ": one output multiplier or scale per output feature is needed");
  check_input_params(x, layer.in, who);
}

template <class Pipeline, class Out>
void linear_loops(const qlinear& layer, const qactivation& x, const Pipeline& pipe, Out* y, const char* who) {
  const index_t n = x.values.shape(0), in = layer.in_features(), out = layer.out_features();
  gemm::validate_pipeline(pipe, n, out);
  for (index_t r = 0; r < n; ++r)
    for (index_t o = 0; o < out; ++o) {
      const std::int64_t acc = dot(x.values.data() + r * in, x.zero_point, layer.w, o);
      y[r * out + o] = gemm::eval_pipeline(
          pipe, checked_accumulator(acc, layer.w.bias[static_cast<std::size_t>(o)], who), r, o);
    }
}
}  // namespace detail

// qlinear with uint8 output: the layer's quantized_output pipeline on each dot product.
inline qactivation forward(const qlinear& layer, const qactivation& x) {
  const char* who = "nn::reference::qlinear";
  QLIB_CHECK(!layer.float_output, errc::invalid_argument, std::string(who) + ": the layer outputs float");
  detail::check_linear(layer, x, static_cast<index_t>(layer.output.multiplier.size()), who);
  qactivation y{tensor<std::uint8_t, 4>(extents<4>{x.values.shape(0), 1, 1, layer.out_features()}),
                layer.output.out.scale, layer.output.out.zero_point};
  detail::linear_loops(layer, x, layer.output.pipeline(layer.w, 0, layer.out_features()), y.values.data(), who);
  return y;
}

// qlinear with float output: float(acc + bias) * (input scale * weight scale[o]).
inline tensor<float, 4> forward_float(const qlinear& layer, const qactivation& x) {
  const char* who = "nn::reference::qlinear";
  QLIB_CHECK(layer.float_output, errc::invalid_argument, std::string(who) + ": the layer outputs uint8");
  detail::check_linear(layer, x, static_cast<index_t>(layer.channel_scale.size()), who);
  tensor<float, 4> y(extents<4>{x.values.shape(0), 1, 1, layer.out_features()});
  const auto pipe =
      gemm::make_pipeline(gemm::bias_add{layer.w.bias.data(), layer.out_features()},
                          gemm::dequantize_per_channel{layer.in.scale, layer.channel_scale.data(), layer.out_features()});
  detail::linear_loops(layer, x, pipe, y.data(), who);
  return y;
}

// A quantized_sequential: the input quantized by the plain quantize loop, conv and
// linear layers by the definitions above, pooling and flatten as the model runs them
// (their own plain loops, nn/pooling.hpp and nn/activation.hpp); float out as
// quantized_sequential::forward.
inline tensor<float, 4> forward(const quantized_sequential& m, tensor_view<const float, 4> x) {
  QLIB_CHECK(!m.layers.empty(), errc::empty_tensor, "nn::reference::quantized_sequential: no layers");
  const quant_params in_params =
      quant_params::per_tensor(schemes::u8_asymmetric, m.input.scale, m.input.zero_point);
  qactivation cur{tensor<std::uint8_t, 4>(x.shape()), m.input.scale, m.input.zero_point};
  qlib::reference::quantize(x, cur.values.view(), in_params);
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    if (const auto* fc = std::get_if<qlinear>(&m.layers[i]); fc && fc->float_output) {
      QLIB_CHECK(i + 1 == m.layers.size(), errc::invalid_argument,
                 "nn::reference::quantized_sequential: only the last layer may output float");
      return forward_float(*fc, cur);
    }
    if (const auto* c = std::get_if<qconv2d>(&m.layers[i])) cur = forward(*c, cur);
    else if (const auto* f = std::get_if<qlinear>(&m.layers[i])) cur = forward(*f, cur);
    else cur = m.forward_layer(m.layers[i], cur);  // pooling and flatten: plain loops already
  }
  tensor<float, 4> y(cur.values.shape());
  qlib::reference::dequantize(cur.values.cview(), y.view(),
                              quant_params::per_tensor(schemes::u8_asymmetric, cur.scale, cur.zero_point));
  return y;
}

}  // namespace reference
}  // namespace nn
}  // namespace qlib
