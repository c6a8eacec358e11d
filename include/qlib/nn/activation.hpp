// Element-wise activations (ReLU, ReLU6) and flatten: layers without parameters.
#pragma once

#include <limits>

#include "qlib/core/tensor.hpp"

namespace qlib {
namespace nn {

// max(x, 0). Folded into the preceding conv2d / linear by sequential (a clamp in its
// epilogue); on its own it runs element-wise. NaN stays NaN.
struct relu {
  static constexpr float lo = 0.0f;
  static constexpr float hi = std::numeric_limits<float>::infinity();
};
// min(max(x, 0), 6).
struct relu6 {
  static constexpr float lo = 0.0f;
  static constexpr float hi = 6.0f;
};

// [N, H, W, C] -> [N, 1, 1, H*W*C], in NHWC element order (a reshape, no copy of order).
// Note for PyTorch models: torch.flatten of NCHW orders features (C, H, W); loading such
// weights permutes the next linear layer's columns (nn/pytorch.hpp).
struct flatten {};

template <class Act>
tensor<float, 4> apply_activation(const Act&, tensor_view<const float, 4> x) {
  tensor<float, 4> y(x);
  for (float& v : y) {  // selects, not branches: vectorizes; NaN stays NaN
    v = v < Act::lo ? Act::lo : v;
    v = v > Act::hi ? Act::hi : v;
  }
  return y;
}

inline extents<4> output_shape(const flatten&, const extents<4>& in) { return {in[0], 1, 1, in[1] * in[2] * in[3]}; }

template <class T>
tensor<T, 4> apply_flatten(tensor_view<const T, 4> x) {
  tensor<T, 4> y(x);  // dense copy in NHWC order
  return tensor<T, 4>(tensor_view<const T, 4>(y.data(), output_shape(flatten{}, x.shape())));
}

}  // namespace nn
}  // namespace qlib
