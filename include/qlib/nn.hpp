// Umbrella header for models: float and int8 layers, sequential models, PTQ (static and dynamic), mixed-precision search, model files.
#pragma once

#include "qlib/io/safetensors.hpp"
#include "qlib/nn/bit_width_search.hpp"
#include "qlib/nn/dynamic_linear.hpp"
#include "qlib/nn/quantized_io.hpp"
#include "qlib/nn/quantized_sequential.hpp"
#include "qlib/nn/sequential.hpp"
#include "qlib/nn/state_dict.hpp"
#include "qlib/nn/static_quantization.hpp"
