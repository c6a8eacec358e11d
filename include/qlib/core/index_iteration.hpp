// Walking the multi-indices of a shape: next_index (odometer) and for_each_row.
#pragma once

#include "qlib/core/tensor_view.hpp"

namespace qlib {
namespace detail {

// Advances a row-major multi-index over the first `dims` axes of `shape`; false after
// the last one (the index is then back at zero).
template <std::size_t Rank>
bool next_index(extents<Rank>& idx, const extents<Rank>& shape, std::size_t dims = Rank) noexcept {
  for (std::size_t a = dims; a-- > 0;) {
    if (++idx[a] < shape[a]) return true;
    idx[a] = 0;
  }
  return false;
}

// Calls f(idx) once per row (the last axis) of `shape`, idx[Rank-1] == 0, in row-major
// order; never for an empty shape.
template <std::size_t Rank, class F>
void for_each_row(const extents<Rank>& shape, F&& f) {
  for (std::size_t a = 0; a < Rank; ++a)
    if (shape[a] == 0) return;
  extents<Rank> idx{};
  do {
    f(static_cast<const extents<Rank>&>(idx));
  } while (next_index(idx, shape, Rank - 1));
}

}  // namespace detail
}  // namespace qlib
