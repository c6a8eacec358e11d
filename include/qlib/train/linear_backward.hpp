// Backward pass of nn::linear: dW = dY^T X, dB = column sums of dY, dX = dY W.
#pragma once

#include <algorithm>

#include "qlib/nn/linear.hpp"
#include "qlib/train/buffers.hpp"

namespace qlib {
namespace train {

// Gradients of y = x W^T + b (before any activation) given dL/dy [N,1,1,out]. Writes
// dL/dW ([out, in] order) into dw, dL/db into db (empty without bias) and, when need_dx,
// dL/dx [N,1,1,in] into dx.
inline void linear_backward(const nn::linear& fc, tensor_view<const float, 4> x, tensor_view<const float, 4> dy,
                            tensor_view<float, 1> dw, tensor_view<float, 1> db, tensor<float, 4>& dx,
                            bool need_dx = true) {
  const char* who = "train::linear_backward";
  const extents<4> os = fc.output_shape(x.shape());
  detail::check_output_grad(dy.shape(), os, who);
  detail::check_param_grad(dw, fc.weight.size(), who, "weight");
  detail::check_param_grad(db, fc.bias.size(), who, "bias");
  const detail::dense_input xd(x), dyd(dy);
  const index_t n = os[0], in = fc.in_features(), out = fc.out_features();
  const tensor_view<const float, 2> x2(xd.view.data(), {n, in}), dy2(dyd.view.data(), {n, out});
  nn::matmul(dy2.transpose(0, 1), x2, tensor_view<float, 2>(dw.data(), {out, in}));
  if (db.shape(0) > 0) {
    float* dbp = db.data();
    std::fill_n(dbp, out, 0.0f);
    for (index_t i = 0; i < n; ++i)
      for (index_t j = 0; j < out; ++j) dbp[j] += dy2.data()[i * out + j];
  }
  if (!need_dx) return;
  detail::ensure_shape(dx, x.shape());
  nn::matmul(dy2, fc.weight.cview(), tensor_view<float, 2>(dx.data(), {n, in}));
}

// The same returning dL/dx (empty when !need_dx).
inline tensor<float, 4> linear_backward(const nn::linear& fc, tensor_view<const float, 4> x,
                                        tensor_view<const float, 4> dy, tensor_view<float, 1> dw,
                                        tensor_view<float, 1> db, bool need_dx = true) {
  tensor<float, 4> dx;
  linear_backward(fc, x, dy, dw, db, dx, need_dx);
  return dx;
}

}  // namespace train
}  // namespace qlib
