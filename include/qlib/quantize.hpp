// Umbrella header for quantization: tensors, schemes, granularities, params, affine ops.
#pragma once

#include "qlib/arch/isa.hpp"
#include "qlib/config.hpp"
#include "qlib/core/error.hpp"
#include "qlib/core/tensor.hpp"
#include "qlib/core/tensor_view.hpp"
#include "qlib/quant/affine.hpp"
#include "qlib/quant/choose_params.hpp"
#include "qlib/quant/granularity.hpp"
#include "qlib/quant/observers.hpp"
#include "qlib/quant/params.hpp"
#include "qlib/quant/quantile.hpp"
#include "qlib/quant/reference.hpp"
#include "qlib/quant/rounding.hpp"
#include "qlib/quant/scheme.hpp"
#include "qlib/version.hpp"
