// quantize_observed(): quantizes a tensor with the parameters any observer proposes for it.
#pragma once

#include <type_traits>
#include <utility>

#include "qlib/quant/affine.hpp"

namespace qlib {

// Lets `obs` observe x, then quantizes x with obs.params(scheme): the same call for
// min/max, moving-average, histogram or a user observer (observers are policies; see
// quant/observers/observer.hpp). The observer keeps its state, so it can go on to
// observe more data or be merged.
template <class Observer, class S, class TX, std::size_t R>
quantized_tensor<S, R> quantize_observed(tensor_view<TX, R> x, const affine_scheme<S>& scheme, Observer& obs) {
  static_assert(std::is_same<std::remove_const_t<TX>, float>::value, "quantize_observed takes a float tensor");
  obs.observe(tensor_view<const float, R>(x));
  quantized_tensor<S, R> out{tensor<S, R>(x.shape()), obs.params(scheme)};
  quantize(tensor_view<const float, R>(x), out.values.view(), out.params);
  return out;
}

}  // namespace qlib
