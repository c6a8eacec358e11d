// train::gradients: one gradient tensor per model parameter, and the flat parameter list optimizers step over.
#pragma once

#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "qlib/nn/sequential.hpp"

namespace qlib {
namespace train {

// The gradients of one layer, flat, in the element order of the layer's own tensors
// (conv2d OHWI weight, linear [out, in] weight, bias; batch_norm2d weight and bias).
// Layers without parameters have empty tensors.
struct layer_gradients {
  tensor<float, 1> weight, bias;
};

// Gradients parallel to an nn::sequential: layers[i] belongs to model[i].
struct gradients {
  std::vector<layer_gradients> layers;

  void zero() {
    for (auto& l : layers) {
      for (float& v : l.weight) v = 0.0f;
      for (float& v : l.bias) v = 0.0f;
    }
  }
};

namespace detail {
// Calls f(weight_tensor) then f(bias_tensor) for a layer with parameters (const or not).
template <class Layer, class F>
void for_each_param_tensor(Layer& l, F&& f) {
  using L = std::decay_t<Layer>;
  if constexpr (std::is_same<L, nn::conv2d>::value || std::is_same<L, nn::linear>::value ||
                std::is_same<L, nn::batch_norm2d>::value) {
    f(l.weight);
    f(l.bias);
  }
}
}  // namespace detail

// Zero gradients shaped like the model's parameters.
inline gradients make_gradients(const nn::sequential& model) {
  gradients g;
  g.layers.resize(model.size());
  for (std::size_t i = 0; i < model.size(); ++i) {
    int k = 0;
    std::visit(
        [&](const auto& l) {
          detail::for_each_param_tensor(l, [&](const auto& t) {
            (k++ == 0 ? g.layers[i].weight : g.layers[i].bias) = tensor<float, 1>(extents<1>{t.size()}, 0.0f);
          });
        },
        model[i]);
  }
  return g;
}

// One trainable tensor and its gradient, as an optimizer sees it. `name` follows a
// PyTorch nn.Sequential state_dict ("3.weight"). lr_scale multiplies the optimizer's
// learning rate for this tensor (a parameter group's rate: QAT gives LSQ's scales and
// zero points their own); 1 leaves every update as it was, 0 freezes the tensor.
struct parameter {
  float* value = nullptr;
  const float* grad = nullptr;
  index_t size = 0;
  std::string name;
  float lr_scale = 1.0f;
};

// The model's trainable tensors in a fixed order (layer by layer, weight before bias),
// each paired with its gradient in g. Empty tensors (no bias) are left out.
inline std::vector<parameter> parameters(nn::sequential& model, const gradients& g) {
  QLIB_CHECK(g.layers.size() == model.size(), errc::shape_mismatch,
             "train::parameters: gradients for " + std::to_string(g.layers.size()) + " layers, the model has " +
                 std::to_string(model.size()));
  std::vector<parameter> out;
  for (std::size_t i = 0; i < model.size(); ++i) {
    int k = 0;
    std::visit(
        [&](auto& l) {
          detail::for_each_param_tensor(l, [&](auto& t) {
            const bool is_weight = k++ == 0;
            const tensor<float, 1>& gt = is_weight ? g.layers[i].weight : g.layers[i].bias;
            QLIB_CHECK(gt.size() == t.size(), errc::shape_mismatch,
                       "train::parameters: gradient of layer " + std::to_string(i) +
                           " does not match its parameter size");
            if (t.size() > 0)
              out.push_back({t.data(), gt.data(), t.size(), std::to_string(i) + (is_weight ? ".weight" : ".bias")});
          });
        },
        model[i]);
  }
  return out;
}

}  // namespace train
}  // namespace qlib
