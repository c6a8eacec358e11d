// Bulk float <-> fp16/bf16 conversion over views or pointer+count, dispatched at run time.
#pragma once

#include <cstdint>
#include <string>

#include "qlib/arch/isa.hpp"
#include "qlib/core/half.hpp"
#include "qlib/core/tensor_view.hpp"
#include "qlib/kernels/avx2/half_convert.hpp"
#include "qlib/kernels/avx512/half_convert.hpp"
#include "qlib/kernels/neon/half_convert.hpp"
#include "qlib/kernels/portable/half_convert.hpp"

namespace qlib {

// Every function here converts element i of src into element i of dst, with exactly the
// results of the scalar reference in core/half.hpp (round to nearest even, subnormals
// kept, NaN kept NaN), whichever ISA runs it and whatever the FP environment.
//
// Validation (errc):
//   - pointer overloads: n < 0, or a null src/dst with n > 0   -> invalid_argument;
//   - view overloads: src.size() != dst.size()                 -> shape_mismatch;
//   - src and dst memory overlapping (in-place conversion)       -> invalid_argument.
// n == 0 (or empty views) is a no-op. Views may have any stride (unit-stride views take
// the SIMD kernels, others a scalar loop).
//
// Dispatch: qlib::active_isa() (so set_isa_limit / QLIB_ISA apply), to the overloads in
// kernels/<isa>/half_convert.hpp; call those directly to run one ISA's kernel.

namespace detail {

inline bool byte_ranges_overlap(const void* a, std::size_t a_bytes, const void* b,
                                std::size_t b_bytes) noexcept {
  const std::uintptr_t pa = reinterpret_cast<std::uintptr_t>(a);
  const std::uintptr_t pb = reinterpret_cast<std::uintptr_t>(b);
  return a_bytes != 0 && b_bytes != 0 && pa < pb + b_bytes && pb < pa + a_bytes;
}

template <class S, class D>
void check_half_args(const S* src, const D* dst, index_t n, const char* fn) {
  QLIB_CHECK(n >= 0, errc::invalid_argument,
             std::string(fn) + ": negative element count " + std::to_string(n));
  QLIB_CHECK(n == 0 || (src != nullptr && dst != nullptr), errc::invalid_argument,
             std::string(fn) + ": null " + (src == nullptr ? "src" : "dst") + " pointer for " +
                 std::to_string(n) + " elements");
  const std::size_t un = static_cast<std::size_t>(n);
  QLIB_CHECK(!byte_ranges_overlap(src, un * sizeof(S), dst, un * sizeof(D)),
             errc::invalid_argument, std::string(fn) + ": src and dst overlap");
}

// The lowest and one-past-highest byte a 1-D view touches, as addresses (may wrap for
// negative strides; only compared, never dereferenced).
template <class T>
void view_byte_range(const tensor_view<T, 1>& v, std::uintptr_t& lo, std::uintptr_t& hi) noexcept {
  const index_t last = (v.size() - 1) * v.stride(0);
  const index_t first_el = last < 0 ? last : 0;
  const index_t last_el = last < 0 ? 0 : last;
  const std::uintptr_t base = reinterpret_cast<std::uintptr_t>(v.data());
  lo = base + static_cast<std::uintptr_t>(first_el * static_cast<index_t>(sizeof(T)));
  hi = base + static_cast<std::uintptr_t>((last_el + 1) * static_cast<index_t>(sizeof(T)));
}

template <class S, class D>
void check_half_views(const tensor_view<S, 1>& src, const tensor_view<D, 1>& dst, const char* fn) {
  QLIB_CHECK(src.size() == dst.size(), errc::shape_mismatch,
             std::string(fn) + ": src has " + std::to_string(src.size()) + " elements, dst " +
                 std::to_string(dst.size()));
  if (src.size() == 0) return;
  std::uintptr_t slo, shi, dlo, dhi;
  view_byte_range(src, slo, shi);
  view_byte_range(dst, dlo, dhi);
  QLIB_CHECK(!(slo < dhi && dlo < shi), errc::invalid_argument,
             std::string(fn) + ": src and dst overlap");
}

// fp16 kernels on x86 need F16C besides the ISA's base features.
inline isa half_isa(bool needs_f16c) noexcept {
  const isa i = active_isa();
#if QLIB_ARCH_X86_64
  if (needs_f16c && i != isa::portable && !cpu().f16c) return isa::portable;
#else
  (void)needs_f16c;
#endif
  return i;
}

}  // namespace detail

// ---- pointer + count --------------------------------------------------------------

inline void float_to_fp16(const float* src, fp16* dst, index_t n) {
  detail::check_half_args(src, dst, n, "float_to_fp16");
  if (n == 0) return;
  dispatch_isa(detail::half_isa(true),
               [&](auto tag) { kernels::convert_f32_to_f16(tag, src, dst, n); });
}

inline void fp16_to_float(const fp16* src, float* dst, index_t n) {
  detail::check_half_args(src, dst, n, "fp16_to_float");
  if (n == 0) return;
  dispatch_isa(detail::half_isa(true),
               [&](auto tag) { kernels::convert_f16_to_f32(tag, src, dst, n); });
}

inline void float_to_bf16(const float* src, bf16* dst, index_t n) {
  detail::check_half_args(src, dst, n, "float_to_bf16");
  if (n == 0) return;
  dispatch_isa(detail::half_isa(false),
               [&](auto tag) { kernels::convert_f32_to_bf16(tag, src, dst, n); });
}

inline void bf16_to_float(const bf16* src, float* dst, index_t n) {
  detail::check_half_args(src, dst, n, "bf16_to_float");
  if (n == 0) return;
  dispatch_isa(detail::half_isa(false),
               [&](auto tag) { kernels::convert_bf16_to_f32(tag, src, dst, n); });
}

// ---- 1-D views (any stride) -------------------------------------------------------

inline void float_to_fp16(tensor_view<const float, 1> src, tensor_view<fp16, 1> dst) {
  detail::check_half_views(src, dst, "float_to_fp16");
  if (src.is_contiguous() && dst.is_contiguous()) return float_to_fp16(src.data(), dst.data(), src.size());
  for (index_t i = 0; i < src.size(); ++i) dst(i) = fp16::from_bits(float_to_fp16_bits(src(i)));
}

inline void fp16_to_float(tensor_view<const fp16, 1> src, tensor_view<float, 1> dst) {
  detail::check_half_views(src, dst, "fp16_to_float");
  if (src.is_contiguous() && dst.is_contiguous()) return fp16_to_float(src.data(), dst.data(), src.size());
  for (index_t i = 0; i < src.size(); ++i) dst(i) = fp16_bits_to_float(src(i).bits());
}

inline void float_to_bf16(tensor_view<const float, 1> src, tensor_view<bf16, 1> dst) {
  detail::check_half_views(src, dst, "float_to_bf16");
  if (src.is_contiguous() && dst.is_contiguous()) return float_to_bf16(src.data(), dst.data(), src.size());
  for (index_t i = 0; i < src.size(); ++i) dst(i) = bf16::from_bits(float_to_bf16_bits(src(i)));
}

inline void bf16_to_float(tensor_view<const bf16, 1> src, tensor_view<float, 1> dst) {
  detail::check_half_views(src, dst, "bf16_to_float");
  if (src.is_contiguous() && dst.is_contiguous()) return bf16_to_float(src.data(), dst.data(), src.size());
  for (index_t i = 0; i < src.size(); ++i) dst(i) = bf16_bits_to_float(src(i).bits());
}

}  // namespace qlib
