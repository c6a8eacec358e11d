// The zero-point correction: which part the kernels fold into their accumulators, and the row stage.
#pragma once

#include <cstdint>

#include "qlib/gemm/output_stages.hpp"

// A micro-kernel sums a'[m][k] * b[k][n] where a' is the activation in the kernel's own
// domain: a' = a + offset, offset = +128 for int8 activations on vpdpbusd kernels
// (unsigned x signed bytes), -128 for uint8 ones on sdot kernels, else 0. With
// za' = za + offset the accumulator the pipeline wants is
//
//   C = sum_k (a' - za') (b - zb[n]) = S + column_offset[n] - zb[n] * row_sum[m]
//   S                = sum_k a'[m][k] * b[k][n]              (the kernel's sum)
//   column_offset[n] = -za' * sum_k b[k][n]                  (packed_weights::column_sums())
//   row_sum[m]       = sum_k (a[m][k] - za)                  (needed only when some zb != 0)
//
// The driver hands column_offset to the kernel as the accumulators' starting values,
// so the common case (zb = 0) costs nothing per element; the row term is the stage
// below, put first in the pipeline when needed. All of it is wrapping int32: S may
// wrap (K * 255 * 128 can exceed int32), but gemm() has proven that C fits, and
// arithmetic mod 2^32 then gives C exactly.
namespace qlib {
namespace gemm {

// C[row][col] -= zb[col] * row_sum[row] (wrapping).
struct weight_zero_point_correction {
  using input_type = std::int32_t;
  using output_type = std::int32_t;
  const std::int32_t* row_sum = nullptr;  // row_sum[row - row_begin]
  index_t row_begin = 0;
  const std::int32_t* weight_zero_point = nullptr;  // zb[col], or zb[0] for all when !per_channel
  bool per_channel = false;

  std::int32_t zb(index_t col) const noexcept { return weight_zero_point[per_channel ? col : 0]; }
  std::int32_t eval(std::int32_t x, index_t row, index_t col) const noexcept {
    return detail::wrapping_sub(x, detail::wrapping_mul(zb(col), row_sum[row - row_begin]));
  }
  void validate(index_t, index_t) const noexcept {}
};

}  // namespace gemm
}  // namespace qlib
