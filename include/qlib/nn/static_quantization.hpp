// Static post-training quantization: observe activations on calibration batches, then convert to int8.
#pragma once

#include <limits>
#include <string>
#include <variant>
#include <vector>

#include "qlib/nn/layer_weights.hpp"
#include "qlib/nn/quantized_sequential.hpp"
#include "qlib/nn/sequential.hpp"
#include "qlib/quant/observers.hpp"

namespace qlib {
namespace nn {

struct static_quantization_options {
  bool per_channel_weights = true;                                        // else per tensor
  affine_scheme<std::int8_t> weight_scheme = schemes::s8_symmetric;        // [-127, 127], zero point 0
  affine_scheme<std::uint8_t> activation_scheme = schemes::u8_asymmetric;  // PyTorch quint8
  bool float_logits = true;  // a final linear dequantizes its accumulators (no uint8 rounding of logits)
  // Mixed precision: empty (default) quantizes every layer with weight_scheme; else one bit
  // width in [2, 8] per conv2d / linear in model order, each layer then using
  // weight_scheme_at_bits(weight_scheme, bits) - codes still stored as int8, so the int8
  // kernels run them. From a bit-width search, take the options from
  // nn::bit_width_plan::quantization_options(), which refuses a weight scheme or
  // per-channel setting other than the one the plan was measured with.
  std::vector<int> weight_bits;
};

// Usage:
//   nn::static_quantizer<histogram_observer> q(float_model);   // folds batch norms
//   for (batch : calibration) q.observe(batch);                 // float forward + observers
//   nn::quantized_sequential m = q.convert();
// One observer (a copy of `prototype`, any type with the observer concept of
// quant/observers/observer.hpp and per-tensor granularity) watches the model input and
// the output of every conv2d / linear (after its fused ReLU/ReLU6); pooling and flatten
// keep their input's parameters. Supported models: conv2d / linear each optionally
// followed by batch_norm2d (folded) and relu / relu6, pooling, flatten.
template <class Observer = histogram_observer>
class static_quantizer {
 public:
  explicit static_quantizer(const sequential& model, static_quantization_options opt = {},
                            const Observer& prototype = Observer())
      : model_(fold_batch_norms(model)), opt_(opt) {
    opt_.weight_scheme.validate();
    opt_.activation_scheme.validate();
    QLIB_CHECK(model_.size() > 0, errc::empty_tensor, "nn::static_quantizer: empty model");
    observers_.push_back(prototype);
    int current = 0;
    for (std::size_t i = 0; i < model_.size(); ++i) {
      const layer& l = model_[i];
      step s{i, -1.0f, current, current};
      if (std::holds_alternative<conv2d>(l) || std::holds_alternative<linear>(l)) {
        if (i + 1 < model_.size() && std::holds_alternative<relu>(model_[i + 1])) s.relu_hi = 0.0f;
        if (i + 1 < model_.size() && std::holds_alternative<relu6>(model_[i + 1])) s.relu_hi = 6.0f;
        if (s.relu_hi >= 0.0f) ++i;
        observers_.push_back(prototype);
        s.observer_out = current = static_cast<int>(observers_.size()) - 1;
      } else {
        QLIB_CHECK(std::holds_alternative<max_pool2d>(l) || std::holds_alternative<avg_pool2d>(l) ||
                       std::holds_alternative<flatten>(l),
                   errc::unsupported,
                   std::string("nn::static_quantizer: layer ") + std::to_string(i) + " (" + layer_kind(l) +
                       ") has no int8 form here: batch norm and ReLU must follow a conv2d or linear");
      }
      steps_.push_back(s);
    }
    if (!opt_.weight_bits.empty()) {
      std::size_t n = 0;
      for (const step& st : steps_) n += st.observer_out != st.observer_in;
      QLIB_CHECK(opt_.weight_bits.size() == n, errc::shape_mismatch,
                 "nn::static_quantizer: " + std::to_string(opt_.weight_bits.size()) + " weight bit widths for " +
                     std::to_string(n) + " conv2d/linear layers");
      for (std::size_t k = 0; k < n; ++k) layer_scheme(k);  // refuses a width outside [2, 8]
    }
  }

  // Runs the float model on one calibration batch and feeds every observer.
  void observe(tensor_view<const float, 4> batch) {
    model_.output_shape(batch.shape());
    tensor<float, 4> cur(batch);
    observers_[0].observe(cur.cview());
    for (const step& s : steps_) {
      const float lo = s.relu_hi >= 0.0f ? 0.0f : -std::numeric_limits<float>::infinity();
      const float hi = s.relu_hi > 0.0f ? s.relu_hi : std::numeric_limits<float>::infinity();
      cur = sequential::forward_layer(model_[s.layer], cur.cview(), lo, hi);
      if (s.observer_out != s.observer_in) observers_[static_cast<std::size_t>(s.observer_out)].observe(cur.cview());
    }
    ++batches_;
  }
  index_t batches() const noexcept { return batches_; }
  const sequential& folded_model() const noexcept { return model_; }
  const std::vector<Observer>& observers() const noexcept { return observers_; }

  quantized_sequential convert() const {
    QLIB_CHECK(batches_ > 0, errc::empty_tensor, "nn::static_quantizer: convert() before any observe()");
    std::vector<activation_qparams> act;
    for (const Observer& o : observers_) {
      const quant_params p = o.params(opt_.activation_scheme);
      QLIB_CHECK(p.size() == 1, errc::invalid_argument, "nn::static_quantizer: activation observers must be per tensor");
      act.push_back({p.scale[0], p.zero_point[0]});
    }
    quantized_sequential q;
    q.input = act[0];
    std::size_t weighted = 0;  // conv2d / linear layers converted so far
    for (std::size_t si = 0; si < steps_.size(); ++si) {
      const step& s = steps_[si];
      const activation_qparams in = act[static_cast<std::size_t>(s.observer_in)];
      const activation_qparams out = act[static_cast<std::size_t>(s.observer_out)];
      const layer& l = model_[s.layer];
      const affine_scheme<std::int8_t> wscheme =
          opt_.weight_bits.empty() || s.observer_out == s.observer_in ? opt_.weight_scheme
                                                                      : layer_scheme(weighted++);
      if (const auto* c = std::get_if<conv2d>(&l)) {
        qconv2d qc;
        qc.opt = c->opt;
        qc.in_channels = c->in_channels();
        qc.in = in;
        qc.w = quantize_weights(weight_matrix(*c), std::vector<float>(c->bias.begin(), c->bias.end()), in.scale,
                                opt_.per_channel_weights, c->opt.groups, wscheme);
        qc.output = make_quantized_output(qc.w, in, out, s.relu_hi);
        qc.prepare();
        q.layers.emplace_back(std::move(qc));
      } else if (const auto* f = std::get_if<linear>(&l)) {
        qlinear ql;
        ql.in = in;
        ql.w = quantize_weights(f->weight.cview(), std::vector<float>(f->bias.begin(), f->bias.end()), in.scale,
                                opt_.per_channel_weights, 1, wscheme);
        ql.float_output = opt_.float_logits && si + 1 == steps_.size() && s.relu_hi < 0.0f;
        if (ql.float_output) {
          for (index_t o = 0; o < ql.w.out_channels(); ++o) ql.channel_scale.push_back(ql.w.scale(o));
        } else {
          ql.output = make_quantized_output(ql.w, in, out, s.relu_hi);
        }
        ql.prepare();
        q.layers.emplace_back(std::move(ql));
      } else {
        std::visit(
            [&](const auto& v) {
              using L = std::decay_t<decltype(v)>;
              if constexpr (std::is_same<L, max_pool2d>::value || std::is_same<L, avg_pool2d>::value ||
                            std::is_same<L, flatten>::value)
                q.layers.emplace_back(v);
            },
            l);
      }
    }
    return q;
  }

 private:
  // The weight scheme of the k-th conv2d / linear under weight_bits.
  affine_scheme<std::int8_t> layer_scheme(std::size_t k) const {
    return weight_scheme_at_bits(opt_.weight_scheme, opt_.weight_bits[k],
                                 "nn::static_quantizer: weight_bits[" + std::to_string(k) + "]");
  }
  struct step {
    std::size_t layer;
    float relu_hi;  // < 0: none, 0: ReLU, > 0: ReLU6's 6
    int observer_in, observer_out;
  };
  sequential model_;
  static_quantization_options opt_;
  std::vector<Observer> observers_;
  std::vector<step> steps_;
  index_t batches_ = 0;
};

}  // namespace nn
}  // namespace qlib
