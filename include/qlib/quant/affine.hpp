// Affine quantize, dequantize, fake-quantize and requantize: validated, vectorized, dispatched.
#pragma once

#include <type_traits>

#include "qlib/arch/isa.hpp"
#include "qlib/core/tensor.hpp"
#include "qlib/kernels/avx2/affine_rows.hpp"
#include "qlib/kernels/avx512/affine_rows.hpp"
#include "qlib/kernels/portable/affine_rows.hpp"
#include "qlib/quant/checks.hpp"
#include "qlib/quant/choose_params.hpp"
#include "qlib/quant/param_layout.hpp"
#include "qlib/quant/params.hpp"

// Every function here gives bit for bit the result of its counterpart in
// quant/reference.hpp, on every ISA, for any strides. Rows whose last axis has unit
// stride go to the SIMD kernels of the active ISA (arch/isa.hpp); other rows use the
// scalar definition.
namespace qlib {
namespace detail {

// One elementwise operation over a row, given the row's parameter pattern.
template <class Q>
struct quantize_rows {
  const quant_params& p;
  template <class Tag>
  void operator()(Tag tag, const float* x, index_t xs, Q* q, index_t qs, index_t n, const row_params& rp) const {
    const float* s = p.scale.data() + rp.offset;
    const std::int32_t* z = p.zero_point.data() + rp.offset;
    if (n == 1 || (xs == 1 && qs == 1)) {
      if (rp.per_element) kernels::quantize_per_element(tag, x, q, n, s, z, p.qmin, p.qmax);
      else kernels::quantize_grouped(tag, x, q, n, rp.group, s, z, p.qmin, p.qmax);
      return;
    }
    for (index_t j = 0; j < n; ++j) {
      const index_t k = rp.at(j) - rp.offset;
      q[j * qs] = static_cast<Q>(quantize_value(x[j * xs], 1.0f / s[k], z[k], p.qmin, p.qmax));
    }
  }
};

template <class Q>
struct dequantize_rows {
  const quant_params& p;
  template <class Tag>
  void operator()(Tag tag, const Q* q, index_t qs, float* x, index_t xs, index_t n, const row_params& rp) const {
    const float* s = p.scale.data() + rp.offset;
    const std::int32_t* z = p.zero_point.data() + rp.offset;
    if (n == 1 || (xs == 1 && qs == 1)) {
      if (rp.per_element) kernels::dequantize_per_element(tag, q, x, n, s, z);
      else kernels::dequantize_grouped(tag, q, x, n, rp.group, s, z);
      return;
    }
    for (index_t j = 0; j < n; ++j) {
      const index_t k = rp.at(j) - rp.offset;
      x[j * xs] = dequantize_value(q[j * qs], s[k], z[k]);
    }
  }
};

struct fake_quantize_rows {
  const quant_params& p;
  template <class Tag>
  void operator()(Tag tag, const float* x, index_t xs, float* y, index_t ys, index_t n, const row_params& rp) const {
    const float* s = p.scale.data() + rp.offset;
    const std::int32_t* z = p.zero_point.data() + rp.offset;
    if (n == 1 || (xs == 1 && ys == 1)) {
      if (rp.per_element) kernels::fake_quantize_per_element(tag, x, y, n, s, z, p.qmin, p.qmax);
      else kernels::fake_quantize_grouped(tag, x, y, n, rp.group, s, z, p.qmin, p.qmax);
      return;
    }
    for (index_t j = 0; j < n; ++j) {
      const index_t k = rp.at(j) - rp.offset;
      y[j * ys] = fake_quantize_value(x[j * xs], s[k], 1.0f / s[k], z[k], p.qmin, p.qmax);
    }
  }
};

// Runs a row operation over every row (last axis) of two same-shape views.
template <class RowOp, class TIn, class TOut, std::size_t R>
void run_rows(isa i, const RowOp& op, tensor_view<TIn, R> in, tensor_view<TOut, R> out, const granularity& g) {
  const param_indexer<R> pi(g, in.shape());
  const index_t n = in.shape(R - 1);
  dispatch_isa(i, [&](auto tag) {
    for_each_row(in.shape(), [&](const extents<R>& idx) {
      op(tag, &in[idx], in.stride(R - 1), &out[idx], out.stride(R - 1), n, pi.row(idx));
    });
  });
}

// Dense views are first collapsed to at most three axes [outer, axis, inner], so that
// rows are as long as the parameter layout allows (one row for per-tensor; one row of
// whole groups for per-group along a divisible last axis).
template <class RowOp, class TIn, class TOut, std::size_t R>
void run_elementwise(isa i, const RowOp& op, tensor_view<TIn, R> in, tensor_view<TOut, R> out, const granularity& g) {
  if (!in.is_contiguous() || !out.is_contiguous()) return run_rows(i, op, in, out, g);
  const index_t numel = in.size();
  if (g.type == granularity::kind::per_tensor)
    return run_rows(i, op, in.reshape(extents<1>{numel}), out.reshape(extents<1>{numel}), g);
  index_t outer = 1, inner = 1;
  for (std::size_t a = 0; a < R; ++a) {
    if (a < g.axis) outer *= in.shape(a);
    if (a > g.axis) inner *= in.shape(a);
  }
  const index_t along = in.shape(g.axis);
  granularity g1 = g;
  g1.axis = 1;
  if (inner == 1) {
    if (g.type == granularity::kind::per_group && along % g.group_size == 0)
      return run_rows(i, op, in.reshape(extents<1>{numel}), out.reshape(extents<1>{numel}),
                      granularity::per_group(0, g.group_size));
    return run_rows(i, op, in.reshape(extents<2>{outer, along}), out.reshape(extents<2>{outer, along}), g1);
  }
  return run_rows(i, op, in.reshape(extents<3>{outer, along, inner}), out.reshape(extents<3>{outer, along, inner}),
                  g1);
}

// Splits [j0, j0 + len) of a row into runs that the row operations accept, calling
// f(start, count, pattern) with start relative to j0.
template <class F>
void for_param_runs(const row_params& rp, index_t j0, index_t len, F&& f) {
  if (rp.per_element) return f(index_t{0}, len, row_params{true, rp.offset + j0, 1});
  const index_t g = rp.group;
  const index_t first = g - j0 % g < len ? g - j0 % g : len;
  f(index_t{0}, first, row_params{false, rp.offset + j0 / g, first});
  if (len > first) f(first, len - first, row_params{false, rp.offset + (j0 + first) / g, g});
}

// requantize, a row at a time through a small float buffer, so that both sides use
// their vectorized kernels whatever their granularities.
template <class QA, class QB, std::size_t R>
void requantize_rows(isa i, tensor_view<const QA, R> a, const quant_params& pa, tensor_view<QB, R> b,
                     const quant_params& pb) {
  const param_indexer<R> ia(pa.gran, a.shape()), ib(pb.gran, b.shape());
  const index_t n = a.shape(R - 1), as = a.stride(R - 1), bs = b.stride(R - 1);
  constexpr index_t chunk = 1024;
  float buf[chunk];
  const dequantize_rows<QA> deq{pa};
  const quantize_rows<QB> quant{pb};
  dispatch_isa(i, [&](auto tag) {
    for_each_row(a.shape(), [&](const extents<R>& idx) {
      const row_params ra = ia.row(idx), rb = ib.row(idx);
      const QA* ar = &a[idx];
      QB* br = &b[idx];
      for (index_t j0 = 0; j0 < n; j0 += chunk) {
        const index_t len = n - j0 < chunk ? n - j0 : chunk;
        for_param_runs(ra, j0, len, [&](index_t s, index_t cnt, const row_params& sub) {
          deq(tag, ar + (j0 + s) * as, as, buf + s, 1, cnt, sub);
        });
        for_param_runs(rb, j0, len, [&](index_t s, index_t cnt, const row_params& sub) {
          quant(tag, buf + s, 1, br + (j0 + s) * bs, bs, cnt, sub);
        });
      }
    });
  });
}

template <class T>
using require_float = std::enable_if_t<std::is_same<std::remove_const_t<T>, float>::value, int>;

}  // namespace detail

// q = quantize(x) with params p (see quant/rounding.hpp for the exact definition).
// x and q: same shape, any strides, non-empty. p must fit x's shape and q's type.
template <class TX, class Q, std::size_t R, detail::require_float<TX> = 0>
void quantize(tensor_view<TX, R> x, tensor_view<Q, R> q, const quant_params& p) {
  static_assert(is_quant_storage<Q>::value, "quantize output must be int8, uint8, int16 or uint16");
  detail::check_elementwise(x, q, "quantize");
  p.validate_for_storage<Q>(x.shape());
  detail::run_elementwise(active_isa(), detail::quantize_rows<Q>{p}, tensor_view<const float, R>(x), q, p.gran);
}

// x = (q - zero_point) * scale.
template <class TQ, class TX, std::size_t R, detail::require_float<TX> = 0>
void dequantize(tensor_view<TQ, R> q, tensor_view<TX, R> x, const quant_params& p) {
  using Q = std::remove_const_t<TQ>;
  static_assert(is_quant_storage<Q>::value, "dequantize input must be int8, uint8, int16 or uint16");
  static_assert(!std::is_const<TX>::value, "dequantize writes its output");
  detail::check_elementwise(q, x, "dequantize");
  p.validate_for_storage<Q>(x.shape());
  detail::run_elementwise(active_isa(), detail::dequantize_rows<Q>{p}, tensor_view<const Q, R>(q), x, p.gran);
}

// y = dequantize(quantize(x)) in float: what inference sees. y may be x (in place).
template <class TX, class TY, std::size_t R, detail::require_float<TX> = 0, detail::require_float<TY> = 0>
void fake_quantize(tensor_view<TX, R> x, tensor_view<TY, R> y, const quant_params& p) {
  static_assert(!std::is_const<TY>::value, "fake_quantize writes its output");
  detail::check_elementwise(x, y, "fake_quantize");
  p.validate_for(x.shape());
  detail::run_elementwise(active_isa(), detail::fake_quantize_rows{p}, tensor_view<const float, R>(x), y, p.gran);
}

// b = quantize_pb(dequantize_pa(a)): moves quantized data to other parameters (another
// scale, granularity, bit width or storage type) exactly as a float round trip would.
template <class TA, class QB, std::size_t R>
void requantize(tensor_view<TA, R> a, const quant_params& pa, tensor_view<QB, R> b, const quant_params& pb) {
  using QA = std::remove_const_t<TA>;
  static_assert(is_quant_storage<QA>::value && is_quant_storage<QB>::value, "requantize works on integer storage");
  detail::check_elementwise(a, b, "requantize");
  pa.validate_for_storage<QA>(a.shape());
  pb.validate_for_storage<QB>(b.shape());
  const isa i = active_isa();
  if (a.is_contiguous() && b.is_contiguous() && pa.gran.type == granularity::kind::per_tensor &&
      pb.gran.type == granularity::kind::per_tensor) {
    const extents<1> flat{a.size()};
    return detail::requantize_rows(i, tensor_view<const QA, 1>(a.data(), flat), pa, b.reshape(flat), pb);
  }
  detail::requantize_rows(i, tensor_view<const QA, R>(a), pa, b, pb);
}

// A quantized tensor with the parameters it was made with.
template <class Q, std::size_t R>
struct quantized_tensor {
  tensor<Q, R> values;
  quant_params params;

  tensor<float, R> dequantize() const {
    tensor<float, R> out(values.shape());
    qlib::dequantize(values.cview(), out.view(), params);
    return out;
  }
};

// Chooses parameters from x's min/max per group (choose_params) and quantizes.
template <class S, class TX, std::size_t R, detail::require_float<TX> = 0>
quantized_tensor<S, R> quantize(tensor_view<TX, R> x, const affine_scheme<S>& scheme, granularity g) {
  quantized_tensor<S, R> out{tensor<S, R>(x.shape()), choose_params(x, scheme, g)};
  quantize(x, out.values.view(), out.params);
  return out;
}

}  // namespace qlib
