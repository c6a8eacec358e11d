// Portable GEMM epilogue: runs a pipeline's scalar eval() on each element of a tile and stores it.
#pragma once

#include "qlib/arch/isa.hpp"
#include "qlib/gemm/pipeline.hpp"

namespace qlib {
namespace kernels {

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
