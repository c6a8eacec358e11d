// nn::sequential: a float model as an ordered list of layers (PyTorch's nn.Sequential).
#pragma once

#include <initializer_list>
#include <string>
#include <variant>
#include <vector>

#include "qlib/nn/activation.hpp"
#include "qlib/nn/batch_norm.hpp"
#include "qlib/nn/conv2d.hpp"
#include "qlib/nn/linear.hpp"
#include "qlib/nn/pooling.hpp"

namespace qlib {
namespace nn {

// One layer of a sequential model. A std::variant rather than a class hierarchy: layers
// are plain data that the trainer, the quantizer and the serializer each visit.
using layer = std::variant<conv2d, linear, batch_norm2d, relu, relu6, max_pool2d, avg_pool2d, flatten>;

// The PyTorch class name of a layer (for messages and tables).
inline const char* layer_kind(const layer& l) {
  static const char* const names[] = {"Conv2d", "Linear", "BatchNorm2d", "ReLU", "ReLU6", "MaxPool2d", "AvgPool2d",
                                      "Flatten"};
  return names[l.index()];
}

// The output shape of one layer for an input shape (validating the layer against it).
inline extents<4> output_shape(const layer& l, const extents<4>& in) {
  return std::visit(
      [&](const auto& v) -> extents<4> {
        using L = std::decay_t<decltype(v)>;
        if constexpr (std::is_same<L, batch_norm2d>::value) {
          v.validate(in[3]);
          return in;
        } else if constexpr (std::is_same<L, relu>::value || std::is_same<L, relu6>::value) {
          return in;
        } else if constexpr (std::is_same<L, conv2d>::value || std::is_same<L, linear>::value) {
          return v.output_shape(in);
        } else {
          return nn::output_shape(v, in);
        }
      },
      l);
}

// Layers run in order on NHWC float activations [N, H, W, C] (after flatten or a linear
// layer, [N, 1, 1, features]). Layer i's parameters are named "i.weight", "i.bias", ...
// as in a PyTorch nn.Sequential's state_dict (nn/state_dict.hpp).
struct sequential {
  std::vector<layer> layers;

  sequential() = default;
  sequential(std::initializer_list<layer> ls) : layers(ls) {}

  std::size_t size() const noexcept { return layers.size(); }
  layer& operator[](std::size_t i) { return layers[i]; }
  const layer& operator[](std::size_t i) const { return layers[i]; }

  // Validates the whole chain for an input shape; returns the output shape.
  extents<4> output_shape(extents<4> in) const {
    for (const layer& l : layers) in = nn::output_shape(l, in);
    return in;
  }

  // Number of trainable parameters (weights and biases; BN's weight and bias).
  index_t parameter_count() const {
    index_t n = 0;
    for (const layer& l : layers) {
      if (auto* c = std::get_if<conv2d>(&l)) n += c->weight.size() + c->bias.size();
      if (auto* f = std::get_if<linear>(&l)) n += f->weight.size() + f->bias.size();
      if (auto* b = std::get_if<batch_norm2d>(&l)) n += b->weight.size() + b->bias.size();
    }
    return n;
  }

  // Inference. A conv2d or linear followed by relu/relu6 runs them as one layer (the
  // clamp in the GEMM epilogue).
  tensor<float, 4> forward(tensor_view<const float, 4> x) const {
    output_shape(x.shape());  // validate the whole chain before any work
    tensor<float, 4> cur(x);
    for (std::size_t i = 0; i < layers.size(); ++i) {
      float lo = -std::numeric_limits<float>::infinity(), hi = std::numeric_limits<float>::infinity();
      const bool fuse = i + 1 < layers.size() &&
                        (std::holds_alternative<conv2d>(layers[i]) || std::holds_alternative<linear>(layers[i])) &&
                        (std::holds_alternative<relu>(layers[i + 1]) || std::holds_alternative<relu6>(layers[i + 1]));
      if (fuse) {
        lo = 0.0f;
        hi = std::holds_alternative<relu6>(layers[i + 1]) ? 6.0f : hi;
      }
      cur = forward_layer(layers[i], cur.cview(), lo, hi);
      if (fuse) ++i;
    }
    return cur;
  }

  static tensor<float, 4> forward_layer(const layer& l, tensor_view<const float, 4> x,
                                        float lo = -std::numeric_limits<float>::infinity(),
                                        float hi = std::numeric_limits<float>::infinity()) {
    return std::visit(
        [&](const auto& v) -> tensor<float, 4> {
          using L = std::decay_t<decltype(v)>;
          if constexpr (std::is_same<L, conv2d>::value || std::is_same<L, linear>::value) return v.forward(x, lo, hi);
          else if constexpr (std::is_same<L, batch_norm2d>::value) return v.forward(x);
          else if constexpr (std::is_same<L, relu>::value || std::is_same<L, relu6>::value)
            return apply_activation(v, x);
          else if constexpr (std::is_same<L, flatten>::value) return apply_flatten<float>(x);
          else return pool(v, x);
        },
        l);
  }
};

// A copy of the model with every batch_norm2d that follows a conv2d or linear folded
// into it. `origin`, when given, receives for each layer of the copy the index in m of
// the layer it came from (a folded layer's own index).
inline sequential fold_batch_norms(const sequential& m, std::vector<std::size_t>* origin = nullptr) {
  sequential out;
  if (origin) origin->clear();
  for (std::size_t i = 0; i < m.size(); ++i) {
    if (origin) origin->push_back(i);
    const bool bn_next = i + 1 < m.size() && std::holds_alternative<batch_norm2d>(m[i + 1]);
    if (bn_next && std::holds_alternative<conv2d>(m[i])) {
      out.layers.emplace_back(fold_batch_norm(std::get<conv2d>(m[i]), std::get<batch_norm2d>(m[i + 1])));
      ++i;
    } else if (bn_next && std::holds_alternative<linear>(m[i])) {
      out.layers.emplace_back(fold_batch_norm(std::get<linear>(m[i]), std::get<batch_norm2d>(m[i + 1])));
      ++i;
    } else {
      out.layers.push_back(m[i]);
    }
  }
  return out;
}

}  // namespace nn
}  // namespace qlib
