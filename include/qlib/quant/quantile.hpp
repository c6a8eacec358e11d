// Quantile (codebook) quantization: validated, vectorized quantize/dequantize and packed index storage.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

#include "qlib/arch/isa.hpp"
#include "qlib/core/tensor.hpp"
#include "qlib/kernels/avx2/codebook_rows.hpp"
#include "qlib/kernels/avx512/codebook_rows.hpp"
#include "qlib/kernels/portable/codebook_rows.hpp"
#include "qlib/quant/affine.hpp"
#include "qlib/quant/observers/param_rows.hpp"
#include "qlib/quant/quantile_fit.hpp"
#include "qlib/quant/quantile_nf4.hpp"
#include "qlib/core/packed_int.hpp"
#include "qlib/quant/quantile_params.hpp"
#include "qlib/quant/quantile_reference.hpp"

// Every function here gives bit for bit the result of its counterpart in
// quant/quantile_reference.hpp, on every ISA, for any strides. Codebooks of up to 16
// levels are looked up in registers (AVX-512 vpermps, AVX2 two-register vpermps);
// larger ones use the scalar definition.
//
// Storage: indices of 4- and 2-bit codebooks are kept packed (core/packed_int.hpp layout:
// two or four per byte, lowest bits first, rows byte-aligned); other widths one per byte.
namespace qlib {
namespace detail {

struct codebook_quantize_rows {
  const codebook_params& p;
  template <class Tag>
  void operator()(Tag tag, const float* x, index_t xs, std::uint8_t* q, index_t qs, index_t n,
                  const row_params& rp) const {
    const int L = static_cast<int>(p.levels_per_codebook());
    auto inv = [&](index_t k) { return 1.0f / p.scale[static_cast<std::size_t>(k)]; };
    if (!rp.per_element && (n == 1 || (xs == 1 && qs == 1))) {
      for_each_group_run(rp, n, [&](index_t start, index_t count, index_t k) {
        kernels::codebook_quantize_run(tag, x + start, q + start, count, inv(k), p.thresholds_of(k), L);
      });
      return;
    }
    for (index_t j = 0; j < n; ++j) {
      const index_t k = rp.at(j);
      q[j * qs] = codebook_index(x[j * xs], inv(k), p.thresholds_of(k), L);
    }
  }
};

struct codebook_dequantize_rows {
  const codebook_params& p;
  template <class Tag>
  void operator()(Tag tag, const std::uint8_t* q, index_t qs, float* x, index_t xs, index_t n,
                  const row_params& rp) const {
    const int L = static_cast<int>(p.levels_per_codebook());
    if (!rp.per_element && (n == 1 || (xs == 1 && qs == 1))) {
      for_each_group_run(rp, n, [&](index_t start, index_t count, index_t k) {
        kernels::codebook_dequantize_run(tag, q + start, x + start, count, p.scale[static_cast<std::size_t>(k)],
                                         p.levels_of(k), L);
      });
      return;
    }
    for (index_t j = 0; j < n; ++j) {
      const index_t k = rp.at(j);
      x[j * xs] = codebook_value(q[j * qs], p.scale[static_cast<std::size_t>(k)], p.levels_of(k), L);
    }
  }
};

// Packs n indices (each < 2^Bits) into packed_row_bytes<Bits>(n) bytes, lowest bits first,
// padding bits zero (the core/packed_int.hpp layout).
template <int Bits>
void pack_indices(const std::uint8_t* q, index_t n, std::uint8_t* out) noexcept {
  constexpr int K = 8 / Bits;
  const index_t full = n / K;
  for (index_t b = 0; b < full; ++b) {
    unsigned byte = 0;
    for (int k = 0; k < K; ++k) byte |= static_cast<unsigned>(q[b * K + k]) << (k * Bits);
    out[b] = static_cast<std::uint8_t>(byte);
  }
  if (n % K != 0) {
    unsigned byte = 0;
    for (index_t k = 0; k < n % K; ++k) byte |= static_cast<unsigned>(q[full * K + k]) << (k * Bits);
    out[full] = static_cast<std::uint8_t>(byte);
  }
}
template <int Bits>
void unpack_indices(const std::uint8_t* in, index_t n, std::uint8_t* q) noexcept {
  constexpr int K = 8 / Bits;
  constexpr unsigned mask = (1u << Bits) - 1u;
  for (index_t j = 0; j < n; ++j) q[j] = static_cast<std::uint8_t>((in[j / K] >> ((j % K) * Bits)) & mask);
}

// Elements per chunk of a packed row (a multiple of 8, so chunks start on byte boundaries).
constexpr index_t codebook_chunk = 4096;

template <int Bits, class TX, std::size_t R, class B>
void check_packed(const tensor_view<TX, R>& x, const packed_view<Bits, false, R, B>& q, const codebook_params& p,
                  const char* op) {
  QLIB_CHECK(x.shape() == q.shape(), errc::shape_mismatch,
             std::string(op) + ": tensor shape " + extents_string(x.shape()) + " differs from packed shape " +
                 extents_string(q.shape()));
  QLIB_CHECK(!x.empty(), errc::empty_tensor, std::string(op) + ": empty tensor " + extents_string(x.shape()));
  p.validate_for(x.shape());
  QLIB_CHECK(p.bits <= Bits, errc::invalid_argument,
             std::string(op) + ": a " + std::to_string(p.bits) + "-bit codebook does not fit " + std::to_string(Bits) +
                 "-bit storage");
}

// Calls f(x_row, x_stride, packed_row, n, pattern) for every row of x / q.
template <int Bits, class TX, std::size_t R, class B, class F>
void for_each_packed_row(const tensor_view<TX, R>& x, const packed_view<Bits, false, R, B>& q, const granularity& g,
                         F&& f) {
  const param_indexer<R> pi(g, x.shape());
  const index_t n = x.shape(R - 1);
  for_each_row(x.shape(), [&](const extents<R>& idx) {
    extents<R - 1> outer{};
    for (std::size_t a = 0; a + 1 < R; ++a) outer[a] = idx[a];
    f(&x[idx], x.stride(R - 1), q.row(outer), n, pi.row(idx));
  });
}

}  // namespace detail

// idx = codebook indices of x (quant/quantile_params.hpp). Same shape, any strides,
// non-empty; p must fit x's shape.
template <class TX, std::size_t R>
void quantize_codebook(tensor_view<TX, R> x, tensor_view<std::uint8_t, R> idx, const codebook_params& p) {
  static_assert(std::is_same<std::remove_const_t<TX>, float>::value, "quantize_codebook takes a float tensor");
  detail::check_elementwise(x, idx, "quantize_codebook");
  p.validate_for(x.shape());
  detail::run_elementwise(active_isa(), detail::codebook_quantize_rows{p}, tensor_view<const float, R>(x), idx,
                          p.gran);
}

// x = levels[idx & (L - 1)] * scale, by table lookup.
template <class TI, class TX, std::size_t R>
void dequantize_codebook(tensor_view<TI, R> idx, tensor_view<TX, R> x, const codebook_params& p) {
  static_assert(std::is_same<std::remove_const_t<TI>, std::uint8_t>::value, "indices are uint8");
  static_assert(std::is_same<TX, float>::value, "dequantize_codebook writes a float tensor");
  detail::check_elementwise(idx, x, "dequantize_codebook");
  p.validate_for(x.shape());
  detail::run_elementwise(active_isa(), detail::codebook_dequantize_rows{p}, tensor_view<const std::uint8_t, R>(idx),
                          x, p.gran);
}

// Quantizes into packed Bits-wide indices (Bits 2 or 4; the codebook must have at most
// 2^Bits levels). Each row is quantized a chunk at a time into a small buffer and packed.
template <int Bits, class TX, std::size_t R>
void quantize_codebook(tensor_view<TX, R> x, const packed_view<Bits, false, R, std::uint8_t>& q,
                       const codebook_params& p) {
  static_assert(std::is_same<std::remove_const_t<TX>, float>::value, "quantize_codebook takes a float tensor");
  detail::check_packed(x, q, p, "quantize_codebook");
  const detail::codebook_quantize_rows op{p};
  alignas(64) std::uint8_t buf[detail::codebook_chunk];
  dispatch_isa(active_isa(), [&](auto tag) {
    detail::for_each_packed_row(x, q, p.gran,
                                [&](const float* xr, index_t xs, std::uint8_t* qr, index_t n, const detail::row_params& rp) {
                                  for (index_t j0 = 0; j0 < n; j0 += detail::codebook_chunk) {
                                    const index_t len = n - j0 < detail::codebook_chunk ? n - j0 : detail::codebook_chunk;
                                    detail::for_param_runs(rp, j0, len, [&](index_t s, index_t cnt, const detail::row_params& sub) {
                                      op(tag, xr + (j0 + s) * xs, xs, buf + s, 1, cnt, sub);
                                    });
                                    detail::pack_indices<Bits>(buf, len, qr + j0 / (8 / Bits));
                                  }
                                });
  });
}

// Dequantizes packed indices. 4-bit rows whose groups start on byte boundaries are looked
// up straight from the nibbles; other rows are unpacked a chunk at a time first.
template <int Bits, std::size_t R, class B, class TX>
void dequantize_codebook(const packed_view<Bits, false, R, B>& q, tensor_view<TX, R> x, const codebook_params& p) {
  static_assert(std::is_same<TX, float>::value, "dequantize_codebook writes a float tensor");
  detail::check_packed(x, q, p, "dequantize_codebook");
  const detail::codebook_dequantize_rows op{p};
  const int L = static_cast<int>(p.levels_per_codebook());
  alignas(64) std::uint8_t buf[detail::codebook_chunk];
  dispatch_isa(active_isa(), [&](auto tag) {
    detail::for_each_packed_row(x, q, p.gran,
                                [&](float* xr, index_t xs, const std::uint8_t* qr, index_t n, const detail::row_params& rp) {
                                  const bool direct = Bits == 4 && (xs == 1 || n == 1) && !rp.per_element &&
                                                      (rp.group % 2 == 0 || rp.group >= n);
                                  if (direct) {
                                    detail::for_each_group_run(rp, n, [&](index_t start, index_t count, index_t k) {
                                      kernels::codebook_dequantize_run_u4(tag, qr + start / 2, xr + start, count,
                                                                          p.scale[static_cast<std::size_t>(k)],
                                                                          p.levels_of(k), L);
                                    });
                                    return;
                                  }
                                  for (index_t j0 = 0; j0 < n; j0 += detail::codebook_chunk) {
                                    const index_t len = n - j0 < detail::codebook_chunk ? n - j0 : detail::codebook_chunk;
                                    detail::unpack_indices<Bits>(qr + j0 / (8 / Bits), len, buf);
                                    detail::for_param_runs(rp, j0, len, [&](index_t s, index_t cnt, const detail::row_params& sub) {
                                      op(tag, buf + s, 1, xr + (j0 + s) * xs, xs, cnt, sub);
                                    });
                                  }
                                });
  });
}

// Indices of a codebook-quantized tensor with its parameters: packed for 2- and 4-bit
// codebooks, one byte per index otherwise.
template <int Bits, std::size_t R>
struct codebook_tensor {
  static_assert(Bits >= 1 && Bits <= 8, "codebooks have 1 to 8 bits");
  using index_storage =
      std::conditional_t<Bits == 2 || Bits == 4, packed_tensor<Bits, false, R>, tensor<std::uint8_t, R>>;
  index_storage indices;
  codebook_params params;

  const extents<R>& shape() const noexcept { return indices.shape(); }
  tensor<float, R> dequantize() const {
    tensor<float, R> out(indices.shape());
    dequantize_codebook(indices.view(), out.view(), params);
    return out;
  }
  // Bytes of indices plus codebooks, thresholds and scales (as float32).
  index_t storage_bytes() const noexcept {
    index_t idx_bytes;
    if constexpr (Bits == 2 || Bits == 4) idx_bytes = indices.byte_size();
    else idx_bytes = indices.size();
    return idx_bytes + 4 * static_cast<index_t>(params.levels.size() + params.thresholds.size() + params.scale.size());
  }
};

// Quantizes x with given codebook parameters.
template <int Bits, class TX, std::size_t R>
codebook_tensor<Bits, R> quantize_with_codebook(tensor_view<TX, R> x, codebook_params p) {
  QLIB_CHECK(p.bits <= Bits, errc::invalid_argument,
             "a " + std::to_string(p.bits) + "-bit codebook does not fit " + std::to_string(Bits) + "-bit indices");
  codebook_tensor<Bits, R> out{typename codebook_tensor<Bits, R>::index_storage(x.shape()), std::move(p)};
  quantize_codebook(tensor_view<const float, R>(x), out.indices.view(), out.params);
  return out;
}

// Quantile quantization: fits a 2^Bits-level equal-frequency codebook per group of g
// (fit_quantile_codebook, with optional Lloyd-Max refinement) and quantizes x with it.
template <int Bits, class TX, std::size_t R>
codebook_tensor<Bits, R> quantile_quantize(tensor_view<TX, R> x, const granularity& g, int lloyd_iterations = 0) {
  return quantize_with_codebook<Bits>(x, fit_quantile_codebook(x, g, quantile_options{Bits, lloyd_iterations}));
}

// NF4: the fixed normal-float codebook with per-group absmax scales (nf4_params).
template <class TX, std::size_t R>
codebook_tensor<4, R> nf4_quantize(tensor_view<TX, R> x, const granularity& g) {
  return quantize_with_codebook<4>(x, nf4_params(x, g));
}
// NF4 with QLoRA's blocks of 64 along the last axis.
template <class TX, std::size_t R>
codebook_tensor<4, R> nf4_quantize(tensor_view<TX, R> x) {
  return nf4_quantize(x, granularity::per_group(R - 1, 64));
}

}  // namespace qlib
