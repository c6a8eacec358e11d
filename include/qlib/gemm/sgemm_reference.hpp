// The plain fp32 GEMM: a triple loop with double accumulation, the oracle for every sgemm kernel.
#pragma once

#include "qlib/core/tensor_view.hpp"
#include "qlib/gemm/sgemm_params.hpp"
#include "qlib/kernels/portable/sgemm_panel.hpp"

// C = clamp((accumulate ? C : 0) + A x B + bias) as sgemm_options documents, each sum
// accumulated in double and rounded to float once, before bias and clamp (which are
// applied in float, with sgemm_clamp's NaN-keeping order). With double sums this is
// close to the exact product: sgemm() differs from it by the float rounding of its own
// sums (blocked over K, fused on SIMD ISAs), which tests bound by
//   |sgemm - reference| <= (K + 2) * 2^-23 * (|c_old| + sum_k |a||b| + |bias|)
// (at most K + 2 roundings of at most 2^-24 relative each, with slack for the bias add).
// A, B any strides; C any strides. No threading, no blocking, no aliasing checks.
namespace qlib {
namespace gemm {
namespace reference {

inline void sgemm(tensor_view<const float, 2> a, tensor_view<const float, 2> b, tensor_view<float, 2> c,
                  const sgemm_options& opt = {}) {
  const index_t m_rows = a.shape(0), k_depth = a.shape(1), n_cols = b.shape(1);
  QLIB_CHECK(b.shape(0) == k_depth && c.shape(0) == m_rows && c.shape(1) == n_cols, errc::shape_mismatch,
             "reference::sgemm: A " + qlib::detail::extents_string(a.shape()) + ", B " +
                 qlib::detail::extents_string(b.shape()) + ", C " + qlib::detail::extents_string(c.shape()));
  const bool clamp = opt.clamp_lo > -std::numeric_limits<float>::infinity() ||
                     opt.clamp_hi < std::numeric_limits<float>::infinity();
  for (index_t m = 0; m < m_rows; ++m) {
    for (index_t n = 0; n < n_cols; ++n) {
      double acc = opt.accumulate ? static_cast<double>(c(m, n)) : 0.0;
      for (index_t k = 0; k < k_depth; ++k) acc += static_cast<double>(a(m, k)) * static_cast<double>(b(k, n));
      float s = static_cast<float>(acc);
      if (opt.bias) s += opt.bias[n];
      if (clamp) s = kernels::sgemm_clamp(s, opt.clamp_lo, opt.clamp_hi);
      c(m, n) = s;
    }
  }
}

}  // namespace reference
}  // namespace gemm
}  // namespace qlib
