// AVX-512 VNNI N:M sparse int8 GEMM panel kernel: rows copied with a window wrap, per row one 64-byte load, vpshufb gathers, vpdpbusd on the kept values.
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

// Layout: kernels/portable/sparse_nm_panel.hpp. The driver first copies each row block
// of A into rows of W + 3 windows (int8 A XORed with 0x80 into uint8, as the dense
// kernel does; zeros past K; windows 0..2 again after the last). Per step (one dword of
// 4 kept values per column, of the skewed windows t + lane) and row: one 64-byte load
// at window t gives 128-bit lane L window t + L, then per 16 columns one vpshufb by the
// stored indices gives each column its 4 activations, and one vpdpbusd adds the 4 kept
// values. For 2:4 a row costs per 16 k and 16 columns 2 vpshufb + 2 vpdpbusd where the
// dense kernel needs 4 vpdpbusd. (The former 16-byte broadcast per row took a shuffle
// slot of its own on Zen 4: 1.22-1.29x dense with it.)
// Tiles: MR rows x 16 * NV columns in 32 zmm: 5 x 64 and 7 x 48 (MR * NV accumulators,
// the MR rows of a step, a column vector's values and indices, a gather: 28 and 31), 8 x
// 32 (27) and 10 x 16 (14; a row at a time). 12-row tiles spilled accumulators in g++
// or clang, and ran short of general registers for the row pointers;
// bench/check_kernel_spills.sh checks every tile's hot loop.
namespace qlib {
namespace kernels {
namespace avx512vnni_sparse_detail {

// One step of the tile at window offset `offset` (bytes): acc[r][v] += gather(row r) . values.
// Each column vector's values and indices are loaded once and pinned in registers (an
// empty asm): left alone, g++ folds some of them into every row's vpshufb/vpdpbusd (a
// load per row; with -mtune=znver3, i.e. -march=native on Zen 4, two of the four column
// vectors, which made the 2:4 kernel load-bound at 1.05-1.09x dense). When the rows fit
// in registers too, they are loaded first and the column vectors go one at a time.
template <int MR, int NV>
QLIB_TARGET_AVX512_VNNI QLIB_ALWAYS_INLINE void nm_step(__m512i (&acc)[MR][NV], const std::uint8_t* const* row,
                                                        index_t offset, const std::int8_t* step) {
  if constexpr (NV > 1 && MR * NV + MR + 3 <= 32) {  // accumulators, rows, values, indices, a gather
    __m512i av[MR];
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) av[r] = _mm512_loadu_si512(row[r] + offset);
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      __m512i wv = _mm512_load_si512(step + 64 * v), iv = _mm512_load_si512(step + prune::nm_index_offset + 64 * v);
      __asm__("" : "+v"(wv), "+v"(iv));
#pragma GCC unroll 12
      for (int r = 0; r < MR; ++r) {
        acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], _mm512_shuffle_epi8(av[r], iv), wv);
        __asm__("" : "+v"(acc[r][v]));  // keeps g++ from stack copies of the accumulators (see gemm_panel.hpp)
      }
    }
  } else {  // all column vectors in registers, a row at a time
    __m512i wv[NV], iv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      wv[v] = _mm512_load_si512(step + 64 * v);
      iv[v] = _mm512_load_si512(step + prune::nm_index_offset + 64 * v);
      __asm__("" : "+v"(wv[v]), "+v"(iv[v]));
    }
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      const __m512i av = _mm512_loadu_si512(row[r] + offset);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], _mm512_shuffle_epi8(av, iv[v]), wv[v]);
        __asm__("" : "+v"(acc[r][v]));
      }
    }
  }
}

// The bytes of one copied row: W windows and the 3 wrap windows.
inline index_t nm_row_bytes(index_t k) noexcept {
  return (gemm::round_up(k, prune::nm_window) / prune::nm_window + 3) * prune::nm_window;
}

// Copies rows [0, rows) of A (uint8, or int8 XORed to uint8 when Flip) into `out`, row
// stride nm_row_bytes(k): the K bytes, zeros up to the last window's end, then windows
// 0, 1, 2 (mod W) again, so that a 64-byte load at any window t < W is in the row.
template <bool Flip>
QLIB_TARGET_AVX512_VNNI void nm_copy_rows(const std::uint8_t* a, index_t lda, index_t rows, index_t k,
                                          std::uint8_t* out) {
  const index_t windows = gemm::round_up(k, prune::nm_window) / prune::nm_window;
  const index_t padded = windows * prune::nm_window, stride = nm_row_bytes(k);
  const __m512i flip = _mm512_set1_epi8(Flip ? static_cast<char>(0x80) : 0);
  for (index_t r = 0; r < rows; ++r) {
    const std::uint8_t* src = a + r * lda;
    std::uint8_t* dst = out + r * stride;
    index_t i = 0;
    for (; i + 64 <= k; i += 64) _mm512_storeu_si512(dst + i, _mm512_xor_si512(_mm512_loadu_si512(src + i), flip));
    if (i < padded) {  // the last bytes of K, zeros up to the window's end
      const __mmask64 in_k = k - i >= 64 ? ~__mmask64(0) : (__mmask64(1) << (k - i)) - 1;
      const __mmask64 in_row = padded - i >= 64 ? ~__mmask64(0) : (__mmask64(1) << (padded - i)) - 1;
      const __m512i bytes = _mm512_xor_si512(_mm512_maskz_loadu_epi8(in_k, src + i), flip);
      _mm512_mask_storeu_epi8(dst + i, in_row, _mm512_maskz_mov_epi8(in_k, bytes));
    }
    for (index_t w = windows; w < windows + 3; ++w)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + w * prune::nm_window),
                       _mm_loadu_si128(reinterpret_cast<const __m128i*>(dst + (w % windows) * prune::nm_window)));
  }
}

// S = init + rows[0:MR] (copied by nm_copy_rows, row stride lda) x the first 16 * NV
// columns of the panel, columns [0, cols) stored to c (row stride ldc).
template <int MR, int NV>
QLIB_TARGET_AVX512_VNNI __attribute__((noinline)) void nm_tile(index_t windows, int dwords, const std::uint8_t* a,
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

  const std::int8_t* step = panel;
  if (dwords == 2) {  // 2:4, 4:8, 1:2: the common case with a fixed inner count
    for (index_t t = 0; t < windows; ++t, step += 2 * prune::nm_step_bytes) {
      nm_step<MR, NV>(acc, row, t * prune::nm_window, step);
      nm_step<MR, NV>(acc, row, t * prune::nm_window, step + prune::nm_step_bytes);
    }
  } else {
    for (index_t t = 0; t < windows; ++t)
      for (int d = 0; d < dwords; ++d, step += prune::nm_step_bytes)
        nm_step<MR, NV>(acc, row, t * prune::nm_window, step);
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
constexpr int nm_rows = NV == 4 ? 5 : NV == 3 ? 7 : NV == 2 ? 8 : 10;

template <int NV, int MR = nm_rows<NV>>
QLIB_TARGET_AVX512_VNNI QLIB_ALWAYS_INLINE void run_nm_tile(index_t mr, index_t windows, int dwords, const std::uint8_t* a,
                                                            index_t lda, const std::int8_t* panel,
                                                            const std::int32_t* init, std::int32_t* c, index_t ldc,
                                                            index_t cols) {
  if constexpr (MR > 1) {
    if (mr != MR) return run_nm_tile<NV, avx512vnni_detail::next_narrow_rows(MR)>(mr, windows, dwords, a, lda, panel, init, c, ldc, cols);
  }
  QLIB_ASSERT(mr == MR);
  nm_tile<MR, NV>(windows, dwords, a, lda, panel, init, c, ldc, cols);
}

// A panel with at most 16 * NV real columns. Rows go in tiles of mr; a partial last tile
// runs as a whole tile ending at row m (it recomputes rows of the one before with the
// same sums; a pipeline gets only the new rows), as the dense narrow tiles do.
template <int NV, class Output>
QLIB_TARGET_AVX512_VNNI void run_nm_panel(index_t m, index_t windows, int dwords, const std::uint8_t* a, index_t lda,
                                          const std::int8_t* panel, const std::int32_t* init, index_t cols,
                                          std::int32_t* tile_buffer, Output& out) {
  index_t mr = nm_rows<NV>;
  while (mr > m) mr = avx512vnni_detail::next_narrow_rows(static_cast<int>(mr));
  for (index_t r = 0; r < m; r += mr) {
    const index_t r0 = std::min(r, m - mr);
    if constexpr (is_direct_output<Output>::value) {
      run_nm_tile<NV>(mr, windows, dwords, a + r0 * lda, lda, panel, init, out.c + r0 * out.ldc, out.ldc, cols);
    } else {
      run_nm_tile<NV>(mr, windows, dwords, a + r0 * lda, lda, panel, init, tile_buffer, gemm::panel_width, 16 * NV);
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
  // The driver copies each row block with copy_rows into a buffer of
  // rows * copied_row_bytes(k) bytes and passes that to run_panel (as uint8 rows).
  static index_t copied_row_bytes(index_t k) noexcept { return avx512vnni_sparse_detail::nm_row_bytes(k); }
  template <class Act>
  static void copy_rows(const Act* a, index_t lda, index_t rows, index_t k, std::uint8_t* out) {
    avx512vnni_sparse_detail::nm_copy_rows<std::is_signed<Act>::value>(reinterpret_cast<const std::uint8_t*>(a), lda,
                                                                      rows, k, out);
  }
  template <class W, class Output>
  static void run_panel(index_t m, index_t, const std::uint8_t* rows, index_t ld, const W& w, index_t p,
                        const std::int32_t* column_init, Output& out) {
    alignas(64) std::int32_t tile[12 * gemm::panel_width];
    const index_t cols = avx512vnni_detail::output_columns(out);
    const index_t windows = w.window_count();
    const int dwords = w.dwords_per_window();
    const std::int8_t* panel = w.panel(p);
    using namespace avx512vnni_sparse_detail;
    if (cols <= 16) return run_nm_panel<1>(m, windows, dwords, rows, ld, panel, column_init, cols, tile, out);
    if (cols <= 32) return run_nm_panel<2>(m, windows, dwords, rows, ld, panel, column_init, cols, tile, out);
    if (cols <= 48) return run_nm_panel<3>(m, windows, dwords, rows, ld, panel, column_init, cols, tile, out);
    return run_nm_panel<4>(m, windows, dwords, rows, ld, panel, column_init, cols, tile, out);
  }
};

inline avx512vnni_sparse_nm_kernel sparse_nm_kernel_for(arch::avx512_vnni) noexcept { return {}; }

}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_X86_KERNELS
