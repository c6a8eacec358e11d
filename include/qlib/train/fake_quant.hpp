// Fake quantization in training: the forward (quantize then dequantize, qlib's rounding) and the straight-through backward with its clamp mask.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "qlib/core/tensor.hpp"
#include "qlib/quant/affine.hpp"
#include "qlib/quant/params.hpp"
#include "qlib/quant/rounding.hpp"

namespace qlib {
namespace train {

// Tensors a fake quantizer sees are viewed as [C, inner]: one parameter per row
// (per channel: weights [out][K], axis 0) or one for all (per tensor, C = 1). Dense,
// row-major.
using fq_view = tensor_view<const float, 2>;

// The straight-through estimator's mask, the one definition every QAT path uses:
// the gradient passes for x iff its *unclamped rounded* code lies in [qmin, qmax]:
//
//   r = round_half_even(x * inv_scale)        (inv_scale = 1 / scale in float, as forward)
//   pass  <=>  qmin - zp <= r <= qmax - zp
//
// Boundary cases, exactly:
//  - r == qmin - zp or r == qmax - zp (x rounds onto an end code): passes (inclusive,
//    as PyTorch's fake_quantize backward);
//  - x * inv_scale exactly half a step beyond an end, e.g. qmax - zp + 0.5: rounds half to
//    even, so it passes iff the end code (relative to zp) is even. s8 [-127, 127]: 127.5
//    -> 128 is cut, -127.5 -> -128 is cut; u8 zp 0: -0.5 -> 0 passes, 255.5 -> 256 is cut;
//    s8 full [-128, 127]: -128.5 -> -128 passes;
//  - NaN (forward gives real 0) and +/-Inf (forward clamps): the gradient is 0.
inline bool ste_pass(float x, float inv_scale, std::int32_t zp, std::int32_t qmin, std::int32_t qmax) noexcept {
  const float r = round_half_even(x * inv_scale);  // NaN stays NaN and fails both tests
  return r >= static_cast<float>(qmin - zp) && r <= static_cast<float>(qmax - zp);
}

namespace detail {
inline void check_fq_shapes(fq_view x, const quant_params& p, extents<2> other, const char* who) {
  QLIB_CHECK(x.is_contiguous(), errc::invalid_argument, std::string(who) + ": the input must be dense");
  QLIB_CHECK(other == x.shape(), errc::shape_mismatch,
             std::string(who) + ": shapes " + qlib::detail::extents_string(x.shape()) + " and " +
                 qlib::detail::extents_string(other) + " differ");
  QLIB_CHECK(p.size() == 1 || p.size() == x.shape(0), errc::shape_mismatch,
             std::string(who) + ": " + std::to_string(p.size()) + " parameters for " + std::to_string(x.shape(0)) +
                 " rows (need 1 or one per row)");
}
}  // namespace detail

// y = dequantize(quantize(x)) with p (per tensor, or per row: granularity per_channel(0)):
// exactly qlib::fake_quantize, so the values are the ones the integer model computes with.
inline void fake_quant_forward(fq_view x, tensor_view<float, 2> y, const quant_params& p) {
  detail::check_fq_shapes(x, p, y.shape(), "train::fake_quant_forward");
  qlib::fake_quantize(x, y, p);
}

// dx = dy where ste_pass(x), else 0 (the straight-through estimator with the clamp mask).
// x is the fake quantizer's input; dx may alias dy.
inline void fake_quant_backward(fq_view x, const quant_params& p, const float* dy, float* dx) {
  detail::check_fq_shapes(x, p, x.shape(), "train::fake_quant_backward");
  p.validate();
  const index_t rows = x.shape(0), inner = x.shape(1);
  for (index_t c = 0; c < rows; ++c) {
    const std::size_t k = p.size() == 1 ? 0 : static_cast<std::size_t>(c);
    const float inv = 1.0f / p.scale[k];
    const std::int32_t zp = p.zero_point[k];
    const float* xr = x.data() + c * inner;
    for (index_t j = 0; j < inner; ++j) {
      const float g = dy[c * inner + j];
      dx[c * inner + j] = ste_pass(xr[j], inv, zp, p.qmin, p.qmax) ? g : 0.0f;
    }
  }
}

}  // namespace train
}  // namespace qlib
