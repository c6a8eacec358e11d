// Reference affine quantize/dequantize/fake-quantize/requantize: plain loops, the oracle.
#pragma once

#include "qlib/quant/checks.hpp"
#include "qlib/quant/param_layout.hpp"
#include "qlib/quant/params.hpp"
#include "qlib/quant/rounding.hpp"

namespace qlib {
namespace reference {

// q[i] = quantize_value(x[i]) with the parameters of element i. No SIMD, any strides.
template <class TX, class Q, std::size_t R>
void quantize(tensor_view<TX, R> x, tensor_view<Q, R> q, const quant_params& p) {
  detail::check_elementwise(x, q, "quantize");
  p.validate_for_storage<Q>(x.shape());
  detail::param_indexer<R> pi(p.gran, x.shape());
  extents<R> idx{};
  do {
    const index_t k = pi.at(idx);
    q[idx] = static_cast<Q>(quantize_value(x[idx], 1.0f / p.scale[k], p.zero_point[k], p.qmin, p.qmax));
  } while (detail::next_index(idx, x.shape()));
}

template <class TQ, class TX, std::size_t R>
void dequantize(tensor_view<TQ, R> q, tensor_view<TX, R> x, const quant_params& p) {
  detail::check_elementwise(q, x, "dequantize");
  p.validate_for_storage<std::remove_const_t<TQ>>(x.shape());
  detail::param_indexer<R> pi(p.gran, x.shape());
  extents<R> idx{};
  do {
    const index_t k = pi.at(idx);
    x[idx] = dequantize_value(q[idx], p.scale[k], p.zero_point[k]);
  } while (detail::next_index(idx, x.shape()));
}

template <class TX, class TY, std::size_t R>
void fake_quantize(tensor_view<TX, R> x, tensor_view<TY, R> y, const quant_params& p) {
  detail::check_elementwise(x, y, "fake_quantize");
  p.validate_for(x.shape());
  detail::param_indexer<R> pi(p.gran, x.shape());
  extents<R> idx{};
  do {
    const index_t k = pi.at(idx);
    y[idx] = fake_quantize_value(x[idx], p.scale[k], 1.0f / p.scale[k], p.zero_point[k], p.qmin, p.qmax);
  } while (detail::next_index(idx, x.shape()));
}

// b = quantize_pb(dequantize_pa(a)), element by element, through float.
template <class TA, class QB, std::size_t R>
void requantize(tensor_view<TA, R> a, const quant_params& pa, tensor_view<QB, R> b, const quant_params& pb) {
  detail::check_elementwise(a, b, "requantize");
  pa.validate_for_storage<std::remove_const_t<TA>>(a.shape());
  pb.validate_for_storage<QB>(b.shape());
  detail::param_indexer<R> ia(pa.gran, a.shape()), ib(pb.gran, b.shape());
  extents<R> idx{};
  do {
    const index_t i = ia.at(idx), k = ib.at(idx);
    const float real = dequantize_value(a[idx], pa.scale[i], pa.zero_point[i]);
    b[idx] = static_cast<QB>(quantize_value(real, 1.0f / pb.scale[k], pb.zero_point[k], pb.qmin, pb.qmax));
  } while (detail::next_index(idx, a.shape()));
}

}  // namespace reference
}  // namespace qlib
