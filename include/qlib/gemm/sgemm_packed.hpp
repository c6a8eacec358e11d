// packed_float_weights and pack_float(): fp32 B (K x N) in the sgemm kernels' panel layout, packed once.
#pragma once

#include <algorithm>
#include <string>

#include "qlib/arch/isa.hpp"
#include "qlib/core/tensor.hpp"
#include "qlib/gemm/sgemm_params.hpp"
#include "qlib/kernels/avx2/sgemm_panel.hpp"
#include "qlib/kernels/portable/sgemm_panel.hpp"

// Layout (the same for B packed once and for the blocks sgemm() packs on the fly):
// K is cut into blocks of sgemm_k_block rows (the last one shorter), N into panels of
// sgemm_panel_width (32) columns, the last one padded with zero columns. Block kb holds
// every panel of rows [kb * 256, kb * 256 + kc), panel after panel, and each panel is
// kc rows of 32 floats:
//
//   float of B[k][n] = block(k / 256) + (n / 32) * kc * 32 + (k % 256) * 32 + n % 32,
//   block(kb) = kb * 256 * N_padded.
//
// One micro-kernel step (one k) reads one contiguous, 128-byte aligned row of a panel.
namespace qlib {
namespace gemm {

// A K-block of packed B: panel p starts at data + p * kc * 32.
struct sgemm_b_block {
  const float* data;
  index_t kc;
  const float* panel(index_t p) const noexcept { return data + p * kc * sgemm_panel_width; }
};

namespace detail {

inline index_t sgemm_padded_n(index_t n) noexcept { return (n + sgemm_panel_width - 1) / sgemm_panel_width * sgemm_panel_width; }

// Packs B[k0 : k0 + kc][n0 : n0 + nc] (any strides) into ceil(nc / 32) panels at out.
// A copy: the bits do not depend on the ISA tag (which only picks the transposing code).
template <class Tag>
void pack_b_block(Tag tag, tensor_view<const float, 2> b, index_t k0, index_t kc, index_t n0, index_t nc, float* out) {
  constexpr index_t w = sgemm_panel_width;
  const index_t ldk = b.stride(0), ldn = b.stride(1);
  if (ldn == 1) {
    // Rows of B contiguous: each row of the block is read once, front to back (one
    // prefetch stream), and copied 32 floats at a time into its row of every panel.
    const index_t panels = (nc + w - 1) / w;
    for (index_t k = 0; k < kc; ++k) {
      const float* s = b.data() + (k0 + k) * ldk + n0;
      for (index_t p = 0; p < panels; ++p) {
        float* d = out + p * kc * w + k * w;
        const index_t cols = std::min(w, nc - p * w);
        if (cols == w) {
          std::copy(s + p * w, s + p * w + w, d);
        } else {
          std::copy(s + p * w, s + p * w + cols, d);
          std::fill(d + cols, d + w, 0.0f);
        }
      }
    }
    return;
  }
  for (index_t p = 0; p * w < nc; ++p) {
    const index_t cols = std::min(w, nc - p * w);
    float* panel = out + p * kc * w;
    const float* src = b.data() + k0 * ldk + (n0 + p * w) * ldn;
    if (ldk == 1) {  // B transposed (columns contiguous)
      kernels::sgemm_pack_columns(tag, src, ldn, kc, cols, panel);
    } else {  // any other strides
      for (index_t j = 0; j < cols; ++j) {
        const float* s = src + j * ldn;
        for (index_t k = 0; k < kc; ++k) panel[k * w + j] = s[k * ldk];
      }
      for (index_t k = 0; k < kc; ++k)
        for (index_t j = cols; j < w; ++j) panel[k * w + j] = 0.0f;
    }
  }
}

}  // namespace detail

// B (K x N fp32) packed once for sgemm(): the weights of a float layer. ISA-independent.
class packed_float_weights {
 public:
  packed_float_weights() = default;

  index_t k() const noexcept { return k_; }
  index_t n() const noexcept { return n_; }
  index_t n_padded() const noexcept { return detail::sgemm_padded_n(n_); }
  index_t panel_count() const noexcept { return n_padded() / sgemm_panel_width; }
  bool empty() const noexcept { return n_ == 0; }
  // Rows of K block kb (0 <= kb < max(1, ceil(K / 256))).
  index_t block_rows(index_t kb) const noexcept { return std::min(sgemm_k_block, k_ - kb * sgemm_k_block); }
  sgemm_b_block block(index_t kb) const noexcept {
    return {data_.data() + kb * sgemm_k_block * n_padded(), block_rows(kb)};
  }
  const float* data() const noexcept { return data_.data(); }

 private:
  friend packed_float_weights pack_float(tensor_view<const float, 2> b);
  index_t k_ = 0, n_ = 0;
  tensor<float, 1> data_;
};

// Packs B (K x N, any strides: pass w.transpose(0, 1) for a PyTorch-style [out, in]
// weight). K = 0 is allowed (sgemm then writes bias only).
inline packed_float_weights pack_float(tensor_view<const float, 2> b) {
  const index_t k = b.shape(0), n = b.shape(1);
  QLIB_CHECK(n > 0, errc::empty_tensor,
             "gemm::pack_float needs N > 0, got K x N = " + qlib::detail::extents_string(b.shape()));
  const index_t np = detail::sgemm_padded_n(n);
  QLIB_CHECK(k <= PTRDIFF_MAX / np, errc::overflow,
             "gemm::pack_float: packed size of K x N = " + qlib::detail::extents_string(b.shape()) + " overflows");
  packed_float_weights w;
  w.k_ = k;
  w.n_ = n;
  w.data_ = tensor<float, 1>(extents<1>{k * np});
  dispatch_isa(active_isa(), [&](auto tag) {
    for (index_t k0 = 0; k0 < k; k0 += sgemm_k_block)
      detail::pack_b_block(tag, b, k0, std::min(sgemm_k_block, k - k0), 0, n, w.data_.data() + k0 * np);
  });
  return w;
}

}  // namespace gemm
}  // namespace qlib
