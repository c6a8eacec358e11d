// Pooling in training: max pooling that records each output's argmax tap, and the backward of max and average pooling.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "qlib/nn/pooling.hpp"
#include "qlib/train/buffers.hpp"

namespace qlib {
namespace train {

// Max pooling as nn::pool, also recording for every output element which tap of its
// window it came from (kh * kernel_w + kw: the first maximum in window order; a NaN
// wins, as in PyTorch), or -1 when the window holds no input element (output -inf).
// Tap indices rather than flat input positions: 32-bit, so the channel loop is one
// vectorized compare-and-select per tap instead of a branch.
inline void max_pool_forward_train(const nn::max_pool2d& p, tensor_view<const float, 4> x,
                                   std::vector<std::int32_t>& argmax, tensor<float, 4>& y) {
  const nn::conv_geometry g = nn::detail::pool_geometry(x.shape(), p.window, "train::max_pool_forward_train");
  const detail::dense_input xd(x);
  const float* xp = xd.view.data();
  const auto& o = g.opt;
  const index_t c = g.in_c;
  detail::ensure_shape(y, {g.batch, g.out_h, g.out_w, c});
  std::fill_n(y.data(), y.size(), -std::numeric_limits<float>::infinity());
  argmax.assign(static_cast<std::size_t>(y.size()), -1);
  for (index_t n = 0; n < g.batch; ++n)
    for (index_t oh = 0; oh < g.out_h; ++oh)
      for (index_t ow = 0; ow < g.out_w; ++ow) {
        const index_t out0 = ((n * g.out_h + oh) * g.out_w + ow) * c;
        float* out = y.data() + out0;
        std::int32_t* am = argmax.data() + out0;
        for (index_t kh = 0; kh < o.kernel_h; ++kh) {
          const index_t ih = oh * o.stride_h - o.pad_h + kh * o.dilation_h;
          if (ih < 0 || ih >= g.in_h) continue;
          for (index_t kw = 0; kw < o.kernel_w; ++kw) {
            const index_t iw = ow * o.stride_w - o.pad_w + kw * o.dilation_w;
            if (iw < 0 || iw >= g.in_w) continue;
            const float* px = xp + ((n * g.in_h + ih) * g.in_w + iw) * c;
            const auto tap = static_cast<std::int32_t>(kh * o.kernel_w + kw);
            for (index_t ch = 0; ch < c; ++ch) {
              const float v = px[ch], m = out[ch];
              // The first tap always wins; later ones when larger or NaN (and not after a NaN).
              const bool take = (am[ch] < 0) | (v > m) | ((v != v) & (m == m));
              out[ch] = take ? v : m;
              am[ch] = take ? tap : am[ch];
            }
          }
        }
      }
}

// dL/dx of max pooling: each output gradient goes to the input element of its recorded tap.
inline void max_pool_backward(const nn::max_pool2d& p, const extents<4>& in_shape,
                              const std::vector<std::int32_t>& argmax, tensor_view<const float, 4> dy,
                              tensor<float, 4>& dx) {
  const nn::conv_geometry g = nn::detail::pool_geometry(in_shape, p.window, "train::max_pool_backward");
  detail::check_output_grad(dy.shape(), {g.batch, g.out_h, g.out_w, g.in_c}, "train::max_pool_backward");
  QLIB_CHECK(static_cast<index_t>(argmax.size()) == dy.size(), errc::shape_mismatch,
             "train::max_pool_backward: " + std::to_string(argmax.size()) + " recorded taps for output gradient " +
                 qlib::detail::extents_string(dy.shape()));
  const detail::dense_input dyd(dy);
  const auto& o = g.opt;
  const index_t c = g.in_c, taps = o.kernel_h * o.kernel_w;
  detail::ensure_shape(dx, in_shape);
  std::fill_n(dx.data(), dx.size(), 0.0f);
  float* dxp = dx.data();
  const float* gy = dyd.view.data();
  for (index_t n = 0; n < g.batch; ++n)
    for (index_t oh = 0; oh < g.out_h; ++oh)
      for (index_t ow = 0; ow < g.out_w; ++ow) {
        const index_t out0 = ((n * g.out_h + oh) * g.out_w + ow) * c;
        for (index_t ch = 0; ch < c; ++ch) {
          const index_t t = argmax[static_cast<std::size_t>(out0 + ch)];
          QLIB_CHECK(t < taps, errc::out_of_range, "train::max_pool_backward: a recorded tap is outside the window");
          if (t < 0) continue;
          const index_t ih = oh * o.stride_h - o.pad_h + (t / o.kernel_w) * o.dilation_h;
          const index_t iw = ow * o.stride_w - o.pad_w + (t % o.kernel_w) * o.dilation_w;
          QLIB_CHECK(ih >= 0 && ih < g.in_h && iw >= 0 && iw < g.in_w, errc::out_of_range,
                     "train::max_pool_backward: a recorded tap is in the padding");
          dxp[((n * g.in_h + ih) * g.in_w + iw) * c + ch] += gy[out0 + ch];
        }
      }
}

// dL/dx of average pooling: each output gradient spread evenly over its window's input
// taps, divided by the forward's divisor (count_include_pad as in nn::pool).
inline void avg_pool_backward(const nn::avg_pool2d& p, const extents<4>& in_shape, tensor_view<const float, 4> dy,
                              tensor<float, 4>& dx) {
  const nn::conv_geometry g = nn::detail::pool_geometry(in_shape, p.window, "train::avg_pool_backward");
  detail::check_output_grad(dy.shape(), {g.batch, g.out_h, g.out_w, g.in_c}, "train::avg_pool_backward");
  const detail::dense_input dyd(dy);
  const auto& o = g.opt;
  const index_t c = g.in_c;
  detail::ensure_shape(dx, in_shape);
  std::fill_n(dx.data(), dx.size(), 0.0f);
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
            float* gx = dx.data() + ((n * g.in_h + ih) * g.in_w + iw) * c;
            for (index_t ch = 0; ch < c; ++ch) gx[ch] += gy[ch] * inv;
          }
        }
      }
}

// The same returning the output / dL/dx.
inline tensor<float, 4> max_pool_forward_train(const nn::max_pool2d& p, tensor_view<const float, 4> x,
                                               std::vector<std::int32_t>& argmax) {
  tensor<float, 4> y;
  max_pool_forward_train(p, x, argmax, y);
  return y;
}
inline tensor<float, 4> max_pool_backward(const nn::max_pool2d& p, const extents<4>& in_shape,
                                          const std::vector<std::int32_t>& argmax, tensor_view<const float, 4> dy) {
  tensor<float, 4> dx;
  max_pool_backward(p, in_shape, argmax, dy, dx);
  return dx;
}
inline tensor<float, 4> avg_pool_backward(const nn::avg_pool2d& p, const extents<4>& in_shape,
                                          tensor_view<const float, 4> dy) {
  tensor<float, 4> dx;
  avg_pool_backward(p, in_shape, dy, dx);
  return dx;
}

}  // namespace train
}  // namespace qlib
