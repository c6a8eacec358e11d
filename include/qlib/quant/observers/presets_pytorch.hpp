// PyTorch-compatible observers: MinMaxObserver, PerChannelMinMaxObserver and the moving-average ones.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "qlib/quant/observers/minmax.hpp"
#include "qlib/quant/observers/moving_average_minmax.hpp"
#include "qlib/quant/rounding.hpp"

// Parameters exactly as torch.ao.quantization.observer computes them (checked against
// PyTorch 1.13 golden vectors, tests/data/gen_observer_golden.py):
//  - quantization range: quint8 [0, 255], qint8 [-128, 127]; reduce_range halves it
//    ([0, 127], [-64, 63]); a custom quant_min/quant_max replaces it (and reduce_range
//    then floor-halves both ends), as calculate_qmin_qmax does;
//  - all arithmetic in float32, one rounding per operation, like PyTorch's tensor ops;
//  - affine: scale = (max(max, 0) - min(min, 0)) / (qmax - qmin), raised to eps
//    (float32 epsilon by default), zero_point = qmin - round_half_even(min(min, 0) / scale)
//    clamped to [qmin, qmax];
//  - symmetric: scale = max(-min(min, 0), max(max, 0)) / ((qmax - qmin) / 2), raised to
//    eps (amax / 127.5 for qint8), zero_point 0 for qint8, 128 for quint8 (the floor
//    midpoint with a custom range);
//  - moving average: min += c * (batch_min - min), same for max, in float32.
// Where these observers differ from PyTorch's:
//  - NaN/Inf in a batch are skipped and counted (PyTorch's aminmax lets a NaN poison the
//    range);
//  - calculate_qparams() before any data is errc::empty_tensor (PyTorch warns and returns
//    scale 1, zero point 0);
//  - quint8 + symmetric + reduce_range: PyTorch's observers raise NotImplementedError;
//    qlib raises errc::unsupported (and calculate_qparams() refuses any zero point that
//    falls outside the quantization range).
namespace qlib {
namespace presets {
namespace pytorch {

enum class dtype { quint8, qint8 };
enum class qscheme { per_tensor_affine, per_tensor_symmetric, per_channel_affine, per_channel_symmetric };

// The constructor arguments of PyTorch's observers.
struct observer_config {
  dtype type = dtype::quint8;
  qscheme scheme = qscheme::per_tensor_affine;
  bool reduce_range = false;
  bool custom_range = false;  // quant_min/quant_max given (PyTorch's has_customized_qrange)
  std::int32_t quant_min = 0, quant_max = 255;
  std::size_t ch_axis = 0;            // per-channel observers
  float averaging_constant = 0.01f;   // moving-average observers
  float eps = FLT_EPSILON;            // torch.finfo(torch.float32).eps

  bool symmetric() const noexcept {
    return scheme == qscheme::per_tensor_symmetric || scheme == qscheme::per_channel_symmetric;
  }
  bool per_channel() const noexcept {
    return scheme == qscheme::per_channel_affine || scheme == qscheme::per_channel_symmetric;
  }
  granularity gran() const noexcept {
    return per_channel() ? granularity::per_channel(ch_axis) : granularity::per_tensor();
  }
  // torch.ao.quantization.utils.calculate_qmin_qmax.
  std::pair<std::int32_t, std::int32_t> quant_range() const {
    if (custom_range) {
      QLIB_CHECK(quant_min <= 0 && 0 <= quant_max && quant_min < quant_max, errc::invalid_argument,
                 "PyTorch quant range [" + std::to_string(quant_min) + ", " + std::to_string(quant_max) +
                     "] must contain 0 and be non-empty");
      QLIB_CHECK(quant_max - quant_min + 1 <= 256 &&
                     (type == dtype::qint8 ? quant_min >= -128 && quant_max <= 127 : quant_min >= 0 && quant_max <= 255),
                 errc::invalid_argument,
                 "PyTorch quant range [" + std::to_string(quant_min) + ", " + std::to_string(quant_max) +
                     "] does not fit the dtype");
      if (!reduce_range) return {quant_min, quant_max};
      auto floor_half = [](std::int32_t v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); };
      return {floor_half(quant_min), floor_half(quant_max)};
    }
    if (type == dtype::qint8) return reduce_range ? std::make_pair(-64, 63) : std::make_pair(-128, 127);
    return reduce_range ? std::make_pair(0, 127) : std::make_pair(0, 255);
  }
  void validate() const {
    QLIB_CHECK(!(type == dtype::quint8 && symmetric() && reduce_range), errc::unsupported,
               "PyTorch does not implement reduce_range for symmetric quint8 observers");
    (void)quant_range();
    QLIB_CHECK(eps >= min_scale && std::isfinite(eps), errc::invalid_argument,
               "eps " + std::to_string(eps) + " must be a finite normal float");
    QLIB_CHECK(averaging_constant > 0.0f && averaging_constant <= 1.0f, errc::invalid_argument,
               "averaging constant " + std::to_string(averaging_constant) + " outside (0, 1]");
  }
};

// Default arguments of PerChannelMinMaxObserver / MovingAveragePerChannelMinMaxObserver.
inline observer_config per_channel_config(std::size_t ch_axis = 0) {
  observer_config c;
  c.scheme = qscheme::per_channel_affine;
  c.ch_axis = ch_axis;
  return c;
}

// UniformQuantizationObserverBase._calculate_qparams for per-parameter (min, max) under
// granularity g (the config's, for the observers below).
inline quant_params calculate_qparams(const std::vector<float>& mins, const std::vector<float>& maxs,
                                      const observer_config& c, const granularity& g) {
  c.validate();
  QLIB_CHECK(mins.size() == maxs.size(), errc::shape_mismatch,
             std::to_string(mins.size()) + " minima but " + std::to_string(maxs.size()) + " maxima");
  QLIB_CHECK(!mins.empty(), errc::empty_tensor, "no ranges given");
  const auto qr = c.quant_range();
  const std::int32_t qmin = qr.first, qmax = qr.second;
  std::vector<float> scales(mins.size());
  std::vector<std::int32_t> zps(mins.size());
  for (std::size_t k = 0; k < mins.size(); ++k) {
    QLIB_CHECK(std::isfinite(mins[k]) && std::isfinite(maxs[k]) && mins[k] <= maxs[k], errc::invalid_argument,
               "range " + std::to_string(k) + " [" + std::to_string(mins[k]) + ", " + std::to_string(maxs[k]) +
                   "] is not a finite min <= max");
    const float min_neg = mins[k] < 0.0f ? mins[k] : 0.0f;
    float max_pos = maxs[k] > 0.0f ? maxs[k] : 0.0f;
    if (c.symmetric()) {
      max_pos = -min_neg > max_pos ? -min_neg : max_pos;
      float s = max_pos / (static_cast<float>(qmax - qmin) / 2.0f);
      scales[k] = s > c.eps ? s : c.eps;
      if (c.type == dtype::quint8) {
        const std::int32_t sum = qmin + qmax;
        zps[k] = c.custom_range ? (sum >= 0 ? sum / 2 : -((-sum + 1) / 2)) : 128;
      } else {
        zps[k] = 0;
      }
    } else {
      const float s = (max_pos - min_neg) / static_cast<float>(qmax - qmin);
      scales[k] = s > c.eps ? s : c.eps;
      std::int32_t z = qmin - static_cast<std::int32_t>(round_half_even(min_neg / scales[k]));
      zps[k] = z < qmin ? qmin : (z > qmax ? qmax : z);
    }
    QLIB_CHECK(zps[k] >= qmin && zps[k] <= qmax, errc::unsupported,
               "PyTorch's zero point " + std::to_string(zps[k]) + " lies outside its quantization range [" +
                   std::to_string(qmin) + ", " + std::to_string(qmax) +
                   "] (quint8 symmetric with reduce_range); qlib cannot represent it");
  }
  quant_params p(g, qmin, qmax, std::move(scales), std::move(zps));
  p.validate();
  return p;
}

namespace detail {
// A PyTorch observer: qlib's running state (Inner) plus PyTorch's parameter rule.
template <class Inner>
class torch_observer {
 public:
  torch_observer(const observer_config& c, Inner inner) : cfg_(c), inner_(std::move(inner)) { c.validate(); }

  template <class T, std::size_t R>
  void observe(tensor_view<T, R> x) {
    inner_.observe(x);
  }
  template <std::size_t R>
  void observe(const tensor<float, R>& x) {
    inner_.observe(x.cview());
  }
  void merge(const torch_observer& o) { inner_.merge(o.inner_); }

  // PyTorch's calculate_qparams(): scales and zero points as PyTorch computes them.
  quant_params calculate_qparams() const {
    const auto r = inner_.ranges();
    return pytorch::calculate_qparams(r.first, r.second, cfg_, cfg_.gran());
  }

  const observer_config& config() const noexcept { return cfg_; }
  // The running min/max (min_val / max_val in PyTorch).
  const Inner& state() const noexcept { return inner_; }
  const observer_counts& counts() const noexcept { return inner_.counts(); }
  void reset() { inner_.reset(); }

 private:
  observer_config cfg_;
  Inner inner_;
};

inline const observer_config& require_per_tensor(const observer_config& c, const char* who) {
  QLIB_CHECK(!c.per_channel(), errc::invalid_argument, std::string(who) + " takes a per-tensor qscheme");
  return c;
}
inline const observer_config& require_per_channel(const observer_config& c, const char* who) {
  QLIB_CHECK(c.per_channel(), errc::invalid_argument, std::string(who) + " takes a per-channel qscheme");
  return c;
}
}  // namespace detail

// torch.ao.quantization.MinMaxObserver.
class min_max_observer : public detail::torch_observer<minmax_observer> {
 public:
  explicit min_max_observer(const observer_config& c = {})
      : torch_observer(detail::require_per_tensor(c, "min_max_observer"), minmax_observer(c.gran())) {}
};

// torch.ao.quantization.PerChannelMinMaxObserver (default per_channel_affine, ch_axis 0).
class per_channel_min_max_observer : public detail::torch_observer<minmax_observer> {
 public:
  explicit per_channel_min_max_observer(const observer_config& c = per_channel_config())
      : torch_observer(detail::require_per_channel(c, "per_channel_min_max_observer"), minmax_observer(c.gran())) {}
};

// torch.ao.quantization.MovingAverageMinMaxObserver (averaging_constant 0.01).
class moving_average_min_max_observer : public detail::torch_observer<moving_average_minmax_observer> {
 public:
  explicit moving_average_min_max_observer(const observer_config& c = {})
      : torch_observer(detail::require_per_tensor(c, "moving_average_min_max_observer"),
                       moving_average_minmax_observer(c.gran(), c.averaging_constant)) {}
};

// torch.ao.quantization.MovingAveragePerChannelMinMaxObserver.
class moving_average_per_channel_min_max_observer
    : public detail::torch_observer<moving_average_minmax_observer> {
 public:
  explicit moving_average_per_channel_min_max_observer(const observer_config& c = per_channel_config())
      : torch_observer(detail::require_per_channel(c, "moving_average_per_channel_min_max_observer"),
                       moving_average_minmax_observer(c.gran(), c.averaging_constant)) {}
};

}  // namespace pytorch
}  // namespace presets
}  // namespace qlib
