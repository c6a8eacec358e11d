// nn::qconv2d: an int8 convolution (uint8 NHWC in and out), im2col + int8 GEMM, direct for depthwise.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <vector>

#include "qlib/gemm/driver.hpp"
#include "qlib/gemm/pipeline.hpp"
#include "qlib/nn/conv_geometry.hpp"
#include "qlib/nn/im2col.hpp"
#include "qlib/nn/qconv2d_implicit.hpp"
#include "qlib/nn/quantized_weights.hpp"

namespace qlib {
namespace nn {

// The fused output of a quantized conv2d / linear: int32 accumulators plus the int32
// bias, requantized per output channel by a float multiplier (PyTorch/FBGEMM's rule),
// clamped to [qmin, qmax] (ReLU fused: qmin = the output zero point; ReLU6 also lowers
// qmax) and stored as uint8.
struct quantized_output {
  activation_qparams out;
  std::int32_t qmin = 0, qmax = 255;
  std::vector<float> multiplier;  // one per output channel

  using pipeline_type =
      std::tuple<gemm::bias_add, gemm::requantize_float_per_channel, gemm::saturating_cast<std::uint8_t>>;
  // The pipeline of output channels [c0, c0 + count).
  pipeline_type pipeline(const quantized_weights& w, index_t c0, index_t count) const {
    return gemm::make_pipeline(gemm::bias_add{w.bias.data() + c0, count},
                               gemm::requantize_float_per_channel{multiplier.data() + c0, count, out.zero_point, qmin, qmax},
                               gemm::saturating_cast<std::uint8_t>{});
  }
};

// Sets multipliers and the clamp of a layer with weights w between activations in and
// out; relu_hi < 0 means no ReLU, 0 ReLU, 6 ReLU6.
inline quantized_output make_quantized_output(const quantized_weights& w, activation_qparams in,
                                              activation_qparams out, float relu_hi) {
  quantized_output o;
  o.out = out;
  o.multiplier = requantize_multipliers(w, in.scale, out.scale);
  if (relu_hi >= 0.0f) o.qmin = std::max(0, out.zero_point);
  if (relu_hi > 0.0f) {
    const double top = static_cast<double>(round_half_even(relu_hi / out.scale)) + out.zero_point;
    o.qmax = static_cast<std::int32_t>(std::min(255.0, std::max(static_cast<double>(o.qmin), top)));
  }
  return o;
}

struct qconv2d {
  conv2d_options opt;
  index_t in_channels = 0;
  activation_qparams in;  // the input activation's parameters (its zero point pads)
  quantized_weights w;    // [out][kh * kw * in / groups], OHWI order
  quantized_output output;
  implicit_conv_weights implicit;  // the weights re-packed for the implicit-GEMM path (may be empty)

  index_t out_channels() const noexcept { return w.out_channels(); }

  // Packs the weights for the implicit-GEMM path where it applies (after conversion or
  // loading; forward() uses im2col + GEMM without it).
  void prepare() { implicit = pack_implicit_conv(w, opt, in_channels); }

  conv_geometry geometry(const extents<4>& in_shape) const {
    QLIB_CHECK(in_shape[3] == in_channels, errc::shape_mismatch,
               "nn::qconv2d: input " + qlib::detail::extents_string(in_shape) + " has " +
                   std::to_string(in_shape[3]) + " channels, the layer expects " + std::to_string(in_channels));
    const conv_geometry g = make_conv_geometry(in_shape, out_channels(), opt, "nn::qconv2d");
    w.validate("nn::qconv2d");
    QLIB_CHECK(w.k() == g.patch_size() && static_cast<index_t>(w.packed.size()) == opt.groups &&
                   static_cast<index_t>(output.multiplier.size()) == out_channels(),
               errc::shape_mismatch, "nn::qconv2d: weights, packing or multipliers do not match " + opt.describe());
    return g;
  }

  qactivation forward(const qactivation& x, const gemm::gemm_options& gopt = {}) const;
};

namespace detail {
// Depthwise int8: one pass over the output with channels innermost; int32 sums of
// (x - zx)(w - zw) exactly as the GEMM forms them, then the same pipeline stage by stage.
inline void qdepthwise_forward(const qconv2d& L, const qactivation& x, const conv_geometry& g, qactivation& y) {
  const auto& o = g.opt;
  const index_t oc = g.out_c, mult = g.out_c / g.in_c, taps = o.kernel_h * o.kernel_w;
  std::vector<std::int32_t> wt(static_cast<std::size_t>(taps * oc));  // [tap][channel], zero point removed
  for (index_t c = 0; c < oc; ++c)
    for (index_t t = 0; t < taps; ++t)
      wt[static_cast<std::size_t>(t * oc + c)] = std::int32_t{L.w.values.data()[c * taps + t]} - L.w.zero_point(c);
  const auto pipe = L.output.pipeline(L.w, 0, oc);
  std::vector<std::int32_t> acc(static_cast<std::size_t>(oc));
  const auto xv = x.values.cview();
  for (index_t n = 0; n < g.batch; ++n)
    for (index_t oh = 0; oh < g.out_h; ++oh)
      for (index_t ow = 0; ow < g.out_w; ++ow) {
        std::fill(acc.begin(), acc.end(), 0);
        for (index_t kh = 0; kh < o.kernel_h; ++kh) {
          const index_t ih = oh * o.stride_h - o.pad_h + kh * o.dilation_h;
          if (ih < 0 || ih >= g.in_h) continue;  // padding is the zero point: (zx - zx) = 0
          for (index_t kw = 0; kw < o.kernel_w; ++kw) {
            const index_t iw = ow * o.stride_w - o.pad_w + kw * o.dilation_w;
            if (iw < 0 || iw >= g.in_w) continue;
            const std::uint8_t* px = &xv(n, ih, iw, 0);
            const std::int32_t* wr = wt.data() + (kh * o.kernel_w + kw) * oc;
            for (index_t c = 0; c < oc; ++c)
              acc[static_cast<std::size_t>(c)] += (std::int32_t{px[c / mult]} - x.zero_point) * wr[c];
          }
        }
        std::uint8_t* out = &y.values(n, oh, ow, 0);
        const index_t row = (n * g.out_h + oh) * g.out_w + ow;
        for (index_t c = 0; c < oc; ++c) out[c] = gemm::eval_pipeline(pipe, acc[static_cast<std::size_t>(c)], row, c);
      }
}
}  // namespace detail

inline qactivation qconv2d::forward(const qactivation& x, const gemm::gemm_options& gopt) const {
  const conv_geometry g = geometry(x.values.shape());
  QLIB_CHECK(x.scale == in.scale && x.zero_point == in.zero_point, errc::invalid_argument,
             "nn::qconv2d: input quantized with scale " + std::to_string(x.scale) + " / zero point " +
                 std::to_string(x.zero_point) + ", the layer was converted for " + std::to_string(in.scale) + " / " +
                 std::to_string(in.zero_point));
  qactivation y{tensor<std::uint8_t, 4>(extents<4>{g.batch, g.out_h, g.out_w, g.out_c}), output.out.scale,
                output.out.zero_point};
  if (g.is_depthwise()) {
    // The GEMM proves its int32 sums cannot overflow (gemm/validation.hpp); the direct
    // depthwise loop does the same here: 255 * max sum_k |w - zw| (+ |bias|) < 2^31.
    std::int64_t bias_max = 0;
    for (std::int32_t b : w.bias) bias_max = std::max<std::int64_t>(bias_max, std::llabs(b));
    QLIB_CHECK(255 * w.max_abs_row_sum() + bias_max <= std::numeric_limits<std::int32_t>::max(), errc::overflow,
               "nn::qconv2d: depthwise accumulators could overflow int32 (" + std::to_string(w.k()) + " taps)");
    detail::qdepthwise_forward(*this, x, g, y);
    return y;
  }
  const index_t patch = g.patch_size(), cog = g.out_c_per_group(), pixels = g.output_pixels();
  if (implicit_conv_available(implicit) && gopt.threads == 1 && detail::implicit_conv_buffer_bounded(g)) {
    QLIB_CHECK(implicit.packed.n() == g.out_c && implicit.run == opt.kernel_w * g.in_c, errc::shape_mismatch,
               "nn::qconv2d: implicit weights do not match the layer (call prepare() after changing it)");
    detail::implicit_conv_forward(implicit, g, x.values.cview(), x.zero_point, output.pipeline(w, 0, g.out_c),
                                  y.values.data());
    return y;
  }
  const gemm::activation_params ap{x.zero_point};
  const bool direct = opt.groups == 1 && opt.kernel_h == 1 && opt.kernel_w == 1 && opt.stride_h == 1 &&
                      opt.stride_w == 1 && opt.pad_h == 0 && opt.pad_w == 0;
  if (direct) {  // 1x1: the input is already the im2col matrix
    const tensor_view<const std::uint8_t, 2> a(x.values.data(), {pixels, patch});
    gemm::gemm(a, ap, w.packed[0], output.pipeline(w, 0, cog), tensor_view<std::uint8_t, 2>(y.values.data(), {pixels, cog}),
               gopt);
    return y;
  }
  const index_t block = std::min(pixels, detail::im2col_block_rows(patch, 1));
  tensor<std::uint8_t, 2> cols(extents<2>{block, patch});
  const auto pad = static_cast<std::uint8_t>(x.zero_point);
  for (index_t grp = 0; grp < opt.groups; ++grp) {
    const auto pipe = output.pipeline(w, grp * cog, cog);
    for (index_t p0 = 0; p0 < pixels; p0 += block) {
      const index_t rows = std::min(block, pixels - p0);
      const tensor_view<std::uint8_t, 2> a = cols.view().slice(0, 0, rows);
      im2col<std::uint8_t>(x.values.cview(), g, grp, pad, p0, p0 + rows, a);
      gemm::gemm(tensor_view<const std::uint8_t, 2>(a), ap, w.packed[static_cast<std::size_t>(grp)], pipe,
                 tensor_view<std::uint8_t, 2>(y.values.data() + p0 * g.out_c + grp * cog, {rows, cog}, {g.out_c, 1}),
                 gopt);
    }
  }
  return y;
}

}  // namespace nn
}  // namespace qlib
