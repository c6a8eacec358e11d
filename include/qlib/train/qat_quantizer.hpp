// train::fake_quantizer: one QAT quantization point (a weight or an activation) - scheme, observer, current parameters, optional LSQ.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "qlib/quant/choose_params.hpp"
#include "qlib/quant/observers.hpp"
#include "qlib/train/fake_quant.hpp"
#include "qlib/train/gradients.hpp"
#include "qlib/train/lsq.hpp"

namespace qlib {
namespace train {

// Weights use signed schemes, activations unsigned (the integer model's uint8).
using qat_scheme = std::variant<affine_scheme<std::int8_t>, affine_scheme<std::uint8_t>>;

// How a quantizer's parameters follow the data while its observer is enabled:
//  - moving_average: PyTorch's QAT default, EMA of batch min/max (factor averaging_constant);
//  - histogram: histogram_observer over every batch seen, MSE range search at each step;
//  - minmax: min/max over every batch seen;
//  - current: the min/max of the tensor being quantized now (the weights' default: the
//    same parameters PTQ's quantize_weights picks, nothing is clipped).
enum class qat_observer { moving_average, histogram, minmax, current };

struct fake_quantizer_options {
  qat_scheme scheme = schemes::u8_asymmetric;
  bool per_channel = false;  // one parameter per row of the [C, inner] view (weights: output channels)
  qat_observer observer = qat_observer::moving_average;
  float averaging_constant = 0.01f;
  bool lsq = false;  // learn scale (and the zero point of asymmetric schemes) with LSQ
  float lr_scale = 1.0f;  // the LSQ parameters' learning rate: the optimizer's times this
};

// Training forward: when the observer is enabled (and LSQ is off) it observes x first and
// the parameters become the observer's; then y = fake_quant(x). With LSQ the parameters
// are the learned ones (initialized from the observer on the first batch). freeze() stops
// the observer: the parameters stay as they are. The same parameters serve eval forward
// and conversion, so the integer model quantizes exactly as the last training step did.
class fake_quantizer {
 public:
  explicit fake_quantizer(const fake_quantizer_options& o = {}) : opt_(o) {
    std::visit([](const auto& s) { s.validate(); }, o.scheme);
    const granularity g = o.per_channel ? granularity::per_channel(0) : granularity::per_tensor();
    switch (o.observer) {
      case qat_observer::moving_average: obs_ = moving_average_minmax_observer(g, o.averaging_constant); break;
      case qat_observer::histogram: obs_ = histogram_observer(g); break;
      default: obs_ = minmax_observer(g); break;
    }
  }

  const fake_quantizer_options& options() const noexcept { return opt_; }
  std::int32_t qmin() const {
    return std::visit([](const auto& s) { return s.qmin(); }, opt_.scheme);
  }
  std::int32_t qmax() const {
    return std::visit([](const auto& s) { return s.qmax(); }, opt_.scheme);
  }
  bool symmetric() const {
    return std::visit([](const auto& s) { return s.sym == symmetry::symmetric; }, opt_.scheme);
  }

  bool observer_enabled() const noexcept { return observer_on_; }
  void freeze() noexcept { observer_on_ = false; }
  void unfreeze() noexcept { observer_on_ = true; }
  // Off: forward is the identity and backward passes everything (observer still runs).
  bool enabled() const noexcept { return enabled_; }
  void set_enabled(bool on) noexcept { enabled_ = on; }
  bool learnable() const noexcept { return opt_.lsq; }
  bool has_params() const noexcept { return !params_.scale.empty(); }

  // The current parameters (errc::empty_tensor before the first batch).
  const quant_params& params() const {
    QLIB_CHECK(has_params(), errc::empty_tensor, "train::fake_quantizer: no parameters yet (no batch observed)");
    return params_;
  }
  // The parameters applied to x outside training: for qat_observer::current with the
  // observer enabled, chosen from x now (a weight changed by the last optimizer step);
  // otherwise params().
  quant_params params_for(fq_view x) const {
    if (opt_.observer == qat_observer::current && observer_on_ && !opt_.lsq) return choose(x);
    return params();
  }
  // Sets the parameters (and LSQ's learned values) by hand.
  void set_params(const quant_params& p) {
    p.validate();
    QLIB_CHECK(p.qmin == qmin() && p.qmax == qmax(), errc::invalid_argument,
               "train::fake_quantizer::set_params: integer range differs from the scheme's");
    params_ = p;
    if (opt_.lsq) load_lsq_from_params();
  }

  // Training forward over x [C, inner] into y (same shape, may not alias).
  void forward_train(fq_view x, tensor_view<float, 2> y) {
    if (opt_.lsq) {
      if (scale_.empty()) {
        params_ = choose_observed(x);
        load_lsq_from_params();
      }
      sync_lsq_params();
    } else if (observer_on_) {
      params_ = choose_observed(x);
    }
    if (!enabled_) {
      QLIB_CHECK(x.shape() == y.shape() && x.is_contiguous(), errc::shape_mismatch,
                 "train::fake_quantizer: input and output must be dense and of one shape");
      std::copy(x.data(), x.data() + x.size(), y.data());
      return;
    }
    fake_quant_forward(x, y, params());
  }
  // Inference forward with params_for(x).
  void forward(fq_view x, tensor_view<float, 2> y) const {
    if (!enabled_) {
      std::copy(x.data(), x.data() + x.size(), y.data());
      return;
    }
    fake_quant_forward(x, y, params_for(x));
  }

  // Backward for the x of the last forward_train: dx from dy (may alias); with LSQ also
  // adds g * dL/dscale (and dL/dzero_point) to scale_grad() / zero_point_grad(), g =
  // lsq_grad_scale(n_per_scale, qmax). zero_grad() clears those.
  void backward(fq_view x, const float* dy, float* dx, index_t n_per_scale) {
    if (!enabled_) {
      if (dx != dy) std::copy(dy, dy + x.size(), dx);
      return;
    }
    if (!opt_.lsq) {
      fake_quant_backward(x, params(), dy, dx);
      return;
    }
    lsq_backward(x, params(), dy, dx, lsq_grad_scale(n_per_scale, qmax()), scale_grad_.data(),
                 symmetric() ? nullptr : zp_grad_.data());
  }
  void zero_grad() {
    std::fill(scale_grad_.begin(), scale_grad_.end(), 0.0f);
    std::fill(zp_grad_.begin(), zp_grad_.end(), 0.0f);
  }

  // LSQ's trainable values: the scales and (asymmetric) the zero points as floats; the
  // forward uses max(scale, min_scale) and clamp(round_half_even(z), qmin, qmax).
  std::vector<float>& learned_scale() noexcept { return scale_; }
  std::vector<float>& learned_zero_point() noexcept { return zp_; }
  const std::vector<float>& scale_grad() const noexcept { return scale_grad_; }
  const std::vector<float>& zero_point_grad() const noexcept { return zp_grad_; }
  // Appends the LSQ parameters ("<prefix>.scale", "<prefix>.zero_point") for an
  // optimizer, with the options' lr_scale.
  void append_parameters(std::vector<parameter>& out, const std::string& prefix) {
    if (!opt_.lsq || scale_.empty()) return;
    const auto n = static_cast<index_t>(scale_.size());
    out.push_back({scale_.data(), scale_grad_.data(), n, prefix + ".scale", opt_.lr_scale});
    if (!symmetric()) out.push_back({zp_.data(), zp_grad_.data(), n, prefix + ".zero_point", opt_.lr_scale});
  }

 private:
  quant_params choose(fq_view x) const {
    const granularity g = opt_.per_channel ? granularity::per_channel(0) : granularity::per_tensor();
    return std::visit([&](const auto& s) { return choose_params(x, s, g); }, opt_.scheme);
  }
  quant_params choose_observed(fq_view x) {
    if (opt_.observer == qat_observer::current) return choose(x);
    return std::visit(
        [&](auto& o) {
          o.observe(x);
          return std::visit([&](const auto& s) { return o.params(s); }, opt_.scheme);
        },
        obs_);
  }
  void load_lsq_from_params() {
    scale_ = params_.scale;
    zp_.assign(params_.zero_point.begin(), params_.zero_point.end());
    scale_grad_.assign(scale_.size(), 0.0f);
    zp_grad_.assign(scale_.size(), 0.0f);
  }
  // params_ from the learned values (after an optimizer step moved them).
  void sync_lsq_params() {
    const std::int32_t lo = qmin(), hi = qmax();
    for (std::size_t k = 0; k < scale_.size(); ++k) {
      QLIB_CHECK(std::isfinite(scale_[k]) && std::isfinite(zp_[k]), errc::non_finite,
                 "train::fake_quantizer: learned scale or zero point " + std::to_string(k) + " is not finite");
      params_.scale[k] = std::max(scale_[k], min_scale);
      if (!symmetric()) {
        const float z = round_half_even(zp_[k]);
        params_.zero_point[k] = z < lo ? lo : (z > hi ? hi : static_cast<std::int32_t>(z));
      }
    }
  }

  fake_quantizer_options opt_;
  std::variant<moving_average_minmax_observer, histogram_observer, minmax_observer> obs_;
  quant_params params_;
  bool observer_on_ = true, enabled_ = true;
  std::vector<float> scale_, zp_, scale_grad_, zp_grad_;
};

}  // namespace train
}  // namespace qlib
