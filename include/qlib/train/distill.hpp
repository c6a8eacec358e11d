// Knowledge distillation (Hinton et al. 2015): the soft-target loss with its gradient, distillation steps and epochs for float and QAT students.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "qlib/train/backward.hpp"
#include "qlib/train/gradients.hpp"
#include "qlib/train/loss.hpp"
#include "qlib/train/qat.hpp"
#include "qlib/train/rng.hpp"
#include "qlib/train/trainer.hpp"

namespace qlib {
namespace train {

// T softens both distributions (T > 0, finite); alpha in [0, 1] weighs the soft term
// against the cross-entropy with the hard labels.
struct distill_options {
  float temperature = 4.0f;
  float alpha = 0.7f;
};

// The batch's distillation loss and its parts (all batch means), dL/d(student logits) in
// the logits' shape, and how many samples the student classifies correctly (argmax ==
// label; ties go to the lower class, as softmax_cross_entropy).
template <std::size_t Rank>
struct distill_result {
  float loss = 0.0f;           // alpha * T^2 * kl + (1 - alpha) * cross_entropy
  float kl = 0.0f;             // KL(softmax(z_t / T) || softmax(z_s / T)), without the T^2 factor
  float cross_entropy = 0.0f;  // softmax cross-entropy of the student (T = 1) with the labels
  tensor<float, Rank> grad;
  index_t correct = 0;
};

namespace detail {
inline void check_distill_options(const distill_options& o, const char* who) {
  QLIB_CHECK(std::isfinite(o.temperature) && o.temperature > 0.0f, errc::invalid_argument,
             std::string(who) + ": the temperature must be finite and > 0, got " + std::to_string(o.temperature));
  QLIB_CHECK(o.alpha >= 0.0f && o.alpha <= 1.0f, errc::invalid_argument,
             std::string(who) + ": alpha must be in [0, 1], got " + std::to_string(o.alpha));
}

// Softmax of one row of logits divided by t, in double, shifted by the row maximum so
// that no exp overflows: e[j] = exp(z_j / t - m), returns the log-sum-exp m + log(sum e).
// With t = 1 these are exactly the operations of softmax_cross_entropy.
inline double shifted_exp_row(tensor_view<const float, 2> z, index_t i, double t, std::vector<double>& e,
                              double& sum) {
  const index_t k = z.shape(1);
  double m = static_cast<double>(z(i, 0)) / t;
  for (index_t j = 1; j < k; ++j) m = std::max(m, static_cast<double>(z(i, j)) / t);
  sum = 0.0;
  for (index_t j = 0; j < k; ++j)
    sum += (e[static_cast<std::size_t>(j)] = std::exp(static_cast<double>(z(i, j)) / t - m));
  return m + std::log(sum);
}

// [N, 1, 1, classes] logits (a model's output) as [N, classes].
inline tensor_view<const float, 2> logits_2d(tensor_view<const float, 4> z, const char* who, const char* what) {
  QLIB_CHECK(z.shape(1) == 1 && z.shape(2) == 1, errc::shape_mismatch,
             std::string(who) + ": " + what + " logits must be [N, 1, 1, classes], got " +
                 qlib::detail::extents_string(z.shape()));
  return tensor_view<const float, 2>(z.data(), {z.shape(0), z.shape(3)}, {z.stride(0), z.stride(3)});
}

inline distill_result<2> distillation_loss_2d(tensor_view<const float, 2> zs, tensor_view<const float, 2> zt,
                                              labels_view labels, const distill_options& o) {
  const char* who = "train::distillation_loss";
  check_distill_options(o, who);
  const index_t n = zs.shape(0), k = zs.shape(1);
  QLIB_CHECK(n > 0 && k > 0, errc::empty_tensor,
             std::string(who) + ": needs student logits [N, classes] with N, classes > 0, got " +
                 qlib::detail::extents_string(zs.shape()));
  QLIB_CHECK(zt.shape() == zs.shape(), errc::shape_mismatch,
             std::string(who) + ": teacher logits " + qlib::detail::extents_string(zt.shape()) + ", student logits " +
                 qlib::detail::extents_string(zs.shape()));
  QLIB_CHECK(labels.shape(0) == n, errc::shape_mismatch,
             std::string(who) + ": " + std::to_string(labels.shape(0)) + " labels for " + std::to_string(n) +
                 " samples");
  // Validate everything before computing: a refused batch leaves no partial result.
  for (index_t i = 0; i < n; ++i) {
    const std::int32_t y = labels(i);
    QLIB_CHECK(y >= 0 && y < k, errc::out_of_range,
               std::string(who) + ": label " + std::to_string(y) + " of sample " + std::to_string(i) +
                   " is outside [0, " + std::to_string(k) + ")");
    for (index_t j = 0; j < k; ++j)
      QLIB_CHECK(std::isfinite(zs(i, j)) && std::isfinite(zt(i, j)), errc::non_finite,
                 std::string(who) + ": logit " + std::to_string(j) + " of sample " + std::to_string(i) + " (" +
                     (std::isfinite(zs(i, j)) ? "teacher" : "student") + ") is not finite");
  }
  const double t = o.temperature, alpha = o.alpha, inv_n = 1.0 / static_cast<double>(n);
  distill_result<2> r;
  r.grad = tensor<float, 2>(extents<2>{n, k});
  const auto kk = static_cast<std::size_t>(k);
  std::vector<double> e1(kk), es(kk), et(kk);
  double kl_sum = 0.0, ce_sum = 0.0;
  for (index_t i = 0; i < n; ++i) {
    const std::int32_t y = labels(i);
    index_t best = 0;
    for (index_t j = 1; j < k; ++j)
      if (zs(i, j) > zs(i, best)) best = j;
    r.correct += best == y ? 1 : 0;
    // Hard term at T = 1: -log softmax(z_s)_y.
    double s1 = 0.0, ss = 0.0, st = 0.0;
    const double lse1 = shifted_exp_row(zs, i, 1.0, e1, s1);
    ce_sum += lse1 - static_cast<double>(zs(i, y));
    // Soft term: KL = sum_j p_t (log p_t - log p_s) with log p = z / T - lse (finite, so
    // a p_t that underflows to 0 contributes exactly 0).
    const double lse_s = shifted_exp_row(zs, i, t, es, ss);
    const double lse_t = shifted_exp_row(zt, i, t, et, st);
    double kl = 0.0;
    for (index_t j = 0; j < k; ++j) {
      const auto jj = static_cast<std::size_t>(j);
      const double lpt = static_cast<double>(zt(i, j)) / t - lse_t, lps = static_cast<double>(zs(i, j)) / t - lse_s;
      kl += (et[jj] / st) * (lpt - lps);
    }
    kl_sum += kl;
    // d/dz_s [T^2 KL] = T (p_s - p_t): the soft gradients are 1/T^2 smaller than the hard
    // ones, and the T^2 factor in the loss gives them back their scale (Hinton et al.).
    for (index_t j = 0; j < k; ++j) {
      const auto jj = static_cast<std::size_t>(j);
      const double soft = t * (es[jj] / ss - et[jj] / st);
      const double hard = e1[jj] / s1 - (j == y ? 1.0 : 0.0);
      r.grad(i, j) = static_cast<float>((alpha * soft + (1.0 - alpha) * hard) * inv_n);
    }
  }
  r.kl = static_cast<float>(kl_sum * inv_n);
  r.cross_entropy = static_cast<float>(ce_sum * inv_n);
  r.loss = static_cast<float>((alpha * t * t * kl_sum + (1.0 - alpha) * ce_sum) * inv_n);
  return r;
}

// The result with its gradient reshaped to a model's output shape [N, 1, 1, classes].
inline distill_result<4> with_shape(const distill_result<2>& r, const extents<4>& shape) {
  distill_result<4> out;
  out.loss = r.loss;
  out.kl = r.kl;
  out.cross_entropy = r.cross_entropy;
  out.correct = r.correct;
  out.grad = tensor<float, 4>(r.grad.cview().reshape(shape));
  return out;
}
}  // namespace detail

// L = mean_i [alpha T^2 KL(softmax(t_i / T) || softmax(s_i / T)) + (1 - alpha) CE(s_i, y_i)]
// with dL/ds_ij = [alpha T (softmax(s_i / T)_j - softmax(t_i / T)_j) + (1 - alpha)
// (softmax(s_i)_j - [j == y_i])] / N, in double with log-sum-exp shifts. The teacher
// logits come from anywhere (a float or int8 qlib model, a file); they get no gradient.
// alpha = 0 gives softmax_cross_entropy's loss and gradient bit for bit. Refuses bad
// options (errc::invalid_argument), shapes that differ or empty logits
// (shape_mismatch, empty_tensor), labels outside [0, classes) (out_of_range) and
// non-finite logits of either model (non_finite).
inline distill_result<2> distillation_loss(tensor_view<const float, 2> student, tensor_view<const float, 2> teacher,
                                           labels_view labels, const distill_options& o = {}) {
  return detail::distillation_loss_2d(student, teacher, labels, o);
}

// The same on model outputs [N, 1, 1, classes]; the gradient has that shape too.
inline distill_result<4> distillation_loss(tensor_view<const float, 4> student, tensor_view<const float, 4> teacher,
                                           labels_view labels, const distill_options& o = {}) {
  const char* who = "train::distillation_loss";
  return detail::with_shape(detail::distillation_loss_2d(detail::logits_2d(student, who, "student"),
                                                         detail::logits_2d(teacher, who, "teacher"), labels, o),
                            student.shape());
}

// A teacher made of several models (an ensemble, the usual way to get a teacher stronger
// than any one model): forward returns the mean of the members' logits, summed in member
// order (same bits every run). Members are borrowed, any type with forward(tensor_view<
// const float, 4>) returning [n, 1, 1, classes]; all must give the same shape.
template <class Model>
struct mean_logits_ensemble {
  std::vector<const Model*> members;

  tensor<float, 4> forward(tensor_view<const float, 4> x) const {
    QLIB_CHECK(!members.empty(), errc::empty_tensor, "train::mean_logits_ensemble: no members");
    tensor<float, 4> sum;
    for (std::size_t i = 0; i < members.size(); ++i) {
      QLIB_CHECK(members[i] != nullptr, errc::invalid_argument, "train::mean_logits_ensemble: a null member");
      tensor<float, 4> y = members[i]->forward(x);
      if (i == 0) {
        sum = std::move(y);
        continue;
      }
      QLIB_CHECK(y.shape() == sum.shape(), errc::shape_mismatch,
                 "train::mean_logits_ensemble: member " + std::to_string(i) + " gives logits " +
                     qlib::detail::extents_string(y.shape()) + ", member 0 " +
                     qlib::detail::extents_string(sum.shape()));
      for (index_t j = 0; j < sum.size(); ++j) sum.data()[j] += y.data()[j];
    }
    const float inv = 1.0f / static_cast<float>(members.size());
    for (index_t j = 0; j < sum.size(); ++j) sum.data()[j] *= inv;
    return sum;
  }
};

// Inference-mode logits [N, classes] of any model whose forward(tensor_view<const float,
// 4>) returns [n, 1, 1, classes] (nn::sequential, nn::quantized_sequential), in batches:
// the teacher's targets for distill_epoch, computed once.
template <class Model>
tensor<float, 2> predict_logits(const Model& model, tensor_view<const float, 4> x, index_t batch_size = 256) {
  QLIB_CHECK(x.shape(0) > 0, errc::empty_tensor, "train::predict_logits: no samples");
  QLIB_CHECK(batch_size > 0, errc::invalid_argument,
             "train::predict_logits: batch_size must be > 0, got " + std::to_string(batch_size));
  const index_t n = x.shape(0);
  tensor<float, 2> out;
  for (index_t b0 = 0; b0 < n; b0 += batch_size) {
    const index_t b1 = std::min(n, b0 + batch_size);
    const tensor<float, 4> y = model.forward(x.slice(0, b0, b1));
    const tensor_view<const float, 2> z = detail::logits_2d(y.cview(), "train::predict_logits", "model");
    if (b0 == 0) out = tensor<float, 2>(extents<2>{n, z.shape(1)});
    for (index_t i = 0; i < z.shape(0); ++i)
      for (index_t j = 0; j < z.shape(1); ++j) out(b0 + i, j) = z(i, j);
  }
  return out;
}

struct distill_step_result {
  float loss = 0.0f;           // distillation loss of the batch, before the update
  float kl = 0.0f;             // its soft part (mean KL at temperature T)
  float cross_entropy = 0.0f;  // its hard part
  index_t correct = 0;         // samples the pre-update student classified correctly
  index_t count = 0;           // batch size
};

namespace detail {
// The step shared by both kinds of students: forward() returns the training-mode logits
// [N, 1, 1, classes]; backward_step(dL/dlogits) backpropagates and steps the optimizer.
template <class Forward, class BackwardStep>
distill_step_result distill_step_impl(tensor_view<const float, 4> x, labels_view labels,
                                      tensor_view<const float, 2> teacher_logits, const distill_options& o,
                                      const char* who, Forward&& forward, BackwardStep&& backward_step) {
  check_distill_options(o, who);
  QLIB_CHECK(labels.shape(0) == x.shape(0) && teacher_logits.shape(0) == x.shape(0), errc::shape_mismatch,
             std::string(who) + ": " + std::to_string(labels.shape(0)) + " labels and " +
                 std::to_string(teacher_logits.shape(0)) + " teacher rows for a batch of " +
                 std::to_string(x.shape(0)));
  const tensor_view<const float, 4> logits = forward();
  const distill_result<4> l = with_shape(
      distillation_loss_2d(logits_2d(logits, who, "student"), teacher_logits, labels, o), logits.shape());
  backward_step(l.grad.cview());
  return {l.loss, l.kl, l.cross_entropy, l.correct, x.shape(0)};
}
}  // namespace detail

// One step, as train_step with the distillation loss: training forward of the student,
// distillation_loss against teacher_logits [N, classes] and labels, backward, opt.step().
template <class Optimizer>
distill_step_result distill_step(nn::sequential& student, tensor_view<const float, 4> x, labels_view labels,
                                 tensor_view<const float, 2> teacher_logits, const distill_options& o, Optimizer& opt,
                                 workspace& ws) {
  if (ws.grads.layers.size() != student.size()) ws.grads = make_gradients(student);
  return detail::distill_step_impl(
      x, labels, teacher_logits, o, "train::distill_step", [&] { return forward_train(student, x, ws.cache); },
      [&](tensor_view<const float, 4> dy) {
        backward(student, ws.cache, dy, ws.grads);
        opt.step(parameters(student, ws.grads));
      });
}

template <class Optimizer>
distill_step_result distill_step(nn::sequential& student, tensor_view<const float, 4> x, labels_view labels,
                                 tensor_view<const float, 2> teacher_logits, const distill_options& o,
                                 Optimizer& opt) {
  workspace ws;
  return distill_step(student, x, labels, teacher_logits, o, opt, ws);
}

// The same for a QAT student (a quantized student distilled from any teacher): the
// fake-quantized training forward, the straight-through / LSQ backward and opt.step()
// over student.parameters(), as QAT's train_step with the distillation loss.
template <class Optimizer>
distill_step_result distill_step(qat_model& student, tensor_view<const float, 4> x, labels_view labels,
                                 tensor_view<const float, 2> teacher_logits, const distill_options& o, Optimizer& opt,
                                 qat_workspace& ws) {
  if (ws.grads.layers.size() != student.model().size()) ws.grads = student.make_gradients();
  return detail::distill_step_impl(
      x, labels, teacher_logits, o, "train::distill_step (QAT)", [&] { return student.forward_train(x, ws.cache); },
      [&](tensor_view<const float, 4> dy) {
        student.backward(ws.cache, dy, ws.grads);
        opt.step(student.parameters(ws.grads));
      });
}

namespace detail {
// Per kind of student: its step buffers, and the check before an epoch.
inline workspace student_workspace(const nn::sequential&) { return {}; }
inline qat_workspace student_workspace(const qat_model&) { return {}; }
inline void check_student(const nn::sequential& s, tensor_view<const float, 4> x, index_t batch) {
  s.output_shape({std::min(x.shape(0), batch), x.shape(1), x.shape(2), x.shape(3)});
}
inline void check_student(const qat_model& s, tensor_view<const float, 4> x, index_t batch) {
  s.model().output_shape({std::min(x.shape(0), batch), x.shape(1), x.shape(2), x.shape(3)});
}

// distill_epoch's loop; teacher(xb, order, begin, end) gives the batch's teacher logits [b, classes].
template <class Student, class Optimizer, class Teacher>
epoch_result distill_epoch_impl(Student& student, tensor_view<const float, 4> x, labels_view labels, Optimizer& opt,
                                const distill_options& o, const epoch_options& eo, const progress_callback& on_step,
                                Teacher&& teacher) {
  const char* who = "train::distill_epoch";
  check_dataset(x, labels, eo.batch_size, who);
  check_distill_options(o, who);
  check_student(student, x, eo.batch_size);
  auto ws = student_workspace(student);
  return run_epoch(x, labels, opt, eo, on_step, who,
                   [&](const tensor<float, 4>& xb, const std::vector<std::int32_t>& yb,
                       const std::vector<index_t>& order, std::size_t begin, std::size_t end) {
                     const tensor_view<const float, 2> tb = teacher(xb, order, begin, end);
                     const distill_step_result sr = distill_step(student, xb.cview(), view_of(yb), tb, o, opt, ws);
                     return step_result{sr.loss, sr.correct, sr.count};
                   });
}

// True for a teacher model: forward(tensor_view<const float, 4>) on a const object.
template <class T, class = void>
struct is_teacher_model : std::false_type {};
template <class T>
struct is_teacher_model<
    T, decltype(void(std::declval<const T&>().forward(std::declval<tensor_view<const float, 4>>())))>
    : std::true_type {};
}  // namespace detail

// One distillation pass over (x [N, H, W, C], labels [N]) with teacher_logits [N, classes]
// (row i belongs to sample i; e.g. predict_logits(teacher, x) or logits read from a
// file), with train_epoch's batching, shuffle order (the same seed and epoch visit the
// samples in the same order), learning-rate hook and progress (loss = the distillation
// loss). The student is an nn::sequential or a qat_model. Serial and deterministic. With
// eo.augment on, the student sees augmented images but the logits stay those of the
// original samples: use the overload with a teacher model instead.
template <class Student, class Optimizer>
epoch_result distill_epoch(Student& student, tensor_view<const float, 4> x, labels_view labels,
                           tensor_view<const float, 2> teacher_logits, Optimizer& opt, const distill_options& o,
                           const epoch_options& eo = {}, const progress_callback& on_step = {}) {
  const index_t k = teacher_logits.shape(1);
  QLIB_CHECK(teacher_logits.shape(0) == x.shape(0) && k > 0, errc::shape_mismatch,
             "train::distill_epoch: teacher logits " + qlib::detail::extents_string(teacher_logits.shape()) + " for " +
                 std::to_string(x.shape(0)) + " samples");
  tensor<float, 2> tb;
  return detail::distill_epoch_impl(
      student, x, labels, opt, o, eo, on_step,
      [&](const tensor<float, 4>& xb, const std::vector<index_t>& order, std::size_t begin, std::size_t) {
        const index_t b = xb.shape(0);
        if (tb.shape() != extents<2>{b, k}) tb = tensor<float, 2>(extents<2>{b, k});
        for (index_t i = 0; i < b; ++i)  // the teacher's logits of the same samples
          for (index_t j = 0; j < k; ++j) tb(i, j) = teacher_logits(order[begin + static_cast<std::size_t>(i)], j);
        return tb.cview();
      });
}

// The same with an online teacher: any model whose const forward(tensor_view<const float,
// 4>) returns [n, 1, 1, classes] (nn::sequential in inference mode, nn::quantized_sequential,
// a qat_model) runs on each batch exactly as the student sees it, augmentation included
// ("consistent" teaching, Beyer et al. 2022). Without augmentation it gives the weights of
// the overload above with predict_logits(teacher, x) bit for bit when the teacher's
// logits of a sample do not depend on the batch it is in.
template <class Student, class Teacher, class Optimizer,
          class = std::enable_if_t<detail::is_teacher_model<Teacher>::value>>
epoch_result distill_epoch(Student& student, tensor_view<const float, 4> x, labels_view labels, const Teacher& teacher,
                           Optimizer& opt, const distill_options& o, const epoch_options& eo = {},
                           const progress_callback& on_step = {}) {
  tensor<float, 4> logits;
  return detail::distill_epoch_impl(
      student, x, labels, opt, o, eo, on_step,
      [&](const tensor<float, 4>& xb, const std::vector<index_t>&, std::size_t, std::size_t) {
        logits = teacher.forward(xb.cview());
        return detail::logits_2d(logits.cview(), "train::distill_epoch", "teacher");
      });
}

}  // namespace train
}  // namespace qlib
