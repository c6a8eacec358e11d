// nn::linear: a fully connected float layer, y = x W^T + b, PyTorch's weight layout.
#pragma once

#include "qlib/core/tensor.hpp"
#include "qlib/nn/float_matmul.hpp"

namespace qlib {
namespace nn {

// Weight [out_features, in_features] as in PyTorch's nn.Linear; bias [out_features] or
// empty (no bias). Input activations are NHWC with H = W = 1 ([batch, 1, 1, in]; put an
// nn::flatten before a linear that follows a convolution).
struct linear {
  tensor<float, 2> weight;
  tensor<float, 1> bias;

  linear() = default;
  linear(index_t in_features, index_t out_features, bool with_bias = true)
      : weight(extents<2>{out_features, in_features}), bias(extents<1>{with_bias ? out_features : 0}) {
    QLIB_CHECK(in_features > 0 && out_features > 0, errc::invalid_argument,
               "nn::linear: features must be > 0, got " + std::to_string(in_features) + " -> " +
                   std::to_string(out_features));
  }
  index_t in_features() const noexcept { return weight.shape(1); }
  index_t out_features() const noexcept { return weight.shape(0); }
  bool has_bias() const noexcept { return !bias.empty(); }

  // Checks the parameter shapes and an input shape; returns the output shape.
  extents<4> output_shape(const extents<4>& in) const {
    QLIB_CHECK(weight.shape(0) > 0 && weight.shape(1) > 0, errc::empty_tensor, "nn::linear: no weights");
    QLIB_CHECK(bias.empty() || bias.shape(0) == out_features(), errc::shape_mismatch,
               "nn::linear: bias has " + std::to_string(bias.shape(0)) + " entries for " +
                   std::to_string(out_features()) + " outputs");
    QLIB_CHECK(in[1] == 1 && in[2] == 1 && in[3] == in_features(), errc::shape_mismatch,
               "nn::linear: expects input [N,1,1," + std::to_string(in_features()) + "], got " +
                   qlib::detail::extents_string(in) + " (put an nn::flatten after convolutions)");
    return {in[0], 1, 1, out_features()};
  }

  // y = clamp(x W^T + b, lo, hi): the clamp is a fused ReLU/ReLU6.
  tensor<float, 4> forward(tensor_view<const float, 4> x, float lo = -std::numeric_limits<float>::infinity(),
                           float hi = std::numeric_limits<float>::infinity()) const {
    const extents<4> os = output_shape(x.shape());
    QLIB_CHECK(x.is_contiguous(), errc::invalid_argument, "nn::linear: input must be contiguous");
    tensor<float, 4> y(os);
    const tensor_view<const float, 2> a(x.data(), {x.shape(0), in_features()});
    matmul(a, weight.view().transpose(0, 1), tensor_view<float, 2>(y.data(), {os[0], os[3]}),
           {has_bias() ? bias.data() : nullptr, lo, hi});
    return y;
  }
};

}  // namespace nn
}  // namespace qlib
