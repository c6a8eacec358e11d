// Training loops: one optimizer step on a batch, an epoch over a dataset with shuffling and progress, and evaluation.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "qlib/train/backward.hpp"
#include "qlib/train/gradients.hpp"
#include "qlib/train/loss.hpp"
#include "qlib/train/rng.hpp"

namespace qlib {
namespace train {

// Buffers reused across steps (the forward record and the gradients).
struct workspace {
  forward_cache cache;
  gradients grads;
};

struct step_result {
  float loss = 0.0f;   // mean softmax cross-entropy of the batch, before the update
  index_t correct = 0; // samples the pre-update model classified correctly
  index_t count = 0;   // batch size
};

// One step: training forward, softmax cross-entropy against `labels`, backward, and
// opt.step() over the model's parameters. Optimizer is train::sgd, train::adam or any
// class with step(const std::vector<parameter>&).
template <class Optimizer>
step_result train_step(nn::sequential& model, tensor_view<const float, 4> x, labels_view labels, Optimizer& opt,
                       workspace& ws) {
  QLIB_CHECK(labels.shape(0) == x.shape(0), errc::shape_mismatch,
             "train::train_step: " + std::to_string(labels.shape(0)) + " labels for a batch of " +
                 std::to_string(x.shape(0)));
  if (ws.grads.layers.size() != model.size()) ws.grads = make_gradients(model);
  const tensor_view<const float, 4> logits = forward_train(model, x, ws.cache);
  const loss_result<4> l = softmax_cross_entropy(logits, labels);
  backward(model, ws.cache, l.grad.cview(), ws.grads);
  opt.step(parameters(model, ws.grads));
  return {l.loss, l.correct, x.shape(0)};
}

template <class Optimizer>
step_result train_step(nn::sequential& model, tensor_view<const float, 4> x, labels_view labels, Optimizer& opt) {
  workspace ws;
  return train_step(model, x, labels, opt, ws);
}

namespace detail {
// Copies samples idx[begin, end) of x (any strides) into a dense batch, with their labels.
inline void gather_batch(tensor_view<const float, 4> x, labels_view labels, const std::vector<index_t>& idx,
                         std::size_t begin, std::size_t end, tensor<float, 4>& xb, std::vector<std::int32_t>& yb) {
  const index_t b = static_cast<index_t>(end - begin);
  const extents<4> shape{b, x.shape(1), x.shape(2), x.shape(3)};
  if (xb.shape() != shape) xb = tensor<float, 4>(shape);
  yb.resize(end - begin);
  const index_t per = x.shape(1) * x.shape(2) * x.shape(3);
  const bool dense_sample = x.stride(3) == 1 && x.stride(2) == x.shape(3) && x.stride(1) == x.shape(2) * x.shape(3);
  for (index_t s = 0; s < b; ++s) {
    const index_t src = idx[begin + static_cast<std::size_t>(s)];
    yb[static_cast<std::size_t>(s)] = labels(src);
    float* dst = xb.data() + s * per;
    if (dense_sample) {
      std::memcpy(dst, x.data() + src * x.stride(0), sizeof(float) * static_cast<std::size_t>(per));
    } else {
      for (index_t h = 0; h < x.shape(1); ++h)
        for (index_t w = 0; w < x.shape(2); ++w)
          for (index_t c = 0; c < x.shape(3); ++c) *dst++ = x(src, h, w, c);
    }
  }
}

inline void check_dataset(tensor_view<const float, 4> x, labels_view labels, index_t batch_size, const char* who) {
  QLIB_CHECK(x.shape(0) > 0, errc::empty_tensor, std::string(who) + ": the dataset is empty");
  QLIB_CHECK(labels.shape(0) == x.shape(0), errc::shape_mismatch,
             std::string(who) + ": " + std::to_string(labels.shape(0)) + " labels for " +
                 std::to_string(x.shape(0)) + " samples");
  QLIB_CHECK(batch_size > 0, errc::invalid_argument,
             std::string(who) + ": batch_size must be > 0, got " + std::to_string(batch_size));
}
}  // namespace detail

// Random data augmentation of training batches (epoch_options::augment; default none).
// Each sample is mirrored left-right with probability 1/2 (flip), then translated by
// (dy, dx), each uniform in [-shift, shift], with zero fill. Labels are unchanged.
struct augmentation {
  bool flip = false;
  index_t shift = 0;  // largest translation in pixels, per axis (H and W)
  bool enabled() const noexcept { return flip || shift > 0; }
};

// One image [H, W, C] (dense) in place: mirrored along W when flip, then moved by dy rows
// and dx columns: out(h, w) = in'(h - dy, w - dx), 0 where h - dy or w - dx is outside.
inline void flip_shift(tensor_view<float, 3> img, bool flip, index_t dy, index_t dx) {
  QLIB_CHECK(img.is_contiguous(), errc::invalid_argument, "train::flip_shift: the image must be dense");
  const index_t h = img.shape(0), w = img.shape(1), c = img.shape(2);
  const std::vector<float> in(img.data(), img.data() + img.size());
  for (index_t i = 0; i < h; ++i)
    for (index_t j = 0; j < w; ++j) {
      const index_t si = i - dy, sj0 = j - dx, sj = flip ? w - 1 - sj0 : sj0;
      const bool inside = si >= 0 && si < h && sj0 >= 0 && sj0 < w;
      for (index_t k = 0; k < c; ++k)
        img(i, j, k) = inside ? in[static_cast<std::size_t>((si * w + sj) * c + k)] : 0.0f;
    }
}

// Augments every sample of a dense batch [N, H, W, C] with draws from g, sample by
// sample: flip = g.below(2) == 1 (when a.flip), then dy and dx = g.below(2 shift + 1) -
// shift (when a.shift > 0).
inline void augment_batch(tensor_view<float, 4> x, const augmentation& a, rng& g) {
  QLIB_CHECK(a.shift >= 0, errc::invalid_argument,
             "train::augment_batch: shift must be >= 0, got " + std::to_string(a.shift));
  QLIB_CHECK(x.is_contiguous(), errc::invalid_argument, "train::augment_batch: the batch must be dense");
  const index_t per = x.shape(1) * x.shape(2) * x.shape(3);
  const auto span = static_cast<std::uint64_t>(2 * a.shift + 1);
  for (index_t s = 0; s < x.shape(0); ++s) {
    const bool flip = a.flip && g.below(2) == 1;
    index_t dy = 0, dx = 0;
    if (a.shift > 0) {
      dy = static_cast<index_t>(g.below(span)) - a.shift;
      dx = static_cast<index_t>(g.below(span)) - a.shift;
    }
    flip_shift(tensor_view<float, 3>(x.data() + s * per, {x.shape(1), x.shape(2), x.shape(3)}), flip, dy, dx);
  }
}

// The generator the epoch loop augments batch `step` of epoch `epoch` with: every
// (seed, epoch, step) has its own stream, so a run is reproducible batch by batch.
inline rng augmentation_rng(std::uint64_t seed, index_t epoch, index_t step) {
  const auto e = static_cast<std::uint64_t>(epoch), s = static_cast<std::uint64_t>(step);
  return rng(seed, 0xa0a0000000000000ull ^ (e << 24) ^ s);
}

struct epoch_options {
  index_t batch_size = 64;
  std::uint64_t seed = 0;  // with `epoch`, fixes the sample order
  index_t epoch = 0;       // passed to the progress callback; also numbers the global step
  bool shuffle = true;
  bool drop_last = false;  // skip a last batch smaller than batch_size
  // Optional: the learning rate for a global step (epoch * steps per epoch + step), set
  // on the optimizer before the step (e.g. a train::cosine_schedule).
  std::function<float(index_t)> learning_rate;
  // Off by default (the batches are the samples as they are). On: each batch is augmented
  // after gathering with augmentation_rng(seed, epoch, step), before the step sees it.
  augmentation augment;
};

// Reported after every step.
struct progress {
  index_t epoch = 0;
  index_t step = 0;         // 0-based step within the epoch
  index_t steps = 0;        // steps in this epoch
  float loss = 0.0f;        // this batch's loss
  double mean_loss = 0.0;   // sample-weighted mean loss of the epoch so far
  double accuracy = 0.0;    // running training accuracy of the epoch so far
  index_t samples = 0;      // samples seen so far in the epoch
};
using progress_callback = std::function<void(const progress&)>;

struct epoch_result {
  double mean_loss = 0.0;
  double accuracy = 0.0;
  index_t steps = 0;
  index_t samples = 0;
};

namespace detail {
// The epoch loop every trainer shares (train_epoch, QAT's and distill_epoch): sample
// order from rng(seed, epoch) when shuffling, batches gathered densely, the learning
// rate set per global step, optional augmentation, running loss and accuracy, progress
// after every step.
// step(xb, yb, order, begin, end) runs one optimizer step on the batch xb (samples
// order[begin, end), augmented when eo.augment is on) and returns its step_result.
template <class Optimizer, class Step>
epoch_result run_epoch(tensor_view<const float, 4> x, labels_view labels, Optimizer& opt, const epoch_options& eo,
                       const progress_callback& on_step, const std::string& who, Step&& step) {
  QLIB_CHECK(eo.augment.shift >= 0, errc::invalid_argument,
             who + ": augment.shift must be >= 0, got " + std::to_string(eo.augment.shift));
  const index_t n = x.shape(0);
  std::vector<index_t> order;
  if (eo.shuffle) {
    rng g(eo.seed, 0x5eed000000000000ull + static_cast<std::uint64_t>(eo.epoch));
    order = shuffled_indices(n, g);
  } else {
    order.resize(static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
  }
  const index_t full = n / eo.batch_size;
  const index_t steps = (eo.drop_last || n % eo.batch_size == 0) ? full : full + 1;
  QLIB_CHECK(steps > 0, errc::invalid_argument, who + ": drop_last with fewer samples than one batch leaves no step");
  tensor<float, 4> xb;
  std::vector<std::int32_t> yb;
  epoch_result r;
  double loss_sum = 0.0;
  index_t correct = 0;
  for (index_t s = 0; s < steps; ++s) {
    const auto begin = static_cast<std::size_t>(s * eo.batch_size);
    const auto end = std::min(begin + static_cast<std::size_t>(eo.batch_size), order.size());
    gather_batch(x, labels, order, begin, end, xb, yb);
    if (eo.augment.enabled()) {
      rng g = augmentation_rng(eo.seed, eo.epoch, s);
      augment_batch(xb.view(), eo.augment, g);
    }
    if (eo.learning_rate) opt.set_lr(eo.learning_rate(eo.epoch * steps + s));
    const step_result sr = step(xb, yb, order, begin, end);
    loss_sum += static_cast<double>(sr.loss) * static_cast<double>(sr.count);
    correct += sr.correct;
    r.samples += sr.count;
    r.steps = s + 1;
    r.mean_loss = loss_sum / static_cast<double>(r.samples);
    r.accuracy = static_cast<double>(correct) / static_cast<double>(r.samples);
    if (on_step) on_step({eo.epoch, s, steps, sr.loss, r.mean_loss, r.accuracy, r.samples});
  }
  return r;
}
}  // namespace detail

// One pass over (x [N, H, W, C], labels [N]) in batches, shuffled by train::rng(seed,
// epoch) when eo.shuffle, augmented when eo.augment is on. Serial and in a fixed order:
// the same model, seed and options give bit-identical weights.
template <class Optimizer>
epoch_result train_epoch(nn::sequential& model, tensor_view<const float, 4> x, labels_view labels, Optimizer& opt,
                         const epoch_options& eo = {}, const progress_callback& on_step = {}) {
  detail::check_dataset(x, labels, eo.batch_size, "train::train_epoch");
  model.output_shape({std::min(x.shape(0), eo.batch_size), x.shape(1), x.shape(2), x.shape(3)});
  workspace ws;
  return detail::run_epoch(x, labels, opt, eo, on_step, "train::train_epoch",
                           [&](const tensor<float, 4>& xb, const std::vector<std::int32_t>& yb,
                               const std::vector<index_t>&, std::size_t, std::size_t) {
                             return train_step(model, xb.cview(), view_of(yb), opt, ws);
                           });
}

struct evaluation {
  double mean_loss = 0.0;
  double accuracy = 0.0;
  index_t samples = 0;
};

namespace detail {
// Loss and accuracy of any model whose const forward(tensor_view<const float, 4>) returns
// logits [n, 1, 1, classes], in batches; `who` names the caller in errors.
template <class Model>
evaluation evaluate_model(const Model& model, tensor_view<const float, 4> x, labels_view labels, index_t batch_size,
                          const char* who) {
  check_dataset(x, labels, batch_size, who);
  const index_t n = x.shape(0);
  evaluation e;
  double loss_sum = 0.0;
  index_t correct = 0;
  for (index_t b0 = 0; b0 < n; b0 += batch_size) {
    const index_t b1 = std::min(n, b0 + batch_size);
    const tensor<float, 4> logits = model.forward(x.slice(0, b0, b1));
    const loss_result<4> l = softmax_cross_entropy(logits.cview(), labels.slice(0, b0, b1));
    loss_sum += static_cast<double>(l.loss) * static_cast<double>(b1 - b0);
    correct += l.correct;
  }
  e.samples = n;
  e.mean_loss = loss_sum / static_cast<double>(n);
  e.accuracy = static_cast<double>(correct) / static_cast<double>(n);
  return e;
}
}  // namespace detail

// Inference-mode loss and accuracy (batch_norm2d with running statistics), in batches.
inline evaluation evaluate(const nn::sequential& model, tensor_view<const float, 4> x, labels_view labels,
                           index_t batch_size = 256) {
  return detail::evaluate_model(model, x, labels, batch_size, "train::evaluate");
}

}  // namespace train
}  // namespace qlib
