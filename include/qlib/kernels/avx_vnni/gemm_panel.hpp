// AVX-VNNI int8 GEMM panel kernel: ymm vpdpbusd (VEX), 6 x 16 tiles (u8/s8 activations x s8 weights).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "qlib/arch/target.hpp"
#include "qlib/kernels/portable/gemm_panel.hpp"

#if QLIB_HAS_X86_KERNELS
#include <immintrin.h>

QLIB_KERNEL_BEGIN

// Contract: kernels/portable/gemm_panel.hpp. For CPUs with AVX-VNNI but no AVX-512
// (Alder Lake and later client cores, Zen 5 client parts). As on AVX-512 VNNI, signed
// activations are flipped to unsigned with XOR 0x80 (activation_offset 128).
// Tile: 6 rows x 16 columns = 12 ymm accumulators + 2 of B + 1 of A (the flip is an XOR
// on the scalar before the broadcast) = 15 of 16 registers; vpdpbusd ymm has a latency of 4-5 cycles at 2 per cycle on those
// cores, so 12 chains keep it busy. A panel is 4 such column strips.
namespace qlib {
namespace kernels {
namespace avx_vnni_detail {

QLIB_ALWAYS_INLINE std::int32_t load_bytes4(const std::uint8_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline std::int32_t load_tail_bytes(const std::uint8_t* p, index_t n) {
  std::uint32_t v = 0;
  std::memcpy(&v, p, static_cast<std::size_t>(n));
  return static_cast<std::int32_t>(v);
}

template <int MR, bool Flip>
QLIB_TARGET_AVX_VNNI QLIB_ALWAYS_INLINE void strip_step(__m256i (&acc)[MR][2], const std::int8_t* bg,
                                                        const std::int32_t (&a4)[MR]) {
  const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bg));
  const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bg + 32));
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    // The flip is done on the scalar: a vector constant would need a 17th register.
    const __m256i av = _mm256_set1_epi32(Flip ? a4[r] ^ static_cast<std::int32_t>(0x80808080u) : a4[r]);
    acc[r][0] = _mm256_dpbusd_avx_epi32(acc[r][0], av, b0);
    acc[r][1] = _mm256_dpbusd_avx_epi32(acc[r][1], av, b1);
    // Keeps the accumulators in registers (see kernels/avx512vnni/gemm_panel.hpp).
    __asm__("" : "+x"(acc[r][0]), "+x"(acc[r][1]));
  }
}

// S = A[0:MR, 0:k] x 16 columns of the panel (b at column 0 of the strip) into c (row stride 64).
template <int MR, bool Flip>
QLIB_TARGET_AVX_VNNI __attribute__((noinline)) void strip(index_t k, const std::uint8_t* a, index_t lda,
                                                          const std::int8_t* b, const std::int32_t* init, std::int32_t* c) {
  __m256i acc[MR][2];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  const index_t groups = k / gemm::k_group;
  // The partial last group first, so the loop ends the strip.
  if (const index_t tail = k - groups * gemm::k_group) {
    std::int32_t a4[MR];
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) a4[r] = load_tail_bytes(a + r * lda + groups * gemm::k_group, tail);
    strip_step<MR, Flip>(acc, b + groups * gemm::k_group_bytes, a4);
  }
  for (index_t g = 0; g < groups; ++g) {
    std::int32_t a4[MR];
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) a4[r] = load_bytes4(a + r * lda + g * gemm::k_group);
    strip_step<MR, Flip>(acc, b + g * gemm::k_group_bytes, a4);
  }
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    const __m256i* start = reinterpret_cast<const __m256i*>(init);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + r * gemm::panel_width),
                        _mm256_add_epi32(acc[r][0], _mm256_load_si256(start)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + r * gemm::panel_width + 8),
                        _mm256_add_epi32(acc[r][1], _mm256_load_si256(start + 1)));
  }
}

template <bool Flip>
QLIB_TARGET_AVX_VNNI void run_tile(index_t rows, index_t k, const std::uint8_t* a, index_t lda,
                                   const std::int8_t* panel, const std::int32_t* column_init, std::int32_t* c) {
  QLIB_ASSERT(rows >= 1 && rows <= 6);
  for (index_t col = 0; col < gemm::panel_width; col += 16) {
    const std::int8_t* b = panel + col * gemm::k_group;
    switch (rows) {
      case 6: strip<6, Flip>(k, a, lda, b, column_init + col, c + col); break;
      case 5: strip<5, Flip>(k, a, lda, b, column_init + col, c + col); break;
      case 4: strip<4, Flip>(k, a, lda, b, column_init + col, c + col); break;
      case 3: strip<3, Flip>(k, a, lda, b, column_init + col, c + col); break;
      case 2: strip<2, Flip>(k, a, lda, b, column_init + col, c + col); break;
      default: strip<1, Flip>(k, a, lda, b, column_init + col, c + col); break;
    }
  }
}

}  // namespace avx_vnni_detail

struct avx_vnni_gemm_kernel {
  static constexpr const char* name = "avxvnni_x8s8_6x16c4";
  template <class Act>
  static constexpr std::int32_t activation_offset() noexcept {
    return std::is_signed<Act>::value ? 128 : 0;
  }
  template <class Act, class Output>
  static void run_panel(index_t m, index_t k, const Act* a, index_t lda, const std::int8_t* panel,
                        const std::int32_t* column_init, Output& out) {
    alignas(64) std::int32_t tile[6 * gemm::panel_width];
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(a);
    for_each_row_tile(m, 6, [&](index_t r0, index_t rows) {
      avx_vnni_detail::run_tile<std::is_signed<Act>::value>(rows, k, bytes + r0 * lda, lda, panel, column_init, tile);
      hand_over(out, r0, rows, tile);
    });
  }
};

inline avx_vnni_gemm_kernel gemm_kernel_for(arch::avx_vnni) noexcept { return {}; }

}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_X86_KERNELS
