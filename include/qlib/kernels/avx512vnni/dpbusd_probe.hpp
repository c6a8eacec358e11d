// A register-only loop of independent zmm vpdpbusd: measures the core's VNNI peak (benchmarks).
#pragma once

#include <cstdint>

#include "qlib/arch/target.hpp"
#include "qlib/core/tensor_view.hpp"

#if QLIB_HAS_X86_KERNELS
#include <immintrin.h>

QLIB_KERNEL_BEGIN

namespace qlib {
namespace kernels {

// Runs `iterations` x 24 vpdpbusd on 24 independent accumulators (more chains than any
// current core needs to hide the latency), with no loads or stores in the loop. Each
// vpdpbusd is 64 multiply-adds, i.e. 128 int8 ops. Returns a checksum so the work
// cannot be optimized away.
QLIB_TARGET_AVX512_VNNI __attribute__((noinline)) inline std::int32_t dpbusd_peak_probe(index_t iterations) {
  constexpr int chains = 24;
  __m512i acc[chains];
#pragma GCC unroll 24
  for (int i = 0; i < chains; ++i) acc[i] = _mm512_set1_epi32(i);
  __m512i a = _mm512_set1_epi32(0x01020304), b = _mm512_set1_epi32(0x05060708);
  for (index_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < chains; ++i) {
      acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
      // Pins each accumulator to a register: without it g++ 12 -O3 (-ftree-partial-pre)
      // keeps a stack copy of most of them inside the loop, halving the measured peak.
      __asm__("" : "+v"(acc[i]));
    }
    __asm__ volatile("" : "+v"(a), "+v"(b));  // keep the operands opaque to the compiler
  }
  __m512i sum = acc[0];
#pragma GCC unroll 24
  for (int i = 1; i < chains; ++i) sum = _mm512_add_epi32(sum, acc[i]);
  return _mm512_reduce_add_epi32(sum);
}

inline constexpr double dpbusd_probe_ops_per_iteration = 24.0 * 64.0 * 2.0;

}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_X86_KERNELS
