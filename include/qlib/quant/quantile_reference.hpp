// Reference codebook (quantile) quantize/dequantize: plain loops over the scalar definition, the oracle.
#pragma once

#include <cstdint>
#include <type_traits>

#include "qlib/quant/checks.hpp"
#include "qlib/quant/param_layout.hpp"
#include "qlib/quant/quantile_params.hpp"

namespace qlib {
namespace reference {

// idx[i] = codebook_index(x[i]) with the codebook and scale of element i's group.
template <class TX, std::size_t R>
void codebook_quantize(tensor_view<TX, R> x, tensor_view<std::uint8_t, R> idx, const codebook_params& p) {
  detail::check_elementwise(x, idx, "codebook_quantize");
  p.validate_for(x.shape());
  const detail::param_indexer<R> pi(p.gran, x.shape());
  const int L = static_cast<int>(p.levels_per_codebook());
  extents<R> i{};
  do {
    const index_t k = pi.at(i);
    idx[i] = codebook_index(x[i], 1.0f / p.scale[static_cast<std::size_t>(k)], p.thresholds_of(k), L);
  } while (detail::next_index(i, x.shape()));
}

// x[i] = levels[idx[i] & (L - 1)] * scale of element i's group.
template <class TI, class TX, std::size_t R>
void codebook_dequantize(tensor_view<TI, R> idx, tensor_view<TX, R> x, const codebook_params& p) {
  static_assert(std::is_same<std::remove_const_t<TI>, std::uint8_t>::value, "indices are uint8");
  detail::check_elementwise(idx, x, "codebook_dequantize");
  p.validate_for(x.shape());
  const detail::param_indexer<R> pi(p.gran, x.shape());
  const int L = static_cast<int>(p.levels_per_codebook());
  extents<R> i{};
  do {
    const index_t k = pi.at(i);
    x[i] = codebook_value(idx[i], p.scale[static_cast<std::size_t>(k)], p.levels_of(k), L);
  } while (detail::next_index(i, x.shape()));
}

}  // namespace reference
}  // namespace qlib
