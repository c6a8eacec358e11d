// ReLU and ReLU6 in training: a branch-free forward and the backward (the output gradient where the input is inside the linear range).
#pragma once

#include "qlib/nn/activation.hpp"
#include "qlib/train/conv2d_backward.hpp"

namespace qlib {
namespace train {

// y = min(max(x, lo), hi) as nn::apply_activation (NaN stays NaN), written with selects
// so it vectorizes: on random signs a branch per element mispredicts half the time.
template <class Act>
tensor<float, 4> activation_forward(const Act&, tensor_view<const float, 4> x) {
  const detail::dense_input xd(x);
  tensor<float, 4> y(x.shape());
  const float* xp = xd.view.data();
  float* yp = y.data();
  for (index_t i = 0, n = y.size(); i < n; ++i) {
    float v = xp[i];
    v = v < Act::lo ? Act::lo : v;
    v = v > Act::hi ? Act::hi : v;
    yp[i] = v;
  }
  return y;
}

// dx = dy where lo < x < hi, else 0 (PyTorch: ReLU's gradient at 0 is 0; ReLU6 is
// hardtanh(0, 6), whose gradient is 0 at both ends). x is the activation's input.
template <class Act>
tensor<float, 4> activation_backward(const Act&, tensor_view<const float, 4> x, tensor_view<const float, 4> dy) {
  detail::check_output_grad(dy.shape(), x.shape(), "train::activation_backward");
  const detail::dense_input xd(x), dyd(dy);
  tensor<float, 4> dx(x.shape());
  const float* xp = xd.view.data();
  const float* g = dyd.view.data();
  float* d = dx.data();
  for (index_t i = 0, n = dx.size(); i < n; ++i) {
    const bool inside = (xp[i] > Act::lo) & (xp[i] < Act::hi);  // no short circuit: one select
    d[i] = inside ? g[i] : 0.0f;
  }
  return dx;
}

}  // namespace train
}  // namespace qlib
