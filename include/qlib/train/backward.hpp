// Training forward over an nn::sequential that records what backward needs, and the backward pass filling train::gradients.
#pragma once

#include <cstdint>
#include <type_traits>
#include <variant>
#include <vector>

#include "qlib/nn/sequential.hpp"
#include "qlib/train/activation_train.hpp"
#include "qlib/train/batch_norm_train.hpp"
#include "qlib/train/conv2d_backward.hpp"
#include "qlib/train/gradients.hpp"
#include "qlib/train/linear_backward.hpp"
#include "qlib/train/pooling_train.hpp"

namespace qlib {
namespace train {

// What one layer's backward needs from the training forward. Only the fields of the
// layer's kind are filled: the input for conv2d, linear, relu and relu6; the batch
// statistics for batch_norm2d; the argmax for max_pool2d; the input shape for all.
struct layer_cache {
  extents<4> in_shape{};
  tensor<float, 4> input;
  batch_norm_cache bn;
  std::vector<std::int32_t> argmax;
};

// The record of one training forward, layer by layer.
struct forward_cache {
  std::vector<layer_cache> layers;
};

// The model's forward in training mode: batch_norm2d uses batch statistics (and updates
// its running statistics when update_running_stats); every layer runs on its own (no
// fused activation), and `cache` records what backward() needs. Returns the output.
inline tensor<float, 4> forward_train(nn::sequential& model, tensor_view<const float, 4> x, forward_cache& cache,
                                      bool update_running_stats = true) {
  model.output_shape(x.shape());  // validate the whole chain before any work
  cache.layers.resize(model.size());
  tensor<float, 4> cur = detail::dense_copy(x);
  for (std::size_t i = 0; i < model.size(); ++i) {
    layer_cache& lc = cache.layers[i];
    lc.in_shape = cur.shape();
    lc.input = tensor<float, 4>();
    lc.argmax.clear();
    cur = std::visit(
        [&](auto& l) -> tensor<float, 4> {
          using L = std::decay_t<decltype(l)>;
          if constexpr (std::is_same<L, nn::conv2d>::value || std::is_same<L, nn::linear>::value) {
            lc.input = std::move(cur);
            return l.forward(lc.input.cview());
          } else if constexpr (std::is_same<L, nn::relu>::value || std::is_same<L, nn::relu6>::value) {
            lc.input = std::move(cur);
            return activation_forward(l, lc.input.cview());
          } else if constexpr (std::is_same<L, nn::batch_norm2d>::value) {
            return batch_norm_forward_train(l, cur.cview(), lc.bn, update_running_stats);
          } else if constexpr (std::is_same<L, nn::max_pool2d>::value) {
            return max_pool_forward_train(l, cur.cview(), lc.argmax);
          } else if constexpr (std::is_same<L, nn::avg_pool2d>::value) {
            return nn::pool(l, cur.cview());
          } else {
            static_assert(std::is_same<L, nn::flatten>::value, "a layer kind without a training forward");
            return detail::dense_copy(cur.cview().reshape(nn::output_shape(l, cur.shape())));
          }
        },
        model[i]);
  }
  return cur;
}

// Backward through the whole model from dL/d(output): writes every parameter gradient
// into g (overwriting; g = make_gradients(model) or a previous one) and returns
// dL/d(input), or an empty tensor when need_input_grad is false (the first layer then
// skips its col2im). `cache` must come from forward_train on this model.
inline tensor<float, 4> backward(const nn::sequential& model, const forward_cache& cache,
                                 tensor_view<const float, 4> dy, gradients& g, bool need_input_grad = false) {
  QLIB_CHECK(cache.layers.size() == model.size() && g.layers.size() == model.size(), errc::shape_mismatch,
             "train::backward: the cache and gradients must have one entry per layer (" +
                 std::to_string(model.size()) + "), got " + std::to_string(cache.layers.size()) + " and " +
                 std::to_string(g.layers.size()));
  tensor<float, 4> cur = detail::dense_copy(dy);
  for (std::size_t j = model.size(); j-- > 0;) {
    const layer_cache& lc = cache.layers[j];
    layer_gradients& lg = g.layers[j];
    const bool need_dx = j > 0 || need_input_grad;
    cur = std::visit(
        [&](const auto& l) -> tensor<float, 4> {
          using L = std::decay_t<decltype(l)>;
          if constexpr (std::is_same<L, nn::conv2d>::value) {
            return conv2d_backward(l, lc.input.cview(), cur.cview(), lg.weight.view(), lg.bias.view(), need_dx);
          } else if constexpr (std::is_same<L, nn::linear>::value) {
            return linear_backward(l, lc.input.cview(), cur.cview(), lg.weight.view(), lg.bias.view(), need_dx);
          } else if constexpr (std::is_same<L, nn::relu>::value || std::is_same<L, nn::relu6>::value) {
            return activation_backward(l, lc.input.cview(), cur.cview());
          } else if constexpr (std::is_same<L, nn::batch_norm2d>::value) {
            return batch_norm_backward(l, lc.bn, cur.cview(), lg.weight.view(), lg.bias.view());
          } else if constexpr (std::is_same<L, nn::max_pool2d>::value) {
            return max_pool_backward(l, lc.in_shape, lc.argmax, cur.cview());
          } else if constexpr (std::is_same<L, nn::avg_pool2d>::value) {
            return avg_pool_backward(l, lc.in_shape, cur.cview());
          } else {
            static_assert(std::is_same<L, nn::flatten>::value, "a layer kind without a backward");
            QLIB_CHECK(cur.size() == qlib::detail::checked_numel(lc.in_shape), errc::shape_mismatch,
                       "train::backward: flatten output gradient " + qlib::detail::extents_string(cur.shape()) +
                           " does not match its input " + qlib::detail::extents_string(lc.in_shape));
            return detail::dense_copy(cur.cview().reshape(lc.in_shape));
          }
        },
        model[j]);
  }
  return cur;
}

}  // namespace train
}  // namespace qlib
