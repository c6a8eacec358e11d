// nn::qlinear: an int8 fully connected layer, uint8 in; uint8 out (requantized) or float out (dequantized).
#pragma once

#include <vector>

#include "qlib/gemm/driver.hpp"
#include "qlib/nn/qconv2d.hpp"
#include "qlib/nn/quantized_weights.hpp"

namespace qlib {
namespace nn {

// Input [N, 1, 1, in] uint8. With float_output (used for a model's last layer: logits
// need no requantization) the epilogue is bias + dequantize by input_scale * weight
// scale; otherwise it is `output` (requantize, fused ReLU, uint8).
struct qlinear {
  activation_qparams in;
  quantized_weights w;  // [out][in]
  bool float_output = false;
  quantized_output output;          // when !float_output
  std::vector<float> channel_scale;  // weight scale per output channel (float_output)

  index_t in_features() const noexcept { return w.k(); }
  index_t out_features() const noexcept { return w.out_channels(); }

  void check_input(const extents<4>& s, float scale, std::int32_t zp) const {
    QLIB_CHECK(s[1] == 1 && s[2] == 1 && s[3] == in_features() && s[0] > 0, errc::shape_mismatch,
               "nn::qlinear: expects input [N,1,1," + std::to_string(in_features()) + "], got " +
                   qlib::detail::extents_string(s));
    QLIB_CHECK(scale == in.scale && zp == in.zero_point, errc::invalid_argument,
               "nn::qlinear: input quantized with other parameters than the layer was converted for");
    QLIB_CHECK(w.packed.size() == 1, errc::shape_mismatch, "nn::qlinear: weights are not packed");
    w.validate("nn::qlinear");
    QLIB_CHECK(!float_output || static_cast<index_t>(channel_scale.size()) == out_features(), errc::shape_mismatch,
               "nn::qlinear: " + std::to_string(channel_scale.size()) + " channel scales for " +
                   std::to_string(out_features()) + " outputs");
  }

  qactivation forward(const qactivation& x, const gemm::gemm_options& gopt = {}) const {
    QLIB_CHECK(!float_output, errc::invalid_argument, "nn::qlinear: this layer outputs float; call forward_float");
    check_input(x.values.shape(), x.scale, x.zero_point);
    const index_t n = x.values.shape(0);
    qactivation y{tensor<std::uint8_t, 4>(extents<4>{n, 1, 1, out_features()}), output.out.scale, output.out.zero_point};
    gemm::gemm(tensor_view<const std::uint8_t, 2>(x.values.data(), {n, in_features()}), {x.zero_point}, w.packed[0],
               output.pipeline(w, 0, out_features()),
               tensor_view<std::uint8_t, 2>(y.values.data(), {n, out_features()}), gopt);
    return y;
  }

  tensor<float, 4> forward_float(const qactivation& x, const gemm::gemm_options& gopt = {}) const {
    QLIB_CHECK(float_output, errc::invalid_argument, "nn::qlinear: this layer outputs uint8; call forward");
    check_input(x.values.shape(), x.scale, x.zero_point);
    const index_t n = x.values.shape(0);
    tensor<float, 4> y(extents<4>{n, 1, 1, out_features()});
    const auto pipe = gemm::make_pipeline(gemm::bias_add{w.bias.data(), out_features()},
                                          gemm::dequantize_per_channel{in.scale, channel_scale.data(), out_features()});
    gemm::gemm(tensor_view<const std::uint8_t, 2>(x.values.data(), {n, in_features()}), {x.zero_point}, w.packed[0],
               pipe, tensor_view<float, 2>(y.data(), {n, out_features()}), gopt);
    return y;
  }
};

}  // namespace nn
}  // namespace qlib
