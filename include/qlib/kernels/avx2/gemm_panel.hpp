// AVX2 int8 GEMM panel kernel: bytes widened to int16, vpmaddwd, 4 x 8 tiles (u8/s8 activations x s8 weights).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "qlib/arch/target.hpp"
#include "qlib/kernels/portable/gemm_panel.hpp"

#if QLIB_HAS_X86_KERNELS
#include <immintrin.h>

QLIB_KERNEL_BEGIN

// Contract: kernels/portable/gemm_panel.hpp. No 7-bit restriction and no saturation:
// vpmaddubsw would add two u8 x s8 products in saturating int16 (255 * -128 * 2 does not
// fit), so both sides are widened to int16 instead (A zero- or sign-extended, so int8
// activations need no +128 flip: activation_offset is 0) and multiplied by vpmaddwd,
// whose int16 x int16 pair sums always fit int32.
//
// The packed k group of 4 columns (16 bytes, [col][k0..k3]) widens to one ymm of int16;
// the 4 activation bytes of a row, broadcast and widened, repeat every 64 bits, so
// vpmaddwd yields per column two partial sums (k0+k1, k2+k3) in adjacent lanes. They are
// accumulated as they are and folded by one vphaddd at the end. Tile: 4 rows x 8
// columns = 8 accumulators + 2 of B + 1 of A + 1 temporary of 16 ymm registers; a panel
// is 8 such column strips, A rows coming back from L1 for each.
namespace qlib {
namespace kernels {
namespace avx2_detail {

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

// 4 activation bytes repeated, widened to 16 int16.
template <bool Signed>
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256i widen_a(std::int32_t bytes4) {
  const __m128i v = _mm_set1_epi32(bytes4);
  return Signed ? _mm256_cvtepi8_epi16(v) : _mm256_cvtepu8_epi16(v);
}

// acc += the 4 rows' bytes a4 x one k group of the strip.
template <int MR, bool Signed>
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE void strip_step(__m256i (&acc)[MR][2], const std::int8_t* bg,
                                                    const std::int32_t (&a4)[MR]) {
  const __m256i b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bg)));
  const __m256i b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bg + 16)));
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) {
    const __m256i av = widen_a<Signed>(a4[r]);
    acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(av, b0));
    acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(av, b1));
    // Keeps the accumulators in registers (see kernels/avx512vnni/gemm_panel.hpp).
    __asm__("" : "+x"(acc[r][0]), "+x"(acc[r][1]));
  }
}

// S = A[0:MR, 0:k] x 8 columns of the panel (b points at column 0 of the strip) into c
// (row stride 64).
template <int MR, bool Signed>
QLIB_TARGET_AVX2 __attribute__((noinline)) void strip(index_t k, const std::uint8_t* a, index_t lda,
                                                      const std::int8_t* b, const std::int32_t* init, std::int32_t* c) {
  __m256i acc[MR][2];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  const index_t groups = k / gemm::k_group;
  // The partial last group first, so the loop ends the strip.
  if (const index_t tail = k - groups * gemm::k_group) {
    std::int32_t a4[MR];
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) a4[r] = load_tail_bytes(a + r * lda + groups * gemm::k_group, tail);
    strip_step<MR, Signed>(acc, b + groups * gemm::k_group_bytes, a4);
  }
  for (index_t g = 0; g < groups; ++g) {
    std::int32_t a4[MR];
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) a4[r] = load_bytes4(a + r * lda + g * gemm::k_group);
    strip_step<MR, Signed>(acc, b + g * gemm::k_group_bytes, a4);
  }
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) {
    // hadd gives columns [0 1 4 5 | 2 3 6 7]; put the 64-bit pairs back in order.
    const __m256i h = _mm256_hadd_epi32(acc[r][0], acc[r][1]);
    const __m256i sums = _mm256_permute4x64_epi64(h, _MM_SHUFFLE(3, 1, 2, 0));
    const __m256i start = _mm256_load_si256(reinterpret_cast<const __m256i*>(init));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + r * gemm::panel_width), _mm256_add_epi32(sums, start));
  }
}

template <bool Signed>
QLIB_TARGET_AVX2 void run_tile(index_t rows, index_t k, const std::uint8_t* a, index_t lda, const std::int8_t* panel, const std::int32_t* column_init, std::int32_t* c, index_t cols) {
  QLIB_ASSERT(rows >= 1 && rows <= 4);
  for (index_t col = 0; col < cols; col += 8) {  // strips past the real columns are skipped
    const std::int8_t* b = panel + col * gemm::k_group;
    switch (rows) {
      case 4: strip<4, Signed>(k, a, lda, b, column_init + col, c + col); break;
      case 3: strip<3, Signed>(k, a, lda, b, column_init + col, c + col); break;
      case 2: strip<2, Signed>(k, a, lda, b, column_init + col, c + col); break;
      default: strip<1, Signed>(k, a, lda, b, column_init + col, c + col); break;
    }
  }
}

}  // namespace avx2_detail

struct avx2_gemm_kernel {
  static constexpr const char* name = "avx2_x8s8_4x8c4_madd16";
  template <class Act>
  static constexpr std::int32_t activation_offset() noexcept {
    return 0;
  }
  template <class Act, class Output>
  static void run_panel(index_t m, index_t k, const Act* a, index_t lda, const std::int8_t* panel,
                        const std::int32_t* column_init, Output& out) {
    alignas(64) std::int32_t tile[4 * gemm::panel_width];
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(a);
    const index_t cols = output_columns(out);
    for_each_row_tile(m, 4, [&](index_t r0, index_t rows) {
      avx2_detail::run_tile<std::is_signed<Act>::value>(rows, k, bytes + r0 * lda, lda, panel, column_init, tile,
                                                        cols);
      hand_over(out, r0, rows, tile);
    });
  }
};

inline avx2_gemm_kernel gemm_kernel_for(arch::avx2) noexcept { return {}; }

}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_X86_KERNELS
