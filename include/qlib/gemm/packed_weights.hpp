// packed_weights and pack(): int8 weights in the micro-kernels' panel layout, plus what the epilogue needs.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "qlib/core/tensor.hpp"
#include "qlib/gemm/packed_layout.hpp"
#include "qlib/quant/params.hpp"

namespace qlib {
namespace gemm {

// The weights B (K x N, int8) of C = A x B, packed once and reused by every call.
// Owns the panels (gemm/packed_layout.hpp) and carries what the output side needs:
//  - column sums sum_k B[k][n]: the driver folds them, with the activation zero point
//    and the +128 sign flip of signed activations on VNNI kernels, into a per-column
//    offset on the accumulators (per call, so one packed object serves dynamic
//    activation zero points);
//  - the weight zero points and scales (per tensor or per output channel n);
//  - max_n sum_k |B[k][n] - zb[n]|, from which gemm() proves, before it starts, that
//    no int32 accumulator can overflow (gemm/validation.hpp).
// The layout does not depend on the ISA: one packed object runs on every kernel.
class packed_weights {
 public:
  packed_weights() = default;

  index_t k() const noexcept { return k_; }
  index_t n() const noexcept { return n_; }
  index_t k_padded() const noexcept { return k_padded_; }
  index_t panel_count() const noexcept { return round_up(n_, panel_width) / panel_width; }
  bool empty() const noexcept { return n_ == 0; }

  // The packed bytes of panel p (columns [64p, 64p + 64)), 64-byte aligned.
  const std::int8_t* panel(index_t p) const noexcept { return data_.data() + p * k_padded_ * panel_width; }
  const std::int8_t* data() const noexcept { return data_.data(); }
  index_t byte_size() const noexcept { return data_.size(); }

  // sum_k B[k][n] for n in [0, N).
  const std::vector<std::int32_t>& column_sums() const noexcept { return column_sums_; }
  // Weight zero points and scales: one entry (per tensor) or N (per output channel).
  const std::vector<std::int32_t>& zero_points() const noexcept { return zero_points_; }
  const std::vector<float>& scales() const noexcept { return scales_; }
  bool per_channel() const noexcept { return zero_points_.size() > 1; }
  bool has_zero_points() const noexcept { return has_zero_points_; }
  std::int32_t zero_point(index_t n) const noexcept {
    return zero_points_[per_channel() ? static_cast<std::size_t>(n) : 0];
  }
  float scale(index_t n) const noexcept { return scales_[per_channel() ? static_cast<std::size_t>(n) : 0]; }
  // max over n of sum_k |B[k][n] - zero_point(n)|.
  std::int64_t max_abs_column_sum() const noexcept { return max_abs_column_sum_; }
  // Every code in [-64, 63] (7-bit weights): on AVX2 the driver then runs the
  // vpmaddubsw kernel, which cannot saturate with such weights
  // (kernels/avx2/gemm_panel_7bit.hpp), instead of the 16-bit widening one.
  bool fits_7_bits() const noexcept { return fits_7_bits_; }

 private:
  friend packed_weights pack(tensor_view<const std::int8_t, 2> b, const quant_params& params);

  index_t k_ = 0, n_ = 0, k_padded_ = 0;
  tensor<std::int8_t, 1> data_;
  std::vector<std::int32_t> column_sums_;
  std::vector<std::int32_t> zero_points_;
  std::vector<float> scales_;
  std::int64_t max_abs_column_sum_ = 0;
  bool has_zero_points_ = false;
  bool fits_7_bits_ = false;
};

// Packs B (K x N, any strides: pass w.transpose(0, 1) for a PyTorch-style [out, in]
// weight) with its quantization parameters: per_tensor, or per_channel along axis 1
// (the output channel n) of the K x N view. [qmin, qmax] must fit int8; the values of
// B need not lie inside it (every int8 is computed exactly).
inline packed_weights pack(tensor_view<const std::int8_t, 2> b, const quant_params& params) {
  const index_t k = b.shape(0), n = b.shape(1);
  QLIB_CHECK(k > 0 && n > 0, errc::empty_tensor,
             "gemm::pack needs non-empty weights, got K x N = " + qlib::detail::extents_string(b.shape()));
  QLIB_CHECK(params.gran.type == granularity::kind::per_tensor ||
                 (params.gran.type == granularity::kind::per_channel && params.gran.axis == 1),
             errc::unsupported,
             "gemm::pack supports per_tensor or per_channel(axis=1) weight parameters (axis 1 of the K x N view "
             "is the output channel), got " + params.gran.describe());
  params.validate_for_storage<std::int8_t>(b.shape());
  QLIB_CHECK(k <= std::numeric_limits<std::int32_t>::max() / 256 && n <= std::numeric_limits<std::int32_t>::max(),
             errc::overflow, "gemm::pack: K = " + std::to_string(k) + " is too large for int32 column sums");

  packed_weights w;
  w.k_ = k;
  w.n_ = n;
  w.k_padded_ = round_up(k, k_group);
  const index_t panels = round_up(n, panel_width) / panel_width;
  QLIB_CHECK(panels <= PTRDIFF_MAX / (w.k_padded_ * panel_width), errc::overflow,
             "gemm::pack: packed size of K x N = " + qlib::detail::extents_string(b.shape()) + " overflows");
  w.data_ = tensor<std::int8_t, 1>(extents<1>{panels * w.k_padded_ * panel_width});  // zero padding
  w.zero_points_ = params.zero_point;
  w.scales_ = params.scale;
  w.column_sums_.assign(static_cast<std::size_t>(n), 0);

  std::int8_t* out = w.data_.data();
  bool fits_7_bits = true;
  for (index_t p = 0; p < panels; ++p) {
    const index_t n0 = p * panel_width, cols = std::min(panel_width, n - n0);
    std::int8_t* panel = out + p * w.k_padded_ * panel_width;
    for (index_t j = 0; j < cols; ++j) {
      const std::int32_t zb = w.zero_point(n0 + j);
      std::int32_t sum = 0;
      std::int64_t abs_sum = 0;
      for (index_t kk = 0; kk < k; ++kk) {
        const std::int8_t v = b(kk, n0 + j);
        panel[(kk / k_group) * k_group_bytes + j * k_group + kk % k_group] = v;
        sum += v;
        abs_sum += std::abs(static_cast<std::int32_t>(v) - zb);
        fits_7_bits = fits_7_bits && v >= -64 && v <= 63;
      }
      w.column_sums_[static_cast<std::size_t>(n0 + j)] = sum;
      w.max_abs_column_sum_ = std::max(w.max_abs_column_sum_, abs_sum);
    }
  }
  w.fits_7_bits_ = fits_7_bits;
  w.has_zero_points_ = std::any_of(w.zero_points_.begin(), w.zero_points_.end(), [](std::int32_t z) { return z != 0; });
  return w;
}

// Packs B with per-tensor parameters scale 1, zero point 0 (plain integer weights).
inline packed_weights pack(tensor_view<const std::int8_t, 2> b) {
  return pack(b, quant_params(granularity::per_tensor(), -128, 127, {1.0f}, {0}));
}

}  // namespace gemm
}  // namespace qlib
