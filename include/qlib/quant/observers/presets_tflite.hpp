// TensorFlow Lite-compatible quantization parameters: int8 asymmetric activations, symmetric [-127,127] weights.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "qlib/quant/choose_params.hpp"
#include "qlib/quant/observers/minmax.hpp"

// The rules of TFLite's post-training quantizer (tensorflow/lite/tools/optimize,
// quantization_utils.cc) and its int8 quantization spec, reproduced operation by
// operation (golden vectors: tests/data/gen_observer_golden.py):
//  - activations (GetAsymmetricQuantizationParams, int8 [-128, 127]): in float32,
//    min = min(min, 0), max = max(max, 0), scale = (max - min) / 255,
//    zero_point_from_min = -128 - min / scale, clamped to [-128, 127] and otherwise
//    rounded half away from zero (std::round);
//  - weights (symmetric, per tensor or per axis): zero point 0, codes [-127, 127],
//    scale = max(|min|, |max|) / 127 in float32.
// Differences: TFLite gives an all-zero range a scale of 0, which qlib cannot store; the
// preset uses 1 instead (every value is 0, so the codes are the same). NaN/Inf are
// skipped and counted (TFLite's calibrator stops with an error on NaN).
namespace qlib {
namespace presets {
namespace tflite {

// GetAsymmetricQuantizationParams(min, max, qmin, qmax).
inline scale_zero_point asymmetric_params(float min, float max, std::int32_t qmin = -128, std::int32_t qmax = 127) {
  QLIB_CHECK(std::isfinite(min) && std::isfinite(max) && min <= max, errc::invalid_argument,
             "range [" + std::to_string(min) + ", " + std::to_string(max) + "] is not a finite min <= max");
  QLIB_CHECK(qmin < qmax, errc::invalid_argument, "empty quantization range");
  const float qmin_f = static_cast<float>(qmin), qmax_f = static_cast<float>(qmax);
  min = min < 0.0f ? min : 0.0f;
  max = max > 0.0f ? max : 0.0f;
  const float scale = (max - min) / (qmax_f - qmin_f);
  float zp_from_min = qmin_f;
  if (scale != 0.0f) zp_from_min = qmin_f - min / scale;
  std::int32_t zp;
  if (zp_from_min < qmin_f) zp = qmin;
  else if (zp_from_min > qmax_f) zp = qmax;
  else zp = static_cast<std::int32_t>(std::round(zp_from_min));
  return {scale != 0.0f ? scale : 1.0f, zp};
}

// The symmetric weight scale: max(|min|, |max|) / 127 (1 for an all-zero range).
inline float symmetric_scale(float min, float max) {
  QLIB_CHECK(std::isfinite(min) && std::isfinite(max), errc::invalid_argument,
             "range [" + std::to_string(min) + ", " + std::to_string(max) + "] is not finite");
  const float half_range = std::fabs(min) > std::fabs(max) ? std::fabs(min) : std::fabs(max);
  const float scale = half_range / 127.0f;
  return scale != 0.0f ? scale : 1.0f;
}

// int8 activation parameters for per-parameter ranges.
inline quant_params activation_params(const std::vector<float>& mins, const std::vector<float>& maxs,
                                      const granularity& g = granularity::per_tensor()) {
  QLIB_CHECK(mins.size() == maxs.size() && !mins.empty(), errc::shape_mismatch, "ranges must be non-empty and paired");
  std::vector<float> s(mins.size());
  std::vector<std::int32_t> z(mins.size());
  for (std::size_t k = 0; k < mins.size(); ++k) {
    const scale_zero_point sz = asymmetric_params(mins[k], maxs[k]);
    s[k] = sz.scale;
    z[k] = sz.zero_point;
  }
  quant_params p(g, -128, 127, std::move(s), std::move(z));
  p.validate();
  return p;
}

// Symmetric int8 weight parameters ([-127, 127], zero point 0) for per-parameter ranges.
inline quant_params weight_params(const std::vector<float>& mins, const std::vector<float>& maxs,
                                  const granularity& g = granularity::per_tensor()) {
  QLIB_CHECK(mins.size() == maxs.size() && !mins.empty(), errc::shape_mismatch, "ranges must be non-empty and paired");
  std::vector<float> s(mins.size());
  for (std::size_t k = 0; k < mins.size(); ++k) s[k] = symmetric_scale(mins[k], maxs[k]);
  quant_params p(g, -127, 127, std::move(s), std::vector<std::int32_t>(mins.size(), 0));
  p.validate();
  return p;
}

// The calibrator's running min/max (MinMax::Update) with TFLite's parameter rules.
class minmax_calibrator {
 public:
  explicit minmax_calibrator(granularity g = granularity::per_tensor()) : obs_(g) {}

  template <class T, std::size_t R>
  void observe(tensor_view<T, R> x) {
    obs_.observe(x);
  }
  template <std::size_t R>
  void observe(const tensor<float, R>& x) {
    obs_.observe(x.cview());
  }
  void merge(const minmax_calibrator& o) { obs_.merge(o.obs_); }

  quant_params activation_params() const {
    const auto r = obs_.ranges();
    return tflite::activation_params(r.first, r.second, obs_.gran());
  }
  quant_params weight_params() const {
    const auto r = obs_.ranges();
    return tflite::weight_params(r.first, r.second, obs_.gran());
  }

  const minmax_observer& state() const noexcept { return obs_; }
  const observer_counts& counts() const noexcept { return obs_.counts(); }

 private:
  minmax_observer obs_;
};

}  // namespace tflite
}  // namespace presets
}  // namespace qlib
