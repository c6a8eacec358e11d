// Reference per-parameter min/max fold of a tensor: a plain loop over fold_minmax, the oracle.
#pragma once

#include "qlib/quant/observers/minmax_fold.hpp"
#include "qlib/quant/param_layout.hpp"

namespace qlib {
namespace reference {

// Folds every element of x into (mn[k], mx[k]) of its parameter k under granularity g
// (mn and mx hold g.param_count(x.shape()) values) and returns what it skipped. Any
// strides; an empty x changes nothing.
template <class T, std::size_t R>
nonfinite_counts fold_minmax_by_group(tensor_view<T, R> x, const granularity& g, float* mn, float* mx) {
  nonfinite_counts skipped;
  if (x.empty()) return skipped;
  const detail::param_indexer<R> pi(g, x.shape());
  extents<R> idx{};
  do {
    const index_t k = pi.at(idx);
    fold_minmax(x[idx], mn[k], mx[k], skipped);
  } while (detail::next_index(idx, x.shape()));
  return skipped;
}

}  // namespace reference
}  // namespace qlib
