// Row-wise walk over a tensor with each row's parameter pattern, dense views collapsed to long rows.
#pragma once

#include "qlib/quant/param_layout.hpp"

namespace qlib {
namespace detail {

template <class T, std::size_t R, class F>
void for_each_param_row_of(tensor_view<T, R> x, const granularity& g, F& f) {
  const param_indexer<R> pi(g, x.shape());
  const index_t n = x.shape(R - 1), xs = x.stride(R - 1);
  for_each_row(x.shape(), [&](const extents<R>& idx) { f(&x[idx], xs, n, pi.row(idx)); });
}

// Calls f(row, stride, n, pattern) for every row (last axis) of a non-empty x: `row`
// points at the row's first element, `stride` is the element step along the row and
// `pattern` says which parameter each element uses (param_layout.hpp). Dense views are
// first collapsed to at most three axes [outer, axis, inner] so rows are as long as the
// parameter layout allows (one row for per-tensor, one row of whole groups for per-group
// along a divisible last axis): the same collapse as the affine kernels use.
template <class T, std::size_t R, class F>
void for_each_param_row(tensor_view<T, R> x, const granularity& g, F&& f) {
  if (x.empty()) return;
  if (!x.is_contiguous()) return for_each_param_row_of(x, g, f);
  const index_t numel = x.size();
  if (g.type == granularity::kind::per_tensor) return for_each_param_row_of(x.reshape(extents<1>{numel}), g, f);
  index_t outer = 1, inner = 1;
  for (std::size_t a = 0; a < R; ++a) {
    if (a < g.axis) outer *= x.shape(a);
    if (a > g.axis) inner *= x.shape(a);
  }
  const index_t along = x.shape(g.axis);
  granularity g1 = g;
  g1.axis = 1;
  if (inner == 1) {
    if (g.type == granularity::kind::per_group && along % g.group_size == 0)
      return for_each_param_row_of(x.reshape(extents<1>{numel}), granularity::per_group(0, g.group_size), f);
    return for_each_param_row_of(x.reshape(extents<2>{outer, along}), g1, f);
  }
  for_each_param_row_of(x.reshape(extents<3>{outer, along, inner}), g1, f);
}

// Splits a row of n elements with pattern rp into runs of one parameter each (grouped
// patterns only): calls f(start, length, parameter).
template <class F>
void for_each_group_run(const row_params& rp, index_t n, F&& f) {
  for (index_t k = 0, j = 0; j < n; ++k, j += rp.group) f(j, n - j < rp.group ? n - j : rp.group, rp.offset + k);
}

}  // namespace detail
}  // namespace qlib
