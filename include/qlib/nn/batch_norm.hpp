// nn::batch_norm2d (inference form) and folding it into the preceding convolution or linear layer.
#pragma once

#include <cmath>

#include "qlib/core/tensor.hpp"
#include "qlib/nn/conv2d.hpp"
#include "qlib/nn/linear.hpp"

namespace qlib {
namespace nn {

// y = (x - running_mean) / sqrt(running_var + eps) * weight + bias over the channel
// (last, NHWC) axis; PyTorch's BatchNorm2d parameter names and defaults.
struct batch_norm2d {
  tensor<float, 1> weight, bias, running_mean, running_var;
  float eps = 1e-5f;
  float momentum = 0.1f;  // used by the trainer's running statistics

  batch_norm2d() = default;
  explicit batch_norm2d(index_t channels)
      : weight(extents<1>{channels}, 1.0f),
        bias(extents<1>{channels}),
        running_mean(extents<1>{channels}),
        running_var(extents<1>{channels}, 1.0f) {
    QLIB_CHECK(channels > 0, errc::invalid_argument, "nn::batch_norm2d: channels must be > 0");
  }
  index_t channels() const noexcept { return weight.shape(0); }

  void validate(index_t in_channels) const {
    const index_t c = channels();
    QLIB_CHECK(c > 0 && bias.shape(0) == c && running_mean.shape(0) == c && running_var.shape(0) == c,
               errc::shape_mismatch, "nn::batch_norm2d: weight, bias, running_mean and running_var must all have " +
                                         std::to_string(c) + " entries");
    QLIB_CHECK(in_channels == c, errc::shape_mismatch,
               "nn::batch_norm2d: input has " + std::to_string(in_channels) + " channels, expected " +
                   std::to_string(c));
    QLIB_CHECK(std::isfinite(eps) && eps >= 0.0f, errc::invalid_argument, "nn::batch_norm2d: eps must be >= 0");
    for (index_t i = 0; i < c; ++i)
      QLIB_CHECK(running_var(i) + eps > 0.0f, errc::invalid_argument,
                 "nn::batch_norm2d: running_var + eps must be > 0 (channel " + std::to_string(i) + ")");
  }
  // Per-channel affine form y = x * a + b of the inference computation.
  void affine_form(std::vector<float>& a, std::vector<float>& b) const {
    const index_t c = channels();
    a.resize(static_cast<std::size_t>(c));
    b.resize(static_cast<std::size_t>(c));
    for (index_t i = 0; i < c; ++i) {
      const float inv_std = 1.0f / std::sqrt(running_var(i) + eps);
      a[static_cast<std::size_t>(i)] = weight(i) * inv_std;
      b[static_cast<std::size_t>(i)] = bias(i) - running_mean(i) * weight(i) * inv_std;
    }
  }

  tensor<float, 4> forward(tensor_view<const float, 4> x) const {
    validate(x.shape(3));
    std::vector<float> a, b;
    affine_form(a, b);
    tensor<float, 4> y(x.shape());
    const index_t c = channels(), pixels = x.shape(0) * x.shape(1) * x.shape(2);
    const tensor<float, 4> xd(x);  // dense copy: any input strides
    for (index_t p = 0; p < pixels; ++p)
      for (index_t i = 0; i < c; ++i)
        y.data()[p * c + i] = xd.data()[p * c + i] * a[static_cast<std::size_t>(i)] + b[static_cast<std::size_t>(i)];
    return y;
  }
};

// Folds bn into the layer before it (operator fusion): layer'(x) = bn(layer(x)) for
// every x, up to float rounding. Scales each output channel's weights by gamma /
// sqrt(var + eps) and sets bias' = (bias - mean) * gamma / sqrt(var + eps) + beta. The
// layer gains a bias if it had none. Conv2d and linear alike: both keep an output
// channel's weights contiguous ([out, ...] and [out, in]).
template <class Layer>
Layer fold_batch_norm_into(const Layer& layer, index_t out_channels, const batch_norm2d& bn) {
  bn.validate(out_channels);
  std::vector<float> a, b;
  bn.affine_form(a, b);
  Layer out = layer;
  const index_t per = layer.weight.size() / out_channels;
  if (!layer.has_bias()) out.bias = tensor<float, 1>(extents<1>{out_channels});
  for (index_t o = 0; o < out_channels; ++o) {
    const float s = a[static_cast<std::size_t>(o)];
    for (index_t i = 0; i < per; ++i) out.weight.data()[o * per + i] *= s;
    out.bias(o) = (layer.has_bias() ? layer.bias(o) : 0.0f) * s + b[static_cast<std::size_t>(o)];
  }
  return out;
}
inline conv2d fold_batch_norm(const conv2d& conv, const batch_norm2d& bn) {
  return fold_batch_norm_into(conv, conv.out_channels(), bn);
}
// A batch norm after a linear layer (PyTorch's BatchNorm1d on [batch, features]): here
// the same batch_norm2d over the channels of [batch, 1, 1, features].
inline linear fold_batch_norm(const linear& fc, const batch_norm2d& bn) {
  return fold_batch_norm_into(fc, fc.out_features(), bn);
}

}  // namespace nn
}  // namespace qlib
