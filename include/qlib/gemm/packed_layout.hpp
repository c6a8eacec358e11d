// The packed weight-panel layout that every GEMM micro-kernel reads (x86 and ARM alike).
#pragma once

#include "qlib/core/tensor_view.hpp"

// B (K x N, int8) is cut into panels of 64 columns. Inside a panel, k runs in groups of
// 4: group g holds, for each of the 64 columns, the 4 bytes B[4g..4g+3][col], so
//
//   byte of B[k][n] = panel(n / 64) + (k / 4) * 256 + (n % 64) * 4 + k % 4.
//
// Why this shape:
//  - 4 consecutive k of one column fill one 32-bit lane, which is what vpdpbusd (x86
//    VNNI) and sdot/udot (ARM) consume; AVX2 widens them to int16 pairs for vpmaddwd.
//  - 64 columns are 4 zmm, 8 ymm or 16 NEON registers of int32 accumulators: every ISA
//    tiles a panel without repacking, so one packed object serves every kernel, and
//    the power-of-two width divides the N of common layers (N = 64, 256, 768, 4096...)
//    with no padded columns.
//  - K is padded with zero bytes to a multiple of 4 and N to a multiple of 64: padding
//    multiplies into nothing, so kernels never branch on it.
// Each panel starts 64-byte aligned (panel bytes are a multiple of 256).
namespace qlib {
namespace gemm {

inline constexpr index_t panel_width = 64;  // columns per packed panel
inline constexpr index_t k_group = 4;       // consecutive k per column in one 32-bit lane
inline constexpr index_t k_group_bytes = panel_width * k_group;  // bytes per k group of a panel

inline constexpr index_t round_up(index_t x, index_t m) noexcept { return (x + m - 1) / m * m; }

// Byte offset of B[k][n] in a packed buffer whose K is padded to k_padded.
inline constexpr index_t packed_offset(index_t k, index_t n, index_t k_padded) noexcept {
  return (n / panel_width) * k_padded * panel_width + (k / k_group) * k_group_bytes + (n % panel_width) * k_group +
         k % k_group;
}

}  // namespace gemm
}  // namespace qlib
