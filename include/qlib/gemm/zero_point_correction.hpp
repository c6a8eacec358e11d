// zero_point_correction: the stage gemm() puts first, turning raw kernel sums into sum (a - za)(b - zb).
#pragma once

#include <cstdint>

#include "qlib/gemm/output_stages.hpp"

// A micro-kernel returns S[m][n] = sum_k a'[m][k] * b[k][n] where a' is the activation
// in the kernel's own domain: a' = a, or a + 128 for signed activations on VNNI kernels
// (vpdpbusd multiplies unsigned by signed bytes). With za' = za (+ 128) the accumulator
// the pipeline wants is
//
//   C = sum_k (a' - za') (b - zb[n]) = S + column_offset[n] - zb[n] * row_sum[m]
//   column_offset[n] = -za' * sum_k b[k][n]      (from packed_weights::column_sums())
//   row_sum[m]       = sum_k (a[m][k] - za)      (only needed when some zb != 0)
//
// All of it in wrapping int32: S itself may wrap (K * 255 * 128 can exceed int32), but
// gemm() has proven that C fits, and arithmetic mod 2^32 then gives C exactly.
namespace qlib {
namespace gemm {

struct zero_point_correction {
  using input_type = std::int32_t;
  using output_type = std::int32_t;
  const std::int32_t* column_offset = nullptr;  // column_offset[col - col_begin]
  index_t col_begin = 0;
  const std::int32_t* row_sum = nullptr;  // row_sum[row - row_begin]; nullptr when every zb is 0
  index_t row_begin = 0;
  const std::int32_t* weight_zero_point = nullptr;  // zb[col], or zb[0] for all when !per_channel
  bool per_channel = false;

  std::int32_t zb(index_t col) const noexcept { return weight_zero_point[per_channel ? col : 0]; }
  std::int32_t eval(std::int32_t x, index_t row, index_t col) const noexcept {
    std::int32_t v = detail::wrapping_add(x, column_offset[col - col_begin]);
    if (row_sum) v = detail::wrapping_sub(v, detail::wrapping_mul(zb(col), row_sum[row - row_begin]));
    return v;
  }
  void validate(index_t, index_t) const noexcept {}
};

}  // namespace gemm
}  // namespace qlib
