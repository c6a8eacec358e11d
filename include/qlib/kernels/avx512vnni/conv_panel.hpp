// AVX-512 VNNI implicit-GEMM convolution tiles: vpdpbusd straight from the (padded) NHWC input, no im2col copy.
#pragma once

#include <cstdint>

#include "qlib/arch/target.hpp"
#include "qlib/kernels/avx512/output_stages.hpp"
#include "qlib/kernels/avx512vnni/gemm_panel.hpp"

#if QLIB_HAS_X86_KERNELS
#include <immintrin.h>

QLIB_KERNEL_BEGIN

// The GEMM of a convolution reads row p of its A matrix (the receptive field of output
// pixel p) as kernel_h runs of kernel_w * C contiguous input bytes, one per kernel row:
// run s starts at rows[p] + s * run_stride. Each run is read in groups of 4 bytes
// (run_groups of them, the last one reaching up to 3 bytes past the run: the packed
// weights are zero there, so those bytes add nothing, and the caller's input buffer has
// slack after its end). The weights are packed with each kernel row's run padded to a
// multiple of 4 (nn/qconv2d_implicit.hpp). Same accumulators, same k_group as the GEMM
// tile (gemm_panel.hpp): the sums are exact int32, so the result equals im2col + GEMM.
namespace qlib {
namespace kernels {
namespace avx512vnni_detail {

template <int MR, int NV>
QLIB_TARGET_AVX512_VNNI __attribute__((noinline)) void conv_tile(const std::uint8_t* const* rows, index_t runs,
                                                                 index_t run_groups, index_t run_stride,
                                                                 const std::int8_t* b, const std::int32_t* init,
                                                                 std::int32_t* c, index_t ldc) {
  __m512i acc[MR][NV];
#pragma GCC unroll 24
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_load_si512(init + 16 * v);
  const std::uint8_t* row[MR];
#pragma GCC unroll 24
  for (int r = 0; r < MR; ++r) row[r] = rows[r];
  for (index_t s = 0; s < runs; ++s) {
    const index_t base = s * run_stride;
    for (index_t g = 0; g < run_groups; ++g, b += gemm::k_group_bytes)
      k_group<MR, NV, false>(acc, full_group{row, base + g * gemm::k_group}, b);
  }
#pragma GCC unroll 24
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_store_si512(c + r * ldc + 16 * v, acc[r][v]);
}

// The same sums with the output pipeline run on the accumulators in registers and the
// results stored straight to C (rows row0.. at stride ldc, columns col0 + [0, cols)):
// no tile buffer, stage parameters prepared once per column vector.
template <int MR, int NV, class Pipeline, class Out>
QLIB_TARGET_AVX512_VNNI __attribute__((noinline)) void conv_tile_fused(
    const std::uint8_t* const* rows, index_t runs, index_t run_groups, index_t run_stride, const std::int8_t* b,
    const std::int32_t* init, const Pipeline& pipeline_in, Out* c, index_t ldc, index_t row0, index_t col0,
    index_t cols) {
  __m512i acc[MR][NV];
#pragma GCC unroll 24
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_load_si512(init + 16 * v);
  const std::uint8_t* row[MR];
#pragma GCC unroll 24
  for (int r = 0; r < MR; ++r) row[r] = rows[r];
  for (index_t s = 0; s < runs; ++s) {
    const index_t base = s * run_stride;
    for (index_t g = 0; g < run_groups; ++g, b += gemm::k_group_bytes)
      k_group<MR, NV, false>(acc, full_group{row, base + g * gemm::k_group}, b);
  }
  const Pipeline pipeline = pipeline_in;  // a local copy: C's stores cannot alias it
  constexpr auto seq = std::make_index_sequence<std::tuple_size<Pipeline>::value>{};
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    if (cols <= 16 * v) break;
    const __mmask16 m = avx512_stages::tail_mask(cols - 16 * v);
    const auto prepared = avx512_stages::prepare_stages(pipeline, avx512_stages::lanes{row0, col0 + 16 * v, m}, seq);
#pragma GCC unroll 24
    for (int r = 0; r < MR; ++r) {
      const avx512_stages::lanes at{row0 + r, col0 + 16 * v, m};
      avx512_stages::store(c + r * ldc + 16 * v, avx512_stages::run_stages<0>(prepared, acc[r][v], at), m);
    }
  }
}

// Rows per conv tile for a panel with NV live column vectors (>= 24 accumulators but 1).
template <int NV>
constexpr int conv_tile_rows = NV == 1 ? 12 : NV == 2 ? 12 : NV == 3 ? 8 : 6;

}  // namespace avx512vnni_detail

// Int32 sums of conv_tile_rows<NV> output pixels (row pointers `rows`) x one panel's
// first 16 * NV columns into `tile` (row stride gemm::panel_width), starting from init.
struct avx512vnni_conv_kernel {
  static constexpr const char* name = "avx512vnni_u8s8_conv_implicit";
  static index_t tile_rows(index_t cols) noexcept {
    using namespace avx512vnni_detail;
    return cols <= 16 ? conv_tile_rows<1> : cols <= 32 ? conv_tile_rows<2> : cols <= 48 ? conv_tile_rows<3>
                                                                                       : conv_tile_rows<4>;
  }
  static void run(index_t cols, const std::uint8_t* const* rows, index_t runs, index_t run_groups, index_t run_stride,
                  const std::int8_t* panel, const std::int32_t* init, std::int32_t* tile) {
    using namespace avx512vnni_detail;
    if (cols <= 16) return conv_tile<conv_tile_rows<1>, 1>(rows, runs, run_groups, run_stride, panel, init, tile, gemm::panel_width);
    if (cols <= 32) return conv_tile<conv_tile_rows<2>, 2>(rows, runs, run_groups, run_stride, panel, init, tile, gemm::panel_width);
    if (cols <= 48) return conv_tile<conv_tile_rows<3>, 3>(rows, runs, run_groups, run_stride, panel, init, tile, gemm::panel_width);
    return conv_tile<conv_tile_rows<4>, 4>(rows, runs, run_groups, run_stride, panel, init, tile, gemm::panel_width);
  }
  // The fused form: C rows row0 .. row0 + tile_rows(cols) - 1 (pointers `rows`).
  template <class Pipeline, class Out>
  static void run_fused(index_t cols, const std::uint8_t* const* rows, index_t runs, index_t run_groups,
                        index_t run_stride, const std::int8_t* panel, const std::int32_t* init,
                        const Pipeline& pipeline, Out* c, index_t ldc, index_t row0, index_t col0) {
    using namespace avx512vnni_detail;
    if (cols <= 16)
      return conv_tile_fused<conv_tile_rows<1>, 1>(rows, runs, run_groups, run_stride, panel, init, pipeline, c, ldc, row0, col0, cols);
    if (cols <= 32)
      return conv_tile_fused<conv_tile_rows<2>, 2>(rows, runs, run_groups, run_stride, panel, init, pipeline, c, ldc, row0, col0, cols);
    if (cols <= 48)
      return conv_tile_fused<conv_tile_rows<3>, 3>(rows, runs, run_groups, run_stride, panel, init, pipeline, c, ldc, row0, col0, cols);
    return conv_tile_fused<conv_tile_rows<4>, 4>(rows, runs, run_groups, run_stride, panel, init, pipeline, c, ldc, row0, col0, cols);
  }
};

}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_X86_KERNELS
