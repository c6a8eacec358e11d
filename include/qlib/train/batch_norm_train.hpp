// batch_norm2d in training mode: forward with batch statistics (updating the running ones) and its backward.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "qlib/nn/batch_norm.hpp"
#include "qlib/train/buffers.hpp"

namespace qlib {
namespace train {

namespace detail {
// out[i] = sum over pixels p of f(p * c + i, i), per channel i: float sums over blocks of
// 128 pixels (vectorized across channels), added up in double. Exact enough for batch
// statistics of any size and in a fixed order.
template <class F>
void channel_sums(index_t pixels, index_t c, F f, std::vector<double>& out) {
  constexpr index_t block = 128;
  out.assign(static_cast<std::size_t>(c), 0.0);
  std::vector<float> part(static_cast<std::size_t>(c));
  float* pp = part.data();
  for (index_t p0 = 0; p0 < pixels; p0 += block) {
    const index_t p1 = std::min(pixels, p0 + block);
    std::fill(part.begin(), part.end(), 0.0f);
    for (index_t p = p0; p < p1; ++p)
      for (index_t i = 0; i < c; ++i) pp[i] += f(p * c + i, i);
    for (index_t i = 0; i < c; ++i) out[static_cast<std::size_t>(i)] += pp[i];
  }
}
}  // namespace detail

// What the backward pass needs from a training forward: the normalized input and the
// per-channel 1 / sqrt(var + eps) of the batch.
struct batch_norm_cache {
  tensor<float, 4> x_hat;
  std::vector<float> inv_std;
};

// y = (x - mean_B) / sqrt(var_B + eps) * weight + bias with the batch's mean and biased
// variance over N*H*W per channel, as PyTorch's BatchNorm2d in train(). When
// update_running_stats, running = (1 - momentum) running + momentum batch, with the
// unbiased variance (var_B * M / (M - 1)) for running_var. Two-pass mean and variance.
inline void batch_norm_forward_train(nn::batch_norm2d& bn, tensor_view<const float, 4> x, batch_norm_cache& cache,
                                     tensor<float, 4>& y, bool update_running_stats = true) {
  bn.validate(x.shape(3));
  const index_t c = bn.channels(), m = x.shape(0) * x.shape(1) * x.shape(2);
  QLIB_CHECK(m > 1, errc::invalid_argument,
             "train::batch_norm_forward_train: batch statistics need more than one value per channel, got input " +
                 qlib::detail::extents_string(x.shape()));
  const detail::dense_input xd(x);
  const float* xp = xd.view.data();
  std::vector<double> sum, sq;
  detail::channel_sums(m, c, [&](index_t k, index_t) { return xp[k]; }, sum);
  std::vector<float> mean(static_cast<std::size_t>(c));
  for (index_t i = 0; i < c; ++i)
    mean[static_cast<std::size_t>(i)] = static_cast<float>(sum[static_cast<std::size_t>(i)] / static_cast<double>(m));
  // Two-pass variance: no cancellation when the mean is large.
  const float* mp = mean.data();
  detail::channel_sums(m, c, [&](index_t k, index_t i) {
    const float d = xp[k] - mp[i];
    return d * d;
  }, sq);
  cache.inv_std.assign(static_cast<std::size_t>(c), 0.0f);
  for (index_t i = 0; i < c; ++i) {
    const auto k = static_cast<std::size_t>(i);
    const double var = sq[k] / static_cast<double>(m);
    cache.inv_std[k] = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(bn.eps)));
    QLIB_CHECK(std::isfinite(cache.inv_std[k]), errc::non_finite,
               "train::batch_norm_forward_train: channel " + std::to_string(i) +
                   " has a non-finite or zero variance + eps");
    if (update_running_stats) {
      const float mom = bn.momentum;
      const double unbiased = sq[k] / static_cast<double>(m - 1);
      bn.running_mean(i) = (1.0f - mom) * bn.running_mean(i) + mom * mean[k];
      bn.running_var(i) = (1.0f - mom) * bn.running_var(i) + mom * static_cast<float>(unbiased);
    }
  }
  detail::ensure_shape(cache.x_hat, x.shape());
  detail::ensure_shape(y, x.shape());
  float* xh = cache.x_hat.data();
  float* yp = y.data();
  const float *is = cache.inv_std.data(), *w = bn.weight.data(), *b = bn.bias.data();
  for (index_t p = 0; p < m; ++p)
    for (index_t i = 0; i < c; ++i) {
      const float v = (xp[p * c + i] - mp[i]) * is[i];
      xh[p * c + i] = v;
      yp[p * c + i] = v * w[i] + b[i];
    }
}

// Backward of the training forward: dgamma = sum dy x_hat, dbeta = sum dy and
// dx = gamma inv_std / M (M dy - dbeta - x_hat dgamma) - the gradient flows through the
// batch mean and variance too.
inline void batch_norm_backward(const nn::batch_norm2d& bn, const batch_norm_cache& cache,
                                tensor_view<const float, 4> dy, tensor_view<float, 1> dgamma,
                                tensor_view<float, 1> dbeta, tensor<float, 4>& dx) {
  const char* who = "train::batch_norm_backward";
  detail::check_output_grad(dy.shape(), cache.x_hat.shape(), who);
  const index_t c = bn.channels(), m = dy.shape(0) * dy.shape(1) * dy.shape(2);
  QLIB_CHECK(dy.shape(3) == c && static_cast<index_t>(cache.inv_std.size()) == c, errc::shape_mismatch,
             std::string(who) + ": the cache does not belong to this layer");
  detail::check_param_grad(dgamma, c, who, "weight");
  detail::check_param_grad(dbeta, c, who, "bias");
  const detail::dense_input dyd(dy);
  const float* g = dyd.view.data();
  const float* xh = cache.x_hat.data();
  std::vector<double> sg, sb;
  detail::channel_sums(m, c, [&](index_t k, index_t) { return g[k]; }, sb);
  detail::channel_sums(m, c, [&](index_t k, index_t) { return g[k] * xh[k]; }, sg);
  std::vector<float> k1(static_cast<std::size_t>(c)), mb(static_cast<std::size_t>(c)), mg(static_cast<std::size_t>(c));
  for (index_t i = 0; i < c; ++i) {
    const auto k = static_cast<std::size_t>(i);
    dgamma(i) = static_cast<float>(sg[k]);
    dbeta(i) = static_cast<float>(sb[k]);
    k1[k] = bn.weight(i) * cache.inv_std[k];
    mb[k] = static_cast<float>(sb[k] / static_cast<double>(m));
    mg[k] = static_cast<float>(sg[k] / static_cast<double>(m));
  }
  detail::ensure_shape(dx, dy.shape());
  float* d = dx.data();
  const float *k1p = k1.data(), *mbp = mb.data(), *mgp = mg.data();
  for (index_t p = 0; p < m; ++p)
    for (index_t i = 0; i < c; ++i) d[p * c + i] = k1p[i] * (g[p * c + i] - mbp[i] - xh[p * c + i] * mgp[i]);
}

// The same returning the output / dL/dx.
inline tensor<float, 4> batch_norm_forward_train(nn::batch_norm2d& bn, tensor_view<const float, 4> x,
                                                 batch_norm_cache& cache, bool update_running_stats = true) {
  tensor<float, 4> y;
  batch_norm_forward_train(bn, x, cache, y, update_running_stats);
  return y;
}
inline tensor<float, 4> batch_norm_backward(const nn::batch_norm2d& bn, const batch_norm_cache& cache,
                                            tensor_view<const float, 4> dy, tensor_view<float, 1> dgamma,
                                            tensor_view<float, 1> dbeta) {
  tensor<float, 4> dx;
  batch_norm_backward(bn, cache, dy, dgamma, dbeta, dx);
  return dx;
}

}  // namespace train
}  // namespace qlib
