// Deterministic parameter initialization of an nn::sequential from a seed, with PyTorch's default rules.
#pragma once

#include <cmath>
#include <cstdint>
#include <variant>

#include "qlib/nn/sequential.hpp"
#include "qlib/train/rng.hpp"

namespace qlib {
namespace train {

// Fills t with U(-bound, bound) from g.
inline void fill_uniform(tensor_view<float, 1> t, float bound, rng& g) {
  for (index_t i = 0; i < t.shape(0); ++i) t(i) = g.uniform(-bound, bound);
}

// PyTorch's reset_parameters(): kaiming_uniform_(a = sqrt(5)) on conv2d and linear
// weights, which is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for their
// biases; batch_norm2d weight 1, bias 0, running mean 0, running var 1. fan_in is
// in_channels / groups * kernel_h * kernel_w for conv2d, in_features for linear.
// Each layer draws from its own stream (seed, layer index), so adding a layer at the end
// does not change the others. The values are a function of the seed only.
inline void init_parameters(nn::sequential& model, std::uint64_t seed) {
  for (std::size_t i = 0; i < model.size(); ++i) {
    rng g(seed, static_cast<std::uint64_t>(i) + 1);
    std::visit(
        [&](auto& l) {
          using L = std::decay_t<decltype(l)>;
          if constexpr (std::is_same<L, nn::conv2d>::value || std::is_same<L, nn::linear>::value) {
            const index_t out = l.weight.shape(0);
            const index_t fan_in = out > 0 ? l.weight.size() / out : 0;
            QLIB_CHECK(fan_in > 0, errc::empty_tensor, "train::init_parameters: layer " + std::to_string(i) +
                                                           " (" + nn::layer_kind(model[i]) + ") has no weights");
            const float bound = static_cast<float>(1.0 / std::sqrt(static_cast<double>(fan_in)));
            fill_uniform(tensor_view<float, 1>(l.weight.data(), {l.weight.size()}), bound, g);
            fill_uniform(tensor_view<float, 1>(l.bias.data(), {l.bias.size()}), bound, g);
          } else if constexpr (std::is_same<L, nn::batch_norm2d>::value) {
            for (float& v : l.weight) v = 1.0f;
            for (float& v : l.bias) v = 0.0f;
            for (float& v : l.running_mean) v = 0.0f;
            for (float& v : l.running_var) v = 1.0f;
          }
        },
        model[i]);
  }
}

}  // namespace train
}  // namespace qlib
