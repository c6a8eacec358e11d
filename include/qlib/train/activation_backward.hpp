// Backward of the element-wise activations (ReLU, ReLU6): the output gradient where the input is inside the linear range.
#pragma once

#include "qlib/nn/activation.hpp"
#include "qlib/train/conv2d_backward.hpp"

namespace qlib {
namespace train {

// dx = dy where lo < x < hi, else 0 (PyTorch: ReLU's gradient at 0 is 0; ReLU6 is
// hardtanh(0, 6), whose gradient is 0 at both ends). x is the activation's input.
template <class Act>
tensor<float, 4> activation_backward(const Act&, tensor_view<const float, 4> x, tensor_view<const float, 4> dy) {
  detail::check_output_grad(dy.shape(), x.shape(), "train::activation_backward");
  const detail::dense_input xd(x), dyd(dy);
  tensor<float, 4> dx(x.shape());
  const float* xp = xd.view.data();
  const float* g = dyd.view.data();
  for (index_t i = 0, n = dx.size(); i < n; ++i)
    dx.data()[i] = (xp[i] > Act::lo && xp[i] < Act::hi) ? g[i] : 0.0f;
  return dx;
}

}  // namespace train
}  // namespace qlib
