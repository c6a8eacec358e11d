// Tests for knowledge distillation: the Hinton loss against a direct formula and finite differences, its special cases, errors, steps and epochs.
#include "qlib/train/distill.hpp"

#include "qlib/nn.hpp"
#include "qlib/train.hpp"
#include "test_util.hpp"

#include <cmath>
#include <limits>
#include <vector>

using namespace qlib;
using qlib_test::rand_float;
using qlib_test::rand_int;

namespace {

tensor<float, 2> rand_logits(index_t n, index_t k, float lo = -4.0f, float hi = 4.0f) {
  tensor<float, 2> z(extents<2>{n, k});
  for (float& v : z) v = rand_float(lo, hi);
  return z;
}

std::vector<std::int32_t> rand_labels(index_t n, index_t k) {
  std::vector<std::int32_t> y(static_cast<std::size_t>(n));
  for (auto& v : y) v = rand_int(0, static_cast<int>(k - 1));
  return y;
}

// softmax(z_i / T) in long double, written out directly (probabilities, not log-probabilities).
std::vector<long double> softmax_ref(const tensor<float, 2>& z, index_t i, long double t) {
  const index_t k = z.shape(1);
  long double m = -std::numeric_limits<long double>::infinity();
  for (index_t j = 0; j < k; ++j) m = std::max(m, static_cast<long double>(z(i, j)) / t);
  std::vector<long double> p(static_cast<std::size_t>(k));
  long double s = 0;
  for (index_t j = 0; j < k; ++j) s += p[static_cast<std::size_t>(j)] = std::exp(static_cast<long double>(z(i, j)) / t - m);
  for (auto& v : p) v /= s;
  return p;
}

// log softmax(z_i / T) in long double: z / T - max - log sum exp(z / T - max).
std::vector<long double> log_softmax_ref(const tensor<float, 2>& z, index_t i, long double t) {
  const index_t k = z.shape(1);
  long double m = -std::numeric_limits<long double>::infinity(), s = 0;
  for (index_t j = 0; j < k; ++j) m = std::max(m, static_cast<long double>(z(i, j)) / t);
  for (index_t j = 0; j < k; ++j) s += std::exp(static_cast<long double>(z(i, j)) / t - m);
  std::vector<long double> lp(static_cast<std::size_t>(k));
  for (index_t j = 0; j < k; ++j) lp[static_cast<std::size_t>(j)] = static_cast<long double>(z(i, j)) / t - m - std::log(s);
  return lp;
}

struct ref_loss {
  long double loss, kl, ce;
};

// The textbook definition: mean_i alpha T^2 sum_j p_t log(p_t / p_s) + (1 - alpha) (-log p_s1[y]),
// on probabilities, or (log_domain, for logits whose probabilities underflow even in long
// double) on log-probabilities.
ref_loss distill_reference(const tensor<float, 2>& zs, const tensor<float, 2>& zt, const std::vector<std::int32_t>& y,
                           double t, double alpha, bool log_domain = false) {
  const index_t n = zs.shape(0), k = zs.shape(1);
  long double kl = 0, ce = 0;
  for (index_t i = 0; i < n; ++i) {
    const auto yi = static_cast<std::size_t>(y[static_cast<std::size_t>(i)]);
    if (log_domain) {
      const auto ls = log_softmax_ref(zs, i, t), lt = log_softmax_ref(zt, i, t), l1 = log_softmax_ref(zs, i, 1);
      for (std::size_t j = 0; j < ls.size(); ++j) kl += std::exp(lt[j]) * (lt[j] - ls[j]);
      ce -= l1[yi];
      continue;
    }
    const auto ps = softmax_ref(zs, i, t), pt = softmax_ref(zt, i, t), p1 = softmax_ref(zs, i, 1);
    for (index_t j = 0; j < k; ++j) {
      const auto jj = static_cast<std::size_t>(j);
      if (pt[jj] > 0) kl += pt[jj] * std::log(pt[jj] / ps[jj]);
    }
    ce -= std::log(p1[yi]);
  }
  kl /= n;
  ce /= n;
  return {static_cast<long double>(alpha) * t * t * kl + (1 - static_cast<long double>(alpha)) * ce, kl, ce};
}

nn::sequential blob_classifier(std::uint64_t seed, index_t width = 4) {
  nn::sequential m{nn::conv2d(1, width, nn::conv2d_options::square(3)), nn::batch_norm2d(width), nn::relu{},
                   nn::max_pool2d::square(2), nn::flatten{}, nn::linear(9 * width, 3)};
  train::init_parameters(m, seed);
  return m;
}

// Class k in {0, 1, 2}: a bright 3x3 blob in a corner chosen by k, on noise (8x8 images).
void blobs(index_t n, std::uint64_t seed, tensor<float, 4>& x, std::vector<std::int32_t>& y) {
  x = tensor<float, 4>(extents<4>{n, 8, 8, 1});
  y.assign(static_cast<std::size_t>(n), 0);
  train::rng g(seed);
  for (index_t i = 0; i < n; ++i) {
    const auto k = static_cast<std::int32_t>(i % 3);
    y[static_cast<std::size_t>(i)] = k;
    for (index_t h = 0; h < 8; ++h)
      for (index_t w = 0; w < 8; ++w) x(i, h, w, 0) = g.uniform(-0.3f, 0.3f);
    const index_t r0 = k == 2 ? 5 : 0, c0 = k == 1 ? 5 : 0;
    const auto dr = static_cast<index_t>(g.below(2)), dc = static_cast<index_t>(g.below(2));
    for (index_t h = 0; h < 3; ++h)
      for (index_t w = 0; w < 3; ++w) x(i, std::min<index_t>(7, r0 + h + dr), std::min<index_t>(7, c0 + w + dc), 0) += 1.0f;
  }
}

// A teacher: a wider small_cnn trained on the labels with Adam.
nn::sequential trained_teacher(const tensor<float, 4>& x, const std::vector<std::int32_t>& y, std::uint64_t seed,
                               index_t batch, index_t epochs) {
  nn::sequential t = blob_classifier(seed, 8);
  train::adam opt({0.02f});
  train::epoch_options eo;
  eo.batch_size = batch;
  for (index_t e = 0; e < epochs; ++e) {
    eo.epoch = e;
    train::train_epoch(t, x.cview(), train::view_of(y), opt, eo);
  }
  return t;
}

bool same_weights(const nn::sequential& a, const nn::sequential& b) {
  for (std::size_t i = 0; i < a.size(); ++i) {
    const tensor<float, 4>* wa = nullptr;
    if (auto* c = std::get_if<nn::conv2d>(&a[i])) wa = &c->weight;
    if (wa) {
      const auto& wb = std::get<nn::conv2d>(b[i]).weight;
      for (index_t k = 0; k < wa->size(); ++k)
        if (!qlib_test::same_bits(wa->data()[k], wb.data()[k])) return false;
    }
    if (auto* l = std::get_if<nn::linear>(&a[i])) {
      const auto& lb = std::get<nn::linear>(b[i]);
      for (index_t k = 0; k < l->weight.size(); ++k)
        if (!qlib_test::same_bits(l->weight.data()[k], lb.weight.data()[k])) return false;
      for (index_t k = 0; k < l->bias.size(); ++k)
        if (!qlib_test::same_bits(l->bias.data()[k], lb.bias.data()[k])) return false;
    }
    if (auto* bn = std::get_if<nn::batch_norm2d>(&a[i])) {
      const auto& bb = std::get<nn::batch_norm2d>(b[i]);
      for (index_t k = 0; k < bn->channels(); ++k)
        if (!qlib_test::same_bits(bn->weight(k), bb.weight(k)) ||
            !qlib_test::same_bits(bn->running_mean(k), bb.running_mean(k)))
          return false;
    }
  }
  return true;
}

}  // namespace

TEST_CASE("distillation loss: value vs the direct formula, gradient vs the closed form", "[distill][loss]") {
  for (const auto& [t, alpha] : std::vector<std::pair<float, float>>{{4.0f, 0.7f}, {1.0f, 0.5f}, {0.5f, 0.9f},
                                                                     {10.0f, 1.0f}, {2.5f, 0.0f}, {1.7f, 0.3f}}) {
    INFO("T " << t << " alpha " << alpha);
    const index_t n = 5, k = 7;
    const tensor<float, 2> zs = rand_logits(n, k), zt = rand_logits(n, k, -8.0f, 8.0f);
    const auto y = rand_labels(n, k);
    const auto r = train::distillation_loss(zs.cview(), zt.cview(), train::view_of(y), {t, alpha});
    const ref_loss ref = distill_reference(zs, zt, y, t, alpha);
    CHECK(r.loss == Approx(static_cast<double>(ref.loss)).epsilon(1e-6));
    CHECK(r.kl == Approx(static_cast<double>(ref.kl)).epsilon(1e-6));
    CHECK(r.kl > 0.0f);
    CHECK(r.cross_entropy == Approx(static_cast<double>(ref.ce)).epsilon(1e-6));
    REQUIRE(r.grad.shape() == zs.shape());
    index_t correct = 0;
    for (index_t i = 0; i < n; ++i) {
      const auto ps = softmax_ref(zs, i, t), pt = softmax_ref(zt, i, t), p1 = softmax_ref(zs, i, 1);
      double row = 0.0;
      index_t best = 0;
      for (index_t j = 0; j < k; ++j) {
        const auto jj = static_cast<std::size_t>(j);
        const long double g = (alpha * t * (ps[jj] - pt[jj]) +
                               (1 - alpha) * (p1[jj] - (j == y[static_cast<std::size_t>(i)] ? 1 : 0))) /
                              n;
        CHECK(r.grad(i, j) == Approx(static_cast<double>(g)).margin(1e-7));
        row += r.grad(i, j);
        if (zs(i, j) > zs(i, best)) best = j;
      }
      CHECK(row == Approx(0.0).margin(1e-6));  // both terms are differences of distributions
      correct += best == y[static_cast<std::size_t>(i)];
    }
    CHECK(r.correct == correct);
  }
}

TEST_CASE("distillation loss: gradient matches finite differences of the direct formula (the factor T)",
          "[distill][loss]") {
  for (const auto& [t, alpha] : std::vector<std::pair<float, float>>{{4.0f, 0.7f}, {0.5f, 1.0f}, {8.0f, 1.0f},
                                                                     {2.0f, 0.25f}}) {
    INFO("T " << t << " alpha " << alpha);
    const index_t n = 3, k = 5;
    tensor<float, 2> zs = rand_logits(n, k);
    const tensor<float, 2> zt = rand_logits(n, k);
    const auto y = rand_labels(n, k);
    const auto r = train::distillation_loss(zs.cview(), zt.cview(), train::view_of(y), {t, alpha});
    // Central differences in long double on a step that float represents exactly around each logit.
    for (index_t i = 0; i < n; ++i)
      for (index_t j = 0; j < k; ++j) {
        const float saved = zs(i, j), h = 1.0f / 256;
        zs(i, j) = saved + h;
        const long double up = distill_reference(zs, zt, y, t, alpha).loss;
        zs(i, j) = saved - h;
        const long double down = distill_reference(zs, zt, y, t, alpha).loss;
        zs(i, j) = saved;
        const double numeric = static_cast<double>((up - down) / (2.0L * h));
        INFO("logit " << i << "," << j << " numeric " << numeric << " analytic " << r.grad(i, j));
        CHECK(r.grad(i, j) == Approx(numeric).epsilon(2e-3).margin(1e-5));
      }
  }
}

TEST_CASE("distillation loss: alpha = 0 is cross-entropy bit for bit, alpha = 1 and T = 1 is KL, same logits give 0",
          "[distill][loss]") {
  const index_t n = 6, k = 10;
  const tensor<float, 2> zs = rand_logits(n, k), zt = rand_logits(n, k);
  const auto y = rand_labels(n, k);
  SECTION("alpha = 0: softmax_cross_entropy exactly, whatever T and the teacher") {
    const auto ce = train::softmax_cross_entropy(zs.cview(), train::view_of(y));
    for (float t : {1.0f, 3.0f, 0.25f}) {
      const auto r = train::distillation_loss(zs.cview(), zt.cview(), train::view_of(y), {t, 0.0f});
      CHECK(qlib_test::same_bits(r.loss, ce.loss));
      CHECK(qlib_test::same_bits(r.cross_entropy, ce.loss));
      CHECK(r.correct == ce.correct);
      for (index_t i = 0; i < r.grad.size(); ++i) CHECK(qlib_test::same_bits(r.grad.data()[i], ce.grad.data()[i]));
    }
  }
  SECTION("alpha = 1, T = 1: KL(p_t || p_s), gradient (p_s - p_t) / N, labels do not matter") {
    const auto r = train::distillation_loss(zs.cview(), zt.cview(), train::view_of(y), {1.0f, 1.0f});
    const auto other = rand_labels(n, k);
    const auto r2 = train::distillation_loss(zs.cview(), zt.cview(), train::view_of(other), {1.0f, 1.0f});
    long double kl = 0;
    for (index_t i = 0; i < n; ++i) {
      const auto ps = softmax_ref(zs, i, 1), pt = softmax_ref(zt, i, 1);
      for (index_t j = 0; j < k; ++j) {
        const auto jj = static_cast<std::size_t>(j);
        kl += pt[jj] * std::log(pt[jj] / ps[jj]);
        CHECK(r.grad(i, j) == Approx(static_cast<double>((ps[jj] - pt[jj]) / n)).margin(1e-7));
      }
    }
    CHECK(r.loss == Approx(static_cast<double>(kl / n)).epsilon(1e-6));
    CHECK(qlib_test::same_bits(r.loss, r.kl));
    CHECK(qlib_test::same_bits(r.loss, r2.loss));
    CHECK(std::equal(r.grad.begin(), r.grad.end(), r2.grad.begin()));
  }
  SECTION("identical teacher and student logits: the soft term is exactly 0") {
    for (float t : {1.0f, 4.0f, 0.3f}) {
      const auto r = train::distillation_loss(zs.cview(), zs.cview(), train::view_of(y), {t, 0.6f});
      CHECK(r.kl == 0.0f);
      const auto ce = train::softmax_cross_entropy(zs.cview(), train::view_of(y));
      CHECK(r.loss == Approx(0.4 * ce.loss).epsilon(1e-6));
      const auto pure = train::distillation_loss(zs.cview(), zs.cview(), train::view_of(y), {t, 1.0f});
      CHECK(pure.loss == 0.0f);
      for (float g : pure.grad) CHECK(g == 0.0f);
    }
  }
  SECTION("[N, 1, 1, classes] logits give the same numbers") {
    const tensor<float, 4> s4(zs.cview().reshape(extents<4>{n, 1, 1, k})), t4(zt.cview().reshape(extents<4>{n, 1, 1, k}));
    const auto r = train::distillation_loss(zs.cview(), zt.cview(), train::view_of(y), {3.0f, 0.5f});
    const auto r4 = train::distillation_loss(s4.cview(), t4.cview(), train::view_of(y), {3.0f, 0.5f});
    CHECK(qlib_test::same_bits(r.loss, r4.loss));
    CHECK(r4.grad.shape() == extents<4>{n, 1, 1, k});
    CHECK(std::equal(r4.grad.begin(), r4.grad.end(), r.grad.begin()));
  }
}

TEST_CASE("distillation loss: stable on large logits and extreme temperatures", "[distill][loss]") {
  tensor<float, 2> zs = rand_logits(3, 4), zt = rand_logits(3, 4);
  zs(0, 0) = 1000.0f;
  zs(0, 1) = -1000.0f;
  zt(1, 2) = 3e4f;
  zt(2, 3) = -3e4f;
  const std::vector<std::int32_t> y{1, 2, 3};
  for (float t : {0.05f, 1.0f, 4.0f, 100.0f}) {
    INFO("T " << t);
    const auto r = train::distillation_loss(zs.cview(), zt.cview(), train::view_of(y), {t, 0.7f});
    CHECK(std::isfinite(r.loss));
    CHECK(r.kl >= 0.0f);
    for (float g : r.grad) CHECK(std::isfinite(g));
    const ref_loss ref = distill_reference(zs, zt, y, t, 0.7, true);
    CHECK(r.loss == Approx(static_cast<double>(ref.loss)).epsilon(1e-5));
    CHECK(r.kl == Approx(static_cast<double>(ref.kl)).epsilon(1e-5));
  }
}

TEST_CASE("distillation loss and steps refuse bad input", "[distill][errors]") {
  const tensor<float, 2> zs = rand_logits(4, 3), zt = rand_logits(4, 3);
  const std::vector<std::int32_t> y{0, 2, 1, 0}, bad{0, 3, 1, 0}, negative{0, -1, 1, 0}, short_labels{0, 1};
  const auto loss = [&](const tensor<float, 2>& s, const tensor<float, 2>& t, const std::vector<std::int32_t>& l,
                        train::distill_options o) { return train::distillation_loss(s.cview(), t.cview(), train::view_of(l), o); };
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (float t : {0.0f, -1.0f, nan, inf})
    QLIB_REQUIRE_ERROR(loss(zs, zt, y, {t, 0.5f}), errc::invalid_argument);
  for (float a : {-0.01f, 1.01f, nan})
    QLIB_REQUIRE_ERROR(loss(zs, zt, y, {2.0f, a}), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(loss(zs, rand_logits(4, 4), y, {}), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(loss(zs, rand_logits(3, 3), y, {}), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(loss(zs, zt, short_labels, {}), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(loss(zs, zt, bad, {}), errc::out_of_range);
  QLIB_REQUIRE_ERROR(loss(zs, zt, negative, {}), errc::out_of_range);
  QLIB_REQUIRE_ERROR(loss(tensor<float, 2>(extents<2>{0, 3}), tensor<float, 2>(extents<2>{0, 3}),
                          std::vector<std::int32_t>{}, {}),
                     errc::empty_tensor);
  tensor<float, 2> sn = zs, ti = zt;
  sn(2, 1) = nan;
  ti(3, 0) = -inf;
  QLIB_REQUIRE_ERROR(loss(sn, zt, y, {}), errc::non_finite);
  QLIB_REQUIRE_ERROR(loss(zs, ti, y, {}), errc::non_finite);
  QLIB_REQUIRE_ERROR(loss(zs, ti, y, {1.0f, 0.0f}), errc::non_finite);  // even when the soft term has weight 0
  QLIB_REQUIRE_ERROR(train::distillation_loss(tensor<float, 4>(extents<4>{4, 2, 1, 3}).cview(),
                                              tensor<float, 4>(extents<4>{4, 2, 1, 3}).cview(), train::view_of(y)),
                     errc::shape_mismatch);

  nn::sequential m = blob_classifier(1);
  tensor<float, 4> x;
  std::vector<std::int32_t> labels;
  blobs(6, 1, x, labels);
  train::sgd opt({0.1f});
  const tensor<float, 2> teacher = rand_logits(6, 3);
  QLIB_REQUIRE_ERROR(train::distill_step(m, x.cview(), train::view_of(labels), rand_logits(5, 3).cview(), {}, opt),
                     errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(train::distill_step(m, x.cview(), train::view_of(labels), rand_logits(6, 4).cview(), {}, opt),
                     errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(train::distill_step(m, x.cview(), train::view_of(labels), teacher.cview(), {0.0f, 0.5f}, opt),
                     errc::invalid_argument);
  train::epoch_options eo;
  QLIB_REQUIRE_ERROR(train::distill_epoch(m, x.cview(), train::view_of(labels), rand_logits(5, 3).cview(), opt, {}, eo),
                     errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(train::distill_epoch(m, x.cview(), train::view_of(labels), teacher.cview(), opt, {1.0f, 2.0f}, eo),
                     errc::invalid_argument);
  eo.batch_size = 0;
  QLIB_REQUIRE_ERROR(train::distill_epoch(m, x.cview(), train::view_of(labels), teacher.cview(), opt, {}, eo),
                     errc::invalid_argument);
  QLIB_REQUIRE_ERROR(train::predict_logits(m, x.cview(), 0), errc::invalid_argument);
}

TEST_CASE("distill_step lowers the distillation loss on a batch; predict_logits equals forward", "[distill][step]") {
  tensor<float, 4> x;
  std::vector<std::int32_t> y;
  blobs(24, 2, x, y);
  const nn::sequential teacher = trained_teacher(x, y, 7, 8, 6);
  const tensor<float, 2> tl = train::predict_logits(teacher, x.cview(), 7);  // batches 7, 7, 7, 3
  const tensor<float, 4> direct = teacher.forward(x.cview());
  REQUIRE(tl.shape() == extents<2>{24, 3});
  for (index_t i = 0; i < 24; ++i)
    for (index_t j = 0; j < 3; ++j) CHECK(tl(i, j) == Approx(direct(i, 0, 0, j)).margin(1e-5));

  nn::sequential student = blob_classifier(3);
  train::sgd opt({0.05f, 0.9f});
  train::workspace ws;
  const train::distill_options o{4.0f, 0.7f};
  const auto first = train::distill_step(student, x.cview(), train::view_of(y), tl.cview(), o, opt, ws);
  CHECK(first.count == 24);
  // The step's loss is the distillation loss of the pre-update student's training-mode logits.
  CHECK(std::isfinite(first.loss));
  CHECK(first.loss == Approx(o.alpha * o.temperature * o.temperature * first.kl + (1 - o.alpha) * first.cross_entropy)
                          .epsilon(1e-5));
  train::distill_step_result last = first;
  for (int i = 0; i < 15; ++i) last = train::distill_step(student, x.cview(), train::view_of(y), tl.cview(), o, opt, ws);
  INFO("loss " << first.loss << " -> " << last.loss << ", kl " << first.kl << " -> " << last.kl);
  CHECK(last.loss < 0.5f * first.loss);
  CHECK(last.kl < first.kl);
}

TEST_CASE("mean_logits_ensemble: the mean of its members' logits; one member is that member; bad members refused",
          "[distill][ensemble]") {
  tensor<float, 4> x;
  std::vector<std::int32_t> y;
  blobs(20, 2, x, y);
  const nn::sequential a = trained_teacher(x, y, 7, 8, 6), b = trained_teacher(x, y, 8, 8, 6),
                       c = trained_teacher(x, y, 9, 8, 6);
  const tensor<float, 4> ya = a.forward(x.cview()), yb = b.forward(x.cview()), yc = c.forward(x.cview());
  const train::mean_logits_ensemble<nn::sequential> three{{&a, &b, &c}}, one{{&b}};
  const tensor<float, 4> y3 = three.forward(x.cview()), y1 = one.forward(x.cview());
  REQUIRE(y3.shape() == ya.shape());
  REQUIRE(y1.shape() == yb.shape());
  bool members_differ = false;
  for (index_t i = 0; i < ya.size(); ++i) {
    const float sum = (ya.data()[i] + yb.data()[i]) + yc.data()[i];  // member order
    CHECK(y3.data()[i] == sum * (1.0f / 3.0f));
    CHECK(y1.data()[i] == yb.data()[i]);
    members_differ = members_differ || ya.data()[i] != yb.data()[i];
  }
  CHECK(members_differ);  // different seeds: the mean is not trivially one member
  // An online ensemble teacher is a teacher model for distill_epoch, and gives what its
  // precomputed logits give (no augmentation).
  const tensor<float, 2> logits = train::predict_logits(three, x.cview());
  train::epoch_options eo;
  eo.batch_size = 8;
  eo.seed = 3;
  nn::sequential s1 = blob_classifier(3), s2 = blob_classifier(3);
  train::init_parameters(s1, 5);
  train::init_parameters(s2, 5);
  train::sgd o1({0.05f, 0.9f}), o2({0.05f, 0.9f});
  const train::distill_options d{2.0f, 0.5f};
  train::distill_epoch(s1, x.cview(), train::view_of(y), three, o1, d, eo);
  train::distill_epoch(s2, x.cview(), train::view_of(y), logits.cview(), o2, d, eo);
  const tensor<float, 4> p1 = s1.forward(x.cview()), p2 = s2.forward(x.cview());
  for (index_t i = 0; i < p1.size(); ++i) CHECK(p1.data()[i] == p2.data()[i]);

  QLIB_REQUIRE_ERROR(train::mean_logits_ensemble<nn::sequential>{}.forward(x.cview()), errc::empty_tensor);
  QLIB_REQUIRE_ERROR((train::mean_logits_ensemble<nn::sequential>{{&a, nullptr}}.forward(x.cview())),
                     errc::invalid_argument);
  nn::sequential four_classes{nn::conv2d(1, 8, nn::conv2d_options::square(3)), nn::batch_norm2d(8), nn::relu{},
                              nn::max_pool2d::square(2), nn::flatten{}, nn::linear(72, 4)};
  train::init_parameters(four_classes, 1);
  QLIB_REQUIRE_ERROR((train::mean_logits_ensemble<nn::sequential>{{&a, &four_classes}}.forward(x.cview())),
                     errc::shape_mismatch);
}

TEST_CASE("distill_epoch: alpha = 0 is train_epoch bit for bit; deterministic per seed; a student learns",
          "[distill][epoch]") {
  tensor<float, 4> x;
  std::vector<std::int32_t> y;
  blobs(45, 4, x, y);
  const tensor<float, 2> teacher = train::predict_logits(trained_teacher(x, y, 11, 9, 8), x.cview());

  auto distill = [&](std::uint64_t seed, train::distill_options o, index_t epochs, std::vector<train::progress>* seen) {
    nn::sequential m = blob_classifier(5);
    train::adam opt({0.02f});
    train::epoch_options eo;
    eo.batch_size = 10;  // 4 full batches and one of 5
    eo.seed = seed;
    eo.learning_rate = train::cosine_schedule{0.02f, epochs * 5, 0.002f, 0};
    for (index_t e = 0; e < epochs; ++e) {
      eo.epoch = e;
      train::distill_epoch(m, x.cview(), train::view_of(y), teacher.cview(), opt, o, eo,
                           [&](const train::progress& p) { if (seen) seen->push_back(p); });
    }
    return m;
  };

  SECTION("alpha = 0 takes train_epoch's batches, losses and updates") {
    nn::sequential plain = blob_classifier(5);
    train::adam opt({0.02f});
    train::epoch_options eo;
    eo.batch_size = 10;
    eo.seed = 3;
    eo.learning_rate = train::cosine_schedule{0.02f, 2 * 5, 0.002f, 0};
    std::vector<train::progress> a, b;
    for (index_t e = 0; e < 2; ++e) {
      eo.epoch = e;
      train::train_epoch(plain, x.cview(), train::view_of(y), opt, eo, [&](const train::progress& p) { a.push_back(p); });
    }
    const nn::sequential kd = distill(3, {2.0f, 0.0f}, 2, &b);
    CHECK(same_weights(plain, kd));
    REQUIRE(a.size() == b.size());
    REQUIRE(a.size() == 10u);
    for (std::size_t i = 0; i < a.size(); ++i) {
      CHECK(qlib_test::same_bits(a[i].loss, b[i].loss));
      CHECK(a[i].accuracy == b[i].accuracy);
      CHECK(b[i].step == static_cast<index_t>(i % 5));
      CHECK(b[i].samples == static_cast<index_t>(std::min<std::size_t>(45, 10 * (i % 5 + 1))));
    }
  }
  SECTION("the same seed gives bit-identical weights, another seed other weights") {
    const train::distill_options o{4.0f, 0.7f};
    CHECK(same_weights(distill(8, o, 2, nullptr), distill(8, o, 2, nullptr)));
    CHECK_FALSE(same_weights(distill(8, o, 2, nullptr), distill(9, o, 2, nullptr)));
    CHECK_FALSE(same_weights(distill(8, o, 2, nullptr), distill(8, {4.0f, 0.0f}, 2, nullptr)));
  }
  SECTION("a distilled student learns the task and follows the teacher") {
    const train::distill_options o{4.0f, 0.7f};
    nn::sequential m = blob_classifier(5);
    const auto before = train::distillation_loss(train::predict_logits(m, x.cview()).cview(), teacher.cview(),
                                                 train::view_of(y), o);
    std::vector<train::progress> seen;
    m = distill(1, o, 10, &seen);
    const auto after = train::distillation_loss(train::predict_logits(m, x.cview()).cview(), teacher.cview(),
                                                train::view_of(y), o);
    const train::evaluation ev = train::evaluate(m, x.cview(), train::view_of(y));
    INFO("loss " << before.loss << " -> " << after.loss << ", kl " << before.kl << " -> " << after.kl
                 << ", accuracy " << ev.accuracy);
    CHECK(after.loss < 0.3f * before.loss);
    CHECK(after.kl < 0.3f * before.kl);
    CHECK(ev.accuracy >= 0.95);
    REQUIRE(seen.size() == 50u);
    CHECK(seen.back().mean_loss < seen.front().mean_loss);
  }
}

namespace {
// A teacher that records every batch it is shown, then answers as `inner`.
struct recording_teacher {
  const nn::sequential* inner;
  mutable std::vector<tensor<float, 4>> seen;
  tensor<float, 4> forward(tensor_view<const float, 4> x) const {
    seen.emplace_back(x);
    return inner->forward(x);
  }
};
}  // namespace

TEST_CASE("distill_epoch with an online teacher: the precomputed logits' weights without augmentation; the teacher "
          "sees the augmented batch",
          "[distill][online]") {
  tensor<float, 4> x;
  std::vector<std::int32_t> y;
  blobs(45, 4, x, y);
  const nn::sequential teacher = trained_teacher(x, y, 11, 9, 8);
  nn::static_quantizer<minmax_observer> sq(teacher);
  sq.observe(x.cview());
  const nn::quantized_sequential int8_teacher = sq.convert();
  const train::distill_options o{2.0f, 0.7f};
  // Two epochs of batches 10, 10, 10, 10, 5 from a fresh student; `teach` runs one epoch.
  auto run = [&](train::augmentation a, auto&& teach) {
    nn::sequential m = blob_classifier(5);
    train::adam opt({0.02f});
    train::epoch_options eo;
    eo.batch_size = 10;
    eo.seed = 3;
    eo.augment = a;
    for (index_t e = 0; e < 2; ++e) {
      eo.epoch = e;
      teach(m, opt, eo);
    }
    return m;
  };
  auto offline = [&](const tensor<float, 2>& logits) {
    return [&](nn::sequential& m, train::adam& opt, const train::epoch_options& eo) {
      train::distill_epoch(m, x.cview(), train::view_of(y), logits.cview(), opt, o, eo);
    };
  };
  auto online = [&](const auto& t) {
    return [&](nn::sequential& m, train::adam& opt, const train::epoch_options& eo) {
      train::distill_epoch(m, x.cview(), train::view_of(y), t, opt, o, eo);
    };
  };
  const tensor<float, 2> float_logits = train::predict_logits(teacher, x.cview());
  const tensor<float, 2> int8_logits = train::predict_logits(int8_teacher, x.cview());
  CHECK(same_weights(run({}, online(teacher)), run({}, offline(float_logits))));
  CHECK(same_weights(run({}, online(int8_teacher)), run({}, offline(int8_logits))));
  CHECK_FALSE(same_weights(run({}, online(teacher)), run({}, online(int8_teacher))));

  // With augmentation the teacher gets the student's augmented batches (gathered in the
  // epoch's order, then augmented with augmentation_rng(seed, epoch, step)).
  const train::augmentation aug{true, 1};
  recording_teacher rec{&teacher, {}};
  const nn::sequential a = run(aug, online(rec));
  REQUIRE(rec.seen.size() == 10u);
  for (index_t e = 0; e < 2; ++e) {
    train::rng order_rng(3, 0x5eed000000000000ull + static_cast<std::uint64_t>(e));
    const std::vector<index_t> order = train::shuffled_indices(45, order_rng);
    for (index_t s = 0; s < 5; ++s) {
      tensor<float, 4> xb;
      std::vector<std::int32_t> yb;
      const auto b0 = static_cast<std::size_t>(10 * s);
      train::detail::gather_batch(x.cview(), train::view_of(y), order, b0, std::min<std::size_t>(45, b0 + 10), xb, yb);
      train::rng g = train::augmentation_rng(3, e, s);
      train::augment_batch(xb.view(), aug, g);
      const tensor<float, 4>& got = rec.seen[static_cast<std::size_t>(5 * e + s)];
      REQUIRE(got.shape() == xb.shape());
      bool same = true;
      for (index_t i = 0; i < xb.size(); ++i) same = same && qlib_test::same_bits(got.data()[i], xb.data()[i]);
      CHECK(same);
    }
  }
  CHECK(same_weights(a, run(aug, online(teacher))));
  CHECK_FALSE(same_weights(a, run(aug, offline(float_logits))));  // the stored logits belong to unaugmented images
}

TEST_CASE("distill_epoch trains a QAT student: alpha = 0 is QAT's train_epoch bit for bit; distillation lowers the "
          "KL to a float teacher",
          "[distill][qat]") {
  tensor<float, 4> x;
  std::vector<std::int32_t> y;
  blobs(45, 4, x, y);
  const nn::sequential teacher = trained_teacher(x, y, 11, 9, 8);
  const tensor<float, 2> logits = train::predict_logits(teacher, x.cview());
  nn::sequential start = trained_teacher(x, y, 2, 9, 2);  // a float student to quantize
  train::qat_options qo;
  qo.weight_scheme = schemes::s4_symmetric;
  qo.lsq_weights = true;
  auto run = [&](auto&& teach) {
    train::qat_model q(start, qo);
    train::adam opt({0.005f});
    train::epoch_options eo;
    eo.batch_size = 10;
    eo.seed = 6;
    eo.augment = {true, 1};
    for (index_t e = 0; e < 3; ++e) {
      eo.epoch = e;
      teach(q, opt, eo);
    }
    return q;
  };
  const train::qat_model plain = run([&](train::qat_model& q, train::adam& opt, const train::epoch_options& eo) {
    train::train_epoch(q, x.cview(), train::view_of(y), opt, eo);
  });
  const train::qat_model kd0 = run([&](train::qat_model& q, train::adam& opt, const train::epoch_options& eo) {
    train::distill_epoch(q, x.cview(), train::view_of(y), logits.cview(), opt, {4.0f, 0.0f}, eo);
  });
  CHECK(same_weights(plain.model(), kd0.model()));
  for (std::size_t k = 0; k < plain.weight_quantizers().size(); ++k) {
    const auto& a = plain.weight_quantizers()[k].params().scale;
    const auto& b = kd0.weight_quantizers()[k].params().scale;
    REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i) CHECK(qlib_test::same_bits(a[i], b[i]));
  }
  for (std::size_t k = 0; k < plain.activation_quantizers().size(); ++k)
    CHECK(plain.activation_quantizers()[k].params().scale == kd0.activation_quantizers()[k].params().scale);

  // Distilled online from the float teacher, the quantized student moves towards it.
  const train::distill_options o{2.0f, 0.9f};
  auto kl_to_teacher = [&](const train::qat_model& q) {
    return train::distillation_loss(train::predict_logits(q, x.cview()).cview(), logits.cview(), train::view_of(y), o)
        .kl;
  };
  const train::qat_model kd = run([&](train::qat_model& q, train::adam& opt, const train::epoch_options& eo) {
    train::distill_epoch(q, x.cview(), train::view_of(y), teacher, opt, o, eo);
  });
  INFO("KL to the teacher: plain QAT " << kl_to_teacher(plain) << ", distilled " << kl_to_teacher(kd));
  CHECK(kl_to_teacher(kd) < kl_to_teacher(plain));
  const tensor<float, 2> int8 = train::predict_logits(train::convert(kd), x.cview());
  index_t correct = 0;
  for (index_t i = 0; i < 45; ++i) {
    index_t best = 0;
    for (index_t j = 1; j < 3; ++j) best = int8(i, j) > int8(i, best) ? j : best;
    correct += best == y[static_cast<std::size_t>(i)] ? 1 : 0;
  }
  CHECK(correct >= 40);
}
