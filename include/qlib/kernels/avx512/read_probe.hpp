// A plain streaming read of a buffer with zmm loads: the bandwidth bound of a memory-bound kernel (benchmarks).
#pragma once

#include <cstdint>

#include "qlib/arch/target.hpp"
#include "qlib/core/tensor_view.hpp"

#if QLIB_HAS_X86_KERNELS
#include <immintrin.h>

QLIB_KERNEL_BEGIN

namespace qlib {
namespace kernels {

// Reads `bytes` (a multiple of 256) from 64-byte aligned `p` with four independent
// XOR chains, the least work a reader of every byte can do. Returns a checksum.
QLIB_TARGET_AVX512 __attribute__((noinline)) inline std::uint64_t read_probe(const void* p, index_t bytes) {
  const auto* v = static_cast<const __m512i*>(p);
  __m512i x0 = _mm512_setzero_si512(), x1 = x0, x2 = x0, x3 = x0;
  for (index_t i = 0; i < bytes / 64; i += 4) {
    x0 = _mm512_xor_si512(x0, _mm512_load_si512(v + i));
    x1 = _mm512_xor_si512(x1, _mm512_load_si512(v + i + 1));
    x2 = _mm512_xor_si512(x2, _mm512_load_si512(v + i + 2));
    x3 = _mm512_xor_si512(x3, _mm512_load_si512(v + i + 3));
  }
  const __m512i x = _mm512_xor_si512(_mm512_xor_si512(x0, x1), _mm512_xor_si512(x2, x3));
  return static_cast<std::uint64_t>(_mm512_reduce_add_epi64(x));
}

}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_X86_KERNELS
