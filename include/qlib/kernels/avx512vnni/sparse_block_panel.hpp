// AVX-512 VNNI block-sparse int8 GEMM panel kernel: 12 x 16 tiles, one vpdpbusd per kept 4 x 16 block and row.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "qlib/arch/target.hpp"
#include "qlib/kernels/avx512vnni/gemm_panel.hpp"
#include "qlib/kernels/portable/sparse_block_panel.hpp"

#if QLIB_HAS_X86_KERNELS
#include <immintrin.h>

QLIB_KERNEL_BEGIN

// Layout: kernels/portable/sparse_block_panel.hpp. A tile is MR rows of one 16-column
// strip; per kept block: one aligned load of its 64 bytes, and per row one broadcast of
// the row's 4 activation bytes at the block's k (XOR 0x80 for int8 A) and one vpdpbusd.
// 12 rows give 12 independent accumulator chains (vpdpbusd latency 4, 1 per cycle on
// Zen 4) and 12 row pointers, which is what the general registers hold beside the loop
// state (the dense kernel measured 24 x 16 slower for that reason). Shorter tiles
// (1-3 rows, for short M) alternate blocks between two accumulator sets.
namespace qlib {
namespace kernels {
namespace avx512vnni_sparse_detail {

template <int MR, bool Flip, class LoadA>
QLIB_TARGET_AVX512_VNNI QLIB_ALWAYS_INLINE void block_step(__m512i (&acc)[MR], const LoadA& load_a,
                                                           const std::int8_t* values) {
  const __m512i bv = _mm512_load_si512(values);
#pragma GCC unroll 24
  for (int r = 0; r < MR; ++r) {
    __m512i av = load_a(r);
    if (Flip) av = _mm512_xor_si512(av, _mm512_set1_epi8(static_cast<char>(0x80)));
    acc[r] = _mm512_dpbusd_epi32(acc[r], av, bv);
    __asm__("" : "+v"(acc[r]));  // keeps g++ from stack copies of the accumulators (see gemm_panel.hpp)
  }
}

// S = init + A[0:MR, :] x one strip (its `blocks` kept blocks), columns [0, cols) to c.
template <int MR, bool Flip>
QLIB_TARGET_AVX512_VNNI __attribute__((noinline)) void block_tile(index_t k, const std::uint8_t* a, index_t lda,
                                                                  const std::int32_t* groups,
                                                                  const std::int8_t* values, index_t blocks,
                                                                  const std::int32_t* init, std::int32_t* c,
                                                                  index_t ldc, index_t cols) {
  constexpr bool split = MR < 4;
  __m512i acc[MR], acc2[MR];
#pragma GCC unroll 24
  for (int r = 0; r < MR; ++r) {
    acc[r] = _mm512_loadu_si512(init);
    acc2[r] = _mm512_setzero_si512();
  }
  const std::uint8_t* row[MR];
#pragma GCC unroll 24
  for (int r = 0; r < MR; ++r) row[r] = a + r * lda;

  // A kept partial last group (K % 4 != 0) can only be the strip's last block: read its
  // k < K bytes with a masked load, first, so the loop ends the tile.
  if (blocks > 0 && (k % prune::block_k) != 0 && groups[blocks - 1] == k / prune::block_k) {
    --blocks;
    const index_t off = groups[blocks] * prune::block_k;
    const auto mask = static_cast<__mmask16>((1u << (k - off)) - 1);
    block_step<MR, Flip>(
        acc, [&](int r) QLIB_TARGET_AVX512_VNNI { return _mm512_broadcastd_epi32(_mm_maskz_loadu_epi8(mask, row[r] + off)); },
        values + blocks * prune::block_bytes);
  }
  auto full = [&](index_t off) {
    return [&row, off](int r) QLIB_TARGET_AVX512_VNNI {
      return _mm512_set1_epi32(avx512vnni_detail::load_bytes4(row[r] + off));
    };
  };
  index_t bl = 0;
  if (split) {
    for (; bl + 2 <= blocks; bl += 2) {
      block_step<MR, Flip>(acc, full(groups[bl] * prune::block_k), values + bl * prune::block_bytes);
      block_step<MR, Flip>(acc2, full(groups[bl + 1] * prune::block_k), values + (bl + 1) * prune::block_bytes);
    }
  }
  for (; bl < blocks; ++bl) block_step<MR, Flip>(acc, full(groups[bl] * prune::block_k), values + bl * prune::block_bytes);

  const __mmask16 keep = cols >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << cols) - 1);
#pragma GCC unroll 24
  for (int r = 0; r < MR; ++r)
    _mm512_mask_storeu_epi32(c + r * ldc, keep, split ? _mm512_add_epi32(acc[r], acc2[r]) : acc[r]);
}

constexpr int block_rows = 12;

template <bool Flip, int MR = block_rows>
QLIB_TARGET_AVX512_VNNI QLIB_ALWAYS_INLINE void run_block_tile(index_t mr, index_t k, const std::uint8_t* a,
                                                               index_t lda, const std::int32_t* groups,
                                                               const std::int8_t* values, index_t blocks,
                                                               const std::int32_t* init, std::int32_t* c, index_t ldc,
                                                               index_t cols) {
  if constexpr (MR > 1) {
    if (mr != MR) return run_block_tile<Flip, avx512vnni_detail::next_narrow_rows(MR)>(mr, k, a, lda, groups, values, blocks, init, c, ldc, cols);
  }
  QLIB_ASSERT(mr == MR && cols >= 1 && cols <= 16);
  block_tile<MR, Flip>(k, a, lda, groups, values, blocks, init, c, ldc, cols);
}

}  // namespace avx512vnni_sparse_detail

struct avx512vnni_sparse_block_kernel {
  static constexpr const char* name = "avx512vnni_x8s8_block4x16_12x16";
  template <class Act>
  static constexpr std::int32_t activation_offset() noexcept {
    return std::is_signed<Act>::value ? 128 : 0;
  }
  // Row tiles of mr (a partial last one overlapping the one before, as the N:M kernel),
  // each over the panel's strips.
  template <class Act, class W, class Output>
  QLIB_TARGET_AVX512_VNNI static void run_panel(index_t m, index_t k, const Act* a, index_t lda, const W& w, index_t p,
                        const std::int32_t* column_init, Output& out) {
    using namespace avx512vnni_sparse_detail;
    alignas(64) std::int32_t tile[block_rows * gemm::panel_width];
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(a);
    constexpr bool flip = std::is_signed<Act>::value;
    const index_t cols = avx512vnni_detail::output_columns(out);
    const index_t strips = (cols + prune::block_cols - 1) / prune::block_cols;
    index_t mr = block_rows;
    while (mr > m) mr = avx512vnni_detail::next_narrow_rows(static_cast<int>(mr));
    for (index_t r = 0; r < m; r += mr) {
      const index_t r0 = std::min(r, m - mr);
      for (index_t s = 0; s < strips; ++s) {
        const index_t strip = p * (gemm::panel_width / prune::block_cols) + s;
        const index_t begin = w.strip_begin()[static_cast<std::size_t>(strip)];
        const index_t blocks = w.strip_begin()[static_cast<std::size_t>(strip + 1)] - begin;
        const std::int32_t* groups = w.block_groups().data() + begin;
        const std::int8_t* values = w.block_values() + begin * prune::block_bytes;
        const std::int32_t* init = column_init + s * prune::block_cols;
        if constexpr (is_direct_output<Output>::value) {
          run_block_tile<flip>(mr, k, bytes + r0 * lda, lda, groups, values, blocks, init,
                               out.c + r0 * out.ldc + s * prune::block_cols, out.ldc,
                               std::min(prune::block_cols, cols - s * prune::block_cols));
        } else {
          run_block_tile<flip>(mr, k, bytes + r0 * lda, lda, groups, values, blocks, init,
                               tile + s * prune::block_cols, gemm::panel_width, prune::block_cols);
        }
      }
      if constexpr (!is_direct_output<Output>::value) {
        const index_t skip = r - r0;
        out(r, mr - skip, static_cast<const std::int32_t*>(tile + skip * gemm::panel_width));
      }
    }
  }
};

inline avx512vnni_sparse_block_kernel sparse_block_kernel_for(arch::avx512_vnni) noexcept { return {}; }

}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_X86_KERNELS
