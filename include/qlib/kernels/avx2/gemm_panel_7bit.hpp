// AVX2 int8 GEMM panel kernel for 7-bit weights (all codes in [-64, 63]): vpmaddubsw + vpmaddwd, 4 x 16 tiles.
#pragma once

#include <cstdint>
#include <type_traits>

#include "qlib/arch/target.hpp"
#include "qlib/kernels/avx2/gemm_panel.hpp"
#include "qlib/kernels/portable/gemm_panel.hpp"

#if QLIB_HAS_X86_KERNELS
#include <immintrin.h>

QLIB_KERNEL_BEGIN

// Contract: kernels/portable/gemm_panel.hpp. vpmaddubsw multiplies unsigned activation
// bytes with signed weight bytes and adds adjacent pairs in saturating int16: with
// weights in [-64, 63] a pair is at most 2 * 255 * 64 = 32,640 in magnitude, so it never
// saturates (with 8-bit weights 2 * 255 * 127 would). The driver picks this kernel only
// for packed weights whose codes all fit (packed_weights::fits_7_bits(), checked at
// pack time), so no input can reach saturation; other weights run the 16-bit widening
// kernel (kernels/avx2/gemm_panel.hpp). Signed activations are flipped to unsigned by
// +128 (XOR 0x80), corrected through the column offsets as on VNNI.
//
// The packed k group of 8 columns is 32 contiguous bytes ([col][k0..k3]), exactly one
// vpmaddubsw operand against the row's 4 bytes broadcast; vpmaddwd by ones adds the two
// int16 pair sums of each column into its int32 lane. Tile: 4 rows x 16 columns = 8
// accumulators + 2 of B + 1 of A + 1 temporary + the ones of 16 ymm registers.
namespace qlib {
namespace kernels {
namespace avx2_7bit_detail {

// acc[r][v] += row r's 4 bytes x one k group of columns [8v, 8v + 8) of the strip.
template <int MR, bool Flip>
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE void strip_step(__m256i (&acc)[MR][2], const std::int8_t* bg,
                                                    const std::int32_t (&a4)[MR], __m256i ones) {
  const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bg));
  const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bg + 32));
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) {
    __m256i av = _mm256_set1_epi32(a4[r]);
    if (Flip) av = _mm256_xor_si256(av, _mm256_set1_epi8(static_cast<char>(0x80)));
    acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(_mm256_maddubs_epi16(av, b0), ones));
    acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(_mm256_maddubs_epi16(av, b1), ones));
    // Keeps the accumulators in registers (see kernels/avx512vnni/gemm_panel.hpp).
    __asm__("" : "+x"(acc[r][0]), "+x"(acc[r][1]));
  }
}

// S = init + A[0:MR, 0:k] x 16 columns of the panel (b points at column 0 of the strip)
// into c (row stride 64).
template <int MR, bool Flip>
QLIB_TARGET_AVX2 __attribute__((noinline)) void strip(index_t k, const std::uint8_t* a, index_t lda,
                                                      const std::int8_t* b, const std::int32_t* init, std::int32_t* c) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[MR][2];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) {
    acc[r][0] = _mm256_load_si256(reinterpret_cast<const __m256i*>(init));
    acc[r][1] = _mm256_load_si256(reinterpret_cast<const __m256i*>(init + 8));
  }
  const index_t groups = k / gemm::k_group;
  // The partial last group first (only its k < K bytes are read; the packed weights
  // past K are 0, so the flipped padding bytes add nothing), so the loop ends the strip.
  if (const index_t tail = k - groups * gemm::k_group) {
    std::int32_t a4[MR];
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) a4[r] = avx2_detail::load_tail_bytes(a + r * lda + groups * gemm::k_group, tail);
    strip_step<MR, Flip>(acc, b + groups * gemm::k_group_bytes, a4, ones);
  }
  for (index_t g = 0; g < groups; ++g) {
    std::int32_t a4[MR];
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) a4[r] = avx2_detail::load_bytes4(a + r * lda + g * gemm::k_group);
    strip_step<MR, Flip>(acc, b + g * gemm::k_group_bytes, a4, ones);
  }
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + r * gemm::panel_width), acc[r][0]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + r * gemm::panel_width + 8), acc[r][1]);
  }
}

template <bool Flip>
QLIB_TARGET_AVX2 void run_tile(index_t rows, index_t k, const std::uint8_t* a, index_t lda, const std::int8_t* panel,
                               const std::int32_t* column_init, std::int32_t* c, index_t cols) {
  QLIB_ASSERT(rows >= 1 && rows <= 4);
  for (index_t col = 0; col < cols; col += 16) {  // strips past the real columns are skipped
    const std::int8_t* b = panel + col * gemm::k_group;
    switch (rows) {
      case 4: strip<4, Flip>(k, a, lda, b, column_init + col, c + col); break;
      case 3: strip<3, Flip>(k, a, lda, b, column_init + col, c + col); break;
      case 2: strip<2, Flip>(k, a, lda, b, column_init + col, c + col); break;
      default: strip<1, Flip>(k, a, lda, b, column_init + col, c + col); break;
    }
  }
}

}  // namespace avx2_7bit_detail

struct avx2_7bit_gemm_kernel {
  static constexpr const char* name = "avx2_x8s7_4x16c4_maddubs";
  template <class Act>
  static constexpr std::int32_t activation_offset() noexcept {
    return std::is_signed<Act>::value ? 128 : 0;
  }
  template <class Act, class Output>
  static void run_panel(index_t m, index_t k, const Act* a, index_t lda, const std::int8_t* panel,
                        const std::int32_t* column_init, Output& out) {
    alignas(64) std::int32_t tile[4 * gemm::panel_width];
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(a);
    const index_t cols = output_columns(out);
    for_each_row_tile(m, 4, [&](index_t r0, index_t rows) {
      avx2_7bit_detail::run_tile<std::is_signed<Act>::value>(rows, k, bytes + r0 * lda, lda, panel, column_init,
                                                             tile, cols);
      hand_over(out, r0, rows, tile);
    });
  }
};

}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_X86_KERNELS
