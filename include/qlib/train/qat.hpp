// train::qat_model: quantization-aware training of an nn::sequential - fake-quantized weights and activations at the points the int8 model quantizes.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <variant>
#include <vector>

#include "qlib/nn/layer_weights.hpp"
#include "qlib/nn/quantized_weights.hpp"
#include "qlib/nn/sequential.hpp"
#include "qlib/train/backward.hpp"
#include "qlib/train/gradients.hpp"
#include "qlib/train/loss.hpp"
#include "qlib/train/qat_quantizer.hpp"
#include "qlib/train/trainer.hpp"

namespace qlib {
namespace train {

struct qat_options {
  affine_scheme<std::int8_t> weight_scheme = schemes::s8_symmetric;  // any bits 2..8: s4_symmetric ...
  bool per_channel_weights = true;
  qat_observer weight_observer = qat_observer::current;
  affine_scheme<std::uint8_t> activation_scheme = schemes::u8_asymmetric;
  qat_observer activation_observer = qat_observer::moving_average;
  float averaging_constant = 0.01f;
  bool lsq_weights = false, lsq_activations = false;
  // The LSQ scales' and zero points' learning rate as a multiple of the optimizer's
  // (parameter::lr_scale). Adam moves every parameter by about lr per step whatever its
  // gradient, so scales of 0.01-0.05 need a multiplier well below 1 at learning rates
  // that suit the weights (otherwise they can collapse to FLT_MIN). 1, the default,
  // steps them like the weights.
  float lsq_lr_scale = 1.0f;
  // true: batch norms are folded into their convs at construction (train the folded
  // conv). false: they train with batch statistics until freeze_bn() folds them.
  bool fold_batch_norm = true;
  // Round each conv/linear bias to its int32 grid (scale = input scale * weight scale),
  // as the integer model stores it. The bias gradient passes straight through.
  bool quantize_bias = true;
  // A last linear without ReLU outputs float logits (no output quantizer), as
  // nn::static_quantizer's float_logits.
  bool float_logits = true;
};

// One layer of the integer model: a conv2d / linear with its optional batch norm and
// ReLU/ReLU6 (model layers [begin, end)), or one pooling / flatten layer.
struct qat_step {
  std::size_t begin = 0, end = 0;
  int weight_q = -1;     // index into weight_quantizers(), conv/linear only
  int act_in = 0;        // activation quantizer of the step's input (0: the model input)
  int act_out = -1;      // conv/linear: quantizer of the output (-1: float logits)
  float relu_hi = -1.0f; // < 0: none, 0: ReLU, 6: ReLU6
  bool batch_norm = false;
  bool requantize = false;  // avg_pool2d: its mean is rounded back onto act_in's grid
};

// The int32 code of a bias for input scale s_in and weight scale s_w:
// round_half_even(b / (s_in * s_w)) in double, exactly as nn::quantize_weights.
inline double bias_code(float b, float s_in, float s_w) noexcept {
  return nn::round_half_even_double(static_cast<double>(b) / (static_cast<double>(s_in) * static_cast<double>(s_w)));
}

// Buffers of one training forward, kept between steps.
struct qat_cache {
  struct step_cache {
    nn::sequential sub;  // the step's layers, conv/linear with fake-quantized weights
    forward_cache fc;
    gradients g;
    tensor<float, 4> out_q, pre_grad;  // the fake-quantized output and dL/d(output before it)
  };
  tensor<float, 4> input, input_q, input_grad;
  std::vector<step_cache> steps;
};

// Usage:
//   train::qat_model q(float_model);                  // folds BN, one quantizer per point
//   train::adam opt;  train::qat_workspace ws;
//   for (...) train::train_step(q, x, labels, opt, ws);
//   q.freeze_observers();                             // later epochs: fixed ranges
//   nn::quantized_sequential m = train::convert(q);   // qat_convert.hpp
// Quantization points are nn::static_quantizer's: the model input and every conv2d /
// linear output after its batch norm and fused ReLU/ReLU6 (uint8 activation scheme);
// pooling and flatten keep their input's parameters (avg pooling rounds its mean back
// onto that grid, as the integer pooling does). Weights of every conv2d / linear are
// fake-quantized with the weight scheme (per output channel by default). Supported
// layers: those nn::static_quantizer supports, except that with fold_batch_norm = false
// a batch norm must follow a conv2d (one after a linear layer needs folding).
class qat_model {
 public:
  explicit qat_model(const nn::sequential& model, const qat_options& o = {})
      : model_(o.fold_batch_norm ? nn::fold_batch_norms(model) : model), opt_(o) {
    o.weight_scheme.validate();
    o.activation_scheme.validate();
    QLIB_CHECK(model_.size() > 0, errc::empty_tensor, "train::qat_model: empty model");
    build_steps();
    fake_quantizer_options a{o.activation_scheme, false, o.activation_observer, o.averaging_constant,
                             o.lsq_activations, o.lsq_lr_scale};
    act_.assign(static_cast<std::size_t>(act_count_), fake_quantizer(a));
    make_weight_quantizers();
  }

  nn::sequential& model() noexcept { return model_; }
  const nn::sequential& model() const noexcept { return model_; }
  const qat_options& options() const noexcept { return opt_; }
  const std::vector<qat_step>& steps() const noexcept { return steps_; }
  // Activation quantizers: [0] the model input, then one per conv/linear output.
  std::vector<fake_quantizer>& activation_quantizers() noexcept { return act_; }
  const std::vector<fake_quantizer>& activation_quantizers() const noexcept { return act_; }
  // Weight quantizers, one per conv/linear in model order.
  std::vector<fake_quantizer>& weight_quantizers() noexcept { return wq_; }
  const std::vector<fake_quantizer>& weight_quantizers() const noexcept { return wq_; }

  // Stops every observer: ranges stay as they are (the usual recipe after an epoch or two).
  void freeze_observers() {
    for (auto& q : act_) q.freeze();
    for (auto& q : wq_) q.freeze();
  }
  bool has_batch_norm() const noexcept {
    return std::any_of(steps_.begin(), steps_.end(), [](const qat_step& s) { return s.batch_norm; });
  }
  // Freezes the batch norms and folds them into their convs with their running
  // statistics. The parameter list changes (make new gradients and optimizer state);
  // weight quantizers restart from the folded weights.
  void freeze_bn() {
    if (!has_batch_norm()) return;
    model_ = nn::fold_batch_norms(model_);
    opt_.fold_batch_norm = true;
    build_steps();
    make_weight_quantizers();
  }

  gradients make_gradients() const { return train::make_gradients(model_); }

  // The model's weights and biases (train::parameters) followed by the LSQ parameters
  // ("<layer>.weight_fake_quant.scale", "act<k>.scale", "act<k>.zero_point").
  std::vector<parameter> parameters(const gradients& g) {
    std::vector<parameter> p = train::parameters(model_, g);
    for (const qat_step& s : steps_)
      if (s.weight_q >= 0) wq_[static_cast<std::size_t>(s.weight_q)].append_parameters(p, std::to_string(s.begin) + ".weight_fake_quant");
    for (std::size_t k = 0; k < act_.size(); ++k) act_[k].append_parameters(p, "act" + std::to_string(k));
    return p;
  }

  // Training forward: observers update (unless frozen), batch norms use batch statistics.
  tensor_view<const float, 4> forward_train(tensor_view<const float, 4> x, qat_cache& c,
                                            bool update_running_stats = true) {
    model_.output_shape(x.shape());  // validate the whole chain before any work
    c.steps.resize(steps_.size());
    detail::copy_dense(x, c.input);
    detail::ensure_shape(c.input_q, x.shape());
    act_[0].forward_train(as_rows(c.input.cview()), as_rows(c.input_q.view()));
    tensor_view<const float, 4> cur = c.input_q.cview();
    for (std::size_t si = 0; si < steps_.size(); ++si) {
      const qat_step& s = steps_[si];
      qat_cache::step_cache& sc = c.steps[si];
      load_step(s, sc.sub, s.weight_q >= 0 ? &wq_[static_cast<std::size_t>(s.weight_q)] : nullptr);
      const tensor_view<const float, 4> y = train::forward_train(sc.sub, cur, sc.fc, update_running_stats);
      for (std::size_t k = 0; k < sc.sub.size(); ++k)  // the running statistics live in model_
        if (const auto* bn = std::get_if<nn::batch_norm2d>(&sc.sub[k])) {
          auto& dst = std::get<nn::batch_norm2d>(model_[s.begin + k]);
          dst.running_mean = bn->running_mean;
          dst.running_var = bn->running_var;
        }
      cur = y;
      if (const fake_quantizer* q = output_quantizer(s)) {
        detail::ensure_shape(sc.out_q, y.shape());
        if (s.requantize) {
          requantize_forward(*q, y, sc.out_q);
        } else {
          act_[static_cast<std::size_t>(s.act_out)].forward_train(as_rows(y), as_rows(sc.out_q.view()));
        }
        cur = sc.out_q.cview();
      }
    }
    return cur;
  }

  // Backward from dL/d(output): model gradients into g (g = make_gradients()), the
  // straight-through estimator at every fake quantizer, LSQ gradients into the
  // quantizers (cleared first). `c` must come from forward_train on this model.
  void backward(qat_cache& c, tensor_view<const float, 4> dy, gradients& g) {
    QLIB_CHECK(c.steps.size() == steps_.size() && g.layers.size() == model_.size(), errc::shape_mismatch,
               "train::qat_model::backward: the cache or the gradients do not belong to this model");
    for (auto& q : act_) q.zero_grad();
    for (auto& q : wq_) q.zero_grad();
    const detail::dense_input dyd(dy);
    tensor_view<const float, 4> gout = dyd.view;
    for (std::size_t si = steps_.size(); si-- > 0;) {
      const qat_step& s = steps_[si];
      qat_cache::step_cache& sc = c.steps[si];
      tensor_view<const float, 4> gy = gout;
      if (const fake_quantizer* q = output_quantizer(s)) {
        const tensor_view<const float, 4> pre = sc.fc.layers.back().output.cview();
        detail::check_output_grad(gout.shape(), pre.shape(), "train::qat_model::backward");
        detail::ensure_shape(sc.pre_grad, pre.shape());
        if (s.requantize) {
          if (q->enabled()) fake_quant_backward(as_rows(pre), q->params(), gout.data(), sc.pre_grad.data());
          else std::copy(gout.data(), gout.data() + gout.size(), sc.pre_grad.data());
        } else {
          act_[static_cast<std::size_t>(s.act_out)].backward(as_rows(pre), gout.data(), sc.pre_grad.data(),
                                                             pre.size() / pre.shape(0));
        }
        gy = sc.pre_grad.cview();
      }
      if (sc.g.layers.size() != sc.sub.size()) sc.g = train::make_gradients(sc.sub);
      const bool need_in = si > 0 || (act_[0].learnable() && act_[0].enabled());
      gout = train::backward(sc.sub, sc.fc, gy, sc.g, need_in);
      for (std::size_t k = 0; k < sc.sub.size(); ++k) {
        layer_gradients& dst = g.layers[s.begin + k];
        const layer_gradients& src = sc.g.layers[k];
        QLIB_CHECK(dst.weight.size() == src.weight.size() && dst.bias.size() == src.bias.size(), errc::shape_mismatch,
                   "train::qat_model::backward: gradients of layer " + std::to_string(s.begin + k) +
                       " do not match the model");
        std::copy(src.bias.begin(), src.bias.end(), dst.bias.begin());  // the bias rounding passes straight through
        if (k == 0 && s.weight_q >= 0) {
          const fq_view w = weight_rows(s);
          wq_[static_cast<std::size_t>(s.weight_q)].backward(w, src.weight.data(), dst.weight.data(), per_scale(s, w));
        } else {
          std::copy(src.weight.begin(), src.weight.end(), dst.weight.begin());
        }
      }
    }
    if (act_[0].learnable() && act_[0].enabled()) {
      detail::ensure_shape(c.input_grad, c.input.shape());
      act_[0].backward(as_rows(c.input.cview()), gout.data(), c.input_grad.data(),
                       c.input.size() / c.input.shape(0));
    }
  }

  // Inference with the fake-quantized model (batch norms with running statistics,
  // observers untouched): what the integer model computes, in float.
  tensor<float, 4> forward(tensor_view<const float, 4> x) const { return forward_steps(x, 0, steps_.size()); }

  // Steps [first, last) only. For first == 0, x is the model input (quantized by the
  // input quantizer); otherwise x is step first's input as the previous step leaves it.
  tensor<float, 4> forward_steps(tensor_view<const float, 4> x, std::size_t first, std::size_t last) const {
    QLIB_CHECK(first < last && last <= steps_.size(), errc::out_of_range,
               "train::qat_model::forward_steps: bad step range [" + std::to_string(first) + ", " +
                   std::to_string(last) + ") of " + std::to_string(steps_.size()));
    tensor<float, 4> cur(x);
    if (first == 0) {
      tensor<float, 4> q(x.shape());
      act_[0].forward(as_rows(cur.cview()), as_rows(q.view()));
      cur = std::move(q);
    }
    nn::sequential sub;
    for (std::size_t si = first; si < last; ++si) {
      const qat_step& s = steps_[si];
      load_step(s, sub, nullptr);
      cur = sub.forward(cur.cview());
      if (const fake_quantizer* q = output_quantizer(s)) {
        tensor<float, 4> y(cur.shape());
        if (s.requantize) requantize_forward(*q, cur.cview(), y);
        else q->forward(as_rows(cur.cview()), as_rows(y.view()));
        cur = std::move(y);
      }
    }
    return cur;
  }

  // The fake-quantized weights and bias step si's conv/linear computes with (eval forward).
  nn::layer quantized_layer(std::size_t si) const {
    QLIB_CHECK(si < steps_.size() && steps_[si].weight_q >= 0, errc::out_of_range,
               "train::qat_model::quantized_layer: step " + std::to_string(si) + " has no weights");
    nn::sequential sub;
    load_step(steps_[si], sub, nullptr);
    return sub[0];
  }

  // The weight parameters of step si as the eval forward and the conversion use them.
  quant_params weight_params(std::size_t si) const {
    QLIB_CHECK(si < steps_.size() && steps_[si].weight_q >= 0, errc::out_of_range,
               "train::qat_model::weight_params: step " + std::to_string(si) + " has no weights");
    return wq_[static_cast<std::size_t>(steps_[si].weight_q)].params_for(weight_rows(steps_[si]));
  }

  // A dense NHWC tensor as the [1, size] rows an activation quantizer sees.
  static fq_view as_rows(tensor_view<const float, 4> t) {
    QLIB_CHECK(t.is_contiguous(), errc::invalid_argument, "train::qat_model: activations must be dense");
    return fq_view(t.data(), {1, t.size()});
  }
  static tensor_view<float, 2> as_rows(tensor_view<float, 4> t) { return {t.data(), {1, t.size()}}; }

 private:
  const fake_quantizer* output_quantizer(const qat_step& s) const {
    if (s.requantize) return &act_[static_cast<std::size_t>(s.act_in)];
    return s.act_out >= 0 && s.weight_q >= 0 ? &act_[static_cast<std::size_t>(s.act_out)] : nullptr;
  }

  // avg pooling's output rounded onto its input's grid (the integer pooling rounds its
  // mean half to even, in integers).
  static void requantize_forward(const fake_quantizer& q, tensor_view<const float, 4> y, tensor<float, 4>& out) {
    if (!q.enabled()) {
      out = tensor<float, 4>(y);
      return;
    }
    fake_quant_forward(as_rows(y), as_rows(out.view()), q.params());
  }

  // Step s's conv/linear weights as [out][K] rows (only steps with weight_q >= 0, which start with one).
  fq_view weight_rows(const qat_step& s) const { return nn::weight_matrix(model_[s.begin]); }
  index_t per_scale(const qat_step& s, fq_view w) const {
    return wq_[static_cast<std::size_t>(s.weight_q)].options().per_channel ? w.shape(1) : w.size();
  }

  // Copies step s's layers into sub, the conv/linear with fake-quantized weights (and
  // bias on its int32 grid). In training, `train_q` is the step's weight quantizer and
  // runs forward_train (observer update); otherwise (nullptr) params_for() is used.
  void load_step(const qat_step& s, nn::sequential& sub, fake_quantizer* train_q) const {
    sub.layers.assign(model_.layers.begin() + static_cast<std::ptrdiff_t>(s.begin),
                      model_.layers.begin() + static_cast<std::ptrdiff_t>(s.end));
    if (s.weight_q < 0) return;
    const fake_quantizer& wq = wq_[static_cast<std::size_t>(s.weight_q)];
    const fq_view w = weight_rows(s);
    std::visit(
        [&](auto& l) {
          using L = std::decay_t<decltype(l)>;
          if constexpr (std::is_same<L, nn::conv2d>::value || std::is_same<L, nn::linear>::value) {
            const tensor_view<float, 2> wout(l.weight.data(), w.shape());
            quant_params pw;
            if (train_q) {
              train_q->forward_train(w, wout);
              if (!wq.enabled()) return;
              pw = wq.params();
            } else {
              if (!wq.enabled()) return;
              pw = wq.params_for(w);
              fake_quant_forward(w, wout, pw);
            }
            const fake_quantizer& in = act_[static_cast<std::size_t>(s.act_in)];
            if (!opt_.quantize_bias || s.batch_norm || l.bias.empty() || !in.enabled()) return;
            const float s_in = in.params().scale[0];
            for (index_t o = 0; o < l.bias.size(); ++o) {
              const float sw = pw.scale[pw.size() == 1 ? 0 : static_cast<std::size_t>(o)];
              const double code = bias_code(l.bias(o), s_in, sw);
              l.bias(o) = static_cast<float>(code * (static_cast<double>(s_in) * static_cast<double>(sw)));
            }
          }
        },
        sub[0]);
  }

  void build_steps() {
    steps_.clear();
    int cur = 0, acts = 1, weights = 0;
    const std::size_t n = model_.size();
    for (std::size_t i = 0; i < n;) {
      const nn::layer& l = model_[i];
      qat_step s;
      s.begin = i;
      s.act_in = cur;
      const bool is_conv = std::holds_alternative<nn::conv2d>(l);
      if (is_conv || std::holds_alternative<nn::linear>(l)) {
        s.weight_q = weights++;
        std::size_t j = i + 1;
        if (is_conv && j < n && std::holds_alternative<nn::batch_norm2d>(model_[j])) {
          s.batch_norm = true;
          ++j;
        }
        if (j < n && std::holds_alternative<nn::relu>(model_[j])) {
          s.relu_hi = 0.0f;
          ++j;
        } else if (j < n && std::holds_alternative<nn::relu6>(model_[j])) {
          s.relu_hi = 6.0f;
          ++j;
        }
        s.end = j;
        const bool logits = opt_.float_logits && j == n && !is_conv && s.relu_hi < 0.0f;
        if (!logits) s.act_out = cur = acts++;
      } else {
        QLIB_CHECK(std::holds_alternative<nn::max_pool2d>(l) || std::holds_alternative<nn::avg_pool2d>(l) ||
                       std::holds_alternative<nn::flatten>(l),
                   errc::unsupported,
                   "train::qat_model: layer " + std::to_string(i) + " (" + nn::layer_kind(l) +
                       ") has no int8 form: batch norm must follow a conv2d, ReLU a conv2d or linear");
        s.end = i + 1;
        s.requantize = std::holds_alternative<nn::avg_pool2d>(l);
      }
      steps_.push_back(s);
      i = s.end;
    }
    QLIB_CHECK(act_.empty() || static_cast<int>(act_.size()) == acts, errc::invalid_argument,
               "train::qat_model: the quantization points changed");
    act_count_ = acts;
  }

  void make_weight_quantizers() {
    const fake_quantizer_options w{opt_.weight_scheme, opt_.per_channel_weights, opt_.weight_observer,
                                   opt_.averaging_constant, opt_.lsq_weights, opt_.lsq_lr_scale};
    wq_.clear();
    for (const qat_step& s : steps_)
      if (s.weight_q >= 0) wq_.emplace_back(w);
  }

  nn::sequential model_;
  qat_options opt_;
  std::vector<qat_step> steps_;
  int act_count_ = 0;
  std::vector<fake_quantizer> act_, wq_;
};

// Reused buffers of qat train steps.
struct qat_workspace {
  qat_cache cache;
  gradients grads;
};

// One QAT step: training forward, softmax cross-entropy, backward, opt.step() over
// model.parameters() (weights, biases and LSQ parameters).
template <class Optimizer>
step_result train_step(qat_model& model, tensor_view<const float, 4> x, labels_view labels, Optimizer& opt,
                       qat_workspace& ws) {
  QLIB_CHECK(labels.shape(0) == x.shape(0), errc::shape_mismatch,
             "train::train_step (QAT): " + std::to_string(labels.shape(0)) + " labels for a batch of " +
                 std::to_string(x.shape(0)));
  if (ws.grads.layers.size() != model.model().size()) ws.grads = model.make_gradients();
  const tensor_view<const float, 4> logits = model.forward_train(x, ws.cache);
  const loss_result<4> l = softmax_cross_entropy(logits, labels);
  model.backward(ws.cache, l.grad.cview(), ws.grads);
  opt.step(model.parameters(ws.grads));
  return {l.loss, l.correct, x.shape(0)};
}

// One pass over (x, labels) in shuffled batches, as train::train_epoch.
template <class Optimizer>
epoch_result train_epoch(qat_model& model, tensor_view<const float, 4> x, labels_view labels, Optimizer& opt,
                         const epoch_options& eo = {}, const progress_callback& on_step = {}) {
  detail::check_dataset(x, labels, eo.batch_size, "train::train_epoch (QAT)");
  qat_workspace ws;
  return detail::run_epoch(x, labels, opt, eo, on_step, "train::train_epoch (QAT)",
                           [&](const tensor<float, 4>& xb, const std::vector<std::int32_t>& yb,
                               const std::vector<index_t>&, std::size_t, std::size_t) {
                             return train_step(model, xb.cview(), view_of(yb), opt, ws);
                           });
}

// Loss and accuracy of the fake-quantized model in inference mode.
inline evaluation evaluate(const qat_model& model, tensor_view<const float, 4> x, labels_view labels,
                           index_t batch_size = 256) {
  return detail::evaluate_model(model, x, labels, batch_size, "train::evaluate (QAT)");
}

}  // namespace train
}  // namespace qlib
