// Portable fp32 GEMM tile kernel (plain C++ the compiler vectorizes; the ARM path) and the contract of every sgemm kernel.
#pragma once

#include "qlib/arch/isa.hpp"
#include "qlib/core/tensor_view.hpp"
#include "qlib/gemm/sgemm_params.hpp"

// An sgemm kernel is a descriptor struct found by overload resolution on the ISA tag,
// kernels::sgemm_kernel_for(tag) (an ISA without its own kernel gets its ancestor's):
//
//   static constexpr const char* name;   // e.g. "avx512_sgemm_12x32"
//   static constexpr index_t mr;         // rows per tile the driver hands over
//   static void run_tile(index_t rows, index_t cols, index_t kc, const float* a, index_t lda,
//                        bool a_row_major, const float* b, float* c, index_t ldc,
//                        const sgemm_tile_params& t);
//
// run_tile computes, for rows [0, rows) (rows <= mr) and columns [0, cols) (cols <= 32):
//
//   s[r][j] = (t.load_c ? c[r][j] : 0) + sum_{k < kc} A[r][k] * b[k * 32 + j]   (k in order)
//
// with A[r][k] at a + r * lda + k if a_row_major (A read in place), else at a + k * lda + r
// (rows contiguous: A transposed read in place, or a tile packed k-major).
//   if t.last: s += bias[j] (if t.bias), then s = max(lo, min(hi, s)) (if t.clamp)
//   c[r * ldc + j] = s
//
// b is one packed panel of a K block (gemm/sgemm_packed.hpp): kc rows of 32 floats,
// 128-byte aligned, columns >= cols zero. Each element is one chain of multiply-adds in
// k order (fused on the SIMD kernels), so its bits do not depend on where the tile
// starts: the driver may split M and N anywhere. The clamp is written as
// s = hi < s ? hi : s; s = lo > s ? lo : s, which keeps NaN (what vminps/vmaxps with the
// bound first do). Kernels only assert: sgemm() validated the inputs.
namespace qlib {
namespace kernels {

struct sgemm_tile_params {
  bool load_c;        // start from C (accumulate, or a K block after the first), else from 0
  bool last;          // the last K block: bias and clamp, then the final store
  const float* bias;  // bias of the tile's first column, or null
  bool clamp;         // clamp to [lo, hi] on the last block
  float lo, hi;
};

// The scalar epilogue every kernel matches (the reference uses the same expression).
inline float sgemm_clamp(float s, float lo, float hi) noexcept {
  s = hi < s ? hi : s;
  return lo > s ? lo : s;
}

// Calls f(b_half, c_half, cols_half, params_half) for each 16-column half of a panel that
// has live columns (kernels whose tile is 16 columns wide).
template <class F>
void for_each_panel_half(index_t cols, const float* b, float* c, const sgemm_tile_params& t, F&& f) {
  for (index_t h = 0; h * 16 < cols; ++h) {
    sgemm_tile_params th = t;
    if (th.bias) th.bias += h * 16;
    // b is null when K is 0 (nothing packed): no offset on a null pointer.
    f(b ? b + h * 16 : b, c + h * 16, cols - h * 16 < 16 ? cols - h * 16 : 16, th);
  }
}

namespace portable_sgemm_detail {

// rows MR x 16 columns; acc[r][0:16] are 16 independent chains (4 NEON / SSE vectors).
// A[r][k] at a + r * rs + k * ks.
template <int MR>
__attribute__((noinline)) void tile16(index_t kc, const float* a, index_t rs, index_t ks, const float* b, float* c,
                                      index_t ldc, index_t cols, const sgemm_tile_params& t) {
  constexpr int w = 16;
  float acc[MR][w];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < w; ++j) acc[r][j] = (t.load_c && j < cols) ? c[r * ldc + j] : 0.0f;
  for (index_t k = 0; k < kc; ++k) {
    const float* bk = b + k * gemm::sgemm_panel_width;
    for (int r = 0; r < MR; ++r) {
      const float av = a[r * rs + k * ks];
      for (int j = 0; j < w; ++j) acc[r][j] += av * bk[j];
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (index_t j = 0; j < cols; ++j) {
      float s = acc[r][j];
      if (t.last) {
        if (t.bias) s += t.bias[j];
        if (t.clamp) s = sgemm_clamp(s, t.lo, t.hi);
      }
      c[r * ldc + j] = s;
    }
  }
}

}  // namespace portable_sgemm_detail

struct portable_sgemm_kernel {
  static constexpr const char* name = "portable_sgemm_4x16";
  static constexpr index_t mr = 4;
  static void run_tile(index_t rows, index_t cols, index_t kc, const float* a, index_t lda, bool a_row_major,
                       const float* b, float* c, index_t ldc, const sgemm_tile_params& t) {
    const index_t rs = a_row_major ? lda : 1, ks = a_row_major ? 1 : lda;
    QLIB_ASSERT(rows >= 1 && rows <= mr && cols >= 1 && cols <= gemm::sgemm_panel_width);
    for_each_panel_half(cols, b, c, t, [&](const float* bh, float* ch, index_t hc, const sgemm_tile_params& th) {
      switch (rows) {
        case 4: return portable_sgemm_detail::tile16<4>(kc, a, rs, ks, bh, ch, ldc, hc, th);
        case 3: return portable_sgemm_detail::tile16<3>(kc, a, rs, ks, bh, ch, ldc, hc, th);
        case 2: return portable_sgemm_detail::tile16<2>(kc, a, rs, ks, bh, ch, ldc, hc, th);
        default: return portable_sgemm_detail::tile16<1>(kc, a, rs, ks, bh, ch, ldc, hc, th);
      }
    });
  }
};

inline portable_sgemm_kernel sgemm_kernel_for(arch::portable) noexcept { return {}; }

// Packs one panel from B stored with columns contiguous (B[k][j] at src + j * ldn + k,
// e.g. B = W^T of a row-major W): panel[k * 32 + j] for k < kc, j < cols, zero for
// j >= cols. A plain copy, so every ISA's version gives the same bits.
inline void sgemm_pack_columns(arch::portable, const float* src, index_t ldn, index_t kc, index_t cols,
                               float* panel) {
  constexpr index_t w = gemm::sgemm_panel_width;
  for (index_t j = 0; j < cols; ++j)
    for (index_t k = 0; k < kc; ++k) panel[k * w + j] = src[j * ldn + k];
  for (index_t k = 0; k < kc; ++k)
    for (index_t j = cols; j < w; ++j) panel[k * w + j] = 0.0f;
}

}  // namespace kernels
}  // namespace qlib
