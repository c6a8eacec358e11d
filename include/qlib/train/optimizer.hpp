// SGD (momentum, Nesterov) and Adam with PyTorch's update rules, stepping over a train::parameter list.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "qlib/train/gradients.hpp"

namespace qlib {
namespace train {

namespace detail {
// Per-parameter state buffers, sized on the first step; later steps must pass the same
// parameter list (same count and sizes).
inline void prepare_state(std::vector<std::vector<float>>& state, const std::vector<parameter>& params,
                          const char* who) {
  if (state.empty()) {
    for (const parameter& p : params) state.emplace_back(static_cast<std::size_t>(p.size), 0.0f);
    return;
  }
  QLIB_CHECK(state.size() == params.size(), errc::shape_mismatch,
             std::string(who) + ": stepped with " + std::to_string(params.size()) + " parameters, earlier with " +
                 std::to_string(state.size()));
  for (std::size_t i = 0; i < params.size(); ++i)
    QLIB_CHECK(static_cast<index_t>(state[i].size()) == params[i].size, errc::shape_mismatch,
               std::string(who) + ": parameter " + params[i].name + " changed size since the last step");
}
inline void check_rate(float v, const char* who, const char* what) {
  QLIB_CHECK(std::isfinite(v) && v >= 0.0f, errc::invalid_argument,
             std::string(who) + ": " + what + " must be finite and >= 0, got " + std::to_string(v));
}
inline void check_lr_scales(const std::vector<parameter>& params, const char* who) {
  for (const parameter& p : params)
    QLIB_CHECK(std::isfinite(p.lr_scale) && p.lr_scale >= 0.0f, errc::invalid_argument,
               std::string(who) + ": lr_scale of " + p.name + " must be finite and >= 0, got " +
                   std::to_string(p.lr_scale));
}
}  // namespace detail

struct sgd_options {
  float lr = 0.01f;
  float momentum = 0.0f;
  float dampening = 0.0f;
  float weight_decay = 0.0f;
  bool nesterov = false;
};

// torch.optim.SGD: g += weight_decay * w; with momentum, buf = g on the first step and
// buf = momentum * buf + (1 - dampening) * g after; g = g + momentum * buf (Nesterov) or
// buf; w -= lr * g. Each parameter's rate is lr * parameter::lr_scale.
class sgd {
 public:
  explicit sgd(const sgd_options& o = {}) : opt_(o) {
    const char* who = "train::sgd";
    detail::check_rate(o.lr, who, "lr");
    detail::check_rate(o.momentum, who, "momentum");
    detail::check_rate(o.weight_decay, who, "weight_decay");
    QLIB_CHECK(std::isfinite(o.dampening), errc::invalid_argument, "train::sgd: dampening must be finite");
    QLIB_CHECK(!o.nesterov || (o.momentum > 0.0f && o.dampening == 0.0f), errc::invalid_argument,
               "train::sgd: Nesterov momentum needs momentum > 0 and dampening = 0");
  }
  float lr() const noexcept { return opt_.lr; }
  void set_lr(float lr) {
    detail::check_rate(lr, "train::sgd", "lr");
    opt_.lr = lr;
  }
  const sgd_options& options() const noexcept { return opt_; }

  void step(const std::vector<parameter>& params) {
    const bool use_buf = opt_.momentum != 0.0f;
    if (use_buf) detail::prepare_state(buf_, params, "train::sgd");
    detail::check_lr_scales(params, "train::sgd");
    const float mu = opt_.momentum, wd = opt_.weight_decay, damp = 1.0f - opt_.dampening;
    for (std::size_t k = 0; k < params.size(); ++k) {
      float* w = params[k].value;
      const float* grad = params[k].grad;
      float* b = use_buf ? buf_[k].data() : nullptr;
      const float lr = opt_.lr * params[k].lr_scale;
      for (index_t i = 0; i < params[k].size; ++i) {
        float g = grad[i];
        if (wd != 0.0f) g += wd * w[i];
        if (use_buf) {
          b[i] = started_ ? mu * b[i] + damp * g : g;
          g = opt_.nesterov ? g + mu * b[i] : b[i];
        }
        w[i] -= lr * g;
      }
    }
    started_ = true;
  }

 private:
  sgd_options opt_;
  std::vector<std::vector<float>> buf_;
  bool started_ = false;
};

struct adam_options {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;  // L2 added to the gradient (torch.optim.Adam), not AdamW's decoupled decay
};

// torch.optim.Adam: at step t, g += weight_decay * w; m = beta1 m + (1 - beta1) g;
// v = beta2 v + (1 - beta2) g^2; w -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
// The bias corrections are computed in double, as PyTorch does in Python floats. Each
// parameter's rate is lr * parameter::lr_scale (the same bits as before for 1).
class adam {
 public:
  explicit adam(const adam_options& o = {}) : opt_(o) {
    const char* who = "train::adam";
    detail::check_rate(o.lr, who, "lr");
    detail::check_rate(o.eps, who, "eps");
    detail::check_rate(o.weight_decay, who, "weight_decay");
    QLIB_CHECK(o.beta1 >= 0.0f && o.beta1 < 1.0f && o.beta2 >= 0.0f && o.beta2 < 1.0f, errc::invalid_argument,
               "train::adam: betas must be in [0, 1), got " + std::to_string(o.beta1) + ", " +
                   std::to_string(o.beta2));
  }
  float lr() const noexcept { return opt_.lr; }
  void set_lr(float lr) {
    detail::check_rate(lr, "train::adam", "lr");
    opt_.lr = lr;
  }
  const adam_options& options() const noexcept { return opt_; }
  std::int64_t steps() const noexcept { return t_; }

  void step(const std::vector<parameter>& params) {
    detail::prepare_state(m_, params, "train::adam");
    detail::prepare_state(v_, params, "train::adam");
    detail::check_lr_scales(params, "train::adam");
    ++t_;
    const double bc1 = 1.0 - std::pow(static_cast<double>(opt_.beta1), static_cast<double>(t_));
    const double bc2 = 1.0 - std::pow(static_cast<double>(opt_.beta2), static_cast<double>(t_));
    const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
    const float b1 = opt_.beta1, b2 = opt_.beta2, wd = opt_.weight_decay, eps = opt_.eps;
    for (std::size_t k = 0; k < params.size(); ++k) {
      float* w = params[k].value;
      const float* grad = params[k].grad;
      float* m = m_[k].data();
      float* v = v_[k].data();
      const float step_size =
          static_cast<float>(static_cast<double>(opt_.lr) * static_cast<double>(params[k].lr_scale) / bc1);
      for (index_t i = 0; i < params[k].size; ++i) {
        float g = grad[i];
        if (wd != 0.0f) g += wd * w[i];
        m[i] = b1 * m[i] + (1.0f - b1) * g;
        v[i] = b2 * v[i] + (1.0f - b2) * g * g;
        w[i] -= step_size * (m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps));
      }
    }
  }

 private:
  adam_options opt_;
  std::vector<std::vector<float>> m_, v_;
  std::int64_t t_ = 0;
};

}  // namespace train
}  // namespace qlib
