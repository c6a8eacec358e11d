// Block-sparse int8 weights (4 k x 16 column blocks, a row-pointer list per strip) and sparse_block_gemm() on them.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "qlib/core/tensor.hpp"
#include "qlib/kernels/portable/sparse_common.hpp"
// Every kernel overload must be declared before the templates below.
#include "qlib/kernels/avx512vnni/sparse_block_panel.hpp"
#include "qlib/kernels/portable/sparse_block_panel.hpp"
#include "qlib/kernels/portable/sparse_densified.hpp"

// B (K x N int8, the K x N view as for gemm::pack) is stored as the blocks of 4
// consecutive k (groups starting at k = 0, 4, 8...) x 16 consecutive columns that hold
// a non-zero; all-zero blocks are skipped (layout: kernels/portable/sparse_block_panel.hpp).
// Any B can be packed - the block structure only decides how much is skipped. Tail rule:
// B counts as padded with zeros to a multiple of 4 rows and 16 columns. The 4 x 16 block
// is the VNNI unit: a kept block costs one vpdpbusd per row, so the work falls with the
// fraction of kept blocks (about 10x less at 90% block sparsity).
namespace qlib {
namespace prune {

class packed_block : public sparse_weight_info {
 public:
  packed_block() = default;

  index_t strip_count() const noexcept { return gemm::round_up(n(), block_cols) / block_cols; }
  index_t block_count() const noexcept { return static_cast<index_t>(groups_.size()); }
  // Kept fraction of the (padded) blocks.
  double density() const noexcept {
    const index_t all = strip_count() * (gemm::round_up(k(), block_k) / block_k);
    return all > 0 ? static_cast<double>(block_count()) / static_cast<double>(all) : 0.0;
  }
  const std::vector<index_t>& strip_begin() const noexcept { return strip_begin_; }  // strip_count() + 1 entries
  const std::vector<std::int32_t>& block_groups() const noexcept { return groups_; }
  const std::int8_t* block_values() const noexcept { return values_.data(); }
  index_t byte_size() const noexcept {
    return values_.size() + static_cast<index_t>(groups_.size() * sizeof(std::int32_t) +
                                                 strip_begin_.size() * sizeof(index_t));
  }

 private:
  friend packed_block pack_block(tensor_view<const std::int8_t, 2> b, const quant_params& params);
  std::vector<index_t> strip_begin_;
  std::vector<std::int32_t> groups_;
  tensor<std::int8_t, 1> values_;
};

// Packs B with its quantization parameters (per_tensor or per_channel along axis 1).
inline packed_block pack_block(tensor_view<const std::int8_t, 2> b, const quant_params& params) {
  packed_block w;
  w.init_info(b, params, "prune::pack_block");
  const index_t k = b.shape(0), n = b.shape(1), groups = gemm::round_up(k, block_k) / block_k;
  QLIB_CHECK(groups <= INT32_MAX, errc::overflow, "prune::pack_block: K is too large");
  auto block_nonzero = [&](index_t g, index_t s) {
    for (index_t kk = g * block_k; kk < std::min(k, (g + 1) * block_k); ++kk)
      for (index_t j = s * block_cols; j < std::min(n, (s + 1) * block_cols); ++j)
        if (b(kk, j) != 0) return true;
    return false;
  };
  const index_t strips = w.strip_count();
  w.strip_begin_.assign(static_cast<std::size_t>(strips + 1), 0);
  for (index_t s = 0; s < strips; ++s) {
    for (index_t g = 0; g < groups; ++g)
      if (block_nonzero(g, s)) w.groups_.push_back(static_cast<std::int32_t>(g));
    w.strip_begin_[static_cast<std::size_t>(s + 1)] = static_cast<index_t>(w.groups_.size());
  }
  // One spare zero block keeps the buffer non-empty when nothing is kept.
  w.values_ = tensor<std::int8_t, 1>(extents<1>{(w.block_count() + 1) * block_bytes});
  for (index_t s = 0; s < strips; ++s)
    for (index_t bl = w.strip_begin_[static_cast<std::size_t>(s)]; bl < w.strip_begin_[static_cast<std::size_t>(s + 1)];
         ++bl) {
      const index_t g = w.groups_[static_cast<std::size_t>(bl)];
      std::int8_t* v = w.values_.data() + bl * block_bytes;
      for (index_t kk = g * block_k; kk < std::min(k, (g + 1) * block_k); ++kk)
        for (index_t j = s * block_cols; j < std::min(n, (s + 1) * block_cols); ++j)
          v[block_k * (j - s * block_cols) + kk - g * block_k] = b(kk, j);
    }
  return w;
}

// Packs B with per-tensor parameters scale 1, zero point 0 (plain integer weights).
inline packed_block pack_block(tensor_view<const std::int8_t, 2> b) {
  return pack_block(b, quant_params(granularity::per_tensor(), -128, 127, {1.0f}, {0}));
}

// Panel p (strips 4p..4p+3) in the dense packed layout (gemm/packed_layout.hpp):
// round_up(K, 4) x 64 bytes at out, zeros where no block is kept. A block's 64 bytes
// are its strip's 16 columns of one k group in that layout already.
inline void unpack_panel(const packed_block& w, index_t p, std::int8_t* out) {
  constexpr index_t strips_per_panel = gemm::panel_width / block_cols;
  std::memset(out, 0, static_cast<std::size_t>(gemm::round_up(w.k(), gemm::k_group) * gemm::panel_width));
  for (index_t s = p * strips_per_panel; s < std::min(w.strip_count(), (p + 1) * strips_per_panel); ++s)
    for (index_t bl = w.strip_begin()[static_cast<std::size_t>(s)]; bl < w.strip_begin()[static_cast<std::size_t>(s + 1)];
         ++bl) {
      const index_t g = w.block_groups()[static_cast<std::size_t>(bl)];
      std::memcpy(out + g * gemm::k_group_bytes + (s - p * strips_per_panel) * block_bytes,
                  w.block_values() + bl * block_bytes, static_cast<std::size_t>(block_bytes));
    }
}

// The dense K x N weights back.
inline tensor<std::int8_t, 2> unpack(const packed_block& w) { return detail::unpack_by_panels(w); }

namespace detail {
struct block_kernel_for {
  template <class Tag>
  auto operator()(Tag tag) const {
    return kernels::sparse_block_kernel_for(tag);
  }
};
}  // namespace detail

// C = pipeline(A x B) for block-sparse B: the semantics, checks and bits of gemm::gemm()
// on the dense B, on the ISA that run-time dispatch picks (AVX-512 VNNI has its own
// kernel, the portable ISA a scalar one; AVX2, AVX-VNNI and NEON run their dense kernel
// on each panel unpacked, kernels/portable/sparse_densified.hpp).
template <class TA, class Pipeline, class Out, gemm::detail::require_activation<TA> = 0>
void sparse_block_gemm(tensor_view<TA, 2> a, const gemm::activation_params& ap, const packed_block& w,
                       const Pipeline& pipeline, tensor_view<Out, 2> c, const gemm::gemm_options& opt = {}) {
  const tensor_view<const std::remove_const_t<TA>, 2> ca(a);
  dispatch_isa(active_isa(), [&](auto tag) {
    detail::sparse_gemm_on<detail::block_kernel_for>("prune::sparse_block_gemm", tag, ca, ap, w, pipeline, c, opt);
  });
}

// int32 C = sum_k (a - za)(b - zb).
template <class TA, gemm::detail::require_activation<TA> = 0>
void sparse_block_gemm(tensor_view<TA, 2> a, const gemm::activation_params& ap, const packed_block& w,
                       tensor_view<std::int32_t, 2> c, const gemm::gemm_options& opt = {}) {
  sparse_block_gemm(a, ap, w, std::tuple<>{}, c, opt);
}

// The same on one ISA chosen at compile time (tests); errc::unsupported if the CPU lacks it.
template <class Tag, class TA, class Pipeline, class Out, gemm::detail::require_tag<Tag> = 0,
          gemm::detail::require_activation<TA> = 0>
void sparse_block_gemm(Tag tag, tensor_view<TA, 2> a, const gemm::activation_params& ap, const packed_block& w,
                       const Pipeline& pipeline, tensor_view<Out, 2> c, const gemm::gemm_options& opt = {}) {
  QLIB_CHECK(isa_supported(gemm::detail::isa_of(tag)), errc::unsupported,
             std::string("prune::sparse_block_gemm: this CPU cannot run ISA ") + isa_name(gemm::detail::isa_of(tag)));
  const tensor_view<const std::remove_const_t<TA>, 2> ca(a);
  detail::sparse_gemm_on<detail::block_kernel_for>("prune::sparse_block_gemm", tag, ca, ap, w, pipeline, c, opt);
}

// The name of the block-sparse micro-kernel that ISA `i` runs.
inline const char* sparse_block_kernel_name(isa i) {
  return dispatch_isa(i, [](auto tag) { return decltype(kernels::sparse_block_kernel_for(tag))::name; });
}

}  // namespace prune
}  // namespace qlib
