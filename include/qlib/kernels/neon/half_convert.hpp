// NEON (AArch64) fp16/bf16 <-> float bulk conversion kernels (4/8 lanes, scalar tail).
#pragma once

#include <cstdint>

#include "qlib/arch/target.hpp"
#include "qlib/kernels/portable/half_convert.hpp"

#if QLIB_HAS_ARM_KERNELS
#include <arm_neon.h>

namespace qlib {
namespace kernels {
namespace neon_detail {

// FCVT between half and single follows FPCR: rounding mode, flush-to-zero (FZ, FZ16),
// default-NaN (DN) and the alternative half format (AHP) would all change the results,
// and enabled traps could fire. The guard clears those bits for the duration of a kernel
// (only if any is set) and restores the caller's FPCR afterwards, so the kernels match
// the reference whatever the FP environment.
class fpcr_guard {
 public:
  static constexpr std::uint64_t mask = (1ull << 26) | (1ull << 25) | (1ull << 24) |
                                        (3ull << 22) | (1ull << 19) | (0x1Full << 8) |
                                        (1ull << 15);
  fpcr_guard() noexcept {
    __asm__ volatile("mrs %0, fpcr" : "=r"(saved_) : : "memory");
    if (saved_ & mask) write(saved_ & ~mask);
  }
  ~fpcr_guard() {
    if (saved_ & mask) write(saved_);
  }
  fpcr_guard(const fpcr_guard&) = delete;
  fpcr_guard& operator=(const fpcr_guard&) = delete;

 private:
  static void write(std::uint64_t v) noexcept { __asm__ volatile("msr fpcr, %0" : : "r"(v) : "memory"); }
  std::uint64_t saved_;
};

// 4 floats (as bits) -> 4 bf16: round to nearest even, NaN lanes quieted instead.
inline uint16x4_t bf16_round4(uint32x4_t u) noexcept {
  const uint32x4_t lsb = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1));
  const uint32x4_t r = vaddq_u32(vaddq_u32(u, vdupq_n_u32(0x7FFF)), lsb);
  const uint32x4_t nan = vcgtq_u32(vandq_u32(u, vdupq_n_u32(0x7FFFFFFF)), vdupq_n_u32(0x7F800000));
  const uint32x4_t q = vorrq_u32(u, vdupq_n_u32(0x00400000));
  return vshrn_n_u32(vbslq_u32(nan, q, r), 16);
}

}  // namespace neon_detail

QLIB_TARGET_NEON inline void convert_f32_to_f16(arch::neon, const float* src, fp16* dst,
                                                index_t n) noexcept {
  neon_detail::fpcr_guard guard;
  index_t i = 0;
  std::uint16_t* d = reinterpret_cast<std::uint16_t*>(dst);
  for (; i + 8 <= n; i += 8) {
    const float16x4_t h0 = vcvt_f16_f32(vld1q_f32(src + i));
    const float16x4_t h1 = vcvt_f16_f32(vld1q_f32(src + i + 4));
    vst1q_u16(d + i, vcombine_u16(vreinterpret_u16_f16(h0), vreinterpret_u16_f16(h1)));
  }
  for (; i < n; ++i) dst[i] = fp16::from_bits(float_to_fp16_bits(src[i]));
}

QLIB_TARGET_NEON inline void convert_f16_to_f32(arch::neon, const fp16* src, float* dst,
                                                index_t n) noexcept {
  neon_detail::fpcr_guard guard;
  index_t i = 0;
  const std::uint16_t* s = reinterpret_cast<const std::uint16_t*>(src);
  for (; i + 8 <= n; i += 8) {
    const uint16x8_t h = vld1q_u16(s + i);
    vst1q_f32(dst + i, vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(h))));
    vst1q_f32(dst + i + 4, vcvt_f32_f16(vreinterpret_f16_u16(vget_high_u16(h))));
  }
  for (; i < n; ++i) dst[i] = fp16_bits_to_float(src[i].bits());
}

// Integer emulation of the reference rounding: exact for every input, FPCR-independent.
QLIB_TARGET_NEON inline void convert_f32_to_bf16(arch::neon, const float* src, bf16* dst,
                                                 index_t n) noexcept {
  index_t i = 0;
  std::uint16_t* d = reinterpret_cast<std::uint16_t*>(dst);
  for (; i + 8 <= n; i += 8) {
    const uint16x4_t b0 = neon_detail::bf16_round4(vreinterpretq_u32_f32(vld1q_f32(src + i)));
    const uint16x4_t b1 = neon_detail::bf16_round4(vreinterpretq_u32_f32(vld1q_f32(src + i + 4)));
    vst1q_u16(d + i, vcombine_u16(b0, b1));
  }
  for (; i < n; ++i) dst[i] = bf16::from_bits(float_to_bf16_bits(src[i]));
}

QLIB_TARGET_NEON inline void convert_bf16_to_f32(arch::neon, const bf16* src, float* dst,
                                                 index_t n) noexcept {
  index_t i = 0;
  const std::uint16_t* s = reinterpret_cast<const std::uint16_t*>(src);
  for (; i + 8 <= n; i += 8) {
    const uint16x8_t b = vld1q_u16(s + i);
    vst1q_f32(dst + i, vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(b), 16)));
    vst1q_f32(dst + i + 4, vreinterpretq_f32_u32(vshll_n_u16(vget_high_u16(b), 16)));
  }
  for (; i < n; ++i) dst[i] = bf16_bits_to_float(src[i].bits());
}

}  // namespace kernels
}  // namespace qlib

#endif  // QLIB_HAS_ARM_KERNELS
