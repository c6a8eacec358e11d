// The normative int8 GEMM: plain loops over the unpacked weights, int64 sums, the pipeline's eval().
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include "qlib/core/tensor_view.hpp"
#include "qlib/gemm/pipeline.hpp"
#include "qlib/quant/params.hpp"

// C[m][n] = pipeline(sum_k (A[m][k] - za) * (B[k][n] - zb[n])), with zb[n] from the
// weight parameters (per tensor or per channel along axis 1 of the K x N view). This is
// what gemm::gemm() computes on every ISA, bit for bit; tests use it as the oracle. It
// refuses (errc::overflow) an accumulator that does not fit int32, where gemm() refuses
// every input for which one could.
namespace qlib {
namespace gemm {
namespace reference {

template <class Act, class Pipeline, class Out>
void gemm(tensor_view<const Act, 2> a, std::int32_t a_zero_point, tensor_view<const std::int8_t, 2> b,
          const quant_params& weight_params, const Pipeline& pipeline, tensor_view<Out, 2> c) {
  static_assert(std::is_same<Act, std::uint8_t>::value || std::is_same<Act, std::int8_t>::value,
                "activations are uint8 or int8");
  static_assert(std::is_same<Out, pipeline_output_t<Pipeline>>::value, "C's type must be the pipeline's output type");
  const index_t m_rows = a.shape(0), k_depth = a.shape(1), n_cols = b.shape(1);
  QLIB_CHECK(b.shape(0) == k_depth && c.shape(0) == m_rows && c.shape(1) == n_cols, errc::shape_mismatch,
             "reference::gemm: A " + qlib::detail::extents_string(a.shape()) + ", B " + qlib::detail::extents_string(b.shape()) +
                 ", C " + qlib::detail::extents_string(c.shape()));
  const bool per_channel = weight_params.zero_point.size() > 1;
  QLIB_CHECK(weight_params.zero_point.size() == (per_channel ? static_cast<std::size_t>(n_cols) : 1u),
             errc::shape_mismatch, "reference::gemm: weight zero points must be 1 or N");
  validate_pipeline(pipeline, m_rows, n_cols);
  for (index_t m = 0; m < m_rows; ++m) {
    for (index_t n = 0; n < n_cols; ++n) {
      const std::int64_t zb = weight_params.zero_point[per_channel ? static_cast<std::size_t>(n) : 0];
      std::int64_t acc = 0;
      for (index_t k = 0; k < k_depth; ++k)
        acc += (static_cast<std::int64_t>(a(m, k)) - a_zero_point) * (static_cast<std::int64_t>(b(k, n)) - zb);
      QLIB_CHECK(acc >= std::numeric_limits<std::int32_t>::min() && acc <= std::numeric_limits<std::int32_t>::max(),
                 errc::overflow,
                 "reference::gemm: accumulator C[" + std::to_string(m) + "][" + std::to_string(n) + "] = " +
                     std::to_string(acc) + " does not fit int32");
      c(m, n) = eval_pipeline(pipeline, static_cast<std::int32_t>(acc), m, n);
    }
  }
}

}  // namespace reference
}  // namespace gemm
}  // namespace qlib
