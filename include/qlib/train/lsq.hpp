// Learned step size quantization (LSQ, Esser et al. 2020; LSQ+ zero point): the gradients of a fake quantizer's input, scale and zero point.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "qlib/train/fake_quant.hpp"

namespace qlib {
namespace train {

// LSQ's gradient scale g = 1 / sqrt(N * qmax): N elements share the scale (weights: a
// channel's K, or the whole tensor; activations: the elements of one sample, so g does
// not depend on the batch size), qmax is the scheme's largest code. Keeps the scale's
// update in proportion to the weights' own.
inline float lsq_grad_scale(index_t n, std::int32_t qmax) {
  QLIB_CHECK(n > 0 && qmax > 0, errc::invalid_argument,
             "train::lsq_grad_scale: needs N > 0 and qmax > 0, got " + std::to_string(n) + ", " + std::to_string(qmax));
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(n) * static_cast<double>(qmax)));
}

// The per-element LSQ derivatives of y = (clamp(round(x / s) + z, qmin, qmax) - z) * s,
// with round treated as the identity where it is inside the range (PyTorch's
// _fake_quantize_learnable_*_affine backward). With r = round_half_even(x * inv_s):
//   r <  qmin - z:  dy/dx = 0,  dy/ds = qmin - z,         dy/dz = -s
//   r >  qmax - z:  dy/dx = 0,  dy/ds = qmax - z,         dy/dz = -s
//   otherwise:      dy/dx = 1,  dy/ds = r - x * inv_s,    dy/dz = 0
// (the mask is ste_pass's, boundary cases included). NaN x: all 0.
struct lsq_partials {
  float dx, ds, dz;
};
inline lsq_partials lsq_element(float x, float scale, float inv_scale, std::int32_t zp, std::int32_t qmin,
                                std::int32_t qmax) noexcept {
  if (std::isnan(x)) return {0.0f, 0.0f, 0.0f};
  const float v = x * inv_scale, r = round_half_even(v);
  const float lo = static_cast<float>(qmin - zp), hi = static_cast<float>(qmax - zp);
  if (r < lo) return {0.0f, lo, -scale};
  if (r > hi) return {0.0f, hi, -scale};
  return {1.0f, r - v, 0.0f};
}

// Backward of an LSQ fake quantizer over x [C, inner] with parameters p (one per row or
// one for all): dx = dy * dy/dx; ds[k] += g * sum over k's elements of dy * dy/ds, and
// dz[k] likewise (dz may be null: symmetric schemes keep z fixed). Sums in double, in
// element order. dx may alias dy.
inline void lsq_backward(fq_view x, const quant_params& p, const float* dy, float* dx, float grad_scale, float* ds,
                         float* dz) {
  detail::check_fq_shapes(x, p, x.shape(), "train::lsq_backward");
  p.validate();
  QLIB_CHECK(std::isfinite(grad_scale) && grad_scale > 0.0f, errc::invalid_argument,
             "train::lsq_backward: the gradient scale must be finite and > 0");
  const index_t rows = x.shape(0), inner = x.shape(1);
  const std::size_t np = static_cast<std::size_t>(p.size());
  std::vector<double> sum_s(np, 0.0), sum_z(np, 0.0);
  for (index_t c = 0; c < rows; ++c) {
    const std::size_t k = np == 1 ? 0 : static_cast<std::size_t>(c);
    const float s = p.scale[k], inv = 1.0f / s;
    const std::int32_t zp = p.zero_point[k];
    for (index_t j = 0; j < inner; ++j) {
      const index_t i = c * inner + j;
      const float g = dy[i];
      const lsq_partials d = lsq_element(x.data()[i], s, inv, zp, p.qmin, p.qmax);
      sum_s[k] += static_cast<double>(g) * d.ds;
      sum_z[k] += static_cast<double>(g) * d.dz;
      dx[i] = d.dx != 0.0f ? g : 0.0f;
    }
  }
  for (std::size_t k = 0; k < np; ++k) {
    ds[k] += static_cast<float>(sum_s[k] * grad_scale);
    if (dz) dz[k] += static_cast<float>(sum_z[k] * grad_scale);
  }
}

}  // namespace train
}  // namespace qlib
