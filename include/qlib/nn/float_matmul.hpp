// matmul(): the float GEMM call of float layers, C = A x B + bias, clamped (fused ReLU).
#pragma once

#include <limits>

#include "qlib/core/tensor_view.hpp"
#include "qlib/gemm/sgemm.hpp"

namespace qlib {
namespace nn {

// The epilogue of a float layer: per-column bias (may be null) and a clamp (ReLU is
// [0, +inf), ReLU6 [0, 6]; NaN propagates through the default infinite bounds).
struct float_epilogue {
  const float* bias = nullptr;
  float lo = -std::numeric_limits<float>::infinity();
  float hi = std::numeric_limits<float>::infinity();
};

namespace detail {
inline float apply_epilogue(float v, const float_epilogue& e, index_t col) noexcept {
  if (e.bias) v += e.bias[col];
  if (v < e.lo) v = e.lo;
  if (v > e.hi) v = e.hi;
  return v;
}
}  // namespace detail

// C (M x N, rows contiguous, any row stride) = A (M x K) x B (K x N) with the epilogue,
// on qlib's fp32 GEMM (gemm/sgemm.hpp). Any strides on A and B (transposed views too).
inline void matmul(tensor_view<const float, 2> a, tensor_view<const float, 2> b, tensor_view<float, 2> c,
                   const float_epilogue& e = {}, bool accumulate = false) {
  gemm::sgemm_options o;
  o.bias = e.bias;
  o.clamp_lo = e.lo;
  o.clamp_hi = e.hi;
  o.accumulate = accumulate;
  gemm::sgemm(a, b, c, o);
}

}  // namespace nn
}  // namespace qlib
