// AVX-512 VNNI N:M sparse int8 GEMM panel kernel: per row a 16-byte broadcast, vpshufb gathers, vpdpbusd on the kept values.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "qlib/arch/target.hpp"
#include "qlib/kernels/avx512vnni/gemm_panel.hpp"
#include "qlib/kernels/portable/sparse_nm_panel.hpp"

#if QLIB_HAS_X86_KERNELS
#include <immintrin.h>

QLIB_KERNEL_BEGIN

// Layout: kernels/portable/sparse_nm_panel.hpp. Per step (16 k, one dword of 4 kept
// values per column) and row: the row's 16 activation bytes broadcast to the four
// 128-bit lanes (one vbroadcasti32x4 from memory, XOR 0x80 for int8 A as the dense
// kernel), then per 16 columns one vpshufb by the stored indices gives each column's 4
// activations in its dword, and one vpdpbusd with the 4 kept values. For 2:4 a row
// costs per 16 k and 16 columns 2 vpshufb + 2 vpdpbusd where the dense kernel needs 4
// vpdpbusd; the shuffles issue on other ports than vpdpbusd on Zen 4.
// Tiles: MR rows x 16 * NV columns, MR * NV accumulators + NV values + NV indices + a
// broadcast + a gather must fit 32 zmm: 5 x 64 (30), 7 x 48 (29), 12 x 32 (30),
// 12 x 16 (16; more rows run out of general registers for the row pointers).
namespace qlib {
namespace kernels {
namespace avx512vnni_sparse_detail {

// One step of the tile: acc[r][v] += gather(A row r) . values.
template <int MR, int NV, bool Flip, class LoadA>
QLIB_TARGET_AVX512_VNNI QLIB_ALWAYS_INLINE void nm_step(__m512i (&acc)[MR][NV], const LoadA& load_a,
                                                        const std::int8_t* step) {
  __m512i wv[NV], iv[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    wv[v] = _mm512_load_si512(step + 64 * v);
    iv[v] = _mm512_load_si512(step + prune::nm_index_offset + 64 * v);
  }
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
    __m512i av = load_a(r);
    if (Flip) av = _mm512_xor_si512(av, _mm512_set1_epi8(static_cast<char>(0x80)));
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], _mm512_shuffle_epi8(av, iv[v]), wv[v]);
      __asm__("" : "+v"(acc[r][v]));  // keeps g++ from stack copies of the accumulators (see gemm_panel.hpp)
    }
  }
}

// Row r's 16 bytes at `offset`, in all four 128-bit lanes.
struct full_window {
  const std::uint8_t* const* row;
  index_t offset;
  QLIB_TARGET_AVX512_VNNI QLIB_ALWAYS_INLINE __m512i operator()(int r) const {
    return _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row[r] + offset)));
  }
};
// The last, partial window: only its k < K bytes are read (masked load).
struct tail_window {
  const std::uint8_t* const* row;
  index_t offset;
  __mmask16 mask;
  QLIB_TARGET_AVX512_VNNI QLIB_ALWAYS_INLINE __m512i operator()(int r) const {
    return _mm512_broadcast_i32x4(_mm_maskz_loadu_epi8(mask, row[r] + offset));
  }
};

// S = init + A[0:MR, 0:k] x the first 16 * NV columns of the panel, columns [0, cols)
// stored to c (row stride ldc).
template <int MR, int NV, bool Flip>
QLIB_TARGET_AVX512_VNNI __attribute__((noinline)) void nm_tile(index_t k, int dwords, const std::uint8_t* a,
                                                               index_t lda, const std::int8_t* panel,
                                                               const std::int32_t* init, std::int32_t* c, index_t ldc,
                                                               index_t cols) {
  __m512i acc[MR][NV];
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_load_si512(init + 16 * v);
  const std::uint8_t* row[MR];
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) row[r] = a + r * lda;

  const index_t full = k / prune::nm_window;
  const index_t step_bytes_per_window = dwords * prune::nm_step_bytes;
  if (const index_t tail = k - full * prune::nm_window) {  // first, so the loop ends the tile
    const tail_window load{row, full * prune::nm_window, static_cast<__mmask16>((1u << tail) - 1)};
    const std::int8_t* step = panel + full * step_bytes_per_window;
    for (int d = 0; d < dwords; ++d, step += prune::nm_step_bytes) nm_step<MR, NV, Flip>(acc, load, step);
  }
  const std::int8_t* step = panel;
  if (dwords == 2) {  // 2:4, 4:8, 1:2: the common case with a fixed inner count
    for (index_t w = 0; w < full; ++w, step += 2 * prune::nm_step_bytes) {
      const full_window load{row, w * prune::nm_window};
      nm_step<MR, NV, Flip>(acc, load, step);
      nm_step<MR, NV, Flip>(acc, load, step + prune::nm_step_bytes);
    }
  } else {
    for (index_t w = 0; w < full; ++w) {
      const full_window load{row, w * prune::nm_window};
      for (int d = 0; d < dwords; ++d, step += prune::nm_step_bytes) nm_step<MR, NV, Flip>(acc, load, step);
    }
  }

#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const index_t left = cols - 16 * v;
      const __mmask16 keep =
          left >= 16 ? __mmask16(0xffff) : left <= 0 ? __mmask16(0) : static_cast<__mmask16>((1u << left) - 1);
      _mm512_mask_storeu_epi32(c + r * ldc + 16 * v, keep, acc[r][v]);
    }
}

// Tile heights: the full one for NV, and for short M the next ones down to 1.
template <int NV>
constexpr int nm_rows = NV == 4 ? 5 : NV == 3 ? 7 : 12;

template <int NV, bool Flip, int MR = nm_rows<NV>>
QLIB_TARGET_AVX512_VNNI QLIB_ALWAYS_INLINE void run_nm_tile(index_t mr, index_t k, int dwords, const std::uint8_t* a,
                                                            index_t lda, const std::int8_t* panel,
                                                            const std::int32_t* init, std::int32_t* c, index_t ldc,
                                                            index_t cols) {
  if constexpr (MR > 1) {
    if (mr != MR) return run_nm_tile<NV, Flip, avx512vnni_detail::next_narrow_rows(MR)>(mr, k, dwords, a, lda, panel, init, c, ldc, cols);
  }
  QLIB_ASSERT(mr == MR);
  nm_tile<MR, NV, Flip>(k, dwords, a, lda, panel, init, c, ldc, cols);
}

// A panel with at most 16 * NV real columns. Rows go in tiles of mr; a partial last tile
// runs as a whole tile ending at row m (it recomputes rows of the one before with the
// same sums; a pipeline gets only the new rows), as the dense narrow tiles do.
template <int NV, bool Flip, class Output>
QLIB_TARGET_AVX512_VNNI void run_nm_panel(index_t m, index_t k, int dwords, const std::uint8_t* a, index_t lda,
                                          const std::int8_t* panel, const std::int32_t* init, index_t cols,
                                          std::int32_t* tile_buffer, Output& out) {
  index_t mr = nm_rows<NV>;
  while (mr > m) mr = avx512vnni_detail::next_narrow_rows(static_cast<int>(mr));
  for (index_t r = 0; r < m; r += mr) {
    const index_t r0 = std::min(r, m - mr);
    if constexpr (is_direct_output<Output>::value) {
      run_nm_tile<NV, Flip>(mr, k, dwords, a + r0 * lda, lda, panel, init, out.c + r0 * out.ldc, out.ldc, cols);
    } else {
      run_nm_tile<NV, Flip>(mr, k, dwords, a + r0 * lda, lda, panel, init, tile_buffer, gemm::panel_width, 16 * NV);
      const index_t skip = r - r0;
      out(r, mr - skip, static_cast<const std::int32_t*>(tile_buffer + skip * gemm::panel_width));
    }
  }
}

}  // namespace avx512vnni_sparse_detail

struct avx512vnni_sparse_nm_kernel {
  static constexpr const char* name = "avx512vnni_x8s8_nm_5x64";
  template <class Act>
  static constexpr std::int32_t activation_offset() noexcept {
    return std::is_signed<Act>::value ? 128 : 0;
  }
  template <class Act, class W, class Output>
  static void run_panel(index_t m, index_t k, const Act* a, index_t lda, const W& w, index_t p,
                        const std::int32_t* column_init, Output& out) {
    alignas(64) std::int32_t tile[12 * gemm::panel_width];
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(a);
    constexpr bool flip = std::is_signed<Act>::value;
    const index_t cols = avx512vnni_detail::output_columns(out);
    const int dwords = w.dwords_per_window();
    const std::int8_t* panel = w.panel(p);
    using namespace avx512vnni_sparse_detail;
    if (cols <= 16) return run_nm_panel<1, flip>(m, k, dwords, bytes, lda, panel, column_init, cols, tile, out);
    if (cols <= 32) return run_nm_panel<2, flip>(m, k, dwords, bytes, lda, panel, column_init, cols, tile, out);
    if (cols <= 48) return run_nm_panel<3, flip>(m, k, dwords, bytes, lda, panel, column_init, cols, tile, out);
    return run_nm_panel<4, flip>(m, k, dwords, bytes, lda, panel, column_init, cols, tile, out);
  }
};

inline avx512vnni_sparse_nm_kernel sparse_nm_kernel_for(arch::avx512_vnni) noexcept { return {}; }

}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_X86_KERNELS
