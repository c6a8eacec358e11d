// ONNX Runtime-compatible quantization parameters (quant_utils.compute_scale_zp) and its MinMax calibrater.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "qlib/quant/choose_params.hpp"
#include "qlib/quant/observers/minmax.hpp"
#include "qlib/quant/rounding.hpp"

// The rules of onnxruntime.quantization (quant_utils.py, 1.16 and later), reproduced
// operation by operation (golden vectors: tests/data/gen_observer_golden.py):
//  - ranges: uint8 [0, 255], int8 [-128, 127]; symmetric uint8 [0, 254], symmetric int8
//    [-127, 127] (weights: scale = amax / 127); reduce_range uint8 [0, 127], int8
//    [-64, 64] (reduce_range wins over symmetric); 16-bit types likewise;
//  - rmin = min(rmin, 0), rmax = max(rmax, 0) in float32; symmetric: both become
//    -/+ max(|rmin|, |rmax|);
//  - scale = double(rmax - rmin (float32)) / double(qmax - qmin), stored as float32;
//    below FLT_MIN it is 1 with zero point 0;
//  - zero point: symmetric round((qmin + qmax) / 2), asymmetric
//    round(qmin - rmin / scale) in double, both rounding half to even (numpy.round).
// The MinMax calibrater reproduced is MinMaxCalibrater(moving_average=False): the range is
// the min and max over all batches, [-amax, amax] when symmetric. (ORT's moving_average
// option averages per-batch minima within one collect_data() call and only then applies
// the EMA across calls: not reproduced; use moving_average_minmax_observer for an EMA.)
// Difference: NaN/Inf are skipped and counted (ORT's ReduceMin/ReduceMax propagate NaN).
namespace qlib {
namespace presets {
namespace onnxruntime {

enum class qtype { uint8, int8, uint16, int16 };

struct qrange {
  std::int32_t qmin, qmax;
};

// quant_utils.get_qmin_qmax_for_qType.
inline qrange quant_range(qtype t, bool reduce_range = false, bool symmetric = false) {
  switch (t) {
    case qtype::uint8: return reduce_range ? qrange{0, 127} : (symmetric ? qrange{0, 254} : qrange{0, 255});
    case qtype::int8: return reduce_range ? qrange{-64, 64} : (symmetric ? qrange{-127, 127} : qrange{-128, 127});
    case qtype::uint16: return reduce_range ? qrange{0, 32767} : (symmetric ? qrange{0, 65534} : qrange{0, 65535});
    case qtype::int16:
      return reduce_range ? qrange{-16384, 16384} : (symmetric ? qrange{-32767, 32767} : qrange{-32768, 32767});
  }
  return {0, 255};
}

// quant_utils.compute_scale_zp(rmin, rmax, qmin, qmax, symmetric).
inline scale_zero_point compute_scale_zp(float rmin, float rmax, qrange r, bool symmetric) {
  QLIB_CHECK(r.qmin <= 0 && r.qmax >= 0 && r.qmin < r.qmax, errc::invalid_argument,
             "qmin and qmax must satisfy qmin <= 0 <= qmax, got [" + std::to_string(r.qmin) + ", " +
                 std::to_string(r.qmax) + "]");
  QLIB_CHECK(std::isfinite(rmin) && std::isfinite(rmax) && rmin <= rmax, errc::invalid_argument,
             "range [" + std::to_string(rmin) + ", " + std::to_string(rmax) + "] is not a finite min <= max");
  rmin = rmin < 0.0f ? rmin : 0.0f;
  rmax = rmax > 0.0f ? rmax : 0.0f;
  if (symmetric) {
    const float amax = std::fabs(rmin) > std::fabs(rmax) ? std::fabs(rmin) : std::fabs(rmax);
    rmin = -amax;
    rmax = amax;
  }
  const float dr_f = rmax - rmin;  // float32, as numpy subtracts the float32 scalars
  const double scale = static_cast<double>(dr_f) / (static_cast<double>(r.qmax) - static_cast<double>(r.qmin));
  if (scale < static_cast<double>(FLT_MIN)) return {1.0f, 0};
  const double z = symmetric ? (static_cast<double>(r.qmin) + r.qmax) / 2.0 : r.qmin - static_cast<double>(rmin) / scale;
  return {static_cast<float>(scale), static_cast<std::int32_t>(std::nearbyint(z))};  // half to even (default mode)
}

// Parameters for per-parameter ranges with ORT's rule (quantize_data / the quantizer).
inline quant_params params_from_ranges(const std::vector<float>& mins, const std::vector<float>& maxs,
                                       const granularity& g, qtype t, bool symmetric, bool reduce_range = false) {
  QLIB_CHECK(mins.size() == maxs.size(), errc::shape_mismatch,
             std::to_string(mins.size()) + " minima but " + std::to_string(maxs.size()) + " maxima");
  QLIB_CHECK(!mins.empty(), errc::empty_tensor, "no ranges given");
  const qrange r = quant_range(t, reduce_range, symmetric);
  std::vector<float> scales(mins.size());
  std::vector<std::int32_t> zps(mins.size());
  for (std::size_t k = 0; k < mins.size(); ++k) {
    const scale_zero_point sz = compute_scale_zp(mins[k], maxs[k], r, symmetric);
    scales[k] = sz.scale;
    zps[k] = sz.zero_point;
  }
  quant_params p(g, r.qmin, r.qmax, std::move(scales), std::move(zps));
  p.validate();
  return p;
}

// MinMaxCalibrater(moving_average=False) over the batches of one tensor.
class minmax_calibrater {
 public:
  explicit minmax_calibrater(bool symmetric = false, granularity g = granularity::per_tensor())
      : symmetric_(symmetric), obs_(g) {}

  template <class T, std::size_t R>
  void observe(tensor_view<T, R> x) {
    obs_.observe(x);
  }
  template <std::size_t R>
  void observe(const tensor<float, R>& x) {
    obs_.observe(x.cview());
  }
  void merge(const minmax_calibrater& o) {
    QLIB_CHECK(symmetric_ == o.symmetric_, errc::invalid_argument, "minmax_calibrater::merge: symmetry differs");
    obs_.merge(o.obs_);
  }

  // compute_range(): (min, max) per parameter, or (-amax, amax) when symmetric.
  std::pair<std::vector<float>, std::vector<float>> compute_range() const {
    auto r = obs_.ranges();
    if (symmetric_)
      for (std::size_t k = 0; k < r.first.size(); ++k) {
        const float a = std::fabs(r.first[k]) > std::fabs(r.second[k]) ? std::fabs(r.first[k]) : std::fabs(r.second[k]);
        r.first[k] = -a;
        r.second[k] = a;
      }
    return r;
  }
  // The quantizer's parameters for these ranges: activation type t, symmetric as ORT's
  // ActivationSymmetric option.
  quant_params params(qtype t, bool symmetric = false, bool reduce_range = false) const {
    const auto r = compute_range();
    return onnxruntime::params_from_ranges(r.first, r.second, obs_.gran(), t, symmetric, reduce_range);
  }

  const minmax_observer& state() const noexcept { return obs_; }
  const observer_counts& counts() const noexcept { return obs_.counts(); }

 private:
  bool symmetric_;
  minmax_observer obs_;
};

}  // namespace onnxruntime
}  // namespace presets
}  // namespace qlib
