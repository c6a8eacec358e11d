// N:M sparse int8 weights (N of every M consecutive k kept per column) and sparse_gemm() on them.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "qlib/core/tensor.hpp"
#include "qlib/kernels/portable/sparse_common.hpp"
// Every kernel overload must be declared before the templates below.
#include "qlib/kernels/avx512vnni/sparse_nm_panel.hpp"
#include "qlib/kernels/portable/sparse_densified.hpp"
#include "qlib/kernels/portable/sparse_nm_panel.hpp"

// B (K x N int8, the K x N view of a layer's weights as for gemm::pack) whose zeros
// already follow an N:M pattern along K: in every group of M consecutive k of a column
// (groups start at k = 0, M * 1, M * 2, ...) at most N values are non-zero. "Zero" is
// the stored int8 0 (the real 0 for the usual zero-point-0 weights; with weight zero
// points the GEMM still equals the dense one on the stored codes, as gemm::gemm does).
// Tail rule: when M does not divide K, B counts as padded with zero rows to a multiple
// of M, so the last, shorter group may hold at most N non-zeros too.
// Supported: M in {1, 2, 4, 8}, 1 <= N <= min(M, 4) (2:4, 1:4, 2:8, 4:8, 1:2...). The
// layout (kernels/portable/sparse_nm_panel.hpp) keeps 16 * N / M values per column and
// 16 k, rounded up to a multiple of 4 (1:8 is stored like 2:8), each with a one-byte
// index: for 2:4 the values plus indices take as many bytes as the dense panels, for
// 1:4 half; the gain is compute (half or a quarter of the vpdpbusd).
namespace qlib {
namespace prune {

class packed_nm : public sparse_weight_info {
 public:
  packed_nm() = default;

  int keep() const noexcept { return n_keep_; }   // N
  int group() const noexcept { return m_group_; }  // M
  index_t window_count() const noexcept { return windows_; }
  int dwords_per_window() const noexcept { return dwords_; }
  index_t step_count() const noexcept { return windows_ * dwords_; }
  // Panel p (columns [64p, 64p + 64)), 64-byte aligned.
  const std::int8_t* panel(index_t p) const noexcept { return data_.data() + p * step_count() * nm_step_bytes; }
  index_t byte_size() const noexcept { return data_.size(); }

 private:
  friend packed_nm pack_nm(tensor_view<const std::int8_t, 2> b, int n_keep, int m_group, const quant_params& params);
  int n_keep_ = 0, m_group_ = 0, dwords_ = 0;
  index_t windows_ = 0;
  tensor<std::int8_t, 1> data_;
};

// Packs B whose zeros follow the n_keep:m_group pattern (refused with errc::invalid_argument
// naming the first column and group that has more non-zeros), with its quantization
// parameters (per_tensor or per_channel along axis 1, as gemm::pack).
inline packed_nm pack_nm(tensor_view<const std::int8_t, 2> b, int n_keep, int m_group, const quant_params& params) {
  QLIB_CHECK(m_group == 1 || m_group == 2 || m_group == 4 || m_group == 8, errc::unsupported,
             "prune::pack_nm: M = " + std::to_string(m_group) + " is not supported (M in {1, 2, 4, 8})");
  QLIB_CHECK(n_keep >= 1 && n_keep <= std::min(m_group, 4), errc::invalid_argument,
             "prune::pack_nm: N = " + std::to_string(n_keep) + " must be in [1, min(M, 4)] for M = " +
                 std::to_string(m_group));
  packed_nm w;
  w.init_info(b, params, "prune::pack_nm");
  const index_t k = b.shape(0), n = b.shape(1);
  // The pattern, checked before anything is packed.
  for (index_t j = 0; j < n; ++j)
    for (index_t k0 = 0; k0 < k; k0 += m_group) {
      int nonzero = 0;
      for (index_t kk = k0; kk < std::min(k, k0 + m_group); ++kk) nonzero += b(kk, j) != 0;
      QLIB_CHECK(nonzero <= n_keep, errc::invalid_argument,
                 "prune::pack_nm: column " + std::to_string(j) + " has " + std::to_string(nonzero) +
                     " non-zero weights at k in [" + std::to_string(k0) + ", " +
                     std::to_string(std::min(k, k0 + m_group)) + "), more than the " + std::to_string(n_keep) + ":" +
                     std::to_string(m_group) + " pattern allows");
    }
  w.n_keep_ = n_keep;
  w.m_group_ = m_group;
  w.windows_ = gemm::round_up(k, nm_window) / nm_window;
  w.dwords_ = static_cast<int>((nm_window * n_keep / m_group + 3) / 4);
  const index_t panels = w.panel_count();
  QLIB_CHECK(panels <= PTRDIFF_MAX / (w.step_count() * nm_step_bytes), errc::overflow,
             "prune::pack_nm: packed size of K x N = " + qlib::detail::extents_string(b.shape()) + " overflows");
  w.data_ = tensor<std::int8_t, 1>(extents<1>{panels * w.step_count() * nm_step_bytes});  // zero: unused slots
  [[maybe_unused]] const index_t slots = 4 * w.dwords_;  // checked by QLIB_ASSERT
  for (index_t j = 0; j < n; ++j) {
    std::int8_t* panel = w.data_.data() + (j / gemm::panel_width) * w.step_count() * nm_step_bytes;
    const index_t jc = j % gemm::panel_width;
    for (index_t win = 0; win < w.windows_; ++win) {
      const index_t at = (win + w.windows_ - nm_lane(jc) % w.windows_) % w.windows_;  // the skew: nm_skewed_window(at, jc) == win
      index_t t = 0;  // next slot; non-zeros in k order, the rest stay (value 0, index 0)
      for (index_t kk = win * nm_window; kk < std::min(k, (win + 1) * nm_window); ++kk) {
        if (b(kk, j) == 0) continue;
        QLIB_ASSERT(t < slots);
        std::int8_t* step = panel + (at * w.dwords_ + t / 4) * nm_step_bytes;
        step[4 * jc + t % 4] = b(kk, j);
        step[nm_index_offset + 4 * jc + t % 4] = static_cast<std::int8_t>(kk - win * nm_window);
        ++t;
      }
    }
  }
  return w;
}

// The most non-zeros any column of B (K x N) has in one group of m consecutive k (groups
// from k = 0; a shorter last group counts as padded with zeros; 0 for all-zero B): for
// a supported M and a result N in [1, min(M, 4)], the smallest N that pack_nm(b, N, m)
// accepts.
inline int max_nonzeros_per_group(tensor_view<const std::int8_t, 2> b, int m) {
  QLIB_CHECK(m >= 1, errc::invalid_argument, "prune::max_nonzeros_per_group: group size " + std::to_string(m) + " < 1");
  int most = 0;
  for (index_t j = 0; j < b.shape(1); ++j)
    for (index_t k0 = 0; k0 < b.shape(0); k0 += m) {
      int count = 0;
      for (index_t kk = k0; kk < std::min(b.shape(0), k0 + m); ++kk) count += b(kk, j) != 0;
      most = std::max(most, count);
    }
  return most;
}

// Packs B with per-tensor parameters scale 1, zero point 0 (plain integer weights).
inline packed_nm pack_nm(tensor_view<const std::int8_t, 2> b, int n_keep, int m_group) {
  return pack_nm(b, n_keep, m_group, quant_params(granularity::per_tensor(), -128, 127, {1.0f}, {0}));
}

// Panel p in the dense packed layout (gemm/packed_layout.hpp): round_up(K, 4) x 64
// bytes at out, zeros where nothing is kept (kernels/portable/sparse_densified.hpp).
inline void unpack_panel(const packed_nm& w, index_t p, std::int8_t* out) {
  const index_t windows = w.window_count();
  const int dwords = w.dwords_per_window();
  std::memset(out, 0, static_cast<std::size_t>(gemm::round_up(w.k(), gemm::k_group) * gemm::panel_width));
  const std::int8_t* step = w.panel(p);
  for (index_t t = 0; t < windows; ++t) {
    // lane_base[L]: the first dense byte of the window that lane L's columns hold at
    // step t (it starts at k0, a multiple of 4); index x of column j then lands at
    // lane_base[lane(j)] + 4 * j + x / 4 * 256 + x % 4. Once per window: no division
    // per column.
    std::int8_t* lane_base[4];
    for (index_t lane = 0; lane < 4; ++lane)
      lane_base[lane] = out + nm_skewed_window(t, 4 * lane, windows) * nm_window / gemm::k_group * gemm::k_group_bytes;
    for (int d = 0; d < dwords; ++d, step += nm_step_bytes) {
      const std::int8_t* values = step;
      const auto* index = reinterpret_cast<const std::uint8_t*>(step + nm_index_offset);
      for (index_t j = 0; j < gemm::panel_width; ++j) {
        std::int8_t* column = lane_base[nm_lane(j)] + 4 * j;
        for (index_t i = 4 * j; i < 4 * j + 4; ++i)  // unused slots (value 0, index 0) would overwrite k0
          if (values[i] != 0) column[(index[i] >> 2) * gemm::k_group_bytes + (index[i] & 3)] = values[i];
      }
    }
  }
}

// The dense K x N weights back (the masked B that was packed).
inline tensor<std::int8_t, 2> unpack(const packed_nm& w) { return detail::unpack_by_panels(w); }

namespace detail {
struct nm_kernel_for {
  template <class Tag>
  auto operator()(Tag tag) const {
    return kernels::sparse_nm_kernel_for(tag);
  }
};
template <class TA>
using activation_t = std::remove_const_t<TA>;
}  // namespace detail

// C = pipeline(A x B) for N:M sparse B: the semantics, checks and bits of gemm::gemm()
// on the dense B (uint8 or int8 A with any row stride, any pipeline, threads), on the
// ISA that run-time dispatch picks. AVX-512 VNNI has its own kernel, the portable ISA
// a scalar one; AVX2, AVX-VNNI and NEON run their dense kernel on each panel unpacked
// (kernels/portable/sparse_densified.hpp).
template <class TA, class Pipeline, class Out, gemm::detail::require_activation<TA> = 0>
void sparse_gemm(tensor_view<TA, 2> a, const gemm::activation_params& ap, const packed_nm& w, const Pipeline& pipeline,
                 tensor_view<Out, 2> c, const gemm::gemm_options& opt = {}) {
  const tensor_view<const detail::activation_t<TA>, 2> ca(a);
  dispatch_isa(active_isa(), [&](auto tag) {
    detail::sparse_gemm_on<detail::nm_kernel_for>("prune::sparse_gemm", tag, ca, ap, w, pipeline, c, opt);
  });
}

// int32 C = sum_k (a - za)(b - zb).
template <class TA, gemm::detail::require_activation<TA> = 0>
void sparse_gemm(tensor_view<TA, 2> a, const gemm::activation_params& ap, const packed_nm& w,
                 tensor_view<std::int32_t, 2> c, const gemm::gemm_options& opt = {}) {
  sparse_gemm(a, ap, w, std::tuple<>{}, c, opt);
}

// The same on one ISA chosen at compile time (tests); errc::unsupported if the CPU lacks it.
template <class Tag, class TA, class Pipeline, class Out, gemm::detail::require_tag<Tag> = 0,
          gemm::detail::require_activation<TA> = 0>
void sparse_gemm(Tag tag, tensor_view<TA, 2> a, const gemm::activation_params& ap, const packed_nm& w,
                 const Pipeline& pipeline, tensor_view<Out, 2> c, const gemm::gemm_options& opt = {}) {
  QLIB_CHECK(isa_supported(gemm::detail::isa_of(tag)), errc::unsupported,
             std::string("prune::sparse_gemm: this CPU cannot run ISA ") + isa_name(gemm::detail::isa_of(tag)));
  const tensor_view<const detail::activation_t<TA>, 2> ca(a);
  detail::sparse_gemm_on<detail::nm_kernel_for>("prune::sparse_gemm", tag, ca, ap, w, pipeline, c, opt);
}

// Whether N:M weights run faster than dense ones on ISA i: only with an N:M SIMD kernel
// (AVX-512 VNNI: 2:4 at 1.4x). The portable N:M kernel (scalar, an indexed load per
// kept value) measured 0.31x of the portable dense GEMM on a 32 x 512 -> 256 layer at
// 2:4, and the other ISAs unpack each panel for their dense kernel (0.8x).
inline bool sparse_nm_beats_dense(isa i) noexcept { return i == isa::avx512_vnni; }

// The name of the N:M micro-kernel that sparse_gemm() runs on ISA i.
inline const char* sparse_nm_kernel_name(isa i) {
  return dispatch_isa(i, [](auto tag) { return decltype(kernels::sparse_nm_kernel_for(tag))::name; });
}

}  // namespace prune
}  // namespace qlib
