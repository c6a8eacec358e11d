// Pooling in training: max pooling that records each output's argmax, and the backward of max and average pooling.
#pragma once

#include <limits>
#include <vector>

#include "qlib/nn/pooling.hpp"
#include "qlib/train/conv2d_backward.hpp"

namespace qlib {
namespace train {

// Max pooling as nn::pool, also recording for every output element the flat NHWC index
// of the input element it came from (the first maximum in window order; a NaN wins, as
// in PyTorch), or -1 when the window holds no input element (output -inf).
inline tensor<float, 4> max_pool_forward_train(const nn::max_pool2d& p, tensor_view<const float, 4> x,
                                               std::vector<index_t>& argmax) {
  const nn::conv_geometry g = nn::detail::pool_geometry(x.shape(), p.window, "train::max_pool_forward_train");
  const detail::dense_input xd(x);
  const float* xp = xd.view.data();
  const auto& o = g.opt;
  const index_t c = g.in_c;
  tensor<float, 4> y(extents<4>{g.batch, g.out_h, g.out_w, c}, -std::numeric_limits<float>::infinity());
  argmax.assign(static_cast<std::size_t>(y.size()), -1);
  for (index_t n = 0; n < g.batch; ++n)
    for (index_t oh = 0; oh < g.out_h; ++oh)
      for (index_t ow = 0; ow < g.out_w; ++ow) {
        const index_t out0 = ((n * g.out_h + oh) * g.out_w + ow) * c;
        float* out = y.data() + out0;
        index_t* am = argmax.data() + out0;
        for (index_t kh = 0; kh < o.kernel_h; ++kh) {
          const index_t ih = oh * o.stride_h - o.pad_h + kh * o.dilation_h;
          if (ih < 0 || ih >= g.in_h) continue;
          for (index_t kw = 0; kw < o.kernel_w; ++kw) {
            const index_t iw = ow * o.stride_w - o.pad_w + kw * o.dilation_w;
            if (iw < 0 || iw >= g.in_w) continue;
            const index_t in0 = ((n * g.in_h + ih) * g.in_w + iw) * c;
            for (index_t ch = 0; ch < c; ++ch) {
              const float v = xp[in0 + ch];
              // The first tap always wins; later ones when larger or NaN (and not after a NaN).
              if (am[ch] < 0 || ((v > out[ch] || v != v) && out[ch] == out[ch])) {
                out[ch] = v;
                am[ch] = in0 + ch;
              }
            }
          }
        }
      }
  return y;
}

// dL/dx of max pooling: each output gradient goes to its argmax element.
inline tensor<float, 4> max_pool_backward(const extents<4>& in_shape, const std::vector<index_t>& argmax,
                                          tensor_view<const float, 4> dy) {
  QLIB_CHECK(static_cast<index_t>(argmax.size()) == dy.size(), errc::shape_mismatch,
             "train::max_pool_backward: output gradient " + qlib::detail::extents_string(dy.shape()) +
                 " does not match the recorded argmax (" + std::to_string(argmax.size()) + " outputs)");
  const detail::dense_input dyd(dy);
  tensor<float, 4> dx(in_shape);
  const index_t in_size = dx.size();
  for (index_t i = 0, n = dy.size(); i < n; ++i) {
    const index_t a = argmax[static_cast<std::size_t>(i)];
    QLIB_ASSERT(a < in_size);
    (void)in_size;
    if (a >= 0) dx.data()[a] += dyd.view.data()[i];
  }
  return dx;
}

// dL/dx of average pooling: each output gradient spread evenly over its window's input
// taps, divided by the forward's divisor (count_include_pad as in nn::pool).
inline tensor<float, 4> avg_pool_backward(const nn::avg_pool2d& p, const extents<4>& in_shape,
                                          tensor_view<const float, 4> dy) {
  const nn::conv_geometry g = nn::detail::pool_geometry(in_shape, p.window, "train::avg_pool_backward");
  detail::check_output_grad(dy.shape(), {g.batch, g.out_h, g.out_w, g.in_c}, "train::avg_pool_backward");
  const detail::dense_input dyd(dy);
  const auto& o = g.opt;
  const index_t c = g.in_c;
  tensor<float, 4> dx(in_shape);
  for (index_t n = 0; n < g.batch; ++n)
    for (index_t oh = 0; oh < g.out_h; ++oh)
      for (index_t ow = 0; ow < g.out_w; ++ow) {
        index_t inside = 0, counted = 0;
        for (index_t kh = 0; kh < o.kernel_h; ++kh) {
          const index_t ih = oh * o.stride_h - o.pad_h + kh * o.dilation_h;
          for (index_t kw = 0; kw < o.kernel_w; ++kw) {
            const index_t iw = ow * o.stride_w - o.pad_w + kw * o.dilation_w;
            if (ih >= -o.pad_h && ih < g.in_h + o.pad_h && iw >= -o.pad_w && iw < g.in_w + o.pad_w) ++counted;
            if (ih >= 0 && ih < g.in_h && iw >= 0 && iw < g.in_w) ++inside;
          }
        }
        const index_t count = p.count_include_pad ? counted : inside;
        if (count == 0) continue;
        const float inv = 1.0f / static_cast<float>(count);
        const float* gy = dyd.view.data() + ((n * g.out_h + oh) * g.out_w + ow) * c;
        for (index_t kh = 0; kh < o.kernel_h; ++kh) {
          const index_t ih = oh * o.stride_h - o.pad_h + kh * o.dilation_h;
          if (ih < 0 || ih >= g.in_h) continue;
          for (index_t kw = 0; kw < o.kernel_w; ++kw) {
            const index_t iw = ow * o.stride_w - o.pad_w + kw * o.dilation_w;
            if (iw < 0 || iw >= g.in_w) continue;
            float* gx = &dx(n, ih, iw, 0);
            for (index_t ch = 0; ch < c; ++ch) gx[ch] += gy[ch] * inv;
          }
        }
      }
  return dx;
}

}  // namespace train
}  // namespace qlib
