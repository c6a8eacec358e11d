// Softmax cross-entropy loss (mean over the batch) on logits and integer labels: value, gradient and correct count.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "qlib/core/tensor.hpp"

namespace qlib {
namespace train {

// Class labels, one per sample.
using labels_view = tensor_view<const std::int32_t, 1>;

inline labels_view view_of(const std::vector<std::int32_t>& labels) {
  return labels_view(labels.data(), {static_cast<index_t>(labels.size())});
}

// The loss of a batch, dL/dlogits in the logits' shape, and how many samples the
// logits classify correctly (argmax == label; ties go to the lower class).
template <std::size_t Rank>
struct loss_result {
  float loss = 0.0f;
  tensor<float, Rank> grad;
  index_t correct = 0;
};

namespace detail {
inline loss_result<2> softmax_cross_entropy_2d(tensor_view<const float, 2> z, labels_view labels) {
  const index_t n = z.shape(0), k = z.shape(1);
  QLIB_CHECK(n > 0 && k > 0, errc::empty_tensor,
             "train::softmax_cross_entropy: needs logits [N, classes] with N, classes > 0, got " +
                 qlib::detail::extents_string(z.shape()));
  QLIB_CHECK(labels.shape(0) == n, errc::shape_mismatch,
             "train::softmax_cross_entropy: " + std::to_string(labels.shape(0)) + " labels for " + std::to_string(n) +
                 " samples");
  loss_result<2> r;
  r.grad = tensor<float, 2>(extents<2>{n, k});
  double total = 0.0;
  std::vector<double> e(static_cast<std::size_t>(k));
  for (index_t i = 0; i < n; ++i) {
    const std::int32_t y = labels(i);
    QLIB_CHECK(y >= 0 && y < k, errc::out_of_range,
               "train::softmax_cross_entropy: label " + std::to_string(y) + " of sample " + std::to_string(i) +
                   " is outside [0, " + std::to_string(k) + ")");
    index_t best = 0;
    for (index_t j = 0; j < k; ++j) {
      QLIB_CHECK(std::isfinite(z(i, j)), errc::non_finite,
                 "train::softmax_cross_entropy: logit " + std::to_string(j) + " of sample " + std::to_string(i) +
                     " is not finite");
      if (z(i, j) > z(i, best)) best = j;
    }
    r.correct += best == y ? 1 : 0;
    // log-sum-exp shifted by the maximum: no overflow, at least one term is exp(0) = 1.
    const double m = z(i, best);
    double s = 0.0;
    for (index_t j = 0; j < k; ++j) s += (e[static_cast<std::size_t>(j)] = std::exp(static_cast<double>(z(i, j)) - m));
    const double lse = m + std::log(s);
    total += lse - static_cast<double>(z(i, y));
    for (index_t j = 0; j < k; ++j)
      r.grad(i, j) = static_cast<float>((e[static_cast<std::size_t>(j)] / s - (j == y ? 1.0 : 0.0)) /
                                        static_cast<double>(n));
  }
  r.loss = static_cast<float>(total / static_cast<double>(n));
  return r;
}
}  // namespace detail

// L = mean_i (log sum_j exp z_ij - z_i,label_i), dL/dz_ij = (softmax(z_i)_j - [j == label_i]) / N,
// computed in double with the log-sum-exp shift. Refuses labels outside [0, classes)
// (errc::out_of_range), non-finite logits (errc::non_finite) and a label count that is
// not the batch size (errc::shape_mismatch).
inline loss_result<2> softmax_cross_entropy(tensor_view<const float, 2> logits, labels_view labels) {
  return detail::softmax_cross_entropy_2d(logits, labels);
}

// The same on a model's output [N, 1, 1, classes]; the gradient has that shape too.
inline loss_result<4> softmax_cross_entropy(tensor_view<const float, 4> logits, labels_view labels) {
  QLIB_CHECK(logits.shape(1) == 1 && logits.shape(2) == 1, errc::shape_mismatch,
             "train::softmax_cross_entropy: logits must be [N, 1, 1, classes], got " +
                 qlib::detail::extents_string(logits.shape()));
  const tensor_view<const float, 2> z(logits.data(), {logits.shape(0), logits.shape(3)},
                                      {logits.stride(0), logits.stride(3)});
  loss_result<2> r = detail::softmax_cross_entropy_2d(z, labels);
  loss_result<4> out;
  out.loss = r.loss;
  out.correct = r.correct;
  out.grad = tensor<float, 4>(r.grad.cview().reshape(logits.shape()));
  return out;
}

}  // namespace train
}  // namespace qlib
