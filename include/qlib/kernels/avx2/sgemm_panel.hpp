// AVX2 fp32 GEMM tile kernel: FMA3 ymm, 6 x 16 register tiles (two per 32-column panel).
#pragma once

#include <cstdint>

#include "qlib/arch/target.hpp"
#include "qlib/kernels/portable/sgemm_panel.hpp"

#if QLIB_HAS_X86_KERNELS
#include <immintrin.h>

QLIB_KERNEL_BEGIN

// Contract: kernels/portable/sgemm_panel.hpp. Tile: 6 rows x 2 ymm = 12 accumulators +
// 2 ymm of B + 1 broadcast of A = 15 of 16 registers; per k 2 loads of B, 6 broadcasts,
// 12 FMAs (two FMA ports at latency 4 need 8 chains). A 32-column panel is two tiles,
// the second skipped when the panel has <= 16 live columns.
namespace qlib {
namespace kernels {
namespace avx2_sgemm_detail {

// Lanes [0, n) of a ymm mask set (maskload/maskstore skip the rest: nothing past C's
// columns or the bias is touched).
QLIB_TARGET_AVX2 QLIB_ALWAYS_INLINE __m256i lane_mask(index_t n) {
  const int live = n <= 0 ? 0 : n >= 8 ? 8 : static_cast<int>(n);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(live), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// RowMajor: row r of A at a + r * lda; otherwise A[r][k] at a + k * lda + r (see avx512).
template <int MR, bool RowMajor>
QLIB_TARGET_AVX2 __attribute__((noinline)) void tile(index_t kc, const float* a, index_t lda, const float* b, float* c,
                                                     index_t ldc, index_t cols, const sgemm_tile_params& t) {
  const __m256i keep[2] = {lane_mask(cols), lane_mask(cols - 8)};
  __m256 acc[MR][2];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < 2; ++v)
      acc[r][v] = t.load_c ? _mm256_maskload_ps(c + r * ldc + 8 * v, keep[v]) : _mm256_setzero_ps();

  constexpr int np = (MR + 2) / 3;
  const float* p[np];
#pragma GCC unroll 2
  for (int i = 0; i < np; ++i) p[i] = a + 3 * i * lda;
  for (index_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(b + k * gemm::sgemm_panel_width);
    const __m256 b1 = _mm256_load_ps(b + k * gemm::sgemm_panel_width + 8);
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const __m256 av = _mm256_broadcast_ss(RowMajor ? p[r / 3] + (r % 3) * lda + k : a + k * lda + r);
      acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
      // No instruction: keeps g++ -O3 from holding stack copies of the accumulators.
      __asm__("" : "+x"(acc[r][0]), "+x"(acc[r][1]));
    }
  }

  if (t.last) {
    if (t.bias) {
      const __m256 bias[2] = {_mm256_maskload_ps(t.bias, keep[0]), _mm256_maskload_ps(t.bias + 8, keep[1])};
#pragma GCC unroll 6
      for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
        for (int v = 0; v < 2; ++v) acc[r][v] = _mm256_add_ps(acc[r][v], bias[v]);
    }
    if (t.clamp) {
      const __m256 lo = _mm256_set1_ps(t.lo), hi = _mm256_set1_ps(t.hi);
#pragma GCC unroll 6
      for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
        for (int v = 0; v < 2; ++v)  // min(hi, s) then max(lo, s): NaN in s stays (sgemm_clamp)
          acc[r][v] = _mm256_max_ps(lo, _mm256_min_ps(hi, acc[r][v]));
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < 2; ++v) _mm256_maskstore_ps(c + r * ldc + 8 * v, keep[v], acc[r][v]);
}

}  // namespace avx2_sgemm_detail

struct avx2_sgemm_kernel {
  static constexpr const char* name = "avx2_sgemm_6x16";
  static constexpr index_t mr = 6;
  static void run_tile(index_t rows, index_t cols, index_t kc, const float* a, index_t lda, bool a_row_major,
                       const float* b, float* c, index_t ldc, const sgemm_tile_params& t) {
    if (a_row_major) return run<true>(rows, cols, kc, a, lda, b, c, ldc, t);
    run<false>(rows, cols, kc, a, lda, b, c, ldc, t);
  }
  template <bool RowMajor>
  static void run(index_t rows, index_t cols, index_t kc, const float* a, index_t lda, const float* b, float* c,
                  index_t ldc, const sgemm_tile_params& t) {
    QLIB_ASSERT(rows >= 1 && rows <= mr && cols >= 1 && cols <= gemm::sgemm_panel_width);
    QLIB_ASSERT(reinterpret_cast<std::uintptr_t>(b) % 32 == 0);
    for_each_panel_half(cols, b, c, t, [&](const float* bh, float* ch, index_t hc, const sgemm_tile_params& th) {
      switch (rows) {
        case 6: return avx2_sgemm_detail::tile<6, RowMajor>(kc, a, lda, bh, ch, ldc, hc, th);
        case 5: return avx2_sgemm_detail::tile<5, RowMajor>(kc, a, lda, bh, ch, ldc, hc, th);
        case 4: return avx2_sgemm_detail::tile<4, RowMajor>(kc, a, lda, bh, ch, ldc, hc, th);
        case 3: return avx2_sgemm_detail::tile<3, RowMajor>(kc, a, lda, bh, ch, ldc, hc, th);
        case 2: return avx2_sgemm_detail::tile<2, RowMajor>(kc, a, lda, bh, ch, ldc, hc, th);
        default: return avx2_sgemm_detail::tile<1, RowMajor>(kc, a, lda, bh, ch, ldc, hc, th);
      }
    });
  }
};

inline avx2_sgemm_kernel sgemm_kernel_for(arch::avx2) noexcept { return {}; }

// sgemm_pack_columns (contract: kernels/portable/sgemm_panel.hpp) by 8 x 8 register
// transposes: 8 columns x 8 k loaded as 8 rows, stored as 8 rows of the panel. Measured
// the scalar copy at about 1 cycle per float on Zen 4, a quarter of a layer's backward
// dX = dY W^T at M = 64.
QLIB_TARGET_AVX2 inline void sgemm_pack_columns(arch::avx2, const float* src, index_t ldn, index_t kc, index_t cols,
                                                float* panel) {
  constexpr index_t w = gemm::sgemm_panel_width;
  index_t j0 = 0;
  for (; j0 + 8 <= cols; j0 += 8) {
    const float* s = src + j0 * ldn;
    index_t k = 0;
    for (; k + 8 <= kc; k += 8) {
      __m256 r[8];
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(s + i * ldn + k);
      const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
      const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
      const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
      const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
      const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
      const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
      const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
      const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
      float* d = panel + k * w + j0;
      _mm256_storeu_ps(d + 0 * w, _mm256_permute2f128_ps(u0, u4, 0x20));
      _mm256_storeu_ps(d + 1 * w, _mm256_permute2f128_ps(u1, u5, 0x20));
      _mm256_storeu_ps(d + 2 * w, _mm256_permute2f128_ps(u2, u6, 0x20));
      _mm256_storeu_ps(d + 3 * w, _mm256_permute2f128_ps(u3, u7, 0x20));
      _mm256_storeu_ps(d + 4 * w, _mm256_permute2f128_ps(u0, u4, 0x31));
      _mm256_storeu_ps(d + 5 * w, _mm256_permute2f128_ps(u1, u5, 0x31));
      _mm256_storeu_ps(d + 6 * w, _mm256_permute2f128_ps(u2, u6, 0x31));
      _mm256_storeu_ps(d + 7 * w, _mm256_permute2f128_ps(u3, u7, 0x31));
    }
    for (; k < kc; ++k)
      for (index_t i = 0; i < 8; ++i) panel[k * w + j0 + i] = s[i * ldn + k];
  }
  for (index_t k = 0; k < kc; ++k) {
    for (index_t j = j0; j < cols; ++j) panel[k * w + j] = src[j * ldn + k];
    for (index_t j = cols; j < w; ++j) panel[k * w + j] = 0.0f;
  }
}

}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_X86_KERNELS
