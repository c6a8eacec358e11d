// Calibration observers: min/max, moving-average min/max, histogram (MSE/KL/percentile), presets, calibrate().
#pragma once

#include "qlib/quant/observers/calibrate.hpp"
#include "qlib/quant/observers/histogram.hpp"
#include "qlib/quant/observers/histogram_observer.hpp"
#include "qlib/quant/observers/minmax.hpp"
#include "qlib/quant/observers/minmax_reference.hpp"
#include "qlib/quant/observers/moving_average_minmax.hpp"
#include "qlib/quant/observers/observer.hpp"
#include "qlib/quant/observers/presets_onnxruntime.hpp"
#include "qlib/quant/observers/presets_pytorch.hpp"
#include "qlib/quant/observers/presets_tflite.hpp"
#include "qlib/quant/observers/quantize_observed.hpp"
#include "qlib/quant/observers/range_selection.hpp"
