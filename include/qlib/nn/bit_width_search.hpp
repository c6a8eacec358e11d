// Mixed-precision weights: each conv2d/linear layer's sensitivity to each bit width, and the exact best choice under a size budget.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "qlib/nn/layer_weights.hpp"
#include "qlib/nn/multiple_choice_knapsack.hpp"
#include "qlib/nn/sequential.hpp"
#include "qlib/nn/static_quantization.hpp"
#include "qlib/quant/affine.hpp"
#include "qlib/quant/choose_params.hpp"
#include "qlib/train/loss.hpp"

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

// How the weights are quantized: as static_quantization_options, so that the int8 model
// of a plan (bit_width_plan::quantization_options) is the one measured.
struct bit_width_search_options {
  std::vector<int> candidate_bits{2, 3, 4, 5, 6, 8};  // each in [2, 8]; sorted and deduplicated
  sensitivity_metric metric = sensitivity_metric::kl_divergence;
  affine_scheme<std::int8_t> weight_scheme = schemes::s8_symmetric;  // taken at each candidate width
  bool per_channel_weights = true;  // else one scale per layer
  int scale_bits = 32;              // what one scale costs in the size, in [0, 64]
};

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
  affine_scheme<std::int8_t> weight_scheme = schemes::s8_symmetric;
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
// dst's weights := fake_quantize(src's weights) with `scheme`, parameters chosen as
// quantize_weights does (choose_params: min/max per output channel or per tensor).
inline void fake_quantize_weights_into(const layer& src, layer& dst, const affine_scheme<std::int8_t>& scheme,
                                       bool per_channel) {
  const tensor_view<const float, 2> w = weight_matrix(src);
  const quant_params p =
      choose_params(w, scheme, per_channel ? granularity::per_channel(0) : granularity::per_tensor());
  qlib::fake_quantize(w, weight_matrix(dst), p);
}

// A non-empty batch without NaN or Inf (minmax_by_group refuses those, naming the element).
inline void check_batch(tensor_view<const float, 4> batch, const char* who) {
  QLIB_CHECK(!batch.empty(), errc::empty_tensor, std::string(who) + ": empty batch");
  (void)minmax_by_group(batch, granularity::per_tensor());
}

// Layers [from, to) of m as a model of their own.
inline sequential layers_between(const sequential& m, std::size_t from, std::size_t to) {
  sequential t;
  const auto first = m.layers.begin();
  t.layers.assign(first + static_cast<std::ptrdiff_t>(from), first + static_cast<std::ptrdiff_t>(to));
  return t;
}

inline std::string describe_weights(const affine_scheme<std::int8_t>& s, bool per_channel) {
  return std::string(s.sym == symmetry::symmetric ? "symmetric" : "asymmetric") +
         (s.range == int_range::full ? " full-range " : " restricted-range ") +
         (per_channel ? "per-channel" : "per-tensor");
}
}  // namespace detail

// Measures, for every conv2d / linear layer of `model` (batch norms folded first, as the
// static quantizer does) and every candidate bit width b, the distance (opt.metric) between
// the float model's outputs on `calibration` and those of the model with only that layer's
// weights fake-quantized with weight_scheme_at_bits(opt.weight_scheme, b), one scale per
// output channel or per layer (opt.per_channel_weights). Activations stay float: this is
// the weights' share of the error. Cost: one forward of the model's tail per layer and
// candidate (the input of each layer is computed once).
inline sensitivity_report measure_sensitivity(const sequential& model, tensor_view<const float, 4> calibration,
                                              const bit_width_search_options& opt = {}) {
  const char* who = "nn::measure_sensitivity";
  QLIB_CHECK(!opt.candidate_bits.empty(), errc::invalid_argument, std::string(who) + ": no candidate bit widths");
  sensitivity_report r;
  r.bits = opt.candidate_bits;
  std::sort(r.bits.begin(), r.bits.end());
  r.bits.erase(std::unique(r.bits.begin(), r.bits.end()), r.bits.end());
  opt.weight_scheme.validate();
  std::vector<affine_scheme<std::int8_t>> scheme;
  for (int b : r.bits) scheme.push_back(weight_scheme_at_bits(opt.weight_scheme, b, who));
  QLIB_CHECK(opt.scale_bits >= 0 && opt.scale_bits <= 64, errc::invalid_argument,
             std::string(who) + ": scale_bits " + std::to_string(opt.scale_bits) + " is outside [0, 64]");
  r.metric = opt.metric;
  r.weight_scheme = opt.weight_scheme;
  r.per_channel_weights = opt.per_channel_weights;
  r.scale_bits = opt.scale_bits;
  detail::check_batch(calibration, who);

  std::vector<std::size_t> origin;
  const sequential folded = fold_batch_norms(model, &origin);
  folded.output_shape(calibration.shape());  // validates the chain
  const tensor<float, 4> reference = folded.forward(calibration);
  (void)output_distance(reference.cview(), reference.cview(), r.metric);  // refuses a non-finite float output

  tensor<float, 4> input(calibration);  // the input of folded layer `at`
  std::size_t at = 0;
  for (std::size_t i = 0; i < folded.size(); ++i) {
    if (!has_weight_matrix(folded[i])) continue;
    // Layer i's input from layer at's: i is a conv2d/linear, so no fused ReLU is split.
    if (at < i) input = detail::layers_between(folded, at, i).forward(input.cview());
    at = i;
    layer_sensitivity ls;
    ls.layer = origin[i];
    ls.kind = layer_kind(folded[i]);
    const tensor_view<const float, 2> w = weight_matrix(folded[i]);
    ls.weights = w.size();
    ls.scales = opt.per_channel_weights ? w.shape(0) : 1;
    sequential tail = detail::layers_between(folded, i, folded.size());
    for (const affine_scheme<std::int8_t>& sc : scheme) {
      detail::fake_quantize_weights_into(folded[i], tail[0], sc, opt.per_channel_weights);
      ls.sensitivity.push_back(output_distance(reference.cview(), tail.forward(input.cview()).cview(), r.metric));
    }
    r.layers.push_back(std::move(ls));
  }
  QLIB_CHECK(!r.layers.empty(), errc::invalid_argument, std::string(who) + ": the model has no conv2d or linear layer");
  return r;
}

namespace detail {
inline void check_report(const sensitivity_report& r, const char* who) {
  QLIB_CHECK(!r.layers.empty() && !r.bits.empty(), errc::empty_tensor, std::string(who) + ": empty sensitivity report");
  QLIB_CHECK(r.scale_bits >= 0 && r.scale_bits <= 64, errc::invalid_argument,
             std::string(who) + ": scale_bits " + std::to_string(r.scale_bits) + " is outside [0, 64]");
  for (int b : r.bits) (void)weight_scheme_at_bits(r.weight_scheme, b, who);
  // Bounds that keep every size and total below 2^63: layers * (8 * weights + 64 * scales) <= 2^16 * 2^47.
  const index_t most = index_t{1} << 40;
  QLIB_CHECK(r.layers.size() <= (std::size_t{1} << 16), errc::invalid_argument,
             std::string(who) + ": more than 65536 layers");
  for (const layer_sensitivity& l : r.layers) {
    QLIB_CHECK(l.sensitivity.size() == r.bits.size(), errc::shape_mismatch,
               std::string(who) + ": layer " + std::to_string(l.layer) + " has " +
                   std::to_string(l.sensitivity.size()) + " sensitivities for " + std::to_string(r.bits.size()) +
                   " bit widths");
    QLIB_CHECK(l.weights >= 0 && l.weights <= most && l.scales >= 0 && l.scales <= most, errc::invalid_argument,
               std::string(who) + ": layer " + std::to_string(l.layer) + " has a weight or scale count outside [0, 2^40]");
  }
}
}  // namespace detail

// A weight-size budget: total bits (weights at their widths + the scales), or an average
// bit width per weight, which allows payload bits <= floor(average * weights) plus the
// scales (so "average 4" is exactly the size of every layer at 4 bits).
struct size_budget {
  enum class kind { total_bits, average_bits } type = kind::total_bits;
  std::int64_t total = 0;  // kind::total_bits: >= 0 (INT64_MAX: no limit)
  double average = 0.0;    // kind::average_bits: finite, >= 0

  static size_budget total_bits(std::int64_t bits) {
    size_budget b;
    b.total = bits;
    return b;
  }
  static size_budget average_bits(double bits_per_weight) {
    size_budget b;
    b.type = kind::average_bits;
    b.average = bits_per_weight;
    return b;
  }

  // The budget in bits for the report's layers. An average above the largest candidate
  // allows nothing more than that candidate everywhere, so it is clamped to it first; a
  // total that would pass INT64_MAX is INT64_MAX.
  std::int64_t resolve(const sensitivity_report& r) const {
    detail::check_report(r, "nn::size_budget");
    if (type == kind::total_bits) {
      QLIB_CHECK(total >= 0, errc::invalid_argument,
                 "nn::size_budget: a total of " + std::to_string(total) + " bits is negative");
      return total;
    }
    QLIB_CHECK(std::isfinite(average) && average >= 0.0, errc::invalid_argument,
               "nn::size_budget: " + std::to_string(average) + " bits per weight is not a finite non-negative average");
    const double avg = std::min(average, static_cast<double>(r.bits.back()));
    const double payload = std::floor(avg * static_cast<double>(r.total_weights()));  // < 2^60 (check_report)
    const std::int64_t most = std::numeric_limits<std::int64_t>::max();
    const std::int64_t p = payload < 9.0e18 ? static_cast<std::int64_t>(payload) : most;
    const std::int64_t scales = r.total_scale_bits();
    return p <= most - scales ? p + scales : most;
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
  affine_scheme<std::int8_t> weight_scheme = schemes::s8_symmetric;  // as measured (at each layer's bits)
  bool per_channel_weights = true;                                   // as measured
  std::int64_t budget_bits = 0;  // what the plan had to fit in
  std::int64_t size_bits = 0;    // what it takes: sum of layers[i].size_bits
  double predicted = 0.0;        // sum of the layers' sensitivities (the additive model HAWQ uses)

  // One bit width per conv2d / linear in model order.
  std::vector<int> bits_per_layer() const {
    std::vector<int> b;
    for (const layer_choice& l : layers) b.push_back(l.bits);
    return b;
  }
  // Options for nn::static_quantizer that build this plan's int8 model: `base` with
  // weight_bits set. Refuses a base whose weight scheme (symmetry, range) or per-channel
  // setting differs from the plan's: its int8 weights would not be the ones measured.
  static_quantization_options quantization_options(static_quantization_options base = {}) const {
    QLIB_CHECK(same_weight_scheme_family(base.weight_scheme, weight_scheme) &&
                   base.per_channel_weights == per_channel_weights,
               errc::invalid_argument,
               "nn::bit_width_plan::quantization_options: the plan was measured with " +
                   detail::describe_weights(weight_scheme, per_channel_weights) +
                   " weights, the static quantizer options ask for " +
                   detail::describe_weights(base.weight_scheme, base.per_channel_weights));
    base.weight_bits = bits_per_layer();
    return base;
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
  p.weight_scheme = r.weight_scheme;
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
// its plan's bit width: dequantized, these are the int8 weight codes and scales of the
// plan's static int8 model (quantization_options()), bit for bit. The plan must list the
// model's conv2d / linear layers, with their weight counts, in order.
inline sequential apply_bit_widths(const sequential& model, const bit_width_plan& plan) {
  const char* who = "nn::apply_bit_widths";
  std::vector<std::size_t> origin;
  sequential folded = fold_batch_norms(model, &origin);
  std::size_t k = 0;
  for (std::size_t i = 0; i < folded.size(); ++i) {
    if (!has_weight_matrix(folded[i])) continue;
    const index_t n = weight_matrix(folded[i]).size();
    QLIB_CHECK(k < plan.layers.size() && plan.layers[k].layer == origin[i] && plan.layers[k].weights == n,
               errc::shape_mismatch,
               std::string(who) + ": the plan does not match the model at layer " + std::to_string(origin[i]) + " (" +
                   layer_kind(folded[i]) + ", " + std::to_string(n) + " weights)");
    const layer src = folded[i];
    detail::fake_quantize_weights_into(src, folded[i], weight_scheme_at_bits(plan.weight_scheme, plan.layers[k].bits, who),
                                       plan.per_channel_weights);
    ++k;
  }
  QLIB_CHECK(k == plan.layers.size() && k > 0, errc::shape_mismatch,
             std::string(who) + ": the plan has " + std::to_string(plan.layers.size()) + " layers, the model " +
                 std::to_string(k) + " conv2d/linear layers");
  return folded;
}

// The plan checked jointly: every layer quantized at once (weights only, float activations).
struct plan_evaluation {
  double measured = 0.0;         // the plan's metric against the float model, all layers quantized
  double accuracy = -1.0;        // top-1 of the quantized-weight model, when labels were given
  double float_accuracy = -1.0;  // top-1 of the float model, when labels were given
};

// Evaluates plans of one model on one batch: the float model's outputs (and accuracy) are
// computed once, then each plan costs one forward. Keeps copies of the model, batch and labels.
class plan_evaluator {
 public:
  // labels: none, or one class in [0, classes) per sample (the model's output is then
  // [N, 1, 1, classes]); accuracy is train::softmax_cross_entropy's correct count.
  plan_evaluator(const sequential& model, tensor_view<const float, 4> batch, train::labels_view labels = {})
      : model_(model), batch_(batch) {
    const char* who = "nn::plan_evaluator";
    detail::check_batch(batch, who);
    QLIB_CHECK(labels.empty() || labels.shape(0) == batch.shape(0), errc::shape_mismatch,
               std::string(who) + ": " + std::to_string(labels.shape(0)) + " labels for " +
                   std::to_string(batch.shape(0)) + " samples");
    if (!labels.empty()) labels_ = tensor<std::int32_t, 1>(labels);
    reference_ = fold_batch_norms(model_).forward(batch_.cview());
    if (!labels.empty()) float_accuracy_ = accuracy(reference_);
  }

  plan_evaluation operator()(const bit_width_plan& plan) const {
    const tensor<float, 4> out = apply_bit_widths(model_, plan).forward(batch_.cview());
    plan_evaluation e;
    e.measured = output_distance(reference_.cview(), out.cview(), plan.metric);
    if (!labels_.empty()) {
      e.accuracy = accuracy(out);
      e.float_accuracy = float_accuracy_;
    }
    return e;
  }
  // The float model's outputs on the batch (batch norms folded).
  const tensor<float, 4>& reference() const noexcept { return reference_; }
  // Its top-1 accuracy (-1 without labels).
  double float_accuracy() const noexcept { return float_accuracy_; }

 private:
  double accuracy(const tensor<float, 4>& logits) const {
    const index_t correct = train::softmax_cross_entropy(logits.cview(), labels_.cview()).correct;
    return static_cast<double>(correct) / static_cast<double>(logits.shape(0));
  }
  sequential model_;
  tensor<float, 4> batch_;
  tensor<std::int32_t, 1> labels_;
  tensor<float, 4> reference_;
  double float_accuracy_ = -1.0;
};

// One plan on one batch (plan_evaluator for several plans): its real metric (the sum of
// single-layer sensitivities only predicts it) and, with labels, both models' top-1.
inline plan_evaluation evaluate_bit_widths(const sequential& model, const bit_width_plan& plan,
                                           tensor_view<const float, 4> batch, train::labels_view labels = {}) {
  return plan_evaluator(model, batch, labels)(plan);
}

}  // namespace nn
}  // namespace qlib
