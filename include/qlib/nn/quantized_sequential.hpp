// nn::quantized_sequential: an all-int8 model - uint8 activations flow between layers, float in and out.
#pragma once

#include <variant>
#include <vector>

#include "qlib/nn/activation.hpp"
#include "qlib/nn/pooling.hpp"
#include "qlib/nn/qconv2d.hpp"
#include "qlib/nn/qlinear.hpp"
#include "qlib/quant/affine.hpp"

namespace qlib {
namespace nn {

// Layers of a quantized model. Pooling and flatten keep their input's parameters.
using qlayer = std::variant<qconv2d, qlinear, max_pool2d, avg_pool2d, flatten>;

// forward(): quantize the float input with `input` (uint8, per tensor), run the layers
// on uint8 NHWC tensors, and return float: the last qlinear's dequantized output when it
// has float_output, else the last activation dequantized.
struct quantized_sequential {
  activation_qparams input;
  std::vector<qlayer> layers;
  gemm::gemm_options gemm_options;  // threads for the GEMMs (serial by default)

  qactivation quantize_input(tensor_view<const float, 4> x) const {
    qactivation q{tensor<std::uint8_t, 4>(x.shape()), input.scale, input.zero_point};
    qlib::quantize(x, q.values.view(), quant_params::per_tensor(schemes::u8_asymmetric, input.scale, input.zero_point));
    return q;
  }

  tensor<float, 4> forward(tensor_view<const float, 4> x) const {
    QLIB_CHECK(!layers.empty(), errc::empty_tensor, "nn::quantized_sequential: no layers");
    qactivation cur = quantize_input(x);
    for (std::size_t i = 0; i < layers.size(); ++i) {
      if (const auto* fc = std::get_if<qlinear>(&layers[i]); fc && fc->float_output) {
        QLIB_CHECK(i + 1 == layers.size(), errc::invalid_argument,
                   "nn::quantized_sequential: only the last layer may output float");
        return fc->forward_float(cur, gemm_options);
      }
      cur = forward_layer(layers[i], cur);
    }
    tensor<float, 4> y(cur.values.shape());
    qlib::dequantize(cur.values.cview(), y.view(),
                     quant_params::per_tensor(schemes::u8_asymmetric, cur.scale, cur.zero_point));
    return y;
  }

  qactivation forward_layer(const qlayer& l, const qactivation& x) const {
    return std::visit(
        [&](const auto& v) -> qactivation {
          using L = std::decay_t<decltype(v)>;
          if constexpr (std::is_same<L, qconv2d>::value || std::is_same<L, qlinear>::value) {
            return v.forward(x, gemm_options);
          } else if constexpr (std::is_same<L, flatten>::value) {
            return {apply_flatten<std::uint8_t>(x.values.cview()), x.scale, x.zero_point};
          } else if constexpr (std::is_same<L, avg_pool2d>::value) {
            return {pool(v, x.values.cview(), x.zero_point), x.scale, x.zero_point};
          } else {
            return {pool(v, x.values.cview()), x.scale, x.zero_point};
          }
        },
        l);
  }

  // Bytes of parameters: int8 weights, int32 biases, float scales and multipliers.
  index_t parameter_bytes() const {
    index_t b = 0;
    for (const qlayer& l : layers) {
      const quantized_weights* w = nullptr;
      if (auto* c = std::get_if<qconv2d>(&l)) w = &c->w;
      if (auto* f = std::get_if<qlinear>(&l)) w = &f->w;
      if (w) b += w->values.size() + 4 * static_cast<index_t>(w->bias.size() + w->params.scale.size());
    }
    return b;
  }
};

}  // namespace nn
}  // namespace qlib
