// matmul(): the float GEMM call of float layers, C = A x B + bias, clamped (fused ReLU).
#pragma once

#include <limits>

#include "qlib/core/tensor_view.hpp"

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

// C (M x N, rows contiguous) = A (M x K) x B (K x N) with the epilogue. Any strides on A
// and B.
inline void matmul(tensor_view<const float, 2> a, tensor_view<const float, 2> b, tensor_view<float, 2> c,
                   const float_epilogue& e = {}) {
  const index_t m = a.shape(0), k = a.shape(1), n = b.shape(1);
  QLIB_CHECK(b.shape(0) == k && c.shape(0) == m && c.shape(1) == n, errc::shape_mismatch,
             "nn::matmul: A " + qlib::detail::extents_string(a.shape()) + " x B " +
                 qlib::detail::extents_string(b.shape()) + " -> C " + qlib::detail::extents_string(c.shape()));
  for (index_t i = 0; i < m; ++i) {
    float* crow = c.data() + i * c.stride(0);
    for (index_t j = 0; j < n; ++j) crow[j] = 0.0f;
    for (index_t kk = 0; kk < k; ++kk) {
      const float av = a(i, kk);
      for (index_t j = 0; j < n; ++j) crow[j] += av * b(kk, j);
    }
    for (index_t j = 0; j < n; ++j) crow[j] = detail::apply_epilogue(crow[j], e, j);
  }
}

}  // namespace nn
}  // namespace qlib
