// Portable GEMM epilogue: runs a pipeline's scalar eval() on each element of a tile and stores it.
#pragma once

#include "qlib/arch/isa.hpp"
#include "qlib/gemm/pipeline.hpp"

#include <cstdint>
#include <tuple>
#include <type_traits>

namespace qlib {
namespace kernels {

// The value types the SIMD epilogues carry between stages exactly (in int32 or float
// lanes) and can store. A pipeline with any other type between or after its stages (a
// stage of yours producing int64 or double, say) runs the portable store_tile on every
// ISA, never a lane type that would truncate it.
template <class T>
inline constexpr bool simd_lane_type =
    std::is_same<T, std::int32_t>::value || std::is_same<T, float>::value || std::is_same<T, std::int8_t>::value ||
    std::is_same<T, std::uint8_t>::value || std::is_same<T, std::int16_t>::value ||
    std::is_same<T, std::uint16_t>::value;
template <class Pipeline>
struct simd_lane_types_only;
template <class... Stages>
struct simd_lane_types_only<std::tuple<Stages...>>
    : std::bool_constant<(simd_lane_type<typename Stages::output_type> && ...)> {};

// Every ISA has a store_tile overload with this signature: tile is rows x cols int32
// (row stride ld); element (r, j) is C[row0 + r][col0 + j] and goes to c[r * ldc + j]
// after the pipeline.
template <class Pipeline, class Out>
void store_tile(arch::portable, const Pipeline& pipeline, const std::int32_t* tile, index_t ld, index_t rows,
                index_t cols, Out* c, index_t ldc, index_t row0, index_t col0) {
  for (index_t r = 0; r < rows; ++r)
    for (index_t j = 0; j < cols; ++j)
      c[r * ldc + j] = gemm::eval_pipeline(pipeline, tile[r * ld + j], row0 + r, col0 + j);
}

}  // namespace kernels
}  // namespace qlib
