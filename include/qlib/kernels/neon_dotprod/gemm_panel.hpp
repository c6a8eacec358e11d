// ARM NEON dot-product int8 GEMM panel kernel: sdot by lane, 4 x 16 tiles (u8/s8 activations x s8 weights).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "qlib/arch/target.hpp"
#include "qlib/kernels/portable/gemm_panel.hpp"

#if QLIB_HAS_ARM_KERNELS
#include <arm_neon.h>

QLIB_KERNEL_BEGIN

// Contract: kernels/portable/gemm_panel.hpp. sdot multiplies signed bytes by signed
// bytes, 4 per 32-bit lane; uint8 activations are flipped to int8 by XOR 0x80 (a - 128),
// so activation_offset is -128 for uint8 A and 0 for int8 A.
//
// One k group of 16 columns is 4 q registers (4 columns x 4 k each). A row's next 16
// bytes (4 k groups) sit in one q register and sdot by lane picks the group, so A costs
// one load per 4 groups. Tile: 4 rows x 16 columns = 16 accumulators + 4 of B + 4 of A
// of the 32 q registers; a panel is 4 such column strips.
namespace qlib {
namespace kernels {
namespace neon_dotprod_detail {

inline std::int32_t load_tail_bytes(const std::uint8_t* p, index_t n) {
  std::uint32_t v = 0;
  std::memcpy(&v, p, static_cast<std::size_t>(n));
  return static_cast<std::int32_t>(v);
}
constexpr std::int32_t flip_bytes = static_cast<std::int32_t>(0x80808080u);

// acc[r][v] += A rows' k group `Lane` of av x the group's 4 B vectors.
template <int MR, int Lane>
QLIB_TARGET_NEON_DOTPROD QLIB_ALWAYS_INLINE void dot_lane(int32x4_t (&acc)[MR][4], const int8x16_t (&av)[MR],
                                                          const std::int8_t* bg) {
  int8x16_t bv[4];
#pragma GCC unroll 4
  for (int v = 0; v < 4; ++v) bv[v] = vld1q_s8(bg + 16 * v);
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) acc[r][v] = vdotq_laneq_s32(acc[r][v], bv[v], av[r], Lane);
}

// S = A[0:MR, 0:k] x 16 columns of the panel (b at column 0 of the strip) into c (row stride 64).
template <int MR, bool Flip>
QLIB_TARGET_NEON_DOTPROD __attribute__((noinline)) void strip(index_t k, const std::uint8_t* a, index_t lda,
                                                              const std::int8_t* b, const std::int32_t* init, std::int32_t* c) {
  int32x4_t acc[MR][4];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) acc[r][v] = vdupq_n_s32(0);
  const index_t groups = k / gemm::k_group;
  // Single groups (the partial last one included) go first, then runs of 4 groups.
  if (const index_t tail = k - groups * gemm::k_group) {
    int8x16_t av[MR];
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      const std::int32_t bytes = load_tail_bytes(a + r * lda + groups * gemm::k_group, tail);
      av[r] = vreinterpretq_s8_s32(vdupq_n_s32(Flip ? bytes ^ flip_bytes : bytes));
    }
    dot_lane<MR, 0>(acc, av, b + groups * gemm::k_group_bytes);
  }
  const index_t runs = groups / 4;
  for (index_t g = runs * 4; g < groups; ++g) {
    int8x16_t av[MR];
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      std::int32_t bytes;
      std::memcpy(&bytes, a + r * lda + g * gemm::k_group, 4);
      av[r] = vreinterpretq_s8_s32(vdupq_n_s32(Flip ? bytes ^ flip_bytes : bytes));
    }
    dot_lane<MR, 0>(acc, av, b + g * gemm::k_group_bytes);
  }
  for (index_t run = 0; run < runs; ++run) {
    const index_t g0 = run * 4;
    int8x16_t av[MR];
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      av[r] = vld1q_s8(reinterpret_cast<const std::int8_t*>(a + r * lda + g0 * gemm::k_group));
      if (Flip) av[r] = veorq_s8(av[r], vdupq_n_s8(static_cast<std::int8_t>(-128)));
    }
    dot_lane<MR, 0>(acc, av, b + g0 * gemm::k_group_bytes);
    dot_lane<MR, 1>(acc, av, b + (g0 + 1) * gemm::k_group_bytes);
    dot_lane<MR, 2>(acc, av, b + (g0 + 2) * gemm::k_group_bytes);
    dot_lane<MR, 3>(acc, av, b + (g0 + 3) * gemm::k_group_bytes);
  }
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v)
      vst1q_s32(c + r * gemm::panel_width + 4 * v, vaddq_s32(acc[r][v], vld1q_s32(init + 4 * v)));
}

template <bool Flip>
QLIB_TARGET_NEON_DOTPROD void run_tile(index_t rows, index_t k, const std::uint8_t* a, index_t lda,
                                       const std::int8_t* panel, const std::int32_t* column_init, std::int32_t* c) {
  QLIB_ASSERT(rows >= 1 && rows <= 4);
  for (index_t col = 0; col < gemm::panel_width; col += 16) {
    const std::int8_t* b = panel + col * gemm::k_group;
    switch (rows) {
      case 4: strip<4, Flip>(k, a, lda, b, column_init + col, c + col); break;
      case 3: strip<3, Flip>(k, a, lda, b, column_init + col, c + col); break;
      case 2: strip<2, Flip>(k, a, lda, b, column_init + col, c + col); break;
      default: strip<1, Flip>(k, a, lda, b, column_init + col, c + col); break;
    }
  }
}

}  // namespace neon_dotprod_detail

struct neon_dotprod_gemm_kernel {
  static constexpr const char* name = "neondot_x8s8_4x16c4";
  template <class Act>
  static constexpr std::int32_t activation_offset() noexcept {
    return std::is_signed<Act>::value ? 0 : -128;
  }
  template <class Act, class Output>
  static void run_panel(index_t m, index_t k, const Act* a, index_t lda, const std::int8_t* panel,
                        const std::int32_t* column_init, Output& out) {
    alignas(64) std::int32_t tile[4 * gemm::panel_width];
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(a);
    for_each_row_tile(m, 4, [&](index_t r0, index_t rows) {
      neon_dotprod_detail::run_tile<!std::is_signed<Act>::value>(rows, k, bytes + r0 * lda, lda, panel, column_init, tile);
      hand_over(out, r0, rows, tile);
    });
  }
};

inline neon_dotprod_gemm_kernel gemm_kernel_for(arch::neon_dotprod) noexcept { return {}; }

}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_ARM_KERNELS
