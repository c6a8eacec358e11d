// Conversion of a train::qat_model to the integer model (nn::quantized_sequential) with exactly the fake quantizers' parameters.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <variant>
#include <vector>

#include "qlib/nn/quantized_sequential.hpp"
#include "qlib/train/qat.hpp"

namespace qlib {
namespace train {

// The integer model of a QAT model: the input quantizer's (scale, zero point) quantize
// the input; each conv/linear gets int8 weights quantize(w, weight_params(step)) - the
// codes the fake quantizer's values are the dequantization of -, the int32 bias
// bias_code(b, input scale, weight scale), and requantizes to its output quantizer's
// parameters with its ReLU/ReLU6 and the output scheme's [qmin, qmax] as the clamp; a
// last linear without output quantizer dequantizes to float logits.
//
// Agreement with qat_model::forward (the fake-quant model), the exact bound: for the same
// input codes, a conv/linear computes the exact integer A = sum (qx - zx)(qw - zw) +
// bias code, whose real value is r = A * sx * sw / sy (codes above the output zero point).
// The integer model rounds float(A) * float(sx * sw / sy), the fake model rounds its float
// sum of products times 1/sy; both are r up to float rounding (relative ~K ulps), so the
// output codes are equal except where r lies within that error of a rounding boundary
// (a half step, or ReLU6's top), and there they differ by exactly 1 code. Max pooling and
// flatten commute with the codes exactly; avg pooling rounds the same integer mean (a tie
// can round either way in the fake model: again at most 1 code). Float logits differ by
// float rounding only. A 1-code difference can propagate to later layers like any input
// perturbation of one step.
//
// Refuses (errc::unsupported) batch norms not yet folded (qat_model::freeze_bn), disabled
// quantizers, and an input scheme other than the full [0, 255]; errc::empty_tensor when a
// quantizer has no parameters (no training batch seen).
inline nn::quantized_sequential convert(const qat_model& m) {
  const char* who = "train::convert (QAT)";
  QLIB_CHECK(!m.has_batch_norm(), errc::unsupported,
             std::string(who) + ": batch norms are not folded yet; call freeze_bn() and train on");
  const auto& act = m.activation_quantizers();
  for (std::size_t k = 0; k < act.size(); ++k)
    QLIB_CHECK(act[k].enabled(), errc::unsupported,
               std::string(who) + ": activation quantizer " + std::to_string(k) + " is disabled");
  for (const auto& w : m.weight_quantizers())
    QLIB_CHECK(w.enabled(), errc::unsupported, std::string(who) + ": a weight quantizer is disabled");
  const quant_params& pin = act[0].params();
  QLIB_CHECK(pin.qmin == 0 && pin.qmax == 255, errc::unsupported,
             std::string(who) + ": the integer model quantizes its input to [0, 255]; the input scheme is [" +
                 std::to_string(pin.qmin) + ", " + std::to_string(pin.qmax) + "]");
  auto act_params = [&](int k) {
    const quant_params& p = act[static_cast<std::size_t>(k)].params();
    return nn::activation_qparams{p.scale[0], p.zero_point[0]};
  };

  nn::quantized_sequential q;
  q.input = act_params(0);
  const nn::sequential& model = m.model();
  for (std::size_t si = 0; si < m.steps().size(); ++si) {
    const qat_step& s = m.steps()[si];
    const nn::layer& l = model[s.begin];
    if (s.weight_q < 0) {
      std::visit(
          [&](const auto& v) {
            using L = std::decay_t<decltype(v)>;
            if constexpr (std::is_same<L, nn::max_pool2d>::value || std::is_same<L, nn::avg_pool2d>::value ||
                          std::is_same<L, nn::flatten>::value)
              q.layers.emplace_back(v);
          },
          l);
      continue;
    }
    const nn::activation_qparams in = act_params(s.act_in);
    // Weights [out][K] and bias of the conv/linear.
    const tensor<float, 4>* w4 = nullptr;
    const tensor<float, 2>* w2 = nullptr;
    const tensor<float, 1>* bias = nullptr;
    if (const auto* c = std::get_if<nn::conv2d>(&l)) {
      w4 = &c->weight;
      bias = &c->bias;
    } else {
      const auto& f = std::get<nn::linear>(l);
      w2 = &f.weight;
      bias = &f.bias;
    }
    const index_t oc = w4 ? w4->shape(0) : w2->shape(0);
    const index_t kk = (w4 ? w4->size() : w2->size()) / oc;
    const tensor_view<const float, 2> w(w4 ? w4->data() : w2->data(), {oc, kk});
    nn::quantized_weights qw;
    qw.params = m.weight_params(si);
    qw.values = tensor<std::int8_t, 2>(w.shape());
    qlib::quantize(w, qw.values.view(), qw.params);
    qw.bias.assign(static_cast<std::size_t>(oc), 0);
    for (index_t o = 0; o < bias->size(); ++o) {
      QLIB_CHECK(std::isfinite((*bias)(o)), errc::non_finite,
                 std::string(who) + ": bias " + std::to_string(o) + " of layer " + std::to_string(s.begin) +
                     " is not finite");
      const double v = bias_code((*bias)(o), in.scale, qw.scale(o));
      QLIB_CHECK(std::fabs(v) < 2147483520.0, errc::overflow,
                 std::string(who) + ": bias " + std::to_string(o) + " of layer " + std::to_string(s.begin) +
                     " does not fit int32 at this scale");
      qw.bias[static_cast<std::size_t>(o)] = static_cast<std::int32_t>(v);
    }
    nn::quantized_output out;
    if (s.act_out >= 0) {
      const quant_params& po = act[static_cast<std::size_t>(s.act_out)].params();
      out = nn::make_quantized_output(qw, in, {po.scale[0], po.zero_point[0]}, s.relu_hi);
      out.qmin = std::max(out.qmin, po.qmin);  // a narrower activation scheme (e.g. 4 bits)
      out.qmax = std::min(out.qmax, po.qmax);
    }
    if (const auto* c = std::get_if<nn::conv2d>(&l)) {
      nn::qconv2d qc;
      qc.opt = c->opt;
      qc.in_channels = c->in_channels();
      qc.in = in;
      qw.pack_groups(c->opt.groups);
      qc.w = std::move(qw);
      qc.output = std::move(out);
      qc.prepare();
      q.layers.emplace_back(std::move(qc));
    } else {
      nn::qlinear ql;
      ql.in = in;
      qw.pack_groups(1);
      ql.w = std::move(qw);
      ql.float_output = s.act_out < 0;
      if (ql.float_output) {
        for (index_t o = 0; o < ql.w.out_channels(); ++o) ql.channel_scale.push_back(ql.w.scale(o));
      } else {
        ql.output = std::move(out);
      }
      ql.prepare();
      q.layers.emplace_back(std::move(ql));
    }
  }
  return q;
}

}  // namespace train
}  // namespace qlib
