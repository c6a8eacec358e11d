// Portable affine quantize/dequantize row kernels: xsimd at the build's baseline ISA.
#pragma once

#include <cstdint>
#include <xsimd/xsimd.hpp>

#include "qlib/arch/isa.hpp"
#include "qlib/core/tensor_view.hpp"
#include "qlib/quant/rounding.hpp"

// Every row kernel here and in kernels/<isa>/affine_rows.hpp has one of two forms:
//  - "grouped": n contiguous elements in groups of g; group k uses scale[k], zp[k]
//    (per-tensor is one group of n);
//  - "per_element": element j uses scale[j], zp[j].
// All follow qlib::quantize_value / dequantize_value exactly (quant/rounding.hpp).
namespace qlib {
namespace kernels {
namespace portable_detail {

using fbatch = xsimd::batch<float>;
using ibatch = xsimd::batch<std::int32_t>;
constexpr index_t lanes = static_cast<index_t>(fbatch::size);

// Quantizes one batch to int32 codes; NaN lanes become zp.
inline ibatch quantize_batch(fbatch x, fbatch inv, fbatch lo, fbatch hi, ibatch zp) noexcept {
  fbatch v = x * inv;
  v = xsimd::select(xsimd::isnan(v), fbatch(0.0f), v);
  v = xsimd::min(xsimd::max(v, lo), hi);
  return xsimd::nearbyint_as_int(v) + zp;
}

template <class Q>
void quantize_run(const float* x, Q* q, index_t n, float scale, std::int32_t zp, std::int32_t qmin,
                  std::int32_t qmax) noexcept {
  const float inv_s = 1.0f / scale;
  const fbatch inv(inv_s), lo(static_cast<float>(qmin - zp)), hi(static_cast<float>(qmax - zp));
  const ibatch vzp(zp);
  alignas(64) std::int32_t tmp[fbatch::size];
  index_t j = 0;
  for (; j + lanes <= n; j += lanes) {
    quantize_batch(fbatch::load_unaligned(x + j), inv, lo, hi, vzp).store_aligned(tmp);
    for (index_t l = 0; l < lanes; ++l) q[j + l] = static_cast<Q>(tmp[l]);
  }
  for (; j < n; ++j) q[j] = static_cast<Q>(quantize_value(x[j], inv_s, zp, qmin, qmax));
}

template <class Q>
void dequantize_run(const Q* q, float* x, index_t n, float scale, std::int32_t zp) noexcept {
  const fbatch s(scale);
  const ibatch vzp(zp);
  alignas(64) std::int32_t tmp[fbatch::size];
  index_t j = 0;
  for (; j + lanes <= n; j += lanes) {
    for (index_t l = 0; l < lanes; ++l) tmp[l] = q[j + l];
    (xsimd::batch_cast<float>(ibatch::load_aligned(tmp) - vzp) * s).store_unaligned(x + j);
  }
  for (; j < n; ++j) x[j] = dequantize_value(q[j], scale, zp);
}

inline void fake_quantize_run(const float* x, float* y, index_t n, float scale, std::int32_t zp,
                              std::int32_t qmin, std::int32_t qmax) noexcept {
  const float inv_s = 1.0f / scale;
  const fbatch inv(inv_s), s(scale), lo(static_cast<float>(qmin - zp)), hi(static_cast<float>(qmax - zp));
  const ibatch vzp(zp);
  index_t j = 0;
  for (; j + lanes <= n; j += lanes) {
    const ibatch code = quantize_batch(fbatch::load_unaligned(x + j), inv, lo, hi, vzp);
    (xsimd::batch_cast<float>(code - vzp) * s).store_unaligned(y + j);
  }
  for (; j < n; ++j) y[j] = fake_quantize_value(x[j], scale, inv_s, zp, qmin, qmax);
}

}  // namespace portable_detail

template <class Q>
void quantize_grouped(arch::portable, const float* x, Q* q, index_t n, index_t g, const float* scale,
                      const std::int32_t* zp, std::int32_t qmin, std::int32_t qmax) noexcept {
  for (index_t k = 0, j = 0; j < n; ++k, j += g)
    portable_detail::quantize_run(x + j, q + j, n - j < g ? n - j : g, scale[k], zp[k], qmin, qmax);
}

template <class Q>
void quantize_per_element(arch::portable, const float* x, Q* q, index_t n, const float* scale,
                          const std::int32_t* zp, std::int32_t qmin, std::int32_t qmax) noexcept {
  for (index_t j = 0; j < n; ++j) q[j] = static_cast<Q>(quantize_value(x[j], 1.0f / scale[j], zp[j], qmin, qmax));
}

template <class Q>
void dequantize_grouped(arch::portable, const Q* q, float* x, index_t n, index_t g, const float* scale,
                        const std::int32_t* zp) noexcept {
  for (index_t k = 0, j = 0; j < n; ++k, j += g)
    portable_detail::dequantize_run(q + j, x + j, n - j < g ? n - j : g, scale[k], zp[k]);
}

template <class Q>
void dequantize_per_element(arch::portable, const Q* q, float* x, index_t n, const float* scale,
                            const std::int32_t* zp) noexcept {
  for (index_t j = 0; j < n; ++j) x[j] = dequantize_value(q[j], scale[j], zp[j]);
}

inline void fake_quantize_grouped(arch::portable, const float* x, float* y, index_t n, index_t g,
                                  const float* scale, const std::int32_t* zp, std::int32_t qmin,
                                  std::int32_t qmax) noexcept {
  for (index_t k = 0, j = 0; j < n; ++k, j += g)
    portable_detail::fake_quantize_run(x + j, y + j, n - j < g ? n - j : g, scale[k], zp[k], qmin, qmax);
}

inline void fake_quantize_per_element(arch::portable, const float* x, float* y, index_t n, const float* scale,
                                      const std::int32_t* zp, std::int32_t qmin, std::int32_t qmax) noexcept {
  for (index_t j = 0; j < n; ++j) y[j] = fake_quantize_value(x[j], scale[j], 1.0f / scale[j], zp[j], qmin, qmax);
}

}  // namespace kernels
}  // namespace qlib
