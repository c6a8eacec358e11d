// What the sparse int8 GEMMs share: the epilogue data of sparse weights, argument checks, and the blocked/threaded driver.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "qlib/arch/isa.hpp"
#include "qlib/core/tensor.hpp"
#include "qlib/gemm/driver.hpp"

// The sparse formats (prune/sparse_nm.hpp, prune/sparse_block.hpp) compute exactly what
// gemm::gemm() computes on their dense (masked) weights, with the same zero-point
// algebra (gemm/zero_point_correction.hpp): a kernel sums a'[m][k] * b[k][n] over the
// stored weights only (skipped weights are 0 and would add nothing), starting from the
// per-column offset -za' * sum_k b[k][n]; weight zero points run as the first pipeline
// stage. This header holds the parts that do not depend on the format, so the two
// formats share one driver and one set of checks (the dense ones are written for
// gemm::packed_weights and cannot take another weight type).
namespace qlib {
namespace prune {

// What the output side needs from any packed int8 weight matrix B (K x N): column sums,
// weight zero points and scales (per tensor or per output channel n), and
// max_n sum_k |B[k][n] - zb[n]| for the int32 overflow proof - the same quantities
// gemm::packed_weights carries, computed over the dense (masked) B.
class sparse_weight_info {
 public:
  index_t k() const noexcept { return k_; }
  index_t n() const noexcept { return n_; }
  bool empty() const noexcept { return n_ == 0; }
  index_t panel_count() const noexcept { return gemm::round_up(n_, gemm::panel_width) / gemm::panel_width; }
  const std::vector<std::int32_t>& column_sums() const noexcept { return column_sums_; }
  const std::vector<std::int32_t>& zero_points() const noexcept { return zero_points_; }
  const std::vector<float>& scales() const noexcept { return scales_; }
  bool per_channel() const noexcept { return zero_points_.size() > 1; }
  bool has_zero_points() const noexcept { return has_zero_points_; }
  std::int32_t zero_point(index_t n) const noexcept {
    return zero_points_[per_channel() ? static_cast<std::size_t>(n) : 0];
  }
  float scale(index_t n) const noexcept { return scales_[per_channel() ? static_cast<std::size_t>(n) : 0]; }
  std::int64_t max_abs_column_sum() const noexcept { return max_abs_column_sum_; }

 protected:
  // Checks B and its parameters as gemm::pack() does and computes the epilogue data.
  void init_info(tensor_view<const std::int8_t, 2> b, const quant_params& params, const char* who) {
    const index_t k = b.shape(0), n = b.shape(1);
    QLIB_CHECK(k > 0 && n > 0, errc::empty_tensor,
               std::string(who) + " needs non-empty weights, got K x N = " + qlib::detail::extents_string(b.shape()));
    QLIB_CHECK(params.gran.type == granularity::kind::per_tensor ||
                   (params.gran.type == granularity::kind::per_channel && params.gran.axis == 1),
               errc::unsupported,
               std::string(who) + " supports per_tensor or per_channel(axis=1) weight parameters (axis 1 of the "
                                  "K x N view is the output channel), got " + params.gran.describe());
    params.validate_for_storage<std::int8_t>(b.shape());
    QLIB_CHECK(k <= std::numeric_limits<std::int32_t>::max() / 256 && n <= std::numeric_limits<std::int32_t>::max(),
               errc::overflow, std::string(who) + ": K = " + std::to_string(k) + " is too large for int32 column sums");
    k_ = k;
    n_ = n;
    zero_points_ = params.zero_point;
    scales_ = params.scale;
    column_sums_.assign(static_cast<std::size_t>(n), 0);
    max_abs_column_sum_ = 0;
    for (index_t j = 0; j < n; ++j) {
      const std::int32_t zb = zero_point(j);
      std::int32_t sum = 0;
      std::int64_t abs_sum = 0;
      for (index_t kk = 0; kk < k; ++kk) {
        sum += b(kk, j);
        abs_sum += std::abs(static_cast<std::int32_t>(b(kk, j)) - zb);
      }
      column_sums_[static_cast<std::size_t>(j)] = sum;
      max_abs_column_sum_ = std::max(max_abs_column_sum_, abs_sum);
    }
    has_zero_points_ = std::any_of(zero_points_.begin(), zero_points_.end(), [](std::int32_t z) { return z != 0; });
  }

 private:
  index_t k_ = 0, n_ = 0;
  std::vector<std::int32_t> column_sums_;
  std::vector<std::int32_t> zero_points_;
  std::vector<float> scales_;
  std::int64_t max_abs_column_sum_ = 0;
  bool has_zero_points_ = false;
};

namespace detail {

// The dense K x N weights of a sparse format, through its unpack_panel() (the dense
// packed layout of one panel, found next to the format): one decoder per format.
template <class W>
tensor<std::int8_t, 2> unpack_by_panels(const W& w) {
  tensor<std::int8_t, 2> b({w.k(), w.n()});
  std::vector<std::int8_t> panel(static_cast<std::size_t>(gemm::round_up(w.k(), gemm::k_group) * gemm::panel_width));
  for (index_t p = 0; p < w.panel_count(); ++p) {
    unpack_panel(w, p, panel.data());
    for (index_t j = p * gemm::panel_width; j < std::min(w.n(), (p + 1) * gemm::panel_width); ++j)
      for (index_t kk = 0; kk < w.k(); ++kk) b(kk, j) = panel[static_cast<std::size_t>(gemm::packed_offset(kk, j, 0))];
  }
  return b;
}

// gemm::gemm()'s checks (gemm/validation.hpp) for sparse weights.
template <class Act, class Out, class Pipeline>
void validate_sparse_gemm(const char* who, tensor_view<const Act, 2> a, const gemm::activation_params& ap,
                          const sparse_weight_info& w, const Pipeline& pipeline, tensor_view<Out, 2> c,
                          const gemm::gemm_options& opt) {
  const std::string fn(who);
  QLIB_CHECK(!w.empty(), errc::invalid_argument, fn + ": the packed weights are empty (default-constructed)");
  const index_t m = a.shape(0), k = a.shape(1), n = w.n();
  QLIB_CHECK(k == w.k(), errc::shape_mismatch,
             fn + ": A is " + qlib::detail::extents_string(a.shape()) + " (M x K) but the packed weights have K = " +
                 std::to_string(w.k()));
  QLIB_CHECK(c.shape(0) == m && c.shape(1) == n, errc::shape_mismatch,
             fn + ": C is " + qlib::detail::extents_string(c.shape()) + ", expected " + std::to_string(m) + " x " +
                 std::to_string(n) + " (M x N)");
  QLIB_CHECK(k <= 1 || a.stride(1) == 1, errc::invalid_argument,
             fn + ": A's rows must be contiguous (stride(1) == 1, got " + std::to_string(a.stride(1)) + ")");
  QLIB_CHECK(n <= 1 || c.stride(1) == 1, errc::invalid_argument,
             fn + ": C's rows must be contiguous (stride(1) == 1, got " + std::to_string(c.stride(1)) + ")");
  QLIB_CHECK(m <= 1 || std::llabs(c.stride(0)) >= n, errc::invalid_argument,
             fn + ": C's rows overlap (row stride " + std::to_string(c.stride(0)) + " < N = " + std::to_string(n) +
                 ")");
  QLIB_CHECK(ap.zero_point >= std::numeric_limits<Act>::min() && ap.zero_point <= std::numeric_limits<Act>::max(),
             errc::invalid_argument,
             fn + ": activation zero point " + std::to_string(ap.zero_point) + " outside the range of " +
                 (std::is_signed<Act>::value ? "int8" : "uint8"));
  QLIB_CHECK(opt.threads >= 1, errc::invalid_argument, fn + ": threads must be >= 1, got " + std::to_string(opt.threads));
  gemm::validate_pipeline(pipeline, m, n);
  const std::int64_t bound = gemm::max_abs_centered_activation<Act>(ap.zero_point) * w.max_abs_column_sum();
  QLIB_CHECK(bound <= std::numeric_limits<std::int32_t>::max(), errc::overflow,
             fn + ": int32 accumulators could overflow: K = " + std::to_string(k) + ", max_n sum_k |b - zb| = " +
                 std::to_string(w.max_abs_column_sum()) + ", so |C| could reach " + std::to_string(bound) +
                 " > 2^31 - 1; split K into several GEMMs");
  gemm::check_pipeline_int32_range(pipeline, bound);
}

// Kernels that read A in their own row layout (copied_row_bytes, copy_rows) get each
// row block copied once, before its panels; the others read A where it is.
template <class Kernel, class = void>
struct copies_rows : std::false_type {};
template <class Kernel>
struct copies_rows<Kernel, std::void_t<decltype(Kernel::copied_row_bytes(index_t{}))>> : std::true_type {};

// Rows [r_begin, r_end) x panels [p_begin, p_end) of C, as gemm::detail::gemm_part but
// the kernel gets the whole weight object and the panel index:
//   Kernel::run_panel(m, k, a, lda, w, panel, column_init, out)
// with the contract of kernels/portable/gemm_panel.hpp otherwise (64-column panels,
// column_init 64-byte aligned, out a direct_int32_output or a tile epilogue); a kernel
// with copies_rows gets the copied rows and their stride as a and lda.
template <class Kernel, class Tag, class Act, class W, class Pipeline, class Out>
void sparse_gemm_part(Tag tag, tensor_view<const Act, 2> a, std::int32_t za, const W& w, const Pipeline& pipeline,
                      tensor_view<Out, 2> c, index_t r_begin, index_t r_end, index_t p_begin, index_t p_end) {
  constexpr index_t pw = gemm::panel_width;
  const index_t k = a.shape(1), n = w.n(), lda = a.stride(0), ldc = c.stride(0);
  const std::int32_t za_kernel = za + Kernel::template activation_offset<Act>();
  const bool need_row_sums = w.has_zero_points();
  const index_t mc = gemm::detail::row_block_rows(k);
  std::int32_t row_sum[gemm::detail::max_row_block];
  alignas(64) std::int32_t column_offset[pw];
  std::vector<std::uint8_t> copied;  // the row block in the kernel's layout (copies_rows)
  for (index_t r0 = r_begin; r0 < r_end; r0 += mc) {
    const index_t rows = std::min(mc, r_end - r0);
    const Act* a_block = a.data() + r0 * lda;
    if (need_row_sums) gemm::detail::centered_row_sums(a_block, lda, rows, k, za, row_sum);
    auto run_panel = [&](index_t p, auto& out) {
      if constexpr (copies_rows<Kernel>::value) {
        Kernel::run_panel(rows, k, copied.data(), Kernel::copied_row_bytes(k), w, p, column_offset, out);
      } else {
        Kernel::run_panel(rows, k, a_block, lda, w, p, column_offset, out);
      }
    };
    if constexpr (copies_rows<Kernel>::value) {
      copied.resize(static_cast<std::size_t>(rows * Kernel::copied_row_bytes(k)));
      Kernel::copy_rows(a_block, lda, rows, k, copied.data());
    }
    for (index_t p = p_begin; p < p_end; ++p) {
      const index_t col0 = p * pw, cols = std::min(pw, n - col0);
      for (index_t j = 0; j < pw; ++j)
        column_offset[j] =
            j < cols ? gemm::detail::wrapping_mul(-za_kernel, w.column_sums()[static_cast<std::size_t>(col0 + j)]) : 0;
      Out* c_block = c.data() + r0 * ldc + col0;
      auto run_pipeline = [&](const auto& stages) {
        auto store = [&](index_t tile_row, index_t tile_rows, const std::int32_t* tile) {
          kernels::store_tile(tag, stages, tile, pw, tile_rows, cols, c_block + tile_row * ldc, ldc, r0 + tile_row,
                              col0);
        };
        gemm::detail::tile_epilogue<decltype(store)> epilogue{cols, store};
        run_panel(p, epilogue);
      };
      if (need_row_sums) {
        const gemm::weight_zero_point_correction correction{row_sum, r0, w.zero_points().data(), w.per_channel()};
        run_pipeline(std::tuple_cat(std::make_tuple(correction), pipeline));
      } else if constexpr (std::tuple_size<Pipeline>::value == 0) {
        kernels::direct_int32_output out{c_block, ldc, cols};
        run_panel(p, out);
      } else {
        run_pipeline(pipeline);
      }
    }
  }
}

// Splits C over threads as gemm() does (panels first, then rows); any split gives the
// same bits.
template <class Kernel, class Tag, class Act, class W, class Pipeline, class Out>
void run_sparse_gemm(Tag tag, tensor_view<const Act, 2> a, std::int32_t za, const W& w, const Pipeline& pipeline,
                     tensor_view<Out, 2> c, const gemm::gemm_options& opt) {
  const index_t m = a.shape(0), panels = w.panel_count();
  if (m == 0) return;
  if (opt.threads == 1) return sparse_gemm_part<Kernel>(tag, a, za, w, pipeline, c, 0, m, 0, panels);
  const index_t threads = opt.threads;
  const index_t panel_parts = std::min(panels, threads);
  const index_t row_parts = std::max(index_t{1}, std::min((threads + panel_parts - 1) / panel_parts, (m + 5) / 6));
  auto part = [&](index_t t) {
    const index_t pp = t % panel_parts, rp = t / panel_parts;
    sparse_gemm_part<Kernel>(tag, a, za, w, pipeline, c, m * rp / row_parts, m * (rp + 1) / row_parts,
                             panels * pp / panel_parts, panels * (pp + 1) / panel_parts);
  };
  parallel_executor& ex = opt.executor ? *opt.executor : default_thread_pool();
  ex.parallel_for(panel_parts * row_parts, part);
}

// The public entry points of both formats: validate, then run on `tag` (KernelFor maps
// a tag to the format's kernel descriptor).
template <class KernelFor, class Tag, class Act, class W, class Pipeline, class Out>
void sparse_gemm_on(const char* who, Tag tag, tensor_view<const Act, 2> a, const gemm::activation_params& ap,
                    const W& w, const Pipeline& pipeline, tensor_view<Out, 2> c, const gemm::gemm_options& opt) {
  static_assert(std::is_same<Out, gemm::pipeline_output_t<Pipeline>>::value,
                "sparse gemm: C's element type must be the pipeline's output type");
  validate_sparse_gemm(who, a, ap, w, pipeline, c, opt);
  using kernel = decltype(KernelFor{}(tag));
  run_sparse_gemm<kernel>(tag, a, ap.zero_point, w, pipeline, c, opt);
}

}  // namespace detail
}  // namespace prune
}  // namespace qlib
