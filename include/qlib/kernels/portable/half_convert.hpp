// Portable fp16/bf16 <-> float bulk conversion kernels: scalar loops over the reference.
#pragma once

#include "qlib/arch/isa.hpp"
#include "qlib/core/half.hpp"
#include "qlib/core/tensor_view.hpp"

namespace qlib {
namespace kernels {

// Every ISA tag without a faster overload falls back to these (the tags derive from
// arch::portable). Contract for all half_convert kernels: n >= 0, src and dst valid for
// n elements and not overlapping; checked at the API boundary (core/half_convert.hpp).

inline void convert_f32_to_f16(arch::portable, const float* src, fp16* dst, index_t n) noexcept {
  for (index_t i = 0; i < n; ++i) dst[i] = fp16::from_bits(float_to_fp16_bits(src[i]));
}

inline void convert_f16_to_f32(arch::portable, const fp16* src, float* dst, index_t n) noexcept {
  for (index_t i = 0; i < n; ++i) dst[i] = fp16_bits_to_float(src[i].bits());
}

inline void convert_f32_to_bf16(arch::portable, const float* src, bf16* dst, index_t n) noexcept {
  for (index_t i = 0; i < n; ++i) dst[i] = bf16::from_bits(float_to_bf16_bits(src[i]));
}

inline void convert_bf16_to_f32(arch::portable, const bf16* src, float* dst, index_t n) noexcept {
  for (index_t i = 0; i < n; ++i) dst[i] = bf16_bits_to_float(src[i].bits());
}

}  // namespace kernels
}  // namespace qlib
