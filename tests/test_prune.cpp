// Tests for the pruning policies: pruners vs the naive reference, N:M/channel/block shapes, ties, errors, schedule, models.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "qlib/prune.hpp"
#include "qlib/train.hpp"
#include "test_util.hpp"

using namespace qlib;
using qlib_test::rand_float;
using qlib_test::rand_int;

namespace {

// Random values; with `coarse`, few distinct magnitudes so ties are common.
template <std::size_t R>
tensor<float, R> random_tensor(const extents<R>& shape, bool coarse) {
  tensor<float, R> t(shape);
  for (float& v : t) v = coarse ? 0.5f * static_cast<float>(rand_int(-3, 3)) : rand_float(-2.0f, 2.0f);
  return t;
}

std::vector<std::uint8_t> bytes(const prune::mask& m) { return std::vector<std::uint8_t>(m.data(), m.data() + m.size()); }

void require_same(const prune::mask& a, const prune::mask& b) {
  REQUIRE(a.shape() == b.shape());
  CHECK(bytes(a) == bytes(b));
  CHECK(a.has_channels() == b.has_channels());
  if (a.has_channels() && b.has_channels()) {
    CHECK(a.channel_axis() == b.channel_axis());
    CHECK(a.kept_channels() == b.kept_channels());
  }
}

// A user score: the spread of a group (max - min) plus its size, so it is not a norm.
struct spread_score {
  double operator()(tensor_view<const float, 1> v) const {
    float lo = v(0), hi = v(0);
    for (index_t i = 1; i < v.size(); ++i) {
      lo = std::min(lo, v(i));
      hi = std::max(hi, v(i));
    }
    return static_cast<double>(hi - lo) + 0.01 * static_cast<double>(v.size());
  }
};

// Runs every selection on `tensors` with one structure and score, fast vs reference.
template <class S, class Score>
void check_all_selections(const std::vector<prune::tensor_ref>& tensors, const S& s, const Score& score) {
  const std::vector<prune::selection> sels = {prune::sparsity(0.0), prune::sparsity(0.3),  prune::sparsity(0.5),
                                              prune::sparsity(0.77), prune::sparsity(1.0), prune::threshold(-1.0),
                                              prune::threshold(0.0), prune::threshold(0.5),  prune::threshold(1.5),
                                              prune::threshold(4.0)};
  for (std::size_t si = 0; si < sels.size(); ++si) {
    const prune::selection& sel = sels[si];
    INFO("selection kind " << static_cast<int>(sel.k) << " value " << sel.value);
    for (auto norm : {prune::normalization::none, prune::normalization::l2}) {
      INFO("normalization " << static_cast<int>(norm));
      const auto got = prune::make_masks(tensors, s, score, sel, norm);
      const auto want = prune::reference::masks(tensors, s, score, sel, norm);
      REQUIRE(got.size() == want.size());
      for (std::size_t i = 0; i < got.size(); ++i) require_same(got[i], want[i]);
    }
    // Each tensor on its own (local selection), for a ratio and a threshold.
    if (si == 2 || si == 7)
      for (const auto& t : tensors) require_same(prune::make_mask(t, s, score, sel), prune::reference::masks({t}, s, score, sel)[0]);
  }
}

template <class S>
void check_all_scores(const std::vector<prune::tensor_ref>& tensors, const S& s) {
  check_all_selections(tensors, s, prune::magnitude{});
  check_all_selections(tensors, s, prune::l1);
  check_all_selections(tensors, s, prune::l2);
  check_all_selections(tensors, s, prune::lp_norm{3.0});
  check_all_selections(tensors, s, prune::lp_norm{std::numeric_limits<double>::infinity()});
  check_all_selections(tensors, s, spread_score{});
}

}  // namespace

TEST_CASE("prune: masks equal the reference for every structure, score and selection", "[prune]") {
  for (bool coarse : {false, true}) {
    INFO("coarse " << coarse);
    const auto a = random_tensor<2>({6, 10}, coarse);
    const auto b = random_tensor<4>({4, 3, 2, 5}, coarse);  // OHWI-like
    const auto c = random_tensor<1>({13}, coarse);
    const auto d = random_tensor<2>({10, 7}, coarse);
    const tensor_view<const float, 2> dt = d.cview().transpose(0, 1);  // strided [7, 10]
    const std::vector<prune::tensor_ref> all = {a, b, c, dt};
    check_all_scores(all, prune::unstructured{});
    check_all_scores(all, prune::channels{0});
    check_all_scores({a, b, dt}, prune::channels{-1});
    check_all_scores({a, b, dt}, prune::channels{1});
    check_all_scores(all, prune::blocks{2, 3});
    check_all_scores(all, prune::blocks{1, 4});
    check_all_scores(all, prune::blocks{4, 1});
  }
}

TEST_CASE("prune: N:M keeps exactly N of every M along the axis, as the reference", "[prune][nm]") {
  struct nm_case {
    index_t n, m;
    std::ptrdiff_t axis;
  };
  for (bool coarse : {false, true}) {
    const auto w = random_tensor<3>({4, 6, 8}, coarse);
    const auto w2 = random_tensor<2>({9, 8}, coarse);
    const tensor_view<const float, 2> w2t = w2.cview().transpose(0, 1);  // [8, 9], strided
    for (nm_case nc : {nm_case{2, 4, -1}, nm_case{1, 4, 2}, nm_case{0, 4, -1}, nm_case{4, 4, -1}, nm_case{3, 8, -1},
                       nm_case{1, 2, 1}, nm_case{2, 3, 1}, nm_case{1, 2, 0}, nm_case{1, 1, 0}}) {
      INFO(nc.n << ":" << nc.m << " axis " << nc.axis << " coarse " << coarse);
      const prune::n_m s{nc.n, nc.m, nc.axis};
      const auto check_counts = [&](const prune::mask& mk, const extents<3>& shape) {
        // Count kept per group with explicit loops over the axis.
        const std::size_t ax = static_cast<std::size_t>(nc.axis < 0 ? nc.axis + 3 : nc.axis);
        extents<3> idx{};
        bool ok = true;
        for (idx[0] = 0; idx[0] < shape[0]; ++idx[0])
          for (idx[1] = 0; idx[1] < shape[1]; ++idx[1])
            for (idx[2] = 0; idx[2] < shape[2]; ++idx[2]) {
              if (idx[ax] % nc.m != 0) continue;
              index_t kept = 0;
              for (index_t j = 0; j < nc.m; ++j) {
                extents<3> e = idx;
                e[ax] += j;
                kept += mk.keeps((e[0] * shape[1] + e[1]) * shape[2] + e[2]);
              }
              ok = ok && kept == nc.n;
            }
        CHECK(ok);
      };
      const prune::mask m1 = prune::make_mask(w, s, prune::magnitude{});
      check_counts(m1, w.shape());
      CHECK(m1.kept() * nc.m == w.size() * nc.n);
      require_same(m1, prune::reference::nm_mask(w, s, prune::magnitude{}));
      require_same(prune::make_mask(w, s, prune::l2), prune::reference::nm_mask(w, s, prune::l2));
      require_same(prune::make_mask(w, s, spread_score{}), prune::reference::nm_mask(w, s, spread_score{}));
      if (nc.axis != 2 && (nc.axis == 0 ? 8 : 9) % nc.m == 0) {
        const auto ms = prune::make_masks({w2t}, s, prune::magnitude{});
        require_same(ms.at(0), prune::reference::nm_mask(w2t, s, prune::magnitude{}));
      }
    }
  }
  // Hand-checked 2:4: keep the two largest |w| of each group of four.
  tensor<float, 2> w({2, 4});
  const float vals[] = {0.1f, -3.0f, 2.0f, 0.5f, 4.0f, 4.0f, -4.0f, 1.0f};
  std::copy(vals, vals + 8, w.data());
  const auto m = prune::make_mask(w, prune::n_m{2, 4}, prune::magnitude{});
  CHECK(bytes(m) == std::vector<std::uint8_t>{0, 1, 1, 0, 0, 1, 1, 0});  // tie: the earlier 4 is pruned first
}

TEST_CASE("prune: hand-checked selections, rounding and ties", "[prune][select]") {
  tensor<float, 1> w({6});
  const float vals[] = {1.0f, -5.0f, 3.0f, 0.5f, -2.0f, 4.0f};
  std::copy(vals, vals + 6, w.data());
  CHECK(bytes(prune::make_mask(w, prune::unstructured{}, prune::magnitude{}, prune::sparsity(0.5))) ==
        std::vector<std::uint8_t>{0, 1, 1, 0, 0, 1});
  CHECK(bytes(prune::make_mask(w, prune::unstructured{}, prune::magnitude{}, prune::threshold(1.0))) ==
        std::vector<std::uint8_t>{0, 1, 1, 0, 1, 1});
  CHECK(prune::make_mask(w, prune::unstructured{}, prune::l2, prune::threshold(-1.0)).pruned() == 0);
  CHECK(prune::make_mask(w, prune::unstructured{}, prune::l2, prune::threshold(INFINITY)).pruned() == 6);
  CHECK(prune::make_mask(w, prune::unstructured{}, prune::l1, prune::sparsity(0.0)).pruned() == 0);
  CHECK(prune::make_mask(w, prune::unstructured{}, prune::l1, prune::sparsity(1.0)).pruned() == 6);

  // round(s * n) half to even.
  CHECK(prune::prune_count(0.5, 5) == 2);
  CHECK(prune::prune_count(0.5, 7) == 4);
  CHECK(prune::prune_count(0.1, 5) == 0);
  CHECK(prune::prune_count(0.3, 5) == 2);
  CHECK(prune::prune_count(1.0, 9) == 9);

  // All-equal scores: the earliest elements go first, locally and globally.
  tensor<float, 2> eq({2, 4}, 0.25f);
  CHECK(bytes(prune::make_mask(eq, prune::unstructured{}, prune::magnitude{}, prune::sparsity(0.5))) ==
        std::vector<std::uint8_t>{0, 0, 0, 0, 1, 1, 1, 1});
  tensor<float, 1> eq2({4}, -0.25f);
  const auto g = prune::make_masks({eq2, eq}, prune::unstructured{}, prune::magnitude{}, prune::sparsity(0.5));
  CHECK(g[0].kept() == 0);  // the first tensor's 4 elements come first
  CHECK(bytes(g[1]) == std::vector<std::uint8_t>{0, 0, 1, 1, 1, 1, 1, 1});
  const auto ch = prune::make_mask(eq, prune::channels{1}, prune::l2, prune::sparsity(0.5));
  CHECK(ch.kept_channels() == std::vector<index_t>{2, 3});

  // Global: raw scores vs L2-normalized scores.
  tensor<float, 1> a({2}), b({6});
  a(0) = 1.0f, a(1) = 2.0f;
  const float bv[] = {0.5f, 30.0f, 40.0f, 0.6f, 20.0f, 25.0f};
  std::copy(bv, bv + 6, b.data());
  const auto raw = prune::make_masks({a, b}, prune::unstructured{}, prune::magnitude{}, prune::sparsity(0.5));
  CHECK(raw[0].kept() == 0);
  CHECK(bytes(raw[1]) == std::vector<std::uint8_t>{0, 1, 1, 0, 1, 1});
  const auto nrm = prune::make_masks({a, b}, prune::unstructured{}, prune::magnitude{}, prune::sparsity(0.5),
                                     prune::normalization::l2);
  CHECK(nrm[0].kept() == 2);
  CHECK(bytes(nrm[1]) == std::vector<std::uint8_t>{0, 1, 1, 0, 0, 0});

  // Partial edge blocks: a 3 x 5 tensor in 2 x 2 tiles has tiles of 4, 4, 2, 2, 2 and 1
  // elements; scoring by size prunes the 1-element corner first.
  tensor<float, 2> z({3, 5}, 1.0f);
  auto size_score = [](tensor_view<const float, 1> v) { return static_cast<double>(v.size()); };
  const auto corner = prune::make_mask(z, prune::blocks{2, 2}, size_score, prune::sparsity(1.0 / 6.0));
  CHECK(corner.pruned() == 1);
  CHECK(!corner.keeps(14));
  const auto half = prune::make_mask(z, prune::blocks{2, 2}, size_score, prune::sparsity(0.5));  // 3 tiles
  CHECK(half.pruned() == 1 + 2 + 2);
  // Channels keep whole slices and list them.
  const auto w3 = random_tensor<3>({5, 3, 4}, false);
  const auto cm = prune::make_mask(w3, prune::channels{1}, prune::l1, prune::sparsity(0.34));  // round(1.02) = 1
  REQUIRE(cm.kept_channels().size() == 2);
  for (index_t e = 0; e < w3.size(); ++e) {
    const index_t c = (e / 4) % 3;
    const bool listed = std::find(cm.kept_channels().begin(), cm.kept_channels().end(), c) != cm.kept_channels().end();
    CHECK(cm.keeps(e) == listed);
  }
}

TEST_CASE("prune: bad input is refused", "[prune][errors]") {
  const auto w = random_tensor<2>({4, 8}, false);
  const auto mag = prune::magnitude{};
  QLIB_REQUIRE_ERROR(prune::make_mask(w, prune::unstructured{}, mag, prune::sparsity(-0.01)), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::make_mask(w, prune::unstructured{}, mag, prune::sparsity(1.01)), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::make_mask(w, prune::unstructured{}, mag, prune::sparsity(NAN)), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::make_mask(w, prune::unstructured{}, mag, prune::threshold(NAN)), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::make_mask(w, prune::n_m{5, 4}, mag), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::make_mask(w, prune::n_m{-1, 4}, mag), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::make_mask(w, prune::n_m{1, 0}, mag), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::make_mask(w, prune::n_m{2, 3}, mag), errc::shape_mismatch);  // 3 does not divide 8
  QLIB_REQUIRE_ERROR(prune::make_mask(w, prune::n_m{2, 4, 2}, mag), errc::out_of_range);
  QLIB_REQUIRE_ERROR(prune::make_mask(w, prune::channels{-3}, mag, prune::sparsity(0.5)), errc::out_of_range);
  QLIB_REQUIRE_ERROR(prune::make_mask(w, prune::blocks{0, 4}, mag, prune::sparsity(0.5)), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::make_mask(w, prune::channels{0}, prune::lp_norm{0.5}, prune::sparsity(0.5)),
                     errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::make_mask(w, prune::channels{0}, prune::lp_norm{NAN}, prune::sparsity(0.5)),
                     errc::invalid_argument);
  // NaN scores: a NaN weight, or a callable's NaN.
  auto wn = w;
  wn(1, 3) = NAN;
  QLIB_REQUIRE_ERROR(prune::make_mask(wn, prune::unstructured{}, mag, prune::sparsity(0.5)), errc::non_finite);
  QLIB_REQUIRE_ERROR(prune::make_mask(wn, prune::channels{0}, prune::l2, prune::sparsity(0.5)), errc::non_finite);
  QLIB_REQUIRE_ERROR(prune::make_mask(wn, prune::blocks{2, 2}, prune::lp_norm{INFINITY}, prune::sparsity(0.5)),
                     errc::non_finite);
  QLIB_REQUIRE_ERROR(prune::make_mask(wn, prune::n_m{2, 4}, mag), errc::non_finite);
  auto nan_score = [](tensor_view<const float, 1>) { return std::nan(""); };
  QLIB_REQUIRE_ERROR(prune::make_mask(w, prune::channels{0}, nan_score, prune::sparsity(0.5)), errc::non_finite);
  // Infinite scores cannot be normalized, but order fine otherwise.
  auto wi = w;
  wi(0, 0) = INFINITY;
  CHECK(prune::make_mask(wi, prune::unstructured{}, mag, prune::sparsity(31.0 / 32.0)).keeps(0));
  QLIB_REQUIRE_ERROR(prune::make_masks({wi}, prune::unstructured{}, mag, prune::sparsity(0.5), prune::normalization::l2),
                     errc::non_finite);
  // Empty tensors and lists.
  tensor<float, 2> empty({0, 4});
  QLIB_REQUIRE_ERROR(prune::make_mask(empty, prune::unstructured{}, mag, prune::sparsity(0.5)), errc::empty_tensor);
  QLIB_REQUIRE_ERROR(prune::make_mask(empty, prune::n_m{2, 4}, mag), errc::empty_tensor);
  QLIB_REQUIRE_ERROR(prune::make_masks({}, prune::unstructured{}, mag, prune::sparsity(0.5)), errc::empty_tensor);
  // Masks applied to the wrong shape.
  const auto m = prune::make_mask(w, prune::unstructured{}, mag, prune::sparsity(0.5));
  tensor<float, 2> other({8, 4});
  QLIB_REQUIRE_ERROR(m.apply(other), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(m.apply(other.data(), 31), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(prune::mask::from_channels({4, 8}, 0, {2, 1}), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::mask::from_channels({4, 8}, 0, {4}), errc::invalid_argument);
}

TEST_CASE("prune: gradual schedule (Zhu & Gupta)", "[prune][schedule]") {
  const prune::gradual_schedule s(0.1, 0.9, /*t0=*/10, /*n=*/4, /*dt=*/5);
  CHECK(s.end_step() == 30);
  CHECK(s.sparsity_at(0) == Approx(0.1));
  CHECK(s.sparsity_at(9) == Approx(0.1));
  CHECK(s.sparsity_at(10) == Approx(0.1));
  CHECK(s.sparsity_at(15) == Approx(0.9 - 0.8 * 0.75 * 0.75 * 0.75));
  CHECK(s.sparsity_at(20) == Approx(0.8));  // halfway: s_f + (s_i - s_f) / 8
  CHECK(s.sparsity_at(22) == Approx(0.8));  // held until the next pruning step
  CHECK(s.sparsity_at(30) == Approx(0.9));
  CHECK(s.sparsity_at(1000) == Approx(0.9));
  for (index_t t = 0; t < 40; ++t) CHECK(s.sparsity_at(t) <= s.sparsity_at(t + 1));
  CHECK(s.is_pruning_step(10));
  CHECK(s.is_pruning_step(15));
  CHECK(s.is_pruning_step(30));
  CHECK(!s.is_pruning_step(9));
  CHECK(!s.is_pruning_step(12));
  CHECK(!s.is_pruning_step(35));
  QLIB_REQUIRE_ERROR(prune::gradual_schedule(0.5, 0.4, 0, 4, 1), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::gradual_schedule(-0.1, 0.4, 0, 4, 1), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::gradual_schedule(0.0, 1.5, 0, 4, 1), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::gradual_schedule(0.0, NAN, 0, 4, 1), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::gradual_schedule(0.0, 0.5, -1, 4, 1), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::gradual_schedule(0.0, 0.5, 0, 0, 1), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::gradual_schedule(0.0, 0.5, 0, 4, 0), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::gradual_schedule(0.0, 0.5, 1, PTRDIFF_MAX / 2 + 1, 2), errc::overflow);
}

namespace {
nn::sequential small_cnn() {
  nn::sequential m{nn::conv2d(3, 8, nn::conv2d_options::square(3, 1, 1)), nn::relu{},
                   nn::max_pool2d::square(2),
                   nn::conv2d(8, 6, nn::conv2d_options::square(3)), nn::relu{}, nn::flatten{},
                   nn::linear(6 * 2 * 2, 10), nn::relu{}, nn::linear(10, 4)};
  train::init_parameters(m, 7);
  return m;
}
const float* weights_of(const nn::layer& l, index_t& n) {
  if (auto* c = std::get_if<nn::conv2d>(&l)) return n = c->weight.size(), c->weight.data();
  const auto& f = std::get<nn::linear>(l);
  return n = f.weight.size(), f.weight.data();
}
}  // namespace

TEST_CASE("prune: a magnitude-pruned model equals the dense model on the masked weights", "[prune][model]") {
  const nn::sequential dense = small_cnn();
  const auto x = random_tensor<4>({3, 8, 8, 3}, false);
  for (bool global : {true, false}) {
    INFO("global " << global);
    nn::sequential pruned = dense;
    const prune::model_masks masks = prune::magnitude_prune(pruned, 0.6, global);
    REQUIRE(masks.layers.size() == 4);
    // The dense weights with the masked positions zeroed by hand.
    nn::sequential manual = dense;
    double lo_kept = INFINITY, hi_pruned = 0.0;
    index_t total = 0, zeros = 0;
    for (const auto& lm : masks.layers) {
      index_t n = 0;
      float* w = const_cast<float*>(weights_of(manual[lm.layer], n));
      REQUIRE(n == lm.weight.size());
      if (!global) lo_kept = INFINITY, hi_pruned = 0.0;
      for (index_t e = 0; e < n; ++e) {
        if (lm.weight.keeps(e)) {
          lo_kept = std::min(lo_kept, std::fabs(static_cast<double>(w[e])));
        } else {
          hi_pruned = std::max(hi_pruned, std::fabs(static_cast<double>(w[e])));
          w[e] = 0.0f;
          ++zeros;
        }
      }
      total += n;
      CHECK(hi_pruned <= lo_kept);  // every pruned |w| is at most every kept one (per layer or overall)
      if (!global) CHECK(lm.weight.pruned() == prune::prune_count(0.6, n));
    }
    if (global) CHECK(zeros == prune::prune_count(0.6, total));
    CHECK(masks.pruned() == zeros);
    CHECK(masks.sparsity() == Approx(static_cast<double>(zeros) / static_cast<double>(total)));
    const auto y1 = pruned.forward(x.cview()), y2 = manual.forward(x.cview());
    REQUIRE(y1.shape() == y2.shape());
    CHECK(std::equal(y1.begin(), y1.end(), y2.begin(), [](float a, float b) { return qlib_test::same_bits(a, b); }));
  }
}

TEST_CASE("prune: a mask as a packed bitmask and back", "[prune][mask]") {
  for (index_t n : {1, 7, 8, 9, 64, 100}) {
    INFO("elements " << n);
    std::vector<std::uint8_t> keep(static_cast<std::size_t>(n));
    for (auto& k : keep) k = static_cast<std::uint8_t>(rand_int(0, 1));
    const prune::mask m({n}, keep);
    const std::vector<std::uint8_t> bits = m.to_bits();
    REQUIRE(bits.size() == static_cast<std::size_t>((n + 7) / 8));
    for (index_t e = 0; e < n; ++e)  // element e at bit e % 8 of byte e / 8
      CHECK(((bits[static_cast<std::size_t>(e / 8)] >> (e % 8)) & 1) == keep[static_cast<std::size_t>(e)]);
    if (n % 8) CHECK((bits.back() >> (n % 8)) == 0);
    const prune::mask back = prune::mask::from_bits({n}, bits);
    CHECK(std::equal(back.data(), back.data() + n, m.data()));
    if (n % 8) {
      std::vector<std::uint8_t> stray = bits;
      stray.back() = static_cast<std::uint8_t>(stray.back() | 0x80);
      QLIB_REQUIRE_ERROR(prune::mask::from_bits({n}, stray), errc::invalid_argument);
    }
    QLIB_REQUIRE_ERROR(prune::mask::from_bits({n + 8}, bits), errc::shape_mismatch);
  }
  QLIB_REQUIRE_ERROR(prune::mask::from_bits({-1}, {}), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::mask::from_bits({index_t{1} << 31, index_t{1} << 31}, {}), errc::invalid_argument);
  // A 2-D channel mask: the same bits as its bytes.
  const prune::mask ch = prune::mask::from_channels({3, 5}, 0, {0, 2});
  const prune::mask back = prune::mask::from_bits({3, 5}, ch.to_bits());
  CHECK(std::equal(back.data(), back.data() + ch.size(), ch.data()));
  CHECK(back.shape() == ch.shape());
}

TEST_CASE("prune: masks survive optimizer steps (masked_optimizer, apply)", "[prune][model]") {
  nn::sequential m = small_cnn();
  const prune::model_masks masks = prune::magnitude_prune(m, 0.7);
  const auto x = random_tensor<4>({4, 8, 8, 3}, false);
  tensor<std::int32_t, 1> labels({4});
  for (index_t i = 0; i < 4; ++i) labels(i) = static_cast<std::int32_t>(i);
  const nn::sequential before = m;
  train::sgd opt({0.1f, 0.9f});
  prune::masked_optimizer<train::sgd> mopt(opt, masks);
  for (int step = 0; step < 3; ++step) train::train_step(m, x.cview(), labels.cview(), mopt);
  index_t moved = 0;
  for (const auto& lm : masks.layers) {
    index_t n = 0, n0 = 0;
    const float* w = weights_of(m[lm.layer], n);
    const float* w0 = weights_of(before[lm.layer], n0);
    index_t bad = 0;
    for (index_t e = 0; e < n; ++e) {
      bad += !lm.weight.keeps(e) && w[e] != 0.0f;
      moved += lm.weight.keeps(e) && w[e] != w0[e];
    }
    CHECK(bad == 0);
  }
  CHECK(moved > 0);  // training did update the kept weights
  // Without the wrapper, an update fills the pruned weights; apply() restores the zeros.
  train::sgd plain({0.1f});
  train::train_step(m, x.cview(), labels.cview(), plain);
  index_t refilled = 0;
  for (const auto& lm : masks.layers) {
    index_t n = 0;
    const float* w = weights_of(m[lm.layer], n);
    for (index_t e = 0; e < n; ++e) refilled += !lm.weight.keeps(e) && w[e] != 0.0f;
  }
  CHECK(refilled > 0);
  masks.apply(m);
  for (const auto& lm : masks.layers) {
    const auto& l = m[lm.layer];
    if (auto* c = std::get_if<nn::conv2d>(&l)) CHECK(lm.weight.violations(c->weight.cview()) == 0);
    else CHECK(lm.weight.violations(std::get<nn::linear>(l).weight.cview()) == 0);
  }
  // A strided view: only the masked entries change.
  tensor<float, 2> t = random_tensor<2>({5, 6}, false);
  const tensor<float, 2> t0 = t;
  const auto tv = t.view().transpose(0, 1);  // [6, 5]
  const auto mk = prune::make_mask(tv, prune::unstructured{}, prune::magnitude{}, prune::sparsity(0.5));
  mk.apply(tv);
  for (index_t i = 0; i < 6; ++i)
    for (index_t j = 0; j < 5; ++j) CHECK(tv(i, j) == (mk.keeps(i * 5 + j) ? t0(j, i) : 0.0f));
}

TEST_CASE("prune: L2 filter pruning zeroes whole output channels of every layer but the last", "[prune][model]") {
  const nn::sequential dense = small_cnn();
  nn::sequential m = dense;
  const prune::model_masks masks = prune::l2_filter_prune(m, 0.5);
  REQUIRE(masks.layers.size() == 3);  // the classifier (layer 8) is left alone
  CHECK(masks.layers.back().layer == 6);
  for (const auto& lm : masks.layers) {
    index_t n = 0;
    const float* w0 = weights_of(dense[lm.layer], n);
    const index_t out = lm.weight.shape()[0], row = n / out;
    REQUIRE(lm.weight.has_channels());
    CHECK(static_cast<index_t>(lm.weight.kept_channels().size()) == out - prune::prune_count(0.5, out));
    double lo_kept = INFINITY, hi_pruned = 0.0;
    for (index_t o = 0; o < out; ++o) {
      double ss = 0.0;
      for (index_t k = 0; k < row; ++k) ss += static_cast<double>(w0[o * row + k]) * w0[o * row + k];
      const bool kept = std::find(lm.weight.kept_channels().begin(), lm.weight.kept_channels().end(), o) !=
                        lm.weight.kept_channels().end();
      (kept ? lo_kept : hi_pruned) = kept ? std::min(lo_kept, std::sqrt(ss)) : std::max(hi_pruned, std::sqrt(ss));
      CHECK(lm.bias_keep.at(static_cast<std::size_t>(o)) == kept);
    }
    CHECK(hi_pruned <= lo_kept);
  }
  // The first conv's pruned channels output exactly 0.
  const auto x = random_tensor<4>({2, 8, 8, 3}, false);
  const auto y = nn::sequential::forward_layer(m[0], x.cview());
  const auto& keep0 = masks.layers[0].weight.kept_channels();
  index_t nonzero_pruned = 0;
  for (index_t p = 0; p < y.size() / 8; ++p)
    for (index_t c = 0; c < 8; ++c)
      if (std::find(keep0.begin(), keep0.end(), c) == keep0.end()) nonzero_pruned += y.data()[p * 8 + c] != 0.0f;
  CHECK(nonzero_pruned == 0);
  // conv -> batch norm: the BN's weight and bias are masked too, so the pruned channels
  // still output 0 after it, in inference and through a masked training step.
  nn::sequential bnm{nn::conv2d(3, 6, nn::conv2d_options::square(3)), nn::batch_norm2d(6), nn::flatten{},
                     nn::linear(6 * 6 * 6, 4)};
  train::init_parameters(bnm, 3);
  for (index_t c = 0; c < 6; ++c) std::get<nn::batch_norm2d>(bnm[1]).bias(c) = 0.5f + static_cast<float>(c);
  const auto bn_masks = prune::l2_filter_prune(bnm, 0.5);
  REQUIRE(bn_masks.layers.size() == 1);
  tensor<std::int32_t, 1> lab({2});
  lab(0) = 1, lab(1) = 3;
  train::adam adam;
  prune::masked_optimizer<train::adam> madam(adam, bn_masks);
  train::train_step(bnm, x.cview(), lab.cview(), madam);
  const auto& kept_bn = bn_masks.layers[0].weight.kept_channels();
  CHECK(kept_bn.size() == 3);
  const auto z = nn::sequential::forward_layer(bnm[1], nn::sequential::forward_layer(bnm[0], x.cview()).cview());
  index_t nonzero_bn = 0, nonzero_kept = 0;
  for (index_t p = 0; p < z.size() / 6; ++p)
    for (index_t c = 0; c < 6; ++c) {
      const bool kept = std::find(kept_bn.begin(), kept_bn.end(), c) != kept_bn.end();
      (kept ? nonzero_kept : nonzero_bn) += z.data()[p * 6 + c] != 0.0f;
    }
  CHECK(nonzero_bn == 0);
  CHECK(nonzero_kept > 0);
  // 100% of channels is a valid mask (shrinking to nothing is not; see shrink.hpp).
  nn::sequential all = dense;
  const auto gone = prune::l2_filter_prune(all, 1.0);
  for (const auto& lm : gone.layers) CHECK(lm.weight.kept_channels().empty());
}
