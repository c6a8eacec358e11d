// Which parameter each element uses: per-element lookup and per-row patterns.
#pragma once

#include "qlib/core/index_iteration.hpp"
#include "qlib/quant/granularity.hpp"

namespace qlib {
namespace detail {

// The parameters of one row (the last axis): element j uses parameter
// offset + j (per_element) or offset + j / group (grouped; per-tensor is one group).
struct row_params {
  bool per_element = false;
  index_t offset = 0;
  index_t group = 1;
  index_t at(index_t j) const noexcept { return per_element ? offset + j : offset + j / group; }
};

// Maps element indices of a tensor shape to parameter indices of a granularity.
template <std::size_t Rank>
class param_indexer {
 public:
  param_indexer(const granularity& g, const extents<Rank>& shape)
      : g_(g), shape_(shape), pstrides_(row_major_strides(g.param_shape(shape))) {}

  // Parameter index of element idx.
  index_t at(const extents<Rank>& idx) const noexcept {
    switch (g_.type) {
      case granularity::kind::per_tensor: return 0;
      case granularity::kind::per_channel: return idx[axis()];
      case granularity::kind::per_group: {
        index_t off = 0;
        for (std::size_t a = 0; a < Rank; ++a)
          off += (a == g_.axis ? idx[a] / g_.group_size : idx[a]) * pstrides_[a];
        return off;
      }
    }
    return 0;
  }

  // Pattern of the row starting at idx (idx[Rank-1] == 0).
  row_params row(const extents<Rank>& idx) const noexcept {
    constexpr std::size_t last = Rank - 1;
    const index_t n = shape_[last] > 0 ? shape_[last] : 1;
    switch (g_.type) {
      case granularity::kind::per_tensor: return {false, 0, n};
      case granularity::kind::per_channel:
        return g_.axis == last ? row_params{true, 0, 1} : row_params{false, idx[axis()], n};
      case granularity::kind::per_group:
        return g_.axis == last ? row_params{false, at(idx), g_.group_size} : row_params{true, at(idx), 1};
    }
    return {};
  }

 private:
  // The validated axis (< Rank); the min() only keeps g++ 12's -Warray-bounds from
  // flagging branches it cannot prove dead.
  std::size_t axis() const noexcept { return g_.axis < Rank ? g_.axis : Rank - 1; }

  granularity g_;
  extents<Rank> shape_;
  extents<Rank> pstrides_;
};

}  // namespace detail
}  // namespace qlib
