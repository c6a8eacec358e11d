// gemm(): validates once, picks the kernel of the active ISA, blocks over M and N, runs threads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <type_traits>

#include "qlib/arch/isa.hpp"
#include "qlib/core/thread_pool.hpp"
#include "qlib/gemm/packed_weights.hpp"
#include "qlib/gemm/params.hpp"
#include "qlib/gemm/pipeline.hpp"
#include "qlib/gemm/validation.hpp"
#include "qlib/gemm/zero_point_correction.hpp"
// Every kernel and epilogue overload must be declared before the templates below.
#include "qlib/kernels/avx2/gemm_panel.hpp"
#include "qlib/kernels/avx2/gemm_panel_7bit.hpp"
#include "qlib/kernels/avx2/output_stages.hpp"
#include "qlib/kernels/avx512/output_stages.hpp"
#include "qlib/kernels/avx512vnni/gemm_panel.hpp"
#include "qlib/kernels/avx_vnni/gemm_panel.hpp"
#include "qlib/kernels/neon/gemm_panel.hpp"
#include "qlib/kernels/neon/output_stages.hpp"
#include "qlib/kernels/neon_dotprod/gemm_panel.hpp"
#include "qlib/kernels/portable/gemm_panel.hpp"
#include "qlib/kernels/portable/output_stages.hpp"

// C = pipeline(A x B): A is M x K (uint8 or int8, rows contiguous, any row stride), B the
// packed K x N int8 weights, C is M x N of the pipeline's output type (rows contiguous,
// any non-overlapping row stride). The result equals gemm::reference::gemm() bit for
// bit on every ISA and for any thread count.
//
// Loop nest (B is packed once, A is read in place - no copy of the activations):
//   for each block of rows (MC rows: an MC x K slab of A stays in L2, or for long K
//     in L3: row_block_rows)
//     for each panel of 64 columns (K x 64 bytes of B, L2-resident, streamed into L1)
//       for each row tile (6 rows on AVX-512 VNNI; 8 or 12 when the panel has at most
//         48 or 32 real columns): micro-kernel over all of K, its
//         accumulators starting at the panel's zero-point corrections; then int32 C
//         is stored from the registers, any other pipeline runs on the tile.
// K is not blocked: integer sums need no K blocking for accuracy (wrapping int32 is
// exact once gemm() has proven the result fits), and the kernels keep the whole tile in
// registers across K. Measured on Zen 4 (1 MiB L2), streaming a panel from L2 costs
// nothing visible: the 6 x 64 kernel runs at 99-100% of the vpdpbusd peak on K = 1024
// panels with hot caches, and the driver at 96-99% on the M >= 128 shapes.
namespace qlib {
namespace gemm {
namespace detail {

// Rows per row block: an MC x K slab of A of about 192 KiB, a multiple of 24 rows
// (whole tiles of 4, 6, 8 or 12), at most max_row_block so that its row sums fit the
// stack, and at least min_row_block: every row block streams all of B once, so for
// long K (slab rows below 144 from K = 1366 on) the floor keeps B's traffic at most
// 1/144 byte per multiply-add, what memory can feed when B is larger than the caches
// (at K = 11008 a 24-row block needed 9.7 GB/s at the VNNI peak; 128 x 4096 x 11008
// ran at 0.33 ns per vpdpbusd, 2:4 at 0.61 ns per pair; with the floor 0.29 and 0.43).
// The slab then lives in L3, and each tile's rows stream from there beside the panel.
inline constexpr index_t max_row_block = 480;
inline constexpr index_t min_row_block = 144;
inline index_t row_block_rows(index_t k) noexcept {
  const index_t mc = (index_t{192} * 1024 / (k > 0 ? k : 1)) / 24 * 24;
  return std::min(max_row_block, std::max(min_row_block, mc));
}

// A kernel's `out` for a pipeline: f(tile_row, tile_rows, tile) runs it on a finished
// tile; cols (the panel's real columns, as in direct_int32_output) lets a kernel skip
// padded columns (AVX-512 VNNI's narrow tiles).
template <class F>
struct tile_epilogue {
  index_t cols;
  F f;
  void operator()(index_t tile_row, index_t tile_rows, const std::int32_t* tile) const { f(tile_row, tile_rows, tile); }
};

// row_sum[r] = sum_k (a[r][k] - za), wrapping int32 (used only when some zb != 0).
template <class Act>
void centered_row_sums(const Act* a, index_t lda, index_t rows, index_t k, std::int32_t za, std::int32_t* row_sum) {
  for (index_t r = 0; r < rows; ++r) {
    const Act* ar = a + r * lda;
    std::int32_t s = 0;  // |sum| <= 255 * K < 2^31 (pack() bounds K)
    for (index_t kk = 0; kk < k; ++kk) s += ar[kk];
    row_sum[r] = wrapping_sub(s, wrapping_mul(static_cast<std::int32_t>(k), za));
  }
}

// Rows [r_begin, r_end) x panels [p_begin, p_end) of C.
template <class Kernel, class Tag, class Act, class Pipeline, class Out>
void gemm_part(Tag tag, tensor_view<const Act, 2> a, std::int32_t za, const packed_weights& w,
               const Pipeline& pipeline, tensor_view<Out, 2> c, index_t r_begin, index_t r_end, index_t p_begin,
               index_t p_end) {
  const index_t k = a.shape(1), n = w.n(), lda = a.stride(0), ldc = c.stride(0);
  const std::int32_t za_kernel = za + Kernel::template activation_offset<Act>();
  const bool need_row_sums = w.has_zero_points();
  const index_t mc = row_block_rows(k);
  std::int32_t row_sum[max_row_block];
  alignas(64) std::int32_t column_offset[panel_width];
  for (index_t r0 = r_begin; r0 < r_end; r0 += mc) {
    const index_t rows = std::min(mc, r_end - r0);
    const Act* a_block = a.data() + r0 * lda;
    if (need_row_sums) centered_row_sums(a_block, lda, rows, k, za, row_sum);
    for (index_t p = p_begin; p < p_end; ++p) {
      const index_t col0 = p * panel_width, cols = std::min(panel_width, n - col0);
      // The kernels start their accumulators here (gemm/zero_point_correction.hpp).
      for (index_t j = 0; j < panel_width; ++j)
        column_offset[j] = j < cols ? wrapping_mul(-za_kernel, w.column_sums()[static_cast<std::size_t>(col0 + j)]) : 0;
      Out* c_block = c.data() + r0 * ldc + col0;
      // The output pipeline on each finished tile, C's rows at stride ldc.
      auto run_pipeline = [&](const auto& stages) {
        auto store = [&](index_t tile_row, index_t tile_rows, const std::int32_t* tile) {
          kernels::store_tile(tag, stages, tile, panel_width, tile_rows, cols, c_block + tile_row * ldc, ldc,
                              r0 + tile_row, col0);
        };
        tile_epilogue<decltype(store)> epilogue{cols, store};
        Kernel::run_panel(rows, k, a_block, lda, w.panel(p), column_offset, epilogue);
      };
      if (need_row_sums) {
        const weight_zero_point_correction correction{row_sum, r0, w.zero_points().data(), w.per_channel()};
        run_pipeline(std::tuple_cat(std::make_tuple(correction), pipeline));
      } else if constexpr (std::tuple_size<Pipeline>::value == 0) {
        kernels::direct_int32_output out{c_block, ldc, cols};  // int32 C: no epilogue at all
        Kernel::run_panel(rows, k, a_block, lda, w.panel(p), column_offset, out);
      } else {
        run_pipeline(pipeline);
      }
    }
  }
}

template <class Kernel, class Tag, class Act, class Pipeline, class Out>
void run_gemm_with(Tag tag, tensor_view<const Act, 2> a, std::int32_t za, const packed_weights& w,
                   const Pipeline& pipeline, tensor_view<Out, 2> c, const gemm_options& opt) {
  using kernel = Kernel;
  const index_t m = a.shape(0), panels = w.panel_count();
  if (m == 0) return;
  if (opt.threads == 1) return gemm_part<kernel>(tag, a, za, w, pipeline, c, 0, m, 0, panels);
  // Split panels first (each thread streams its own part of B), then rows. Any split
  // gives the same bits: every element is one kernel's wrapping int32 sum.
  const index_t threads = opt.threads;
  const index_t panel_parts = std::min(panels, threads);
  const index_t row_parts = std::max(index_t{1}, std::min((threads + panel_parts - 1) / panel_parts, (m + 5) / 6));
  auto part = [&](index_t t) {
    const index_t pp = t % panel_parts, rp = t / panel_parts;
    gemm_part<kernel>(tag, a, za, w, pipeline, c, m * rp / row_parts, m * (rp + 1) / row_parts,
                      panels * pp / panel_parts, panels * (pp + 1) / panel_parts);
  };
  parallel_executor& ex = opt.executor ? *opt.executor : default_thread_pool();
  ex.parallel_for(panel_parts * row_parts, part);
}

// The ISA's kernel, except that 7-bit weights take the vpmaddubsw kernel where the ISA
// would run the 16-bit widening AVX2 one (AVX2, and AVX-512 without VNNI).
template <class Tag, class Act, class Pipeline, class Out>
void run_gemm(Tag tag, tensor_view<const Act, 2> a, std::int32_t za, const packed_weights& w,
              const Pipeline& pipeline, tensor_view<Out, 2> c, const gemm_options& opt) {
#if QLIB_HAS_X86_KERNELS
  if constexpr (std::is_same<decltype(kernels::gemm_kernel_for(tag)), kernels::avx2_gemm_kernel>::value) {
    if (w.fits_7_bits()) return run_gemm_with<kernels::avx2_7bit_gemm_kernel>(tag, a, za, w, pipeline, c, opt);
  }
#endif
  run_gemm_with<decltype(kernels::gemm_kernel_for(tag))>(tag, a, za, w, pipeline, c, opt);
}

constexpr isa isa_of(arch::portable) noexcept { return isa::portable; }
constexpr isa isa_of(arch::avx2) noexcept { return isa::avx2; }
constexpr isa isa_of(arch::avx_vnni) noexcept { return isa::avx_vnni; }
constexpr isa isa_of(arch::avx512) noexcept { return isa::avx512; }
constexpr isa isa_of(arch::avx512_vnni) noexcept { return isa::avx512_vnni; }
constexpr isa isa_of(arch::neon) noexcept { return isa::neon; }
constexpr isa isa_of(arch::neon_dotprod) noexcept { return isa::neon_dotprod; }

template <class TA>
using activation_t = std::remove_const_t<TA>;
template <class TA>
using require_activation = std::enable_if_t<
    std::is_same<activation_t<TA>, std::uint8_t>::value || std::is_same<activation_t<TA>, std::int8_t>::value, int>;
template <class Tag>
using require_tag = std::enable_if_t<std::is_base_of<arch::portable, Tag>::value, int>;

}  // namespace detail

// C = pipeline(A x B) on the ISA that run-time dispatch picks (active_isa(); cap it
// with set_isa_limit() or the QLIB_ISA environment variable).
template <class TA, class Pipeline, class Out, detail::require_activation<TA> = 0>
void gemm(tensor_view<TA, 2> a, const activation_params& ap, const packed_weights& w, const Pipeline& pipeline,
          tensor_view<Out, 2> c, const gemm_options& opt = {}) {
  using Act = detail::activation_t<TA>;
  static_assert(std::is_same<Out, pipeline_output_t<Pipeline>>::value,
                "gemm: C's element type must be the pipeline's output type");
  const tensor_view<const Act, 2> ca(a);
  detail::validate_gemm(ca, ap, w, pipeline, c, opt);
  dispatch_isa(active_isa(), [&](auto tag) { detail::run_gemm(tag, ca, ap.zero_point, w, pipeline, c, opt); });
}

// C = A x B as int32 accumulators, sum_k (a - za)(b - zb).
template <class TA, detail::require_activation<TA> = 0>
void gemm(tensor_view<TA, 2> a, const activation_params& ap, const packed_weights& w, tensor_view<std::int32_t, 2> c,
          const gemm_options& opt = {}) {
  gemm(a, ap, w, std::tuple<>{}, c, opt);
}

// The same on one ISA chosen at compile time (static dispatch, tests): Tag is an
// arch:: tag; the CPU must support it (errc::unsupported otherwise).
template <class Tag, class TA, class Pipeline, class Out, detail::require_tag<Tag> = 0,
          detail::require_activation<TA> = 0>
void gemm(Tag tag, tensor_view<TA, 2> a, const activation_params& ap, const packed_weights& w,
          const Pipeline& pipeline, tensor_view<Out, 2> c, const gemm_options& opt = {}) {
  using Act = detail::activation_t<TA>;
  static_assert(std::is_same<Out, pipeline_output_t<Pipeline>>::value,
                "gemm: C's element type must be the pipeline's output type");
  QLIB_CHECK(isa_supported(detail::isa_of(tag)), errc::unsupported,
             std::string("gemm: this CPU cannot run ISA ") + isa_name(detail::isa_of(tag)));
  const tensor_view<const Act, 2> ca(a);
  detail::validate_gemm(ca, ap, w, pipeline, c, opt);
  detail::run_gemm(tag, ca, ap.zero_point, w, pipeline, c, opt);
}

// The name of the micro-kernel that ISA `i` runs (for logs and benchmarks).
inline const char* kernel_name(isa i) {
  return dispatch_isa(i, [](auto tag) { return decltype(kernels::gemm_kernel_for(tag))::name; });
}
// The same for these weights (7-bit weights run another kernel on AVX2).
inline const char* kernel_name(isa i, const packed_weights& w) {
  (void)w;  // only the x86 build looks at it
  return dispatch_isa(i, [&](auto tag) {
    using kernel = decltype(kernels::gemm_kernel_for(tag));
#if QLIB_HAS_X86_KERNELS
    if (std::is_same<kernel, kernels::avx2_gemm_kernel>::value && w.fits_7_bits())
      return kernels::avx2_7bit_gemm_kernel::name;
#endif
    return kernel::name;
  });
}

}  // namespace gemm
}  // namespace qlib
