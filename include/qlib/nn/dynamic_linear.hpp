// nn::dynamic_linear: dynamic post-training quantization - int8 weights, activations quantized per call, float out.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "qlib/gemm/driver.hpp"
#include "qlib/nn/linear.hpp"
#include "qlib/nn/quantized_weights.hpp"
#include "qlib/quant/affine.hpp"

namespace qlib {
namespace nn {

// How activations are quantized at run time:
//  - per_tensor: one asymmetric uint8 scale/zero point from the batch's min/max (PyTorch's
//    dynamic quantization of nn.Linear);
//  - per_row: one symmetric int8 scale per row (absmax / 127, zero point 0; the
//    vector-wise scheme of LLM.int8), more accurate when rows differ in range.
enum class dynamic_granularity { per_tensor, per_row };

// The epilogue of per-row dynamic quantization: y = float(acc) * (row_scale[row] *
// weight_scale[col]) + bias[col] (bias may be null). A stage of its own (the pipeline
// runs it lane by lane on every ISA).
struct dequantize_rows_and_channels {
  using input_type = std::int32_t;
  using output_type = float;
  const float* row_scale = nullptr;
  const float* channel_scale = nullptr;
  const float* bias = nullptr;
  index_t rows = 0, cols = 0;

  float eval(std::int32_t x, index_t row, index_t col) const noexcept {
    // volatile: the product is rounded before the bias is added on every ISA (g++ would
    // otherwise fuse the two into one FMA inside FMA-enabled kernels, and the portable
    // path would round twice: different bits per ISA).
    const volatile float y = static_cast<float>(x) * (row_scale[row] * channel_scale[col]);
    return bias ? y + bias[col] : y;
  }
  void validate(index_t r, index_t c) const {
    QLIB_CHECK(row_scale && channel_scale && r == rows && c == cols, errc::shape_mismatch,
               "dequantize_rows_and_channels: scales do not match C");
  }
};

struct dynamic_linear {
  quantized_weights w;             // [out][in], symmetric int8 (bias unused: kept float)
  std::vector<float> bias;         // float bias, added after dequantization
  std::vector<float> weight_scale;  // per output channel
  dynamic_granularity mode = dynamic_granularity::per_tensor;

  index_t in_features() const noexcept { return w.k(); }
  index_t out_features() const noexcept { return w.out_channels(); }

  // Quantizes a float linear layer's weights (per channel or per tensor, symmetric int8).
  static dynamic_linear from(const linear& l, dynamic_granularity g = dynamic_granularity::per_tensor,
                             bool per_channel_weights = true) {
    l.output_shape({1, 1, 1, l.in_features()});  // validates the parameters
    dynamic_linear d;
    d.w = quantize_weights(l.weight.cview(), {}, 1.0f, per_channel_weights, 1);
    d.bias.assign(l.bias.begin(), l.bias.end());
    for (index_t o = 0; o < d.out_features(); ++o) d.weight_scale.push_back(d.w.scale(o));
    d.mode = g;
    return d;
  }

  // x [N, 1, 1, in] float -> [N, 1, 1, out] float. Non-finite inputs are refused (they
  // would have no quantized form).
  tensor<float, 4> forward(tensor_view<const float, 4> x, const gemm::gemm_options& gopt = {}) const {
    const index_t n = x.shape(0), k = in_features(), m = out_features();
    QLIB_CHECK(x.shape(1) == 1 && x.shape(2) == 1 && x.shape(3) == k && n > 0, errc::shape_mismatch,
               "nn::dynamic_linear: expects input [N,1,1," + std::to_string(k) + "], got " +
                   qlib::detail::extents_string(x.shape()));
    const tensor<float, 2> xd(tensor_view<const float, 2>(tensor<float, 4>(x).data(), {n, k}));
    tensor<float, 4> y(extents<4>{n, 1, 1, m});
    const tensor_view<float, 2> c(y.data(), {n, m});
    if (mode == dynamic_granularity::per_tensor) {
      const quant_params p = choose_params(xd.cview(), schemes::u8_asymmetric, granularity::per_tensor());
      tensor<std::uint8_t, 2> q(xd.shape());
      quantize(xd.cview(), q.view(), p);
      std::vector<float> ones(static_cast<std::size_t>(n), 1.0f);
      std::vector<float> sw(weight_scale);
      for (float& s : sw) s *= p.scale[0];
      gemm::gemm(q.cview(), {p.zero_point[0]}, w.packed[0],
                 gemm::make_pipeline(dequantize_rows_and_channels{ones.data(), sw.data(), bias.empty() ? nullptr : bias.data(), n, m}),
                 c, gopt);
    } else {
      const quant_params p = choose_params(xd.cview(), schemes::s8_symmetric, granularity::per_channel(0));
      tensor<std::int8_t, 2> q(xd.shape());
      quantize(xd.cview(), q.view(), p);
      gemm::gemm(q.cview(), {0}, w.packed[0],
                 gemm::make_pipeline(dequantize_rows_and_channels{p.scale.data(), weight_scale.data(),
                                                                  bias.empty() ? nullptr : bias.data(), n, m}),
                 c, gopt);
    }
    return y;
  }
};

}  // namespace nn
}  // namespace qlib
