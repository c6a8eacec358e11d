// The packed N:M sparse weight layout and its portable GEMM panel kernel (plain C++).
#pragma once

#include <cstdint>

#include "qlib/arch/isa.hpp"
#include "qlib/core/tensor_view.hpp"
#include "qlib/gemm/packed_layout.hpp"
#include "qlib/kernels/portable/gemm_panel.hpp"

// Layout of prune::packed_nm (N of every M consecutive k kept per column, M in {1, 2,
// 4, 8}, N <= 4). K is cut into W windows of 16 consecutive k (zero-padded at the end);
// a column keeps 16 * N / M values of a window, stored as D = ceil(16 * N / M / 4)
// dwords of 4 values (unused slots: value 0, index 0). B's columns go in panels of 64,
// as the dense layout (gemm/packed_layout.hpp). Inside a panel, step s = t * D + d
// (t = 0..W-1) is 512 bytes:
//
//   bytes [0, 256)    value slot 4d + i of column j at 4 * j + i      (int8)
//   bytes [256, 512)  its k inside the window (0..15) at 256 + 4 * j + i
//
// Skew: at step t, column j holds window (t + lane(j)) mod W, lane(j) = (j mod 16) / 4
// (the 128-bit lane its dword has in a zmm of 16 columns).
//
// Why: one step of 16 columns is one zmm of values and one zmm of indices; the AVX-512
// VNNI kernel loads 64 bytes of a row at window t, so 128-bit lane L holds window
// t + L (rows are copied with windows 0..2 appended after the last, for the wrap),
// gathers each column's 4 activations with one vpshufb by the indices inside its lane,
// and needs one vpdpbusd for the 4 kept values: for 2:4, half the vpdpbusd of the
// dense kernel. The skew lets a plain load replace a 16-byte broadcast, which on Zen 4
// costs a shuffle-port slot per row and step. Every index points at a k < K (unused
// slots at the window's first k), so no kernel reads A past K.
namespace qlib {
namespace prune {

inline constexpr index_t nm_window = 16;                            // k per window
inline constexpr index_t nm_step_bytes = 2 * gemm::panel_width * 4;  // values + indices of one step
inline constexpr index_t nm_index_offset = gemm::panel_width * 4;    // indices after the values

// The 128-bit lane of column j's dword in a zmm of 16 columns (see the skew above).
constexpr index_t nm_lane(index_t j) noexcept { return (j % 16) / 4; }
// The window column j holds at step window t of W.
constexpr index_t nm_skewed_window(index_t t, index_t j, index_t windows) noexcept {
  return (t + nm_lane(j)) % windows;
}

}  // namespace prune

namespace kernels {
namespace portable_detail {

// Rows [0, rows) of one N:M panel into tile (row stride 64), wrapping int32 sums.
template <class Act>
void nm_panel_rows(index_t rows, index_t windows, int dwords, const Act* a, index_t lda, const std::int8_t* panel,
                   const std::int32_t* column_init, std::int32_t* tile) {
  constexpr index_t nr = gemm::panel_width;
  for (index_t r = 0; r < rows; ++r) {
    std::uint32_t acc[nr];
    for (index_t j = 0; j < nr; ++j) acc[j] = static_cast<std::uint32_t>(column_init[j]);
    const std::int8_t* step = panel;
    for (index_t t = 0; t < windows; ++t) {
      for (int d = 0; d < dwords; ++d, step += prune::nm_step_bytes) {
        const std::int8_t* idx = step + prune::nm_index_offset;
        for (index_t j = 0; j < 4 * nr; ++j) {
          const Act* aw = a + r * lda + prune::nm_skewed_window(t, j / 4, windows) * prune::nm_window;
          acc[j / 4] += static_cast<std::uint32_t>(static_cast<std::int32_t>(aw[idx[j]]) * step[j]);
        }
      }
    }
    for (index_t j = 0; j < nr; ++j) tile[r * nr + j] = static_cast<std::int32_t>(acc[j]);
  }
}

}  // namespace portable_detail

// Scalar C++ over the packed N:M layout, 4 x 64 tiles, activations as they are.
struct portable_sparse_nm_kernel {
  static constexpr const char* name = "portable_x8s8_nm_4x64";
  template <class Act>
  static constexpr std::int32_t activation_offset() noexcept {
    return 0;
  }
  template <class Act, class W, class Output>
  static void run_panel(index_t m, index_t, const Act* a, index_t lda, const W& w, index_t p,
                        const std::int32_t* column_init, Output& out) {
    alignas(64) std::int32_t tile[4 * gemm::panel_width];
    for_each_row_tile(m, 4, [&](index_t r0, index_t rows) {
      portable_detail::nm_panel_rows(rows, w.window_count(), w.dwords_per_window(), a + r0 * lda, lda, w.panel(p),
                                     column_init, tile);
      hand_over(out, r0, rows, tile);
    });
  }
};

inline portable_sparse_nm_kernel sparse_nm_kernel_for(arch::portable) noexcept { return {}; }

}  // namespace kernels
}  // namespace qlib
