// Mixed-precision weights: each conv2d/linear layer's sensitivity to each bit width, and the exact best choice under a size budget.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "qlib/core/index_iteration.hpp"
#include "qlib/nn/multiple_choice_knapsack.hpp"
#include "qlib/nn/sequential.hpp"
#include "qlib/quant/affine.hpp"
#include "qlib/quant/choose_params.hpp"

namespace qlib {
namespace nn {

// How far a model's outputs [N, ...] (one row of logits per sample) moved from the float
// model's, averaged over the batch:
enum class sensitivity_metric {
  kl_divergence,  // mean over samples of KL(softmax(float) || softmax(quantized)), in nats (HAWQ, ZeroQ)
  logit_mse,      // mean over all outputs of (quantized - float)^2
};
inline const char* metric_name(sensitivity_metric m) noexcept {
  return m == sensitivity_metric::kl_divergence ? "KL" : "logit MSE";
}

struct bit_width_search_options {
  std::vector<int> candidate_bits{2, 3, 4, 5, 6, 8};  // each in [2, 8]; sorted and deduplicated
  sensitivity_metric metric = sensitivity_metric::kl_divergence;
  bool per_channel_weights = true;  // as static_quantization_options (else one scale per layer)
  int scale_bits = 32;              // what one float scale costs in the size
};

// The weight scheme at `bits`: symmetric, restricted range, codes in
// [-(2^(bits-1) - 1), 2^(bits-1) - 1] (schemes::s8_symmetric at 8, s4_symmetric at 4).
inline affine_scheme<std::int8_t> symmetric_weight_scheme(int bits) {
  affine_scheme<std::int8_t> s = schemes::s8_symmetric;
  s.bits = bits;
  s.validate();
  return s;
}

// The distance `metric` between outputs of the same shape (see sensitivity_metric). KL uses
// log-softmax in double. A non-finite result is an error.
inline double output_distance(tensor_view<const float, 4> reference, tensor_view<const float, 4> out,
                              sensitivity_metric metric) {
  QLIB_CHECK(reference.shape() == out.shape(), errc::shape_mismatch,
             "nn::output_distance: shapes " + qlib::detail::extents_string(reference.shape()) + " and " +
                 qlib::detail::extents_string(out.shape()) + " differ");
  QLIB_CHECK(!reference.empty(), errc::empty_tensor, "nn::output_distance: empty outputs");
  const tensor<float, 4> a(reference), b(out);  // dense copies
  const index_t n = a.shape(0), k = a.size() / n;
  double total = 0.0;
  if (metric == sensitivity_metric::logit_mse) {
    for (index_t i = 0; i < a.size(); ++i) {
      const double d = static_cast<double>(b.data()[i]) - a.data()[i];
      total += d * d;
    }
    total /= static_cast<double>(a.size());
  } else {
    auto log_softmax = [k](const float* x, std::vector<double>& y) {
      const double m = *std::max_element(x, x + k);
      double s = 0.0;
      for (index_t j = 0; j < k; ++j) s += std::exp(x[j] - m);
      const double ls = std::log(s);
      for (index_t j = 0; j < k; ++j) y[static_cast<std::size_t>(j)] = x[j] - m - ls;
    };
    std::vector<double> lp(static_cast<std::size_t>(k)), lq(static_cast<std::size_t>(k));
    for (index_t i = 0; i < n; ++i) {
      log_softmax(a.data() + i * k, lp);
      log_softmax(b.data() + i * k, lq);
      for (std::size_t j = 0; j < lp.size(); ++j) total += std::exp(lp[j]) * (lp[j] - lq[j]);
    }
    total /= static_cast<double>(n);
  }
  QLIB_CHECK(std::isfinite(total), errc::non_finite,
             std::string("nn::output_distance: the ") + metric_name(metric) +
                 " is not finite (NaN/Inf in the model outputs)");
  return total;
}

// One quantizable layer's sensitivity to each candidate bit width.
struct layer_sensitivity {
  std::size_t layer = 0;  // index in the model as given (a conv2d's own index when a batch norm follows)
  const char* kind = "";
  index_t weights = 0, scales = 0;  // weight count, scale count (channels, or 1 per tensor)
  std::vector<double> sensitivity;  // per candidate, in sensitivity_report::bits order
};

struct sensitivity_report {
  std::vector<int> bits;  // the candidates, ascending
  sensitivity_metric metric = sensitivity_metric::kl_divergence;
  bool per_channel_weights = true;
  int scale_bits = 32;
  std::vector<layer_sensitivity> layers;  // the conv2d / linear layers in model order

  // Size of layer i's weights at candidate c: weights * bits + scales * scale_bits (biases,
  // int32 whatever the bit width, are not counted).
  std::int64_t size_bits(std::size_t i, std::size_t c) const {
    return static_cast<std::int64_t>(layers[i].weights) * bits[c] +
           static_cast<std::int64_t>(layers[i].scales) * scale_bits;
  }
  index_t total_weights() const {
    index_t n = 0;
    for (const layer_sensitivity& l : layers) n += l.weights;
    return n;
  }
  std::int64_t total_scale_bits() const {
    std::int64_t n = 0;
    for (const layer_sensitivity& l : layers) n += static_cast<std::int64_t>(l.scales) * scale_bits;
    return n;
  }
};

namespace detail {
// For each layer of fold_batch_norms(m), the index of the layer of m it came from.
inline std::vector<std::size_t> folded_layer_origins(const sequential& m) {
  std::vector<std::size_t> origin;
  for (std::size_t i = 0; i < m.size(); ++i) {
    origin.push_back(i);
    if (i + 1 < m.size() && std::holds_alternative<conv2d>(m[i]) && std::holds_alternative<batch_norm2d>(m[i + 1])) ++i;
  }
  return origin;
}

inline bool is_quantizable(const layer& l) {
  return std::holds_alternative<conv2d>(l) || std::holds_alternative<linear>(l);
}

// The weights of a conv2d [out, kh, kw, in/groups] or linear [out, in] as [out][K].
template <class Layer, class T = std::conditional_t<std::is_const<Layer>::value, const float, float>>
tensor_view<T, 2> weight_matrix(Layer& l) {
  if (auto* c = std::get_if<conv2d>(&l))
    return {c->weight.data(), {c->out_channels(), c->weight.size() / c->out_channels()}};
  auto& f = std::get<linear>(l);
  return {f.weight.data(), f.weight.shape()};
}

// dst's weights := fake_quantize(src's weights) at `bits`, with the static quantizer's
// parameter choice (choose_params, min/max per output channel or per tensor): the values
// the int8 model computes with.
inline void fake_quantize_weights_into(const layer& src, layer& dst, int bits, bool per_channel) {
  const tensor_view<const float, 2> w = weight_matrix(src);
  const quant_params p = choose_params(w, symmetric_weight_scheme(bits),
                                       per_channel ? granularity::per_channel(0) : granularity::per_tensor());
  qlib::fake_quantize(w, weight_matrix(dst), p);
}

inline void check_calibration_batch(tensor_view<const float, 4> batch, const char* who) {
  QLIB_CHECK(!batch.empty(), errc::empty_tensor, std::string(who) + ": empty calibration batch");
  bool finite = true;
  qlib::detail::for_each_row(batch.shape(), [&](const extents<4>& idx) {
    const float* row = &batch[idx];
    for (index_t j = 0; j < batch.shape(3); ++j) finite = finite && std::isfinite(row[j * batch.stride(3)]);
  });
  QLIB_CHECK(finite, errc::non_finite, std::string(who) + ": NaN or Inf in the calibration batch");
}

// Layers [from, to) of m as a model of their own.
inline sequential layers_between(const sequential& m, std::size_t from, std::size_t to) {
  sequential t;
  const auto first = m.layers.begin();
  t.layers.assign(first + static_cast<std::ptrdiff_t>(from), first + static_cast<std::ptrdiff_t>(to));
  return t;
}
}  // namespace detail

// Measures, for every conv2d / linear layer of `model` (batch norms folded first, as the
// static quantizer does) and every candidate bit width b, the distance (opt.metric) between
// the float model's outputs on `calibration` and those of the model with only that layer's
// weights fake-quantized at b bits (symmetric_weight_scheme(b), per output channel).
// Activations stay float: this is the weights' share of the error. Cost: one forward of
// the model's tail per layer and candidate (the input of each layer is computed once).
inline sensitivity_report measure_sensitivity(const sequential& model, tensor_view<const float, 4> calibration,
                                              const bit_width_search_options& opt = {}) {
  const char* who = "nn::measure_sensitivity";
  QLIB_CHECK(!opt.candidate_bits.empty(), errc::invalid_argument, std::string(who) + ": no candidate bit widths");
  sensitivity_report r;
  r.bits = opt.candidate_bits;
  std::sort(r.bits.begin(), r.bits.end());
  r.bits.erase(std::unique(r.bits.begin(), r.bits.end()), r.bits.end());
  for (int b : r.bits)
    QLIB_CHECK(b >= 2 && b <= 8, errc::invalid_argument,
               std::string(who) + ": candidate bit width " + std::to_string(b) + " outside [2, 8]");
  QLIB_CHECK(opt.scale_bits >= 0, errc::invalid_argument, std::string(who) + ": scale_bits must be >= 0");
  r.metric = opt.metric;
  r.per_channel_weights = opt.per_channel_weights;
  r.scale_bits = opt.scale_bits;
  detail::check_calibration_batch(calibration, who);

  const sequential folded = fold_batch_norms(model);
  const std::vector<std::size_t> origin = detail::folded_layer_origins(model);
  folded.output_shape(calibration.shape());  // validates the chain
  const tensor<float, 4> reference = folded.forward(calibration);
  (void)output_distance(reference.cview(), reference.cview(), r.metric);  // refuses a non-finite float output

  tensor<float, 4> input(calibration);  // the input of folded layer `at`
  std::size_t at = 0;
  for (std::size_t i = 0; i < folded.size(); ++i) {
    if (!detail::is_quantizable(folded[i])) continue;
    // Layer i's input from layer at's: i is a conv2d/linear, so no fused ReLU is split.
    if (at < i) input = detail::layers_between(folded, at, i).forward(input.cview());
    at = i;
    layer_sensitivity ls;
    ls.layer = origin[i];
    ls.kind = layer_kind(folded[i]);
    const tensor_view<const float, 2> w = detail::weight_matrix(folded[i]);
    ls.weights = w.size();
    ls.scales = opt.per_channel_weights ? w.shape(0) : 1;
    sequential tail = detail::layers_between(folded, i, folded.size());
    for (int b : r.bits) {
      detail::fake_quantize_weights_into(folded[i], tail[0], b, opt.per_channel_weights);
      ls.sensitivity.push_back(output_distance(reference.cview(), tail.forward(input.cview()).cview(), r.metric));
    }
    r.layers.push_back(std::move(ls));
  }
  QLIB_CHECK(!r.layers.empty(), errc::invalid_argument, std::string(who) + ": the model has no conv2d or linear layer");
  return r;
}

// A weight-size budget: total bits (weights at their widths + the scales), or an average
// bit width per weight, which allows payload bits <= floor(average * weights) plus the
// scales (so "average 4" is exactly the size of every layer at 4 bits).
struct size_budget {
  enum class kind { total_bits, average_bits } type = kind::total_bits;
  double value = 0.0;

  static size_budget total_bits(std::int64_t bits) { return {kind::total_bits, static_cast<double>(bits)}; }
  static size_budget average_bits(double bits_per_weight) { return {kind::average_bits, bits_per_weight}; }

  std::int64_t resolve(const sensitivity_report& r) const {
    QLIB_CHECK(std::isfinite(value) && value >= 0.0 && value < 9.0e15, errc::invalid_argument,
               "nn::size_budget: " + std::to_string(value) + " is not a finite non-negative budget");
    if (type == kind::total_bits) return static_cast<std::int64_t>(value);
    return static_cast<std::int64_t>(std::floor(value * static_cast<double>(r.total_weights()))) +
           r.total_scale_bits();
  }
};

// The bit width of one layer in a plan.
struct layer_choice {
  std::size_t layer = 0;  // index in the model as given
  const char* kind = "";
  int bits = 8;
  index_t weights = 0;
  std::int64_t size_bits = 0;
  double sensitivity = 0.0;  // measured with only this layer quantized
};

struct bit_width_plan {
  std::vector<layer_choice> layers;  // the conv2d / linear layers in model order
  sensitivity_metric metric = sensitivity_metric::kl_divergence;
  bool per_channel_weights = true;
  std::int64_t budget_bits = 0;  // what the plan had to fit in
  std::int64_t size_bits = 0;    // what it takes: sum of layers[i].size_bits
  double predicted = 0.0;        // sum of the layers' sensitivities (the additive model HAWQ uses)

  // One bit width per conv2d / linear in model order: static_quantization_options::weight_bits.
  std::vector<int> weight_bits() const {
    std::vector<int> b;
    for (const layer_choice& l : layers) b.push_back(l.bits);
    return b;
  }
  // Bytes if the weights were stored packed at their bit widths, plus the scales.
  std::int64_t size_bytes() const { return (size_bits + 7) / 8; }
  // Payload bits per weight (scales not counted).
  double average_bits() const {
    double bits = 0, n = 0;
    for (const layer_choice& l : layers) {
      bits += static_cast<double>(l.weights) * l.bits;
      n += static_cast<double>(l.weights);
    }
    return n > 0 ? bits / n : 0.0;
  }
};

namespace detail {
inline bit_width_plan make_plan(const sensitivity_report& r, const std::vector<std::size_t>& choice,
                                std::int64_t budget) {
  bit_width_plan p;
  p.metric = r.metric;
  p.per_channel_weights = r.per_channel_weights;
  p.budget_bits = budget;
  for (std::size_t i = 0; i < r.layers.size(); ++i) {
    const std::size_t c = choice[i];
    p.layers.push_back({r.layers[i].layer, r.layers[i].kind, r.bits[c], r.layers[i].weights, r.size_bits(i, c),
                        r.layers[i].sensitivity[c]});
    p.size_bits += p.layers.back().size_bits;
    p.predicted += p.layers.back().sensitivity;  // in layer order, as the knapsack sums
  }
  return p;
}
inline void check_report(const sensitivity_report& r, const char* who) {
  QLIB_CHECK(!r.layers.empty() && !r.bits.empty(), errc::empty_tensor, std::string(who) + ": empty sensitivity report");
  for (const layer_sensitivity& l : r.layers)
    QLIB_CHECK(l.sensitivity.size() == r.bits.size(), errc::shape_mismatch,
               std::string(who) + ": layer " + std::to_string(l.layer) + " has " +
                   std::to_string(l.sensitivity.size()) + " sensitivities for " + std::to_string(r.bits.size()) +
                   " bit widths");
}
}  // namespace detail

// The bit width per layer that minimizes the summed sensitivity with size_bits <= the
// budget, solved exactly (solve_multiple_choice_knapsack; ties go to the smaller model).
// A budget below every layer at its smallest candidate is an error naming that minimum.
inline bit_width_plan choose_bit_widths(const sensitivity_report& r, const size_budget& budget) {
  detail::check_report(r, "nn::choose_bit_widths");
  const std::int64_t b = budget.resolve(r);
  std::vector<std::vector<std::int64_t>> size(r.layers.size());
  std::vector<std::vector<double>> cost(r.layers.size());
  for (std::size_t i = 0; i < r.layers.size(); ++i)
    for (std::size_t c = 0; c < r.bits.size(); ++c) {
      size[i].push_back(r.size_bits(i, c));
      cost[i].push_back(r.layers[i].sensitivity[c]);
    }
  return detail::make_plan(r, solve_multiple_choice_knapsack(size, cost, b).choice, b);
}

// Every layer at `bits` (one of the report's candidates): the baseline a search must beat.
inline bit_width_plan uniform_bit_widths(const sensitivity_report& r, int bits) {
  detail::check_report(r, "nn::uniform_bit_widths");
  const auto it = std::find(r.bits.begin(), r.bits.end(), bits);
  QLIB_CHECK(it != r.bits.end(), errc::invalid_argument,
             "nn::uniform_bit_widths: " + std::to_string(bits) + " bits is not one of the measured candidates");
  const std::vector<std::size_t> choice(r.layers.size(), static_cast<std::size_t>(it - r.bits.begin()));
  bit_width_plan p = detail::make_plan(r, choice, 0);
  p.budget_bits = p.size_bits;
  return p;
}

// The float model (batch norms folded) with every conv2d / linear weight fake-quantized at
// its plan's bit width: exactly the weights the plan's int8 model computes with.
inline sequential apply_bit_widths(const sequential& model, const bit_width_plan& plan) {
  sequential folded = fold_batch_norms(model);
  const std::vector<std::size_t> origin = detail::folded_layer_origins(model);
  std::size_t k = 0;
  for (std::size_t i = 0; i < folded.size(); ++i) {
    if (!detail::is_quantizable(folded[i])) continue;
    QLIB_CHECK(k < plan.layers.size() && plan.layers[k].layer == origin[i], errc::shape_mismatch,
               "nn::apply_bit_widths: the plan does not match the model (layer " + std::to_string(origin[i]) + ")");
    const layer src = folded[i];
    detail::fake_quantize_weights_into(src, folded[i], plan.layers[k++].bits, plan.per_channel_weights);
  }
  QLIB_CHECK(k == plan.layers.size() && k > 0, errc::shape_mismatch,
             "nn::apply_bit_widths: the plan has " + std::to_string(plan.layers.size()) + " layers, the model " +
                 std::to_string(k) + " conv2d/linear layers");
  return folded;
}

// The plan checked jointly: every layer quantized at once (weights only, float activations).
struct plan_evaluation {
  double measured = 0.0;        // the plan's metric against the float model, all layers quantized
  double accuracy = -1.0;       // top-1 of the quantized-weight model, when labels were given
  double float_accuracy = -1.0; // top-1 of the float model, when labels were given
};

namespace detail {
inline double top1(const tensor<float, 4>& logits, tensor_view<const std::int32_t, 1> labels) {
  const index_t n = logits.shape(0), k = logits.size() / n;
  index_t correct = 0;
  for (index_t i = 0; i < n; ++i) {
    const float* r = logits.data() + i * k;
    correct += (std::max_element(r, r + k) - r) == labels(i);
  }
  return static_cast<double>(correct) / static_cast<double>(n);
}
}  // namespace detail

// Measures the plan's real metric on `batch` (the sum of single-layer sensitivities only
// predicts it) and, with labels (one per sample), the top-1 accuracy of both models.
inline plan_evaluation evaluate_bit_widths(const sequential& model, const bit_width_plan& plan,
                                           tensor_view<const float, 4> batch,
                                           tensor_view<const std::int32_t, 1> labels = {}) {
  const char* who = "nn::evaluate_bit_widths";
  detail::check_calibration_batch(batch, who);
  QLIB_CHECK(labels.empty() || labels.shape(0) == batch.shape(0), errc::shape_mismatch,
             std::string(who) + ": " + std::to_string(labels.shape(0)) + " labels for " +
                 std::to_string(batch.shape(0)) + " samples");
  const sequential q = apply_bit_widths(model, plan);
  const tensor<float, 4> ref = fold_batch_norms(model).forward(batch), out = q.forward(batch);
  plan_evaluation e;
  e.measured = output_distance(ref.cview(), out.cview(), plan.metric);
  if (!labels.empty()) {
    e.accuracy = detail::top1(out, labels);
    e.float_accuracy = detail::top1(ref, labels);
  }
  return e;
}

}  // namespace nn
}  // namespace qlib
