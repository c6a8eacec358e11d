// ARM NEON int8 GEMM panel kernel without dot product: smull to int16, sadalp to int32, 4 x 8 tiles.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "qlib/arch/target.hpp"
#include "qlib/kernels/portable/gemm_panel.hpp"

#if QLIB_HAS_ARM_KERNELS
#include <arm_neon.h>

QLIB_KERNEL_BEGIN

// Contract: kernels/portable/gemm_panel.hpp. For ARMv8.0 cores (Cortex-A53/A72...).
// uint8 activations are flipped to int8 by XOR 0x80 (activation_offset -128), so every
// product is int8 x int8, |p| <= 16384, exact in int16 (smull); pairs of products are
// then added into int32 lanes by sadalp, which cannot overflow. No saturation anywhere.
//
// The 4 activation bytes of a row, broadcast, line up with the packed [col][k0..k3]
// groups: smull of the low halves gives columns 0-1 (4 products each), smull2 of the
// high halves columns 2-3; sadalp leaves per column two partial sums (k0+k1, k2+k3),
// folded by one addp at the end. Tile: 4 rows x 8 columns = 16 accumulators + 2 of B +
// 1 of A + 2 products of the 32 q registers; a panel is 8 such column strips.
namespace qlib {
namespace kernels {
namespace neon_detail {

inline std::int32_t load_tail_bytes(const std::uint8_t* p, index_t n) {
  std::uint32_t v = 0;
  std::memcpy(&v, p, static_cast<std::size_t>(n));
  return static_cast<std::int32_t>(v);
}
constexpr std::int32_t flip_bytes = static_cast<std::int32_t>(0x80808080u);

template <int MR>
QLIB_ALWAYS_INLINE void strip_step(int32x4_t (&acc)[MR][4], const std::int8_t* bg, const std::int32_t (&a4)[MR]) {
  const int8x16_t b0 = vld1q_s8(bg), b1 = vld1q_s8(bg + 16);
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) {
    const int8x16_t av = vreinterpretq_s8_s32(vdupq_n_s32(a4[r]));
    acc[r][0] = vpadalq_s16(acc[r][0], vmull_s8(vget_low_s8(av), vget_low_s8(b0)));
    acc[r][1] = vpadalq_s16(acc[r][1], vmull_high_s8(av, b0));
    acc[r][2] = vpadalq_s16(acc[r][2], vmull_s8(vget_low_s8(av), vget_low_s8(b1)));
    acc[r][3] = vpadalq_s16(acc[r][3], vmull_high_s8(av, b1));
  }
}

// S = A[0:MR, 0:k] x 8 columns of the panel (b at column 0 of the strip) into c (row stride 64).
template <int MR, bool Flip>
__attribute__((noinline)) void strip(index_t k, const std::uint8_t* a, index_t lda, const std::int8_t* b, const std::int32_t* init, std::int32_t* c) {
  int32x4_t acc[MR][4];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) acc[r][v] = vdupq_n_s32(0);
  const index_t groups = k / gemm::k_group;
  if (const index_t tail = k - groups * gemm::k_group) {  // the partial last group first
    std::int32_t a4[MR];
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      const std::int32_t bytes = load_tail_bytes(a + r * lda + groups * gemm::k_group, tail);
      a4[r] = Flip ? bytes ^ flip_bytes : bytes;
    }
    strip_step<MR>(acc, b + groups * gemm::k_group_bytes, a4);
  }
  for (index_t g = 0; g < groups; ++g) {
    std::int32_t a4[MR];
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      std::int32_t bytes;
      std::memcpy(&bytes, a + r * lda + g * gemm::k_group, 4);
      a4[r] = Flip ? bytes ^ flip_bytes : bytes;
    }
    strip_step<MR>(acc, b + g * gemm::k_group_bytes, a4);
  }
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) {
    vst1q_s32(c + r * gemm::panel_width, vaddq_s32(vpaddq_s32(acc[r][0], acc[r][1]), vld1q_s32(init)));
    vst1q_s32(c + r * gemm::panel_width + 4, vaddq_s32(vpaddq_s32(acc[r][2], acc[r][3]), vld1q_s32(init + 4)));
  }
}

template <bool Flip>
void run_tile(index_t rows, index_t k, const std::uint8_t* a, index_t lda, const std::int8_t* panel, const std::int32_t* column_init, std::int32_t* c) {
  QLIB_ASSERT(rows >= 1 && rows <= 4);
  for (index_t col = 0; col < gemm::panel_width; col += 8) {
    const std::int8_t* b = panel + col * gemm::k_group;
    switch (rows) {
      case 4: strip<4, Flip>(k, a, lda, b, column_init + col, c + col); break;
      case 3: strip<3, Flip>(k, a, lda, b, column_init + col, c + col); break;
      case 2: strip<2, Flip>(k, a, lda, b, column_init + col, c + col); break;
      default: strip<1, Flip>(k, a, lda, b, column_init + col, c + col); break;
    }
  }
}

}  // namespace neon_detail

struct neon_gemm_kernel {
  static constexpr const char* name = "neon_x8s8_4x8c4_smull";
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
      neon_detail::run_tile<!std::is_signed<Act>::value>(rows, k, bytes + r0 * lda, lda, panel, column_init, tile);
      hand_over(out, r0, rows, tile);
    });
  }
};

inline neon_gemm_kernel gemm_kernel_for(arch::neon) noexcept { return {}; }

}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_ARM_KERNELS
