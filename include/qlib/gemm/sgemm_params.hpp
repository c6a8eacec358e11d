// fp32 GEMM options (accumulate, bias, clamp, threads) and the packed-B panel geometry shared by every sgemm kernel.
#pragma once

#include <limits>

#include "qlib/core/parallel.hpp"

namespace qlib {
namespace gemm {

// What sgemm() computes, element by element (c_old is C before the call):
//
//   C[m][n] = clamp((accumulate ? c_old[m][n] : 0) + sum_k A[m][k] * B[k][n] + bias[n], clamp_lo, clamp_hi)
//
// bias: null (no bias) or N floats, one per column of C. clamp_lo <= clamp_hi (not NaN);
// the default (-inf, +inf) clamps nothing, ReLU is {0, +inf}. NaN in the data stays NaN
// through the clamp (IEEE propagation; no value is checked).
// threads / executor: as gemm_options (gemm/params.hpp): C is split over M and N, never
// over K, so the bits do not depend on the thread count.
struct sgemm_options {
  bool accumulate = false;
  const float* bias = nullptr;
  float clamp_lo = -std::numeric_limits<float>::infinity();
  float clamp_hi = std::numeric_limits<float>::infinity();
  int threads = 1;
  parallel_executor* executor = nullptr;
};

// B is packed into panels of sgemm_panel_width columns and blocks of sgemm_k_block rows
// of K (gemm/sgemm_packed.hpp). Both are the same on every ISA, so one packed object
// serves every kernel and the K blocking - which fixes the order of the float sums -
// is the same whether B is packed once or on the fly.
//  - 32 columns: 2 zmm (the AVX-512 12 x 32 tile), 4 ymm (two AVX2 6 x 16 tiles) or
//    8 NEON registers; N = 16 layers waste half a panel, N = 32, 64... none.
//  - 256 rows of K: the AVX-512 kernel's A tile (12 x 256 floats, 12 KiB) stays in the
//    32 KiB L1 while the B block streams from L2.
inline constexpr index_t sgemm_panel_width = 32;
inline constexpr index_t sgemm_k_block = 256;

}  // namespace gemm
}  // namespace qlib
