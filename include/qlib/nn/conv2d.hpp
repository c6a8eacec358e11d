// nn::conv2d: a float 2-D convolution over NHWC activations (im2col + GEMM; direct for depthwise).
#pragma once

#include <algorithm>
#include <limits>
#include <vector>

#include "qlib/core/tensor.hpp"
#include "qlib/nn/conv_geometry.hpp"
#include "qlib/nn/float_matmul.hpp"
#include "qlib/nn/im2col.hpp"

namespace qlib {
namespace nn {

// Weights are OHWI: [out_channels][kernel_h][kernel_w][in_channels / groups], so that one
// output channel's weights are one contiguous row in im2col order (nn/im2col.hpp).
// PyTorch's OIHW converts with oihw_to_ohwi(). Bias [out_channels] or empty.
struct conv2d {
  conv2d_options opt;
  tensor<float, 4> weight;
  tensor<float, 1> bias;

  conv2d() = default;
  conv2d(index_t in_channels, index_t out_channels, const conv2d_options& o, bool with_bias = true)
      : opt(o), bias(extents<1>{with_bias ? out_channels : 0}) {
    QLIB_CHECK(in_channels > 0 && out_channels > 0 && o.groups > 0 && in_channels % o.groups == 0 &&
                   out_channels % o.groups == 0 && o.kernel_h > 0 && o.kernel_w > 0,
               errc::invalid_argument,
               "nn::conv2d: needs channels > 0 divisible by groups and a kernel > 0, got " +
                   std::to_string(in_channels) + " -> " + std::to_string(out_channels) + ", " + o.describe());
    weight = tensor<float, 4>(extents<4>{out_channels, o.kernel_h, o.kernel_w, in_channels / o.groups});
  }
  index_t out_channels() const noexcept { return weight.shape(0); }
  index_t in_channels() const noexcept { return weight.shape(3) * opt.groups; }
  bool has_bias() const noexcept { return !bias.empty(); }

  // The checked geometry for an input shape (also checks the parameters' shapes).
  conv_geometry geometry(const extents<4>& in) const {
    QLIB_CHECK(weight.shape(1) == opt.kernel_h && weight.shape(2) == opt.kernel_w, errc::shape_mismatch,
               "nn::conv2d: weight " + qlib::detail::extents_string(weight.shape()) + " does not match " +
                   opt.describe());
    QLIB_CHECK(bias.empty() || bias.shape(0) == out_channels(), errc::shape_mismatch,
               "nn::conv2d: bias has " + std::to_string(bias.shape(0)) + " entries for " +
                   std::to_string(out_channels()) + " output channels");
    QLIB_CHECK(in[3] == in_channels(), errc::shape_mismatch,
               "nn::conv2d: input " + qlib::detail::extents_string(in) + " has " + std::to_string(in[3]) +
                   " channels, the weights expect " + std::to_string(in_channels()));
    return make_conv_geometry(in, out_channels(), opt, "nn::conv2d");
  }
  extents<4> output_shape(const extents<4>& in) const {
    const conv_geometry g = geometry(in);
    return {g.batch, g.out_h, g.out_w, g.out_c};
  }

  tensor<float, 4> forward(tensor_view<const float, 4> x, float lo = -std::numeric_limits<float>::infinity(),
                           float hi = std::numeric_limits<float>::infinity()) const;
};

namespace detail {
// Depthwise (groups == in_channels): a direct loop, channels innermost so it vectorizes;
// no im2col copy. Output channel o reads input channel o / multiplier.
inline void depthwise_forward(tensor_view<const float, 4> x, const conv_geometry& g, const tensor<float, 4>& w,
                              const float_epilogue& e, tensor<float, 4>& y) {
  const auto& o = g.opt;
  const index_t mult = g.out_c / g.in_c, taps = o.kernel_h * o.kernel_w;
  // Weights as [tap][out channel] for unit-stride channel loops.
  std::vector<float> wt(static_cast<std::size_t>(taps * g.out_c));
  for (index_t c = 0; c < g.out_c; ++c)
    for (index_t t = 0; t < taps; ++t) wt[static_cast<std::size_t>(t * g.out_c + c)] = w.data()[c * taps + t];
  std::vector<float> acc(static_cast<std::size_t>(g.out_c));
  for (index_t n = 0; n < g.batch; ++n)
    for (index_t oh = 0; oh < g.out_h; ++oh)
      for (index_t ow = 0; ow < g.out_w; ++ow) {
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (index_t kh = 0; kh < o.kernel_h; ++kh) {
          const index_t ih = oh * o.stride_h - o.pad_h + kh * o.dilation_h;
          if (ih < 0 || ih >= g.in_h) continue;
          for (index_t kw = 0; kw < o.kernel_w; ++kw) {
            const index_t iw = ow * o.stride_w - o.pad_w + kw * o.dilation_w;
            if (iw < 0 || iw >= g.in_w) continue;
            const float* px = &x(n, ih, iw, 0);
            const float* wr = wt.data() + (kh * o.kernel_w + kw) * g.out_c;
            for (index_t c = 0; c < g.out_c; ++c) acc[static_cast<std::size_t>(c)] += px[c / mult] * wr[c];
          }
        }
        float* out = &y(n, oh, ow, 0);
        for (index_t c = 0; c < g.out_c; ++c) out[c] = apply_epilogue(acc[static_cast<std::size_t>(c)], e, c);
      }
}
}  // namespace detail

inline tensor<float, 4> conv2d::forward(tensor_view<const float, 4> x, float lo, float hi) const {
  const conv_geometry g = geometry(x.shape());
  QLIB_CHECK(x.stride(3) == 1, errc::invalid_argument, "nn::conv2d: input channels must be contiguous");
  tensor<float, 4> y(extents<4>{g.batch, g.out_h, g.out_w, g.out_c});
  if (g.is_depthwise()) {
    detail::depthwise_forward(x, g, weight, {has_bias() ? bias.data() : nullptr, lo, hi}, y);
    return y;
  }
  const index_t patch = g.patch_size(), cog = g.out_c_per_group(), pixels = g.output_pixels();
  const index_t block = std::min(pixels, detail::im2col_block_rows(patch, sizeof(float)));
  tensor<float, 2> cols(extents<2>{block, patch});
  for (index_t grp = 0; grp < opt.groups; ++grp) {
    // B (patch x cog) = the group's OHWI rows, transposed.
    const tensor_view<const float, 2> b(weight.data() + grp * cog * patch, {patch, cog}, {1, patch});
    const float_epilogue e{has_bias() ? bias.data() + grp * cog : nullptr, lo, hi};
    for (index_t p0 = 0; p0 < pixels; p0 += block) {
      const index_t rows = std::min(block, pixels - p0);
      const tensor_view<float, 2> a = cols.view().slice(0, 0, rows);
      im2col<float>(x, g, grp, 0.0f, p0, p0 + rows, a);
      matmul(a, b, tensor_view<float, 2>(y.data() + p0 * g.out_c + grp * cog, {rows, cog}, {g.out_c, 1}), e);
    }
  }
  return y;
}

// PyTorch's OIHW weights [out][in/groups][kh][kw] as qlib's OHWI.
inline tensor<float, 4> oihw_to_ohwi(tensor_view<const float, 4> w) {
  return tensor<float, 4>(w.transpose(1, 2).transpose(2, 3));
}

}  // namespace nn
}  // namespace qlib
