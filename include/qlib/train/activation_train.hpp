// ReLU and ReLU6 in training: a branch-free forward and the backward (the output gradient where the input is inside the linear range).
#pragma once

#include "qlib/nn/activation.hpp"
#include "qlib/train/buffers.hpp"

namespace qlib {
namespace train {

// y = min(max(x, lo), hi) as nn::apply_activation (NaN stays NaN), written with selects
// so it vectorizes: on random signs a branch per element mispredicts half the time.
template <class Act>
void activation_forward(const Act&, tensor_view<const float, 4> x, tensor<float, 4>& y) {
  const detail::dense_input xd(x);
  detail::ensure_shape(y, x.shape());
  const float* xp = xd.view.data();
  float* yp = y.data();
  for (index_t i = 0, n = y.size(); i < n; ++i) {
    float v = xp[i];
    v = v < Act::lo ? Act::lo : v;
    v = v > Act::hi ? Act::hi : v;
    yp[i] = v;
  }
}

// dx = dy where lo < t < hi, else 0 (PyTorch: ReLU's gradient at 0 is 0; ReLU6 is
// hardtanh(0, 6), whose gradient is 0 at both ends). t is the activation's input or its
// output: both are inside (lo, hi) at the same elements.
template <class Act>
void activation_backward(const Act&, tensor_view<const float, 4> t, tensor_view<const float, 4> dy,
                         tensor<float, 4>& dx) {
  detail::check_output_grad(dy.shape(), t.shape(), "train::activation_backward");
  const detail::dense_input td(t), dyd(dy);
  detail::ensure_shape(dx, t.shape());
  const float* tp = td.view.data();
  const float* g = dyd.view.data();
  float* d = dx.data();
  for (index_t i = 0, n = dx.size(); i < n; ++i) {
    // Both loads unconditional and no short circuit: the compiler emits a vector select.
    const float v = tp[i], gv = g[i];
    d[i] = ((v > Act::lo) & (v < Act::hi)) ? gv : 0.0f;
  }
}

template <class Act>
tensor<float, 4> activation_forward(const Act& a, tensor_view<const float, 4> x) {
  tensor<float, 4> y;
  activation_forward(a, x, y);
  return y;
}
template <class Act>
tensor<float, 4> activation_backward(const Act& a, tensor_view<const float, 4> t, tensor_view<const float, 4> dy) {
  tensor<float, 4> dx;
  activation_backward(a, t, dy, dx);
  return dx;
}

}  // namespace train
}  // namespace qlib
