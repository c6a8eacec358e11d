// AVX-512 VNNI int8 GEMM panel kernel: zmm vpdpbusd, 6 x 64 tiles (8 x 48, 12 x 32, 12 x 16 on narrow panels).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <type_traits>
#include <utility>

#include "qlib/arch/target.hpp"
#include "qlib/kernels/portable/gemm_panel.hpp"

#if QLIB_HAS_X86_KERNELS
#include <immintrin.h>

QLIB_KERNEL_BEGIN

// Contract: kernels/portable/gemm_panel.hpp. vpdpbusd multiplies unsigned bytes (A) by
// signed bytes (B) and adds groups of 4 products into int32 lanes, wrapping. Signed
// activations are flipped to unsigned by XOR 0x80 (a + 128) after the broadcast, so
// activation_offset is 128 for int8 A; the driver folds -128 * column sum into the
// zero-point correction.
//
// Tile: 6 rows x 64 columns = 24 zmm accumulators + 4 zmm of B + 1 broadcast of A (+1
// constant for the flip) = 30 of 32 registers. Per k group (4 bytes of K): 4 aligned
// loads of B, 6 broadcasts of A, 24 vpdpbusd. vpdpbusd has a latency of 4 cycles here
// (Zen 4: 1 zmm per cycle; Zen 5 and Intel issue 2 per cycle): 24 independent chains
// cover every current core with room to spare, and loads stay well under 1 per
// vpdpbusd. Tiles with fewer than 12 accumulators (1-2 rows) split K over 2 sets of
// them to keep >= 8 chains.
// 64 columns (a whole packed panel) rather than 48 because layer widths are powers of
// two: 8 x 48 would waste a third of the work at N = 64.
//
// Narrow panels (N <= 48, or the last panel of a wider N: the conv layers of small CNNs
// have 16 or 32 output channels) would spend 1/4 to 3/4 of every 6 x 64 tile on zero
// padding. Their tiles read only the first NV = 1, 2 or 3 zmm of each k group (same
// packed layout) and take more rows instead: 8 x 48 and 12 x 32 (24 accumulators),
// 12 x 16 (12). Measured on Zen 4 (hot caches, vpdpbusd per cycle at K = 144 / 9):
// 12 x 32 0.96 / 0.65, 8 x 48 0.95 / 0.61, 12 x 16 1.00 / 0.63, where 24 x 16 reached
// only 0.87 / 0.52: its 24 row pointers do not fit the 16 general registers, and 12
// chains already cover vpdpbusd's latency (4 cycles x 1 per cycle here, 2 per cycle
// on Intel and Zen 5). 16 x 16 measured 0.79 / 0.58.
namespace qlib {
namespace kernels {
namespace avx512vnni_detail {

QLIB_ALWAYS_INLINE std::int32_t load_bytes4(const std::uint8_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
// acc[r][v] += A rows x one k group of the panel. Each row's broadcast is made right
// where it is used: with all six made up front, 24 accumulators + 4 B + 6 A exceed the
// 32 registers and both g++ 12 and clang 14 spill accumulators in the hot loop.
template <int MR, int NV, bool Flip, class LoadA>
QLIB_TARGET_AVX512_VNNI QLIB_ALWAYS_INLINE void k_group(__m512i (&acc)[MR][NV], const LoadA& load_a,
                                                        const std::int8_t* b) {
  __m512i bv[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) bv[v] = _mm512_load_si512(b + 64 * v);
#pragma GCC unroll 24
  for (int r = 0; r < MR; ++r) {
    __m512i av = load_a(r);
    if (Flip) av = _mm512_xor_si512(av, _mm512_set1_epi8(static_cast<char>(0x80)));
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], av, bv[v]);
      // An empty asm that takes and returns the accumulator in a register: it costs no
      // instruction, and stops g++ 12 -O3 (-ftree-partial-pre) from keeping stack
      // copies of the accumulators inside the loop (seen as 19-37 zmm spills per k
      // group, half the speed, depending on how the tile starts and ends).
      __asm__("" : "+v"(acc[r][v]));
    }
  }
}

// Row r's 4 activation bytes of one k group, broadcast to every lane.
struct full_group {
  const std::uint8_t* const* row;
  index_t offset;
  QLIB_TARGET_AVX512_VNNI QLIB_ALWAYS_INLINE __m512i operator()(int r) const {
    return _mm512_set1_epi32(load_bytes4(row[r] + offset));
  }
};
// The tail group: the last k % 4 bytes of each row by a masked load (masked-out bytes
// are not read, so nothing past the end of A is touched; the zero padding of the
// packed weights makes their lanes' products 0).
struct tail_group {
  const std::uint8_t* const* row;
  index_t offset;
  __mmask16 mask;
  QLIB_TARGET_AVX512_VNNI QLIB_ALWAYS_INLINE __m512i operator()(int r) const {
    return _mm512_broadcastd_epi32(_mm_maskz_loadu_epi8(mask, row[r] + offset));
  }
};

// S = init + A[0:MR, 0:k] x 16 * NV columns of the panel (b and init at the strip's first
// column), columns [0, cols) stored to c (row stride ldc): straight into C for int32
// output, else into the tile buffer.
template <int MR, int NV, bool Flip>
QLIB_TARGET_AVX512_VNNI __attribute__((noinline)) void tile(index_t k, const std::uint8_t* a, index_t lda,
                                                            const std::int8_t* b, const std::int32_t* init,
                                                            std::int32_t* c, index_t ldc, index_t cols) {
  // Tiles of fewer than 12 accumulators alternate k groups between two accumulator sets
  // (acc, acc2) to keep >= 8 independent chains; otherwise acc2 is dead code.
  constexpr bool split_k = MR * NV < 12;
  __m512i acc[MR][NV], acc2[MR][NV];
#pragma GCC unroll 24
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      acc[r][v] = _mm512_load_si512(init + 16 * v);
      acc2[r][v] = _mm512_setzero_si512();
    }

  const std::uint8_t* row[MR];
#pragma GCC unroll 24
  for (int r = 0; r < MR; ++r) row[r] = a + r * lda;

  // The partial last group (k % 4 bytes) goes first, so the loop ends the tile.
  const index_t groups = k / gemm::k_group;
  if (const index_t tail = k - groups * gemm::k_group) {
    const auto mask = static_cast<__mmask16>((1u << tail) - 1);
    k_group<MR, NV, Flip>(acc, tail_group{row, groups * gemm::k_group, mask}, b + groups * gemm::k_group_bytes);
  }
  index_t g = 0;
  if (split_k) {
    for (; g + 2 <= groups; g += 2) {
      k_group<MR, NV, Flip>(acc, full_group{row, g * gemm::k_group}, b + g * gemm::k_group_bytes);
      k_group<MR, NV, Flip>(acc2, full_group{row, (g + 1) * gemm::k_group}, b + (g + 1) * gemm::k_group_bytes);
    }
  }
  for (; g < groups; ++g)
    k_group<MR, NV, Flip>(acc, full_group{row, g * gemm::k_group}, b + g * gemm::k_group_bytes);

  __mmask16 keep[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const index_t left = cols - 16 * v;
    keep[v] = left >= 16 ? __mmask16(0xffff) : left <= 0 ? __mmask16(0) : static_cast<__mmask16>((1u << left) - 1);
  }
#pragma GCC unroll 24
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const __m512i sum = split_k ? _mm512_add_epi32(acc[r][v], acc2[r][v]) : acc[r][v];
      _mm512_mask_storeu_epi32(c + r * ldc + 16 * v, keep[v], sum);
    }
  }
}

// One row tile of 1-6 rows x 64 columns. (Two 8 x 32 passes for M = 8 were tried: they
// read each B panel once, but at 58% of peak against 91% for 4 + 4 rows.)
template <bool Flip>
QLIB_TARGET_AVX512_VNNI void run_tile(index_t rows, index_t k, const std::uint8_t* a, index_t lda,
                                      const std::int8_t* b, const std::int32_t* init, std::int32_t* c, index_t ldc,
                                      index_t cols) {
  QLIB_ASSERT(rows >= 1 && rows <= 6 && cols >= 1 && cols <= gemm::panel_width);
  switch (rows) {
    case 6: return tile<6, 4, Flip>(k, a, lda, b, init, c, ldc, cols);
    case 5: return tile<5, 4, Flip>(k, a, lda, b, init, c, ldc, cols);
    case 4: return tile<4, 4, Flip>(k, a, lda, b, init, c, ldc, cols);
    case 3: return tile<3, 4, Flip>(k, a, lda, b, init, c, ldc, cols);
    case 2: return tile<2, 4, Flip>(k, a, lda, b, init, c, ldc, cols);
    default: return tile<1, 4, Flip>(k, a, lda, b, init, c, ldc, cols);
  }
}

// Tile heights of the narrow tiles with NV column vectors: 12 (NV = 1, 2) or 8 rows, and
// for short M the next heights down to 1: 12 6 3 2 1, 8 4 2 1.
template <int NV>
constexpr int narrow_rows = NV == 3 ? 8 : 12;
constexpr int next_narrow_rows(int mr) { return mr > 3 ? mr / 2 : mr - 1; }
inline index_t narrow_tile_rows(int full, index_t m) {
  index_t mr = full;
  while (mr > m) mr = next_narrow_rows(static_cast<int>(mr));
  return mr;
}

// One narrow tile of mr rows (a height narrow_tile_rows returns) x 16 * NV columns.
template <int NV, bool Flip, int MR = narrow_rows<NV>>
QLIB_TARGET_AVX512_VNNI QLIB_ALWAYS_INLINE void run_narrow_tile(index_t mr, index_t k, const std::uint8_t* a,
                                                                index_t lda, const std::int8_t* b,
                                                                const std::int32_t* init, std::int32_t* c, index_t ldc,
                                                                index_t cols) {
  if constexpr (MR > 1) {
    if (mr != MR) return run_narrow_tile<NV, Flip, next_narrow_rows(MR)>(mr, k, a, lda, b, init, c, ldc, cols);
  }
  QLIB_ASSERT(mr == MR && cols >= 1 && cols <= 16 * NV);
  tile<MR, NV, Flip>(k, a, lda, b, init, c, ldc, cols);
}

using kernels::output_columns;

// run_panel for a panel with at most 16 * NV real columns. Rows go in tiles of mr; a
// last partial tile runs as a whole mr tile ending at row m, so it recomputes up to
// mr - 1 rows of the tile before it: their sums come out the same, so int32 C is just
// rewritten with equal values, and a pipeline gets only the new rows. That keeps every
// tile at full height (12 or 24 accumulators) without a kernel for every row count.
template <int NV, bool Flip, class Output>
QLIB_TARGET_AVX512_VNNI void run_narrow_panel(index_t m, index_t k, const std::uint8_t* a, index_t lda,
                                              const std::int8_t* panel, const std::int32_t* column_init, index_t cols,
                                              std::int32_t* tile_buffer, Output& out) {
  const index_t mr = narrow_tile_rows(narrow_rows<NV>, m);
  for (index_t r = 0; r < m; r += mr) {
    const index_t r0 = std::min(r, m - mr);  // the overlapping last tile
    if constexpr (is_direct_output<Output>::value) {
      run_narrow_tile<NV, Flip>(mr, k, a + r0 * lda, lda, panel, column_init, out.c + r0 * out.ldc, out.ldc, cols);
    } else {
      run_narrow_tile<NV, Flip>(mr, k, a + r0 * lda, lda, panel, column_init, tile_buffer, gemm::panel_width,
                                16 * NV);
      const index_t skip = r - r0;
      out(r, mr - skip, static_cast<const std::int32_t*>(tile_buffer + skip * gemm::panel_width));
    }
  }
}

}  // namespace avx512vnni_detail

struct avx512vnni_gemm_kernel {
  static constexpr const char* name = "avx512vnni_x8s8_6x64c4";
  template <class Act>
  static constexpr std::int32_t activation_offset() noexcept {
    return std::is_signed<Act>::value ? 128 : 0;
  }
  template <class Act, class Output>
  static void run_panel(index_t m, index_t k, const Act* a, index_t lda, const std::int8_t* panel,
                        const std::int32_t* column_init, Output& out) {
    // Room for the tallest tile, at the row stride of the contract.
    constexpr int max_rows = std::max({6, avx512vnni_detail::narrow_rows<1>, avx512vnni_detail::narrow_rows<2>,
                                       avx512vnni_detail::narrow_rows<3>});
    alignas(64) std::int32_t tile[max_rows * gemm::panel_width];
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(a);
    constexpr bool flip = std::is_signed<Act>::value;
    const index_t cols = avx512vnni_detail::output_columns(out);
    using namespace avx512vnni_detail;
    if (cols <= 16) return run_narrow_panel<1, flip>(m, k, bytes, lda, panel, column_init, cols, tile, out);
    if (cols <= 32) return run_narrow_panel<2, flip>(m, k, bytes, lda, panel, column_init, cols, tile, out);
    if (cols <= 48) return run_narrow_panel<3, flip>(m, k, bytes, lda, panel, column_init, cols, tile, out);
    for_each_row_tile(m, 6, [&](index_t r0, index_t rows) {
      if constexpr (is_direct_output<Output>::value) {  // int32 C: store from the registers
        run_tile<flip>(rows, k, bytes + r0 * lda, lda, panel, column_init, out.c + r0 * out.ldc, out.ldc, out.cols);
      } else {
        run_tile<flip>(rows, k, bytes + r0 * lda, lda, panel, column_init, tile, gemm::panel_width, gemm::panel_width);
        out(r0, rows, static_cast<const std::int32_t*>(tile));
      }
    });
  }
};

inline avx512vnni_gemm_kernel gemm_kernel_for(arch::avx512_vnni) noexcept { return {}; }

}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_X86_KERNELS
