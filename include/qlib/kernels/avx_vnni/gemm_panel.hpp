// AVX-VNNI int8 GEMM panel kernel: ymm vpdpbusd (VEX), 6 x 16 tiles (u8/s8 activations x s8 weights), and its EVEX test twin.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "qlib/arch/target.hpp"
#include "qlib/kernels/portable/gemm_panel.hpp"

#if QLIB_HAS_X86_KERNELS
#include <immintrin.h>

QLIB_KERNEL_BEGIN

// Contract: kernels/portable/gemm_panel.hpp. For CPUs with AVX-VNNI but no AVX-512
// (Alder Lake and later client cores, Zen 5 client parts). As on AVX-512 VNNI, signed
// activations are flipped to unsigned with XOR 0x80 (activation_offset 128).
// Tile: 6 rows x 16 columns = 12 ymm accumulators + 2 of B + 1 of A (the flip is an XOR
// on the scalar before the broadcast) = 15 of 16 registers; vpdpbusd ymm has a latency of 4-5 cycles at 2 per cycle on those
// cores, so 12 chains keep it busy. A panel is 4 such column strips.
namespace qlib {
namespace kernels {
namespace avx_vnni_detail {

QLIB_ALWAYS_INLINE std::int32_t load_bytes4(const std::uint8_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline std::int32_t load_tail_bytes(const std::uint8_t* p, index_t n) {
  std::uint32_t v = 0;
  std::memcpy(&v, p, static_cast<std::size_t>(n));
  return static_cast<std::int32_t>(v);
}

// The kernel proper: VEX-encoded vpdpbusd, compiled for AVX-VNNI only (no AVX-512
// instruction can slip in).
namespace vex {
#define QLIB_YMM_VNNI_TARGET QLIB_TARGET_AVX_VNNI
#define QLIB_YMM_DPBUSD _mm256_dpbusd_avx_epi32
#include "qlib/kernels/avx_vnni/gemm_panel_body.inc"
#undef QLIB_YMM_DPBUSD
#undef QLIB_YMM_VNNI_TARGET
}  // namespace vex

// Its twin: the same source with the EVEX encoding (AVX-512 VNNI + VL), so that CPUs with
// AVX-512 VNNI but no AVX-VNNI (Zen 4, Ice Lake, Sapphire Rapids servers) can test every
// line of the kernel; only the instruction encoding differs.
namespace evex {
#define QLIB_YMM_VNNI_TARGET QLIB_TARGET_AVX512_VNNI
#define QLIB_YMM_DPBUSD _mm256_dpbusd_epi32
#include "qlib/kernels/avx_vnni/gemm_panel_body.inc"
#undef QLIB_YMM_DPBUSD
#undef QLIB_YMM_VNNI_TARGET
}  // namespace evex

}  // namespace avx_vnni_detail

template <bool Evex>
struct ymm_vnni_gemm_kernel {
  static constexpr const char* name = Evex ? "avxvnni_x8s8_6x16c4_evex" : "avxvnni_x8s8_6x16c4";
  template <class Act>
  static constexpr std::int32_t activation_offset() noexcept {
    return std::is_signed<Act>::value ? 128 : 0;
  }
  template <class Act, class Output>
  static void run_panel(index_t m, index_t k, const Act* a, index_t lda, const std::int8_t* panel,
                        const std::int32_t* column_init, Output& out) {
    alignas(64) std::int32_t tile[6 * gemm::panel_width];
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(a);
    constexpr bool flip = std::is_signed<Act>::value;
    for_each_row_tile(m, 6, [&](index_t r0, index_t rows) {
      if constexpr (Evex)
        avx_vnni_detail::evex::run_tile<flip>(rows, k, bytes + r0 * lda, lda, panel, column_init, tile);
      else
        avx_vnni_detail::vex::run_tile<flip>(rows, k, bytes + r0 * lda, lda, panel, column_init, tile);
      hand_over(out, r0, rows, tile);
    });
  }
};

// What dispatch runs on AVX-VNNI CPUs.
using avx_vnni_gemm_kernel = ymm_vnni_gemm_kernel<false>;
// The test twin (see namespace evex above): needs AVX-512 VNNI; dispatch never picks it.
using avx_vnni_evex_gemm_kernel = ymm_vnni_gemm_kernel<true>;

inline avx_vnni_gemm_kernel gemm_kernel_for(arch::avx_vnni) noexcept { return {}; }

}  // namespace kernels
}  // namespace qlib
QLIB_KERNEL_END
#endif  // QLIB_HAS_X86_KERNELS
