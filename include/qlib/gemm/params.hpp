// Per-call GEMM parameters: the activations' zero point and the threading options.
#pragma once

#include <cstdint>

#include "qlib/core/parallel.hpp"

namespace qlib {
namespace gemm {

// The activations A are uint8 or int8 with this zero point (inside the type's range).
// Their scale never reaches the integer GEMM: fold it into the output stages
// (requantize multiplier, dequantize scale).
struct activation_params {
  std::int32_t zero_point = 0;
};

// threads = 1 (the default) runs on the calling thread and creates no thread.
// threads > 1 splits C into that many parts (over M and N; never over K, so every
// element is summed in the same order and the bits equal the serial run's) and runs
// them on `executor`, or on qlib's default_thread_pool() when executor is null.
struct gemm_options {
  int threads = 1;
  parallel_executor* executor = nullptr;
};

}  // namespace gemm
}  // namespace qlib
