// Umbrella header for the int8 GEMM engine: packing, output pipelines, kernels, driver, reference.
#pragma once

#include "qlib/arch/isa.hpp"
#include "qlib/core/parallel.hpp"
#include "qlib/core/thread_pool.hpp"
#include "qlib/gemm/driver.hpp"
#include "qlib/gemm/output_stages.hpp"
#include "qlib/gemm/packed_layout.hpp"
#include "qlib/gemm/packed_weights.hpp"
#include "qlib/gemm/params.hpp"
#include "qlib/gemm/pipeline.hpp"
#include "qlib/gemm/reference.hpp"
#include "qlib/gemm/validation.hpp"
#include "qlib/gemm/zero_point_correction.hpp"
#include "qlib/quant/fixed_point.hpp"
