// Training forward over an nn::sequential that records what backward needs, and the backward pass filling train::gradients.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <variant>
#include <vector>

#include "qlib/nn/sequential.hpp"
#include "qlib/train/activation_train.hpp"
#include "qlib/train/batch_norm_train.hpp"
#include "qlib/train/buffers.hpp"
#include "qlib/train/conv2d_train.hpp"
#include "qlib/train/gradients.hpp"
#include "qlib/train/linear_backward.hpp"
#include "qlib/train/pooling_train.hpp"

namespace qlib {
namespace train {

// One layer's record of a training forward and its backward buffers. `output` is the
// layer's output (the next layer's input); `grad` receives dL/d(input) in backward.
// Besides those: conv2d keeps its im2col matrix, batch_norm2d its normalized input and
// 1/std, max_pool2d the argmax taps. The buffers keep their storage from step to step.
struct layer_cache {
  extents<4> in_shape{};
  tensor<float, 4> output, grad;
  tensor<float, 2> cols;
  batch_norm_cache bn;
  std::vector<std::int32_t> argmax;
};

// The record of one training forward: a copy of the model input and one entry per layer.
struct forward_cache {
  tensor<float, 4> input;
  std::vector<layer_cache> layers;
};

// The model's forward in training mode: batch_norm2d uses batch statistics (and updates
// its running statistics when update_running_stats); every layer runs on its own (no
// fused activation), and `cache` records what backward() needs. Returns a view of the
// output, valid until the cache is used again.
inline tensor_view<const float, 4> forward_train(nn::sequential& model, tensor_view<const float, 4> x,
                                                 forward_cache& cache, bool update_running_stats = true) {
  model.output_shape(x.shape());  // validate the whole chain before any work
  QLIB_CHECK(model.size() > 0, errc::invalid_argument, "train::forward_train: the model has no layers");
  cache.layers.resize(model.size());
  detail::copy_dense(x, cache.input);
  for (std::size_t i = 0; i < model.size(); ++i) {
    layer_cache& lc = cache.layers[i];
    const tensor_view<const float, 4> in = i == 0 ? cache.input.cview() : cache.layers[i - 1].output.cview();
    lc.in_shape = in.shape();
    std::visit(
        [&](auto& l) {
          using L = std::decay_t<decltype(l)>;
          if constexpr (std::is_same<L, nn::conv2d>::value) {
            conv2d_forward_train(l, in, lc.cols, lc.output);
          } else if constexpr (std::is_same<L, nn::linear>::value) {
            lc.output = l.forward(in);
          } else if constexpr (std::is_same<L, nn::relu>::value || std::is_same<L, nn::relu6>::value) {
            activation_forward(l, in, lc.output);
          } else if constexpr (std::is_same<L, nn::batch_norm2d>::value) {
            batch_norm_forward_train(l, in, lc.bn, lc.output, update_running_stats);
          } else if constexpr (std::is_same<L, nn::max_pool2d>::value) {
            max_pool_forward_train(l, in, lc.argmax, lc.output);
          } else if constexpr (std::is_same<L, nn::avg_pool2d>::value) {
            lc.output = nn::pool(l, in);
          } else {
            static_assert(std::is_same<L, nn::flatten>::value, "a layer kind without a training forward");
            detail::copy_dense(in.reshape(nn::output_shape(l, in.shape())), lc.output);
          }
        },
        model[i]);
  }
  return cache.layers.back().output.cview();
}

// Backward through the whole model from dL/d(output): writes every parameter gradient
// into g (overwriting; g = make_gradients(model) or a previous one) and returns a view of
// dL/d(input) (valid until the cache is used again), or an empty view when
// need_input_grad is false (the first layer then skips its col2im). `cache` must come
// from forward_train on this model and input.
inline tensor_view<const float, 4> backward(const nn::sequential& model, forward_cache& cache,
                                            tensor_view<const float, 4> dy, gradients& g,
                                            bool need_input_grad = false) {
  QLIB_CHECK(model.size() > 0 && cache.layers.size() == model.size() && g.layers.size() == model.size(),
             errc::shape_mismatch,
             "train::backward: the cache and gradients must have one entry per layer (" +
                 std::to_string(model.size()) + "), got " + std::to_string(cache.layers.size()) + " and " +
                 std::to_string(g.layers.size()));
  QLIB_CHECK(dy.shape() == cache.layers.back().output.shape(), errc::shape_mismatch,
             "train::backward: output gradient " + qlib::detail::extents_string(dy.shape()) +
                 ", the model's output is " + qlib::detail::extents_string(cache.layers.back().output.shape()));
  for (std::size_t j = model.size(); j-- > 0;) {
    layer_cache& lc = cache.layers[j];
    layer_gradients& lg = g.layers[j];
    const tensor_view<const float, 4> in = j == 0 ? cache.input.cview() : cache.layers[j - 1].output.cview();
    const tensor_view<const float, 4> gy = j + 1 == model.size() ? dy : cache.layers[j + 1].grad.cview();
    QLIB_CHECK(in.shape() == lc.in_shape, errc::shape_mismatch,
               "train::backward: the cache of layer " + std::to_string(j) + " is inconsistent");
    const bool need_dx = j > 0 || need_input_grad;
    std::visit(
        [&](const auto& l) {
          using L = std::decay_t<decltype(l)>;
          if constexpr (std::is_same<L, nn::conv2d>::value) {
            conv2d_backward(l, in, lc.cols, gy, lg.weight.view(), lg.bias.view(), lc.grad, need_dx);
          } else if constexpr (std::is_same<L, nn::linear>::value) {
            linear_backward(l, in, gy, lg.weight.view(), lg.bias.view(), lc.grad, need_dx);
          } else if constexpr (std::is_same<L, nn::relu>::value || std::is_same<L, nn::relu6>::value) {
            activation_backward(l, lc.output.cview(), gy, lc.grad);
          } else if constexpr (std::is_same<L, nn::batch_norm2d>::value) {
            batch_norm_backward(l, lc.bn, gy, lg.weight.view(), lg.bias.view(), lc.grad);
          } else if constexpr (std::is_same<L, nn::max_pool2d>::value) {
            max_pool_backward(l, lc.in_shape, lc.argmax, gy, lc.grad);
          } else if constexpr (std::is_same<L, nn::avg_pool2d>::value) {
            avg_pool_backward(l, lc.in_shape, gy, lc.grad);
          } else {
            static_assert(std::is_same<L, nn::flatten>::value, "a layer kind without a backward");
            detail::check_output_grad(gy.shape(), nn::output_shape(l, lc.in_shape), "train::backward (flatten)");
            detail::copy_dense(detail::dense_input(gy).view.reshape(lc.in_shape), lc.grad);
          }
        },
        model[j]);
  }
  return need_input_grad ? cache.layers[0].grad.cview() : tensor_view<const float, 4>();
}

}  // namespace train
}  // namespace qlib
