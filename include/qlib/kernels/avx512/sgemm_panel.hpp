// AVX-512 fp32 GEMM tile kernel: zmm FMA, 12 x 32 register tiles (12 x 16 when a panel has <= 16 live columns).
#pragma once

#include <cstdint>

#include "qlib/arch/target.hpp"
#include "qlib/kernels/portable/sgemm_panel.hpp"

#if QLIB_HAS_X86_KERNELS
#include <immintrin.h>

QLIB_KERNEL_BEGIN

// Contract: kernels/portable/sgemm_panel.hpp. Tile: 12 rows x 2 zmm = 24 accumulators,
// + 2 zmm of B + 1 broadcast of A = 27 of 32 registers. Per k: 2 aligned loads of B,
// 12 broadcasts of A (each used by 2 FMAs), 24 FMAs. Zen 4 runs 1 zmm FMA per cycle at
// a latency of 4, so 24 independent chains keep it busy (Intel with 2 FMA ports needs
// 8); 12 rows x 32 columns rather than 6 x 64 because N = 32 layers are common (a 6 x 64
// tile would be half padding there) and the A tile (12 rows x 256 k = 12 KiB) stays in L1
// while 128 bytes of B per k stream from L2. A panel with <= 16 live columns (N = 16
// layers, the last panel) runs the 12 x 16 variant: no FMA on padding.
namespace qlib {
namespace kernels {
namespace avx512_sgemm_detail {

QLIB_ALWAYS_INLINE __mmask16 lane_mask(index_t n) {
  return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : static_cast<__mmask16>((1u << n) - 1);
}

// RowMajor: row r of A at a + r * lda, its k contiguous. Otherwise rows are contiguous
// (A transposed, or packed k-major): A[r][k] at a + k * lda + r.
template <int MR, int NV, bool RowMajor>
QLIB_TARGET_AVX512 __attribute__((noinline)) void tile(index_t kc, const float* a, index_t lda, const float* b,
                                                       float* c, index_t ldc, index_t cols,
                                                       const sgemm_tile_params& t) {
  __mmask16 keep[NV];
#pragma GCC unroll 2
  for (int v = 0; v < NV; ++v) keep[v] = lane_mask(cols - 16 * v);
  __m512 acc[MR][NV];
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v)
      acc[r][v] = t.load_c ? _mm512_maskz_loadu_ps(keep[v], c + r * ldc + 16 * v) : _mm512_setzero_ps();

  // Rows 3i, 3i+1, 3i+2 are read at p[i], p[i] + lda, p[i] + 2 lda: 4 pointers and lda
  // in general registers (x86 addressing scales an index by 1, 2, 4, 8 only).
  constexpr int np = (MR + 2) / 3;
  const float* p[np];
#pragma GCC unroll 4
  for (int i = 0; i < np; ++i) p[i] = a + 3 * i * lda;
  for (index_t k = 0; k < kc; ++k) {
    __m512 bv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_load_ps(b + k * gemm::sgemm_panel_width + 16 * v);
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(RowMajor ? p[r / 3][(r % 3) * lda + k] : a[k * lda + r]);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) {
        acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
        // Costs no instruction; keeps g++ -O3 from holding stack copies of the
        // accumulators in the loop (see kernels/avx512vnni/gemm_panel.hpp).
        __asm__("" : "+v"(acc[r][v]));
      }
    }
  }

  if (t.last) {
    if (t.bias) {
      __m512 bias[NV];
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) bias[v] = _mm512_maskz_loadu_ps(keep[v], t.bias + 16 * v);
#pragma GCC unroll 12
      for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_add_ps(acc[r][v], bias[v]);
    }
    if (t.clamp) {
      const __m512 lo = _mm512_set1_ps(t.lo), hi = _mm512_set1_ps(t.hi);
#pragma GCC unroll 12
      for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v)  // min(hi, s) then max(lo, s): NaN in s stays (sgemm_clamp)
          acc[r][v] = _mm512_max_ps(lo, _mm512_min_ps(hi, acc[r][v]));
    }
  }
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) _mm512_mask_storeu_ps(c + r * ldc + 16 * v, keep[v], acc[r][v]);
}

template <int NV, bool RowMajor>
QLIB_TARGET_AVX512 void run_rows(index_t rows, index_t kc, const float* a, index_t lda, const float* b, float* c,
                                 index_t ldc, index_t cols, const sgemm_tile_params& t) {
  switch (rows) {
    case 12: return tile<12, NV, RowMajor>(kc, a, lda, b, c, ldc, cols, t);
    case 11: return tile<11, NV, RowMajor>(kc, a, lda, b, c, ldc, cols, t);
    case 10: return tile<10, NV, RowMajor>(kc, a, lda, b, c, ldc, cols, t);
    case 9: return tile<9, NV, RowMajor>(kc, a, lda, b, c, ldc, cols, t);
    case 8: return tile<8, NV, RowMajor>(kc, a, lda, b, c, ldc, cols, t);
    case 7: return tile<7, NV, RowMajor>(kc, a, lda, b, c, ldc, cols, t);
    case 6: return tile<6, NV, RowMajor>(kc, a, lda, b, c, ldc, cols, t);
    case 5: return tile<5, NV, RowMajor>(kc, a, lda, b, c, ldc, cols, t);
    case 4: return tile<4, NV, RowMajor>(kc, a, lda, b, c, ldc, cols, t);
    case 3: return tile<3, NV, RowMajor>(kc, a, lda, b, c, ldc, cols, t);
    case 2: return tile<2, NV, RowMajor>(kc, a, lda, b, c, ldc, cols, t);
    default: return tile<1, NV, RowMajor>(kc, a, lda, b, c, ldc, cols, t);
  }
}

}  // namespace avx512_sgemm_detail

struct avx512_sgemm_kernel {
  static constexpr const char* name = "avx512_sgemm_12x32";
  static constexpr index_t mr = 12;
  static void run_tile(index_t rows, index_t cols, index_t kc, const float* a, index_t lda, bool a_row_major,
                       const float* b, float* c, index_t ldc, const sgemm_tile_params& t) {
    QLIB_ASSERT(rows >= 1 && rows <= mr && cols >= 1 && cols <= gemm::sgemm_panel_width);
    QLIB_ASSERT(reinterpret_cast<std::uintptr_t>(b) % 64 == 0);
    using namespace avx512_sgemm_detail;
    if (cols <= 16)
      return a_row_major ? run_rows<1, true>(rows, kc, a, lda, b, c, ldc, cols, t)
                         : run_rows<1, false>(rows, kc, a, lda, b, c, ldc, cols, t);
    return a_row_major ? run_rows<2, true>(rows, kc, a, lda, b, c, ldc, cols, t)
                       : run_rows<2, false>(rows, kc, a, lda, b, c, ldc, cols, t);
  }
};

inline avx512_sgemm_kernel sgemm_kernel_for(arch::avx512) noexcept { return {}; }

}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_X86_KERNELS
