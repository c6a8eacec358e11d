// Structured shrink: physically remove output channels of a conv2d/linear layer and the matching inputs of the next.
#pragma once

#include <algorithm>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "qlib/core/error.hpp"
#include "qlib/core/tensor.hpp"
#include "qlib/nn/sequential.hpp"

// API (namespace qlib::prune):
//
//   shrink_output_channels(model, layer, keep, input_shape)
//       keeps only the output channels `keep` (strictly increasing indices) of
//       model[layer], a conv2d with groups == 1 or a linear, and removes everything that
//       depended on the others, so the model computes the same function as one whose
//       removed channels output exactly 0 (see "Equivalence" below):
//         - the layer's weight rows and bias entries;
//         - channel-wise layers that follow: batch_norm2d (weight, bias, running_mean,
//           running_var), relu, relu6, max_pool2d, avg_pool2d;
//         - a depthwise conv2d (groups == in_channels) that follows loses the same input
//           channels and, with them, its output channels (c * multiplier + m); the walk
//           continues through it;
//         - a flatten: channel c of an [N, H, W, C] activation owns the H * W features
//           (h * W + w) * C + c (qlib's NHWC flatten order); H and W come from
//           input_shape through nn::output_shape;
//         - the consumer, where the walk stops: a conv2d with groups == 1 loses the
//           matching input channels (its weight's last axis), a linear the matching input
//           columns.
//       input_shape is any input the model accepts (only H, W and C matter); the whole
//       model is validated against it first.
//   shrink_output_channels(model, keeps, input_shape)
//       many layers at once, keeps: layer index -> keep list. Every list numbers the
//       channels of the model as passed in (not as shrunk by another entry): a shrink
//       touches its layer's output axis and its consumer's input axis only, so the
//       entries are independent and are applied from the last layer to the first.
//       Every entry is planned and validated before any layer changes: a refused call
//       leaves the model untouched (with exceptions on).
//
// Refused (and the model left unchanged):
//   errc::out_of_range      layer index outside the model, a kept index outside
//                           [0, out_channels)
//   errc::invalid_argument  an empty keep list (removing every channel), a list that is
//                           not strictly increasing (unsorted or duplicated), a layer
//                           without output channels to remove (ReLU, pooling, ...)
//   errc::unsupported       a grouped or depthwise conv2d as the shrunk layer, a grouped
//                           (not depthwise) conv2d as the consumer, and channels that
//                           reach the model's output with no consumer (shrinking logits
//                           would change what the model returns)
//   errors of nn::sequential::output_shape when input_shape does not fit the model.
//
// Equivalence: the shrunk model's outputs equal those of the original model in which the
// removed channels are masked to 0 (the layer's weight rows and bias zeroed, a following
// batch norm's weight and bias zeroed, and a depthwise conv's bias zeroed on the channels
// it derives from them), bit for bit in float on every ISA:
// qlib's float GEMM and depthwise loop sum each output in k order (gemm/sgemm.hpp), and
// a masked channel's terms are exact zeros, which leave a running float sum unchanged.
// After static int8 quantization the two agree bit for bit as well when the mask also
// zeroes the consumer's matching input weights (tests/test_shrink.cpp).
namespace qlib {
namespace prune {

// The kept output-channel indices of one layer, strictly increasing.
using channel_keep_list = std::vector<index_t>;

namespace detail {

// One change to one layer, found by walking the model from the shrunk layer.
struct shrink_step {
  enum class kind {
    producer,        // conv2d / linear: keep weight rows and bias entries `out`
    batch_norm,      // keep channels `out`
    depthwise,       // keep input channels `in` (groups = in.size()), output rows `out`
    conv_inputs,     // conv2d consumer: keep the weight's last axis entries `in`
    linear_columns,  // linear consumer: keep input columns `in`
  };
  std::size_t layer;
  kind what;
  std::vector<index_t> in, out;
};

// t with only the entries `keep` along `axis` (keep strictly increasing, in range).
template <std::size_t Rank>
tensor<float, Rank> take_along_axis(const tensor<float, Rank>& t, std::size_t axis, const std::vector<index_t>& keep) {
  if (t.empty()) return t;  // an absent bias stays absent
  index_t outer = 1, inner = 1;
  for (std::size_t a = 0; a < axis; ++a) outer *= t.shape(a);
  for (std::size_t a = axis + 1; a < Rank; ++a) inner *= t.shape(a);
  extents<Rank> shape = t.shape();
  shape[axis] = static_cast<index_t>(keep.size());
  tensor<float, Rank> out(shape);
  const index_t mid = t.shape(axis), kept = shape[axis];
  float* d = out.data();
  for (index_t o = 0; o < outer; ++o)
    for (index_t k = 0; k < kept; ++k) {
      const float* s = t.data() + (o * mid + keep[static_cast<std::size_t>(k)]) * inner;
      d = std::copy(s, s + inner, d);
    }
  return out;
}

inline std::string layer_name(const nn::sequential& m, std::size_t i) {
  return "layer " + std::to_string(i) + " (" + nn::layer_kind(m[i]) + ")";
}

// Validates one keep list and walks its dependencies; changes nothing.
inline std::vector<shrink_step> plan_shrink(const nn::sequential& model, const std::vector<extents<4>>& in_shapes,
                                            std::size_t layer, const channel_keep_list& keep) {
  const std::string who = "prune::shrink_output_channels: ";
  QLIB_CHECK(layer < model.size(), errc::out_of_range,
             who + "layer " + std::to_string(layer) + " outside a model of " + std::to_string(model.size()) +
                 " layers");
  const nn::layer& l = model[layer];
  const auto* conv = std::get_if<nn::conv2d>(&l);
  QLIB_CHECK(conv || std::holds_alternative<nn::linear>(l), errc::invalid_argument,
             who + layer_name(model, layer) + " has no output channels to remove (only conv2d and linear do)");
  QLIB_CHECK(!conv || conv->opt.groups == 1, errc::unsupported,
             who + layer_name(model, layer) + " has groups = " + std::to_string(conv ? conv->opt.groups : 1) +
                 ": its channels are tied to its input channels; shrink the layer before it instead");
  const index_t count = in_shapes[layer + 1][3];
  QLIB_CHECK(!keep.empty(), errc::invalid_argument,
             who + "the keep list of " + layer_name(model, layer) + " is empty: removing every channel");
  for (std::size_t i = 0; i < keep.size(); ++i) {
    QLIB_CHECK(keep[i] >= 0 && keep[i] < count, errc::out_of_range,
               who + "kept channel " + std::to_string(keep[i]) + " outside [0, " + std::to_string(count) + ") of " +
                   layer_name(model, layer));
    QLIB_CHECK(i == 0 || keep[i - 1] < keep[i], errc::invalid_argument,
               who + "the keep list of " + layer_name(model, layer) +
                   " must be strictly increasing (sorted, no duplicates), got " + std::to_string(keep[i - 1]) +
                   " then " + std::to_string(keep[i]));
  }

  using kind = shrink_step::kind;
  std::vector<shrink_step> plan{{layer, kind::producer, {}, keep}};
  std::vector<index_t> k = keep;  // kept indices along the channel axis of the current activation
  for (std::size_t j = layer + 1; j < model.size(); ++j) {
    const nn::layer& next = model[j];
    const extents<4>& in = in_shapes[j];
    if (std::holds_alternative<nn::batch_norm2d>(next)) {
      plan.push_back({j, kind::batch_norm, {}, k});
    } else if (std::holds_alternative<nn::relu>(next) || std::holds_alternative<nn::relu6>(next) ||
               std::holds_alternative<nn::max_pool2d>(next) || std::holds_alternative<nn::avg_pool2d>(next)) {
      // channel-wise: nothing to change
    } else if (std::holds_alternative<nn::flatten>(next)) {
      std::vector<index_t> features;
      features.reserve(static_cast<std::size_t>(in[1] * in[2]) * k.size());
      for (index_t p = 0; p < in[1] * in[2]; ++p)
        for (index_t c : k) features.push_back(p * in[3] + c);
      k = std::move(features);
    } else if (const auto* nc = std::get_if<nn::conv2d>(&next)) {
      if (nc->opt.groups == 1) {
        plan.push_back({j, kind::conv_inputs, k, {}});
        return plan;
      }
      QLIB_CHECK(nc->opt.groups == nc->in_channels(), errc::unsupported,
                 who + "the channels of " + layer_name(model, layer) + " feed " + layer_name(model, j) +
                     " with groups = " + std::to_string(nc->opt.groups) +
                     " (grouped, not depthwise): not supported");
      const index_t mult = nc->out_channels() / nc->in_channels();
      std::vector<index_t> outs;
      for (index_t c : k)
        for (index_t m = 0; m < mult; ++m) outs.push_back(c * mult + m);
      plan.push_back({j, kind::depthwise, k, outs});
      k = std::move(outs);
    } else {  // linear
      plan.push_back({j, kind::linear_columns, k, {}});
      return plan;
    }
  }
  QLIB_CHECK(false, errc::unsupported,
             who + "the output channels of " + layer_name(model, layer) +
                 " reach the model's output without a conv2d or linear consuming them: shrinking them would "
                 "change the model's output shape");
  return plan;
}

inline void apply_step(nn::sequential& model, const shrink_step& s) {
  using kind = shrink_step::kind;
  nn::layer& l = model[s.layer];
  switch (s.what) {
    case kind::producer:
      if (auto* c = std::get_if<nn::conv2d>(&l)) {
        c->weight = take_along_axis(c->weight, 0, s.out);
        c->bias = take_along_axis(c->bias, 0, s.out);
      } else {
        auto& f = std::get<nn::linear>(l);
        f.weight = take_along_axis(f.weight, 0, s.out);
        f.bias = take_along_axis(f.bias, 0, s.out);
      }
      break;
    case kind::batch_norm: {
      auto& b = std::get<nn::batch_norm2d>(l);
      for (tensor<float, 1>* t : {&b.weight, &b.bias, &b.running_mean, &b.running_var})
        *t = take_along_axis(*t, 0, s.out);
      break;
    }
    case kind::depthwise: {
      auto& c = std::get<nn::conv2d>(l);
      c.weight = take_along_axis(c.weight, 0, s.out);
      c.bias = take_along_axis(c.bias, 0, s.out);
      c.opt.groups = static_cast<index_t>(s.in.size());
      break;
    }
    case kind::conv_inputs: {
      auto& c = std::get<nn::conv2d>(l);
      c.weight = take_along_axis(c.weight, 3, s.in);
      break;
    }
    case kind::linear_columns: {
      auto& f = std::get<nn::linear>(l);
      f.weight = take_along_axis(f.weight, 1, s.in);
      break;
    }
  }
}

// The input shape of every layer, and the model's output shape last (validates the model).
inline std::vector<extents<4>> layer_input_shapes(const nn::sequential& model, const extents<4>& input_shape) {
  std::vector<extents<4>> shapes{input_shape};
  for (std::size_t i = 0; i < model.size(); ++i) shapes.push_back(nn::output_shape(model[i], shapes.back()));
  return shapes;
}

}  // namespace detail

// Keeps output channels `keep` of model[layer] and removes the matching inputs of the
// layers that depend on them (see the API comment at the top of this file).
inline void shrink_output_channels(nn::sequential& model, std::size_t layer, const channel_keep_list& keep,
                                   const extents<4>& input_shape) {
  const std::vector<extents<4>> shapes = detail::layer_input_shapes(model, input_shape);
  for (const detail::shrink_step& s : detail::plan_shrink(model, shapes, layer, keep)) detail::apply_step(model, s);
}

// Many layers at once: every keep list numbers the channels of the model as passed in;
// all are validated before any layer changes.
inline void shrink_output_channels(nn::sequential& model, const std::map<std::size_t, channel_keep_list>& keeps,
                                   const extents<4>& input_shape) {
  const std::vector<extents<4>> shapes = detail::layer_input_shapes(model, input_shape);
  std::vector<std::vector<detail::shrink_step>> plans;
  for (const auto& entry : keeps) plans.push_back(detail::plan_shrink(model, shapes, entry.first, entry.second));
  // Each step selects along an axis no other entry touches (a layer's output axis belongs
  // to its own entry, its input axis to its producer's), so the order does not matter
  // for the result; last to first as documented.
  for (auto p = plans.rbegin(); p != plans.rend(); ++p)
    for (const detail::shrink_step& s : *p) detail::apply_step(model, s);
}

}  // namespace prune
}  // namespace qlib
