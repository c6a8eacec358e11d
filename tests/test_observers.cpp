// Calibration observers: the min/max fold on every ISA against the reference, each observer
// on known data, exact merges, histograms that grow without losing counts, range
// selection, calibrate() progress/cancel, a user-written observer, and every bad input.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "qlib/quant/observers.hpp"
#include "qlib/quantize.hpp"
#include "test_util.hpp"

using namespace qlib;
using qlib_test::rand_float;
using qlib_test::for_each_isa;
using qlib_test::rand_int;
using qlib_test::same_bits;

namespace {


using qlib_test::qnan;

// Mostly ordinary values, with NaN, +/-Inf, signed zeros and subnormals mixed in.
float nasty_value(int specials_percent) {
  if (rand_int(0, 99) < specials_percent) {
    const float s[] = {qnan, -qnan, INFINITY, -INFINITY, -0.0f, 0.0f, 1e-40f, -1e-40f,
                       std::numeric_limits<float>::signaling_NaN()};
    return s[rand_int(0, 8)];
  }
  return rand_float(-100.0f, 100.0f) * std::ldexp(1.0f, rand_int(-10, 10));
}

granularity observer_test_granularity(std::size_t rank) {
  return qlib_test::random_granularity(rank, [] { return rand_int(0, 2) == 0 ? rand_int(1, 5) : 16 * rand_int(1, 5); });
}

// A view over a buffer with padded rows (layout 1) or the last two axes transposed (2).
template <std::size_t R>
struct strided_floats {
  std::vector<float> data;
  tensor_view<float, R> view;
  strided_floats(const extents<R>& shape, int layout) {
    extents<R> strides{};
    index_t s = 1;
    const index_t pad = layout == 1 ? rand_int(1, 7) : 0;
    for (std::size_t a = R; a-- > 0;) {
      strides[a] = s;
      s *= shape[a] + (a == R - 1 ? pad : 0);
    }
    if (layout == 2 && R >= 2) {
      strides[R - 1] = shape[R - 2];
      strides[R - 2] = 1;
      index_t t = shape[R - 1] * shape[R - 2];
      for (std::size_t a = R - 2; a-- > 0;) {
        strides[a] = t;
        t *= shape[a];
      }
      s = t;
    }
    data.assign(static_cast<std::size_t>(s) + 8, 12345.0f);
    view = tensor_view<float, R>(data.data(), shape, strides);
  }
};

template <std::size_t R>
void fill(tensor_view<float, R> v, int specials_percent) {
  extents<R> idx{};
  do {
    v[idx] = nasty_value(specials_percent);
  } while (detail::next_index(idx, v.shape()));
}

template <std::size_t R>
void compare_fold_once() {
  extents<R> shape;
  for (auto& e : shape) e = rand_int(0, 3) == 0 ? rand_int(1, 3) : rand_int(1, 90);
  const granularity g = observer_test_granularity(R);
  const int layout = rand_int(0, 2);
  strided_floats<R> x(shape, layout);
  fill(x.view, rand_int(0, 1) ? 0 : rand_int(1, 30));
  const std::size_t np = static_cast<std::size_t>(g.param_count(shape));
  std::vector<float> mn_ref(np, INFINITY), mx_ref(np, -INFINITY);
  // Start from a non-trivial state so the fold into existing values is checked too.
  for (std::size_t k = 0; k < np; ++k)
    if (rand_int(0, 1)) fold_minmax_pair(rand_float(-5, 0), rand_float(0, 5), mn_ref[k], mx_ref[k]);
  const std::vector<float> mn0 = mn_ref, mx0 = mx_ref;
  const nonfinite_counts want = reference::fold_minmax_by_group(tensor_view<const float, R>(x.view), g,
                                                                mn_ref.data(), mx_ref.data());
  INFO("shape " << detail::extents_string(shape) << " " << g.describe() << " layout " << layout);
  for_each_isa([&](isa i) {
    std::vector<float> mn = mn0, mx = mx0;
    const nonfinite_counts got =
        detail::fold_minmax_by_group(i, tensor_view<const float, R>(x.view), g, mn.data(), mx.data());
    CHECK(got.nan == want.nan);
    CHECK(got.inf == want.inf);
    int bad = 0;
    for (std::size_t k = 0; k < np; ++k)
      if ((!same_bits(mn[k], mn_ref[k]) || !same_bits(mx[k], mx_ref[k])) && bad++ < 3)
        FAIL_CHECK("param " << k << ": got [" << mn[k] << ", " << mx[k] << "] want [" << mn_ref[k] << ", "
                            << mx_ref[k] << "]");
    CHECK(bad == 0);
  });
}

// n values of a distribution.
template <class D>
std::vector<float> sample(D dist, std::size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(dist(g));
  return v;
}

// Observes `data` (shape [rows, cols]) as batches of `rows_per_batch` rows.
template <class O>
void observe_in_batches(O& obs, const std::vector<float>& data, index_t cols, index_t rows_per_batch) {
  const index_t rows = static_cast<index_t>(data.size()) / cols;
  for (index_t r = 0; r < rows; r += rows_per_batch) {
    const index_t n = std::min(rows_per_batch, rows - r);
    obs.observe(tensor_view<const float, 2>(data.data() + r * cols, extents<2>{n, cols}));
  }
}

bool same_params(const quant_params& a, const quant_params& b) {
  if (a.qmin != b.qmin || a.qmax != b.qmax || a.scale.size() != b.scale.size() || a.zero_point != b.zero_point)
    return false;
  for (std::size_t k = 0; k < a.scale.size(); ++k)
    if (!same_bits(a.scale[k], b.scale[k])) return false;
  return true;
}

// Quantization MSE of x under p (per-tensor params), measured.
double measured_mse(const std::vector<float>& x, const quant_params& p) {
  tensor_view<const float, 1> xv(x.data(), extents<1>{static_cast<index_t>(x.size())});
  tensor<float, 1> y(xv.shape());
  fake_quantize(xv, y.view(), p);
  double s = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double d = static_cast<double>(x[i]) - y.data()[i];
    s += d * d;
  }
  return s / static_cast<double>(x.size());
}

}  // namespace

TEST_CASE("min/max fold: every ISA equals the reference bit for bit", "[observers][minmax][isa]") {
  INFO("supported: " << supported_isa_list());
  for (int rep = 0; rep < 80; ++rep) {
    compare_fold_once<1>();
    compare_fold_once<2>();
    compare_fold_once<3>();
  }
}

TEST_CASE("min/max fold: long rows, every tail, NaN anywhere", "[observers][minmax][isa]") {
  for (index_t n : {1, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000, 4099}) {
    for (int pattern = 0; pattern < 4; ++pattern) {
      std::vector<float> x(static_cast<std::size_t>(n));
      for (float& v : x) v = rand_float(-1.0f, 1.0f);
      if (pattern == 1) x[static_cast<std::size_t>(rand_int(0, static_cast<int>(n) - 1))] = qnan;
      if (pattern == 2) x[static_cast<std::size_t>(n - 1)] = -INFINITY;
      if (pattern == 3) std::fill(x.begin(), x.end(), -0.0f);
      const tensor_view<const float, 1> xv(x.data(), extents<1>{n});
      for (const granularity& g : {granularity::per_tensor(), granularity::per_group(0, 32),
                                   granularity::per_group(0, 17), granularity::per_channel(0)}) {
        const std::size_t np = static_cast<std::size_t>(g.param_count(xv.shape()));
        std::vector<float> mn_ref(np, INFINITY), mx_ref(np, -INFINITY);
        const nonfinite_counts want = reference::fold_minmax_by_group(xv, g, mn_ref.data(), mx_ref.data());
        for_each_isa([&](isa i) {
          INFO("n " << n << " pattern " << pattern << " " << g.describe());
          std::vector<float> mn(np, INFINITY), mx(np, -INFINITY);
          const nonfinite_counts got = detail::fold_minmax_by_group(i, xv, g, mn.data(), mx.data());
          CHECK(got.nan == want.nan);
          CHECK(got.inf == want.inf);
          CHECK(std::memcmp(mn.data(), mn_ref.data(), np * 4) == 0);
          CHECK(std::memcmp(mx.data(), mx_ref.data(), np * 4) == 0);
        });
      }
    }
  }
}

TEST_CASE("min/max fold: channels-last blocks (per-channel on the last axis)", "[observers][minmax][isa]") {
  for (index_t rows : {1, 7, 8, 9, 17, 40}) {
    for (index_t cols : {1, 15, 16, 64, 65, 130}) {
      tensor<float, 2> x({rows, cols});
      for (float& v : x) v = nasty_value(rand_int(0, 1) ? 0 : 5);
      const granularity g = granularity::per_channel(1);
      std::vector<float> mn_ref(static_cast<std::size_t>(cols), INFINITY), mx_ref = std::vector<float>(mn_ref.size(), -INFINITY);
      const nonfinite_counts want = reference::fold_minmax_by_group(x.cview(), g, mn_ref.data(), mx_ref.data());
      for_each_isa([&](isa i) {
        INFO("rows " << rows << " cols " << cols);
        std::vector<float> mn(mn_ref.size(), INFINITY), mx(mn_ref.size(), -INFINITY);
        const nonfinite_counts got = detail::fold_minmax_by_group(i, x.cview(), g, mn.data(), mx.data());
        CHECK(got.nan == want.nan);
        CHECK(got.inf == want.inf);
        CHECK(std::memcmp(mn.data(), mn_ref.data(), 4 * mn.size()) == 0);
        CHECK(std::memcmp(mx.data(), mx_ref.data(), 4 * mx.size()) == 0);
      });
    }
  }
}

TEST_CASE("the scalar fold: NaN/Inf skipped and counted, -0 folded to +0", "[observers][minmax]") {
  float mn = INFINITY, mx = -INFINITY;
  nonfinite_counts c;
  for (float v : {qnan, INFINITY, -0.0f, -INFINITY, 2.0f, qnan}) fold_minmax(v, mn, mx, c);
  CHECK(c.nan == 2);
  CHECK(c.inf == 2);
  CHECK(mn == 0.0f);
  CHECK(!std::signbit(mn));
  CHECK(mx == 2.0f);
}

TEST_CASE("minmax_observer equals choose_params on the data it saw", "[observers][minmax]") {
  const std::vector<float> data = sample(std::uniform_real_distribution<float>(-2.0f, 3.0f), 24 * 40, 1);
  const tensor_view<const float, 2> all(data.data(), extents<2>{24, 40});
  for (const granularity& g : {granularity::per_tensor(), granularity::per_channel(1)}) {
    INFO(g.describe());
    minmax_observer obs(g);
    observe_in_batches(obs, data, 40, 5);  // batches of 5 rows (the last one 4)
    CHECK(obs.counts().batches == 5);
    CHECK(obs.counts().elements == 960);
    CHECK(obs.counts().skipped() == 0);
    for (const auto scheme : {schemes::s8_symmetric, schemes::s8_asymmetric})
      CHECK(same_params(obs.params(scheme), choose_params(all, scheme, g)));
    CHECK(same_params(obs.params(schemes::u8_asymmetric), choose_params(all, schemes::u8_asymmetric, g)));
  }
  // Per-group parameters follow the batch shape (here [4, 40] -> [4, groups]): the
  // observer equals the reference fold of each batch in turn.
  for (const granularity& g : {granularity::per_group(1, 16), granularity::per_group(1, 7), granularity::per_group(0, 3)}) {
    INFO(g.describe());
    minmax_observer obs(g);
    observe_in_batches(obs, data, 40, 4);
    const std::size_t np = static_cast<std::size_t>(g.param_count(extents<2>{4, 40}));
    std::vector<float> mn(np, INFINITY), mx(np, -INFINITY);
    for (index_t r = 0; r < 24; r += 4) reference::fold_minmax_by_group(all.slice(0, r, r + 4), g, mn.data(), mx.data());
    CHECK(same_params(obs.params(schemes::s8_asymmetric), params_from_ranges(schemes::s8_asymmetric, g, mn, mx)));
    // A single batch is exactly choose_params.
    minmax_observer one(g);
    one.observe(all);
    CHECK(same_params(one.params(schemes::s4_symmetric), choose_params(all, schemes::s4_symmetric, g)));
  }
  // per-channel over axis 0 of each batch: the channels are the batch rows, so the
  // channel count must be the same in every batch.
  minmax_observer rows(granularity::per_channel(0));
  rows.observe(all.slice(0, 0, 8));
  QLIB_REQUIRE_ERROR(rows.observe(all.slice(0, 0, 5)), errc::shape_mismatch);
  rows.observe(all.slice(0, 8, 16));
  const auto r = rows.ranges();
  for (index_t c = 0; c < 8; ++c) {
    float lo = INFINITY, hi = -INFINITY;
    for (index_t j = 0; j < 40; ++j) {
      lo = std::min({lo, all(c, j), all(c + 8, j)});
      hi = std::max({hi, all(c, j), all(c + 8, j)});
    }
    CHECK(r.first[static_cast<std::size_t>(c)] == lo);
    CHECK(r.second[static_cast<std::size_t>(c)] == hi);
  }
}

TEST_CASE("per-channel observers work on any axis of a rank-4 tensor", "[observers][granularity]") {
  tensor<float, 4> x({3, 4, 5, 6});
  for (float& v : x) v = rand_float(-4.0f, 4.0f);
  for (std::size_t axis = 0; axis < 4; ++axis) {
    const granularity g = granularity::per_channel(axis);
    minmax_observer mm(g);
    histogram_observer hist(g, histogram_options{256});
    moving_average_minmax_observer ema(g);
    mm.observe(x);
    hist.observe(x);
    ema.observe(x);
    const quant_params want = choose_params(x.cview(), schemes::s8_asymmetric, g);
    CHECK(same_params(mm.params(schemes::s8_asymmetric), want));
    CHECK(same_params(hist.params(schemes::s8_asymmetric, range_method::minmax), want));
    CHECK(same_params(ema.params(schemes::s8_asymmetric), want));  // one batch: the EMA is that batch
    CHECK(hist.params(schemes::s8_asymmetric, range_method::mse).size() == x.shape(axis));
  }
}

TEST_CASE("merging observers fed disjoint shards equals one observer fed everything", "[observers][merge]") {
  const std::vector<float> data = sample(std::student_t_distribution<float>(3.0f), 64 * 50, 2);
  for (const granularity& g : {granularity::per_tensor(), granularity::per_channel(1), granularity::per_group(1, 8)}) {
    INFO(g.describe());
    minmax_observer one(g), a(g), b(g), c(g);
    histogram_observer h_one(g, {512}), ha(g, {512}), hb(g, {512}), hc(g, {512});
    observe_in_batches(one, data, 50, 4);
    observe_in_batches(h_one, data, 50, 4);
    // Shards: rows [0,24) to a, [24,40) to b, [40,64) to c, observed in a different order.
    auto shard = [&](auto& o, index_t r0, index_t r1) {
      for (index_t r = r1; r > r0;) {
        const index_t n = std::min<index_t>(4, r - r0);
        r -= n;
        o.observe(tensor_view<const float, 2>(data.data() + r * 50, extents<2>{n, 50}));
      }
    };
    shard(a, 0, 24), shard(b, 24, 40), shard(c, 40, 64);
    shard(ha, 0, 24), shard(hb, 24, 40), shard(hc, 40, 64);
    minmax_observer empty(g);
    c.merge(empty);
    b.merge(c);
    a.merge(b);
    empty.merge(a);  // merging into an observer that saw nothing copies
    CHECK(std::memcmp(a.min().data(), one.min().data(), 4 * one.min().size()) == 0);
    CHECK(std::memcmp(a.max().data(), one.max().data(), 4 * one.max().size()) == 0);
    CHECK(empty.min() == one.min());
    CHECK(a.counts().elements == one.counts().elements);
    hb.merge(ha);
    hb.merge(hc);
    for (index_t k = 0; k < one.param_count(); ++k) CHECK(hb.histogram(k) == h_one.histogram(k));
    // Parameters are a function of the histograms; checked end to end for one layout.
    if (g.type == granularity::kind::per_tensor)
      for (range_method m : {range_method::mse, range_method::kl_divergence, range_method::percentile})
        CHECK(same_params(hb.params(schemes::s8_symmetric, m), h_one.params(schemes::s8_symmetric, m)));
  }
  SECTION("mismatched observers refuse to merge") {
    minmax_observer a(granularity::per_tensor()), b(granularity::per_channel(0));
    QLIB_REQUIRE_ERROR(a.merge(b), errc::invalid_argument);
    minmax_observer c(granularity::per_channel(1)), d(granularity::per_channel(1));
    c.observe(tensor<float, 2>({2, 3}, 1.0f));
    d.observe(tensor<float, 2>({2, 4}, 1.0f));
    QLIB_REQUIRE_ERROR(c.merge(d), errc::shape_mismatch);
    histogram_observer h1({}, {256}), h2({}, {512});
    QLIB_REQUIRE_ERROR(h1.merge(h2), errc::invalid_argument);
  }
}

TEST_CASE("moving-average observer follows the EMA formula, factor 0.01 by default", "[observers][ema]") {
  moving_average_minmax_observer ema;
  CHECK(ema.averaging_constant() == 0.01f);
  std::vector<std::vector<float>> batches;
  for (int b = 0; b < 6; ++b) batches.push_back(sample(std::normal_distribution<float>(0.5f * b, 1.0f + b), 300, 10 + b));
  float mn = 0, mx = 0;
  for (std::size_t b = 0; b < batches.size(); ++b) {
    ema.observe(make_view(batches[b].data(), 300));
    const auto bm = std::minmax_element(batches[b].begin(), batches[b].end());
    if (b == 0) {
      mn = *bm.first;
      mx = *bm.second;
    } else {
      volatile float dmin = 0.01f * (*bm.first - mn), dmax = 0.01f * (*bm.second - mx);
      mn = mn + dmin;
      mx = mx + dmax;
    }
    CHECK(same_bits(ema.min()[0], mn));
    CHECK(same_bits(ema.max()[0], mx));
  }
  CHECK(ema.updates()[0] == 6);

  SECTION("a batch without finite values leaves a group unchanged") {
    std::vector<float> nans(300, qnan);
    ema.observe(make_view(nans.data(), 300));
    CHECK(same_bits(ema.min()[0], mn));
    CHECK(ema.updates()[0] == 6);
    CHECK(ema.counts().nan == 300);
  }
  SECTION("merge is the update-weighted mean (documented, not sequential)") {
    moving_average_minmax_observer other;
    other.observe(tensor<float, 1>(extents<1>{4}, 10.0f));  // one update: [10, 10]
    moving_average_minmax_observer merged = ema;
    merged.merge(other);
    CHECK(merged.min()[0] == Approx((6.0 * mn + 10.0) / 7.0));
    CHECK(merged.max()[0] == Approx((6.0 * mx + 10.0) / 7.0));
    CHECK(merged.updates()[0] == 7);
    moving_average_minmax_observer same = ema;
    same.merge(ema);  // equal states merge to themselves
    CHECK(same.min()[0] == Approx(mn));
  }
  QLIB_REQUIRE_ERROR(moving_average_minmax_observer(granularity::per_tensor(), 0.0f), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(moving_average_minmax_observer(granularity::per_tensor(), 1.5f), errc::invalid_argument);
}

TEST_CASE("histogram: the range grows without losing counts, and batching does not matter", "[observers][histogram]") {
  // A narrow first batch, then ever wider ones: the grid coarsens by bin pairs.
  std::vector<std::vector<float>> batches = {
      sample(std::uniform_real_distribution<float>(0.0f, 1e-3f), 500, 3),
      sample(std::normal_distribution<float>(0.0f, 1.0f), 500, 4),
      sample(std::uniform_real_distribution<float>(-50.0f, 10.0f), 500, 5),
      sample(std::cauchy_distribution<float>(0.0f, 1.0f), 500, 6),
  };
  batches[1][7] = qnan;
  batches[2][9] = INFINITY;
  grid_histogram h(2048);
  std::vector<float> all;
  for (const auto& b : batches) {
    float lo = INFINITY, hi = -INFINITY;
    nonfinite_counts c;
    for (float v : b) fold_minmax(v, lo, hi, c);
    h.cover(lo, hi);
    h.add(b.data(), static_cast<index_t>(b.size()), 1);
    all.insert(all.end(), b.begin(), b.end());
    CHECK(h.total() == static_cast<std::uint64_t>(std::count_if(all.begin(), all.end(), [](float v) {
            return std::isfinite(v);
          })));
  }
  // Every value lies in the bin whose interval holds it: rebuild from scratch and compare.
  grid_histogram again(2048);
  float lo = INFINITY, hi = -INFINITY;
  nonfinite_counts c;
  for (float v : all) fold_minmax(v, lo, hi, c);
  again.cover(lo, hi);
  again.add(all.data(), static_cast<index_t>(all.size()), 1);
  CHECK(again == h);
  CHECK(h.min() == lo);
  CHECK(h.max() == hi);
  CHECK(h.edge(0) <= lo);
  CHECK(h.edge(h.bins()) > hi);
  CHECK(std::accumulate(h.counts().begin(), h.counts().end(), std::uint64_t{0}) == h.total());
  for (index_t i = 0; i < h.bins(); ++i) {
    const std::uint64_t n = static_cast<std::uint64_t>(std::count_if(all.begin(), all.end(), [&](float v) {
      return std::isfinite(v) && v >= h.edge(i) && v < h.edge(i + 1);
    }));
    if (n != h.counts()[static_cast<std::size_t>(i)]) FAIL_CHECK("bin " << i);
  }
  // The first grid's width is a power of two and 0 is an edge.
  CHECK(std::ldexp(1.0, h.exponent()) == h.bin_width());
}

TEST_CASE("histogram: all-equal values, zeros and tiny ranges are defined", "[observers][histogram]") {
  for (float v : {0.0f, 3.0f, -7.5f, 1e-30f, 3e38f}) {
    INFO("value " << v);
    histogram_observer h;
    h.observe(tensor<float, 2>({10, 10}, v));
    CHECK(h.histogram(0).total() == 100);
    CHECK(std::count_if(h.histogram(0).counts().begin(), h.histogram(0).counts().end(),
                        [](std::uint64_t n) { return n != 0; }) == 1);
    minmax_observer m;
    m.observe(tensor<float, 2>({10, 10}, v));
    for (range_method method : {range_method::minmax, range_method::mse, range_method::kl_divergence,
                                range_method::percentile})
      CHECK(same_params(h.params(schemes::u8_asymmetric, method), m.params(schemes::u8_asymmetric)));
  }
  histogram_observer h;  // values a few ulps apart
  std::vector<float> x(64);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::nextafter(1.0f, 2.0f) + static_cast<float>(i) * 1.2e-7f;
  h.observe(make_view(x.data(), 64));
  CHECK(h.histogram(0).total() == 64);
  CHECK(h.params(schemes::s8_symmetric).scale[0] > 0.0f);
}

TEST_CASE("range selection on known distributions", "[observers][histogram][range]") {
  SECTION("uniform: nothing worth clipping") {
    const std::vector<float> u = sample(std::uniform_real_distribution<float>(-1.0f, 1.0f), 200000, 7);
    histogram_observer h;
    h.observe(make_view(u.data(), static_cast<index_t>(u.size())));
    const auto mse = h.ranges(schemes::s8_symmetric, range_method::mse);
    CHECK(mse.second[0] > 0.97f);
    const auto kl = h.ranges(schemes::s8_symmetric, range_method::kl_divergence);
    CHECK(kl.second[0] > 0.9f);
    const auto pct = h.ranges(schemes::s8_symmetric, range_method::percentile);
    CHECK(pct.second[0] == Approx(0.9999f).epsilon(2e-3));
    // The error model matches what quantization really does on uniform data.
    const quant_params p = h.params(schemes::s8_symmetric, range_method::minmax);
    const double model = expected_quantization_mse(h.histogram(0), p.scale[0], p.zero_point[0], p.qmin, p.qmax);
    CHECK(model == Approx(measured_mse(u, p)).epsilon(0.03));
  }
  SECTION("normal: percentiles land on the normal quantiles") {
    const std::vector<float> n = sample(std::normal_distribution<float>(0.0f, 1.0f), 400000, 8);
    histogram_observer h(granularity::per_tensor(), histogram_options{2048, range_method::percentile, 99.9});
    h.observe(make_view(n.data(), static_cast<index_t>(n.size())));
    const auto sym = h.ranges(schemes::s8_symmetric);  // 99.9% of |x|: z(0.9995) = 3.2905
    CHECK(sym.second[0] == Approx(3.2905f).epsilon(0.03));
    CHECK(sym.first[0] == -sym.second[0]);
    const auto asym = h.ranges(schemes::u8_asymmetric);  // 0.1% and 99.9%: z = -/+3.0902
    CHECK(asym.first[0] == Approx(-3.0902f).epsilon(0.03));
    CHECK(asym.second[0] == Approx(3.0902f).epsilon(0.03));
    // MSE and KL clip the normal tails but keep the bulk.
    const auto mse = h.ranges(schemes::s8_symmetric, range_method::mse);
    CHECK(mse.second[0] > 2.5f);
    CHECK(mse.second[0] <= h.histogram(0).max());
    const auto kl = h.ranges(schemes::s8_symmetric, range_method::kl_divergence);
    CHECK(kl.second[0] > 2.0f);
    const quant_params pm = h.params(schemes::s8_symmetric, range_method::mse);
    const quant_params p0 = h.params(schemes::s8_symmetric, range_method::minmax);
    CHECK(expected_quantization_mse(h.histogram(0), pm.scale[0], 0, -127, 127) <=
          expected_quantization_mse(h.histogram(0), p0.scale[0], 0, -127, 127));
  }
  SECTION("one-sided data (ReLU-like) in an asymmetric scheme") {
    std::vector<float> r = sample(std::exponential_distribution<float>(1.0f), 100000, 9);
    histogram_observer h;
    h.observe(make_view(r.data(), static_cast<index_t>(r.size())));
    for (range_method m : {range_method::mse, range_method::kl_divergence, range_method::percentile}) {
      const auto rg = h.ranges(schemes::u8_asymmetric, m);
      CHECK(rg.first[0] >= 0.0f);
      CHECK(rg.second[0] > 3.0f);
      CHECK(h.params(schemes::u8_asymmetric, m).zero_point[0] == 0);
    }
  }
}

TEST_CASE("non-finite calibration data never poisons a range", "[observers][nonfinite]") {
  tensor<float, 2> x({4, 6});
  for (float& v : x) v = rand_float(-1.0f, 1.0f);
  x(0, 1) = qnan;
  x(2, 3) = INFINITY;
  x(3, 5) = -INFINITY;
  tensor<float, 2> clean = x;
  clean(0, 1) = clean(2, 3) = clean(3, 5) = 0.0f;
  minmax_observer mm;
  histogram_observer h;
  moving_average_minmax_observer ema;
  mm.observe(x);
  h.observe(x);
  ema.observe(x);
  for (const observer_counts* c : {&mm.counts(), &h.counts(), &ema.counts()}) {
    CHECK(c->nan == 1);
    CHECK(c->inf == 2);
    CHECK(c->elements == 24);
  }
  CHECK(std::isfinite(mm.min()[0]));
  CHECK(h.histogram(0).total() == 21);
  // The skipped values do not count, so the range is that of the 21 finite values.
  float lo = INFINITY, hi = -INFINITY;
  for (index_t i = 0; i < 24; ++i)
    if (std::isfinite(x.data()[i])) lo = std::min(lo, x.data()[i]), hi = std::max(hi, x.data()[i]);
  CHECK(mm.min()[0] == lo);
  CHECK(mm.max()[0] == hi);
  CHECK(ema.min()[0] == lo);
  CHECK(h.histogram(0).min() == lo);

  SECTION("a group that saw only NaN/Inf cannot give parameters") {
    tensor<float, 2> y({3, 2}, 1.0f);
    y(0, 1) = y(1, 1) = qnan;
    y(2, 1) = INFINITY;
    minmax_observer pc(granularity::per_channel(1));
    histogram_observer hc(granularity::per_channel(1));
    moving_average_minmax_observer ec(granularity::per_channel(1));
    pc.observe(y);
    hc.observe(y);
    ec.observe(y);
    QLIB_REQUIRE_ERROR(pc.params(schemes::s8_symmetric), errc::non_finite);
    QLIB_REQUIRE_ERROR(hc.params(schemes::s8_symmetric), errc::non_finite);
    QLIB_REQUIRE_ERROR(ec.params(schemes::s8_symmetric), errc::non_finite);
    y(1, 1) = 2.0f;  // a later finite value fixes it
    pc.observe(y);
    CHECK(pc.params(schemes::s8_symmetric).scale[1] == Approx(2.0f / 127.0f));
  }
}

TEST_CASE("empty batches, no data and bad options", "[observers][errors]") {
  minmax_observer mm;
  histogram_observer h;
  moving_average_minmax_observer ema;
  QLIB_REQUIRE_ERROR(mm.params(schemes::s8_symmetric), errc::empty_tensor);
  QLIB_REQUIRE_ERROR(h.params(schemes::s8_symmetric), errc::empty_tensor);
  QLIB_REQUIRE_ERROR(ema.params(schemes::s8_symmetric), errc::empty_tensor);
  const tensor<float, 2> empty({0, 5});
  mm.observe(empty);
  h.observe(empty);
  ema.observe(empty);
  CHECK(mm.counts().batches == 1);
  CHECK(!mm.has_data());
  QLIB_REQUIRE_ERROR(mm.params(schemes::s8_symmetric), errc::empty_tensor);
  // Granularity checks still apply to empty batches.
  minmax_observer bad_axis(granularity::per_channel(3));
  QLIB_REQUIRE_ERROR(bad_axis.observe(empty), errc::out_of_range);
  minmax_observer bad_group(granularity::per_group(1, 0));
  QLIB_REQUIRE_ERROR(bad_group.observe(tensor<float, 2>({2, 5}, 1.0f)), errc::invalid_argument);
  minmax_observer divisible(granularity::per_group(1, 2).require_divisible());
  QLIB_REQUIRE_ERROR(divisible.observe(tensor<float, 2>({2, 5}, 1.0f)), errc::invalid_argument);
  // Per-group layouts must match exactly across batches.
  minmax_observer pg(granularity::per_group(1, 4));
  pg.observe(tensor<float, 2>({2, 8}, 1.0f));
  QLIB_REQUIRE_ERROR(pg.observe(tensor<float, 2>({4, 4}, 1.0f)), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(histogram_observer(granularity::per_tensor(), histogram_options{1}), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(histogram_observer(granularity::per_tensor(), histogram_options{2048, range_method::percentile, 0.0}),
                     errc::invalid_argument);
  QLIB_REQUIRE_ERROR(histogram_observer(granularity::per_tensor(), histogram_options{2048, range_method::percentile, 101.0}),
                     errc::invalid_argument);
  QLIB_REQUIRE_ERROR(grid_histogram(16).cover(1.0f, 0.0f), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(grid_histogram(16).cover(0.0f, INFINITY), errc::invalid_argument);
  mm.observe(tensor<float, 1>(extents<1>{3}, 2.0f));
  mm.reset();
  CHECK(!mm.has_data());
  CHECK(mm.counts().batches == 0);
}

TEST_CASE("calibrate() reports progress in [0, 1] and can be cancelled", "[observers][calibrate]") {
  std::vector<tensor<float, 2>> batches;
  for (int b = 0; b < 5; ++b) batches.emplace_back(extents<2>{3, 4}, static_cast<float>(b));
  SECTION("full run") {
    minmax_observer obs;
    std::vector<double> seen;
    const calibration_result r = calibrate(obs, batches, [&](double p) {
      seen.push_back(p);
      return true;
    });
    CHECK(!r.cancelled);
    CHECK(r.steps_done == 5);
    REQUIRE(seen.size() == 6);
    CHECK(seen.front() == 0.0);
    CHECK(seen.back() == 1.0);
    CHECK(std::is_sorted(seen.begin(), seen.end()));
    CHECK(obs.max()[0] == 4.0f);
  }
  SECTION("cancel after three batches keeps what was seen") {
    histogram_observer obs;
    const calibration_result r = calibrate(obs, batches, [](double p) { return p < 0.5; });
    CHECK(r.cancelled);
    CHECK(r.steps_done == 3);
    CHECK(obs.counts().batches == 3);
    CHECK(obs.histogram(0).max() == 2.0f);
    CHECK(obs.params(schemes::u8_asymmetric).scale[0] > 0.0f);
  }
  SECTION("cancel before starting") {
    minmax_observer obs;
    const calibration_result r = calibrate(obs, batches, [](double) { return false; });
    CHECK(r.cancelled);
    CHECK(r.steps_done == 0);
    CHECK(!obs.has_data());
  }
  SECTION("views, no callback, and a step function driving several observers") {
    std::vector<tensor_view<const float, 2>> views;
    for (const auto& b : batches) views.push_back(b.cview());
    minmax_observer a;
    CHECK(calibrate(a, views).steps_done == 5);
    minmax_observer b;
    histogram_observer c;
    int calls = 0;
    const calibration_result r = run_calibration(
        batches.size(),
        [&](std::size_t i) {
          b.observe(batches[i]);
          c.observe(batches[i]);
        },
        [&](double) { return ++calls > 0; });
    CHECK(r.steps_done == 5);
    CHECK(calls == 6);
    CHECK(c.histogram(0).total() == 60);
  }
}

namespace {
// A user-written observer: symmetric range mean +/- 4 standard deviations (no qlib base
// class, just the documented members).
struct sigma_observer {
  double sum = 0, sq = 0;
  index_t n = 0;
  template <class T, std::size_t R>
  void observe(tensor_view<T, R> x) {
    extents<R> idx{};
    if (x.empty()) return;
    do {
      const double v = x[idx];
      sum += v, sq += v * v, ++n;
    } while (detail::next_index(idx, x.shape()));
  }
  void merge(const sigma_observer& o) { sum += o.sum, sq += o.sq, n += o.n; }
  template <class S>
  quant_params params(const affine_scheme<S>& scheme) const {
    const double mean = sum / n, sd = std::sqrt(sq / n - mean * mean);
    const auto sz = choose_scale_zero_point(scheme, static_cast<float>(mean - 4 * sd), static_cast<float>(mean + 4 * sd));
    return quant_params::per_tensor(scheme, sz.scale, sz.zero_point);
  }
};
static_assert(can_observe<sigma_observer, 2>::value, "user observers satisfy the concept");
static_assert(can_observe<minmax_observer, 3>::value, "");
static_assert(can_observe<presets::pytorch::min_max_observer, 1>::value, "");
}  // namespace

TEST_CASE("a user-written observer plugs into calibrate() and quantize_observed()", "[observers][concept]") {
  std::vector<tensor<float, 1>> batches;
  for (int b = 0; b < 4; ++b) {
    tensor<float, 1> t(extents<1>{1000});
    const auto v = sample(std::normal_distribution<float>(0.0f, 2.0f), 1000, 20 + b);
    std::copy(v.begin(), v.end(), t.begin());
    batches.push_back(std::move(t));
  }
  sigma_observer s;
  CHECK(calibrate(s, batches).steps_done == 4);
  CHECK(s.n == 4000);
  const quant_params p = s.params(schemes::s8_symmetric);
  CHECK(p.scale[0] == Approx(8.0f / 127.0f).epsilon(0.1));
  // The same call quantizes with any observer.
  sigma_observer s2;
  minmax_observer m2;
  const auto q1 = quantize_observed(batches[0].cview(), schemes::s8_symmetric, s2);
  const auto q2 = quantize_observed(batches[0].cview(), schemes::s8_symmetric, m2);
  CHECK(q1.params.scale[0] < q2.params.scale[0] * 1.5f);
  CHECK(q2.values.size() == 1000);
}
