// gemm() argument checks, done once at the API boundary: shapes, strides, zero points, int32 overflow.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <type_traits>

#include "qlib/core/tensor_view.hpp"
#include "qlib/gemm/packed_weights.hpp"
#include "qlib/gemm/params.hpp"
#include "qlib/gemm/pipeline.hpp"

namespace qlib {
namespace gemm {

// The largest |a - za| an activation of type Act can have.
template <class Act>
std::int64_t max_abs_centered_activation(std::int32_t zero_point) noexcept {
  const std::int64_t lo = std::numeric_limits<Act>::min(), hi = std::numeric_limits<Act>::max();
  return std::max(std::llabs(lo - zero_point), std::llabs(hi - zero_point));
}

// Largest |sum_k (a - za)(b - zb)| any activations of type Act could produce with these
// weights. gemm() refuses to run when it exceeds int32 (errc::overflow). With zero
// points 0 and weights anywhere in [-128, 127] it fits up to K = 65,793 (uint8 A:
// 255 * 128 * K <= 2^31 - 1) and K = 131,071 (int8 A: 128 * 128 * K); real weights,
// being far from all -128, allow much longer K.
template <class Act>
std::int64_t accumulator_bound(std::int32_t a_zero_point, const packed_weights& w) noexcept {
  return max_abs_centered_activation<Act>(a_zero_point) * w.max_abs_column_sum();
}

namespace detail {
template <class Act, class Out, class Pipeline>
void validate_gemm(tensor_view<const Act, 2> a, const activation_params& ap, const packed_weights& w,
                   const Pipeline& pipeline, tensor_view<Out, 2> c, const gemm_options& opt) {
  QLIB_CHECK(!w.empty(), errc::invalid_argument, "gemm: the packed weights are empty (default-constructed)");
  const index_t m = a.shape(0), k = a.shape(1), n = w.n();
  QLIB_CHECK(k == w.k(), errc::shape_mismatch,
             "gemm: A is " + qlib::detail::extents_string(a.shape()) + " (M x K) but the packed weights have K = " +
                 std::to_string(w.k()));
  QLIB_CHECK(c.shape(0) == m && c.shape(1) == n, errc::shape_mismatch,
             "gemm: C is " + qlib::detail::extents_string(c.shape()) + ", expected " + std::to_string(m) + " x " +
                 std::to_string(n) + " (M x N)");
  QLIB_CHECK(k <= 1 || a.stride(1) == 1, errc::invalid_argument,
             "gemm: A's rows must be contiguous (stride(1) == 1, got " + std::to_string(a.stride(1)) +
                 "); the row stride may be anything");
  QLIB_CHECK(n <= 1 || c.stride(1) == 1, errc::invalid_argument,
             "gemm: C's rows must be contiguous (stride(1) == 1, got " + std::to_string(c.stride(1)) + ")");
  QLIB_CHECK(m <= 1 || std::llabs(c.stride(0)) >= n, errc::invalid_argument,
             "gemm: C's rows overlap (row stride " + std::to_string(c.stride(0)) + " < N = " + std::to_string(n) +
                 ")");
  QLIB_CHECK(ap.zero_point >= std::numeric_limits<Act>::min() && ap.zero_point <= std::numeric_limits<Act>::max(),
             errc::invalid_argument,
             "gemm: activation zero point " + std::to_string(ap.zero_point) + " outside the range of " +
                 (std::is_signed<Act>::value ? "int8" : "uint8"));
  QLIB_CHECK(opt.threads >= 1, errc::invalid_argument,
             "gemm: threads must be >= 1, got " + std::to_string(opt.threads));
  validate_pipeline(pipeline, m, n);
  const std::int64_t bound = accumulator_bound<Act>(ap.zero_point, w);
  QLIB_CHECK(bound <= std::numeric_limits<std::int32_t>::max(), errc::overflow,
             "gemm: int32 accumulators could overflow: K = " + std::to_string(k) + ", |a - za| up to " +
                 std::to_string(max_abs_centered_activation<Act>(ap.zero_point)) + ", max_n sum_k |b - zb| = " +
                 std::to_string(w.max_abs_column_sum()) + ", so |C| could reach " + std::to_string(bound) +
                 " > 2^31 - 1; split K into several GEMMs");
  check_pipeline_int32_range(pipeline, bound);
}
}  // namespace detail

}  // namespace gemm
}  // namespace qlib
