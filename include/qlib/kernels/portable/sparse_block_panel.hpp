// The packed block-sparse weight layout (4 k x 16 column blocks, CSR per strip) and its portable GEMM panel kernel.
#pragma once

#include <algorithm>
#include <cstdint>

#include "qlib/arch/isa.hpp"
#include "qlib/core/tensor_view.hpp"
#include "qlib/gemm/packed_layout.hpp"
#include "qlib/kernels/portable/gemm_panel.hpp"

// Layout of prune::packed_block. B's columns are cut into strips of 16 and K into groups
// of 4 (zero-padded at the end); a block is one group x one strip, kept or all zero.
// Strip s keeps blocks [strip_begin[s], strip_begin[s + 1]) in increasing k group
// (block_groups()[b] is the group of block b), and block b's 64 bytes at
// block_values() + 64 * b hold B[4g + i][16s + j] at 4 * j + i: one zmm in the VNNI
// layout of the dense panels (gemm/packed_layout.hpp), so a kernel multiplies a block by
// one broadcast of 4 activation bytes per row. Four strips make one 64-column panel of
// the driver.
namespace qlib {
namespace prune {

inline constexpr index_t block_k = 4;          // k per block (one VNNI group)
inline constexpr index_t block_cols = 16;      // columns per block (one zmm of int32)
inline constexpr index_t block_bytes = block_k * block_cols;

}  // namespace prune

namespace kernels {
namespace portable_detail {

// Rows [0, rows) x the strip's 16 columns into tile (row stride ld): kept blocks only.
template <class Act>
void block_strip_rows(index_t rows, index_t k, const Act* a, index_t lda, const std::int32_t* groups,
                      const std::int8_t* values, index_t blocks, const std::int32_t* column_init, std::int32_t* tile,
                      index_t ld) {
  constexpr index_t nc = prune::block_cols;
  for (index_t r = 0; r < rows; ++r) {
    std::uint32_t acc[nc];
    for (index_t j = 0; j < nc; ++j) acc[j] = static_cast<std::uint32_t>(column_init[j]);
    for (index_t bl = 0; bl < blocks; ++bl) {
      const index_t k0 = groups[bl] * prune::block_k, len = std::min(prune::block_k, k - k0);
      const Act* ar = a + r * lda + k0;
      const std::int8_t* v = values + bl * prune::block_bytes;
      for (index_t j = 0; j < nc; ++j)
        for (index_t i = 0; i < len; ++i)  // never past K: padding bytes are not read
          acc[j] += static_cast<std::uint32_t>(static_cast<std::int32_t>(ar[i]) * v[prune::block_k * j + i]);
    }
    for (index_t j = 0; j < nc; ++j) tile[r * ld + j] = static_cast<std::int32_t>(acc[j]);
  }
}

}  // namespace portable_detail

// Scalar C++ over the block-sparse layout, 4 x 64 tiles (four strips), activations as they are.
struct portable_sparse_block_kernel {
  static constexpr const char* name = "portable_x8s8_block4x16_4x64";
  template <class Act>
  static constexpr std::int32_t activation_offset() noexcept {
    return 0;
  }
  template <class Act, class W, class Output>
  static void run_panel(index_t m, index_t k, const Act* a, index_t lda, const W& w, index_t p,
                        const std::int32_t* column_init, Output& out) {
    alignas(64) std::int32_t tile[4 * gemm::panel_width] = {};
    const index_t strips = std::min(gemm::panel_width / prune::block_cols, w.strip_count() - p * 4);
    for_each_row_tile(m, 4, [&](index_t r0, index_t rows) {
      for (index_t s = 0; s < strips; ++s) {
        const index_t strip = p * 4 + s, begin = w.strip_begin()[static_cast<std::size_t>(strip)];
        const index_t blocks = w.strip_begin()[static_cast<std::size_t>(strip + 1)] - begin;
        portable_detail::block_strip_rows(rows, k, a + r0 * lda, lda, w.block_groups().data() + begin,
                                          w.block_values() + begin * prune::block_bytes, blocks,
                                          column_init + s * prune::block_cols, tile + s * prune::block_cols,
                                          gemm::panel_width);
      }
      hand_over(out, r0, rows, tile);
    });
  }
};

inline portable_sparse_block_kernel sparse_block_kernel_for(arch::portable) noexcept { return {}; }

}  // namespace kernels
}  // namespace qlib
