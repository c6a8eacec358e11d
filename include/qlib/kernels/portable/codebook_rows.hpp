// Portable codebook (quantile) quantize/dequantize row kernels: scalar loops over the normative definition.
#pragma once

#include <cstdint>

#include "qlib/arch/isa.hpp"
#include "qlib/core/tensor_view.hpp"
#include "qlib/quant/quantile_params.hpp"

// Every codebook row kernel here and in kernels/<isa>/codebook_rows.hpp works on a run of
// n elements that share one codebook (L levels, L - 1 thresholds) and one scale, and
// gives exactly qlib::codebook_index / codebook_value (quant/quantile_params.hpp):
//  - codebook_quantize_run:     floats -> one index per byte;
//  - codebook_dequantize_run:   one index per byte -> floats;
//  - codebook_dequantize_run_u4: indices packed two per byte, low nibble first (the
//    core/packed_int.hpp layout), from the first nibble of `packed` -> floats.
// The SIMD versions handle codebooks of up to 16 levels in registers and fall back to
// these loops for larger ones.
namespace qlib {
namespace kernels {

inline void codebook_quantize_run(arch::portable, const float* x, std::uint8_t* q, index_t n, float inv_scale,
                                  const float* t, int L) noexcept {
  for (index_t j = 0; j < n; ++j) q[j] = codebook_index(x[j], inv_scale, t, L);
}

inline void codebook_dequantize_run(arch::portable, const std::uint8_t* q, float* x, index_t n, float scale,
                                    const float* levels, int L) noexcept {
  for (index_t j = 0; j < n; ++j) x[j] = codebook_value(q[j], scale, levels, L);
}

inline void codebook_dequantize_run_u4(arch::portable, const std::uint8_t* packed, float* x, index_t n, float scale,
                                       const float* levels, int L) noexcept {
  for (index_t j = 0; j < n; ++j)
    x[j] = codebook_value((packed[j / 2] >> (4 * (j & 1))) & 0xfu, scale, levels, L);
}

}  // namespace kernels
}  // namespace qlib
