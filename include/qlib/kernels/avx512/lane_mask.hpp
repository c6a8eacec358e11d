// The AVX-512 mask of the first `left` of 16 lanes, shared by every AVX-512 kernel header.
#pragma once

#include "qlib/arch/target.hpp"
#include "qlib/core/tensor_view.hpp"

#if QLIB_HAS_X86_KERNELS
#include <immintrin.h>

QLIB_KERNEL_BEGIN
namespace qlib {
namespace kernels {
namespace avx512_detail {

// All 16 lanes for left >= 16, none for left <= 0.
QLIB_TARGET_AVX512 QLIB_ALWAYS_INLINE __mmask16 tail_mask(index_t left) noexcept {
  return left >= 16 ? __mmask16(0xffff) : left <= 0 ? __mmask16(0) : static_cast<__mmask16>((1u << left) - 1);
}

}  // namespace avx512_detail
}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_X86_KERNELS
