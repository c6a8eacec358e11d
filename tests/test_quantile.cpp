// Quantile (codebook) quantization: equal shares, every ISA path against the reference
// (one byte per index and packed), NF4 against its published codebook, Lloyd-Max, storage
// and every bad input.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "qlib/quant/quantile.hpp"
#include "qlib/quantize.hpp"
#include "test_util.hpp"

using namespace qlib;
using qlib_test::rand_float;
using qlib_test::for_each_isa;
using qlib_test::rand_int;
using qlib_test::same_bits;

namespace {


using qlib_test::qnan;

std::vector<float> normal(std::size_t n, unsigned seed, float sd = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

// Index counts per level of each group.
template <std::size_t R>
std::vector<std::vector<index_t>> level_counts(const tensor<std::uint8_t, R>& q, const codebook_params& p) {
  std::vector<std::vector<index_t>> c(static_cast<std::size_t>(p.size()),
                                      std::vector<index_t>(static_cast<std::size_t>(p.levels_per_codebook()), 0));
  const detail::param_indexer<R> pi(p.gran, q.shape());
  extents<R> idx{};
  do {
    ++c[static_cast<std::size_t>(pi.at(idx))][q.view()[idx]];
  } while (detail::next_index(idx, q.shape()));
  return c;
}

granularity codebook_test_granularity(std::size_t rank) {
  return qlib_test::random_granularity(rank, [] { return rand_int(0, 2) == 0 ? rand_int(1, 5) : 2 * rand_int(1, 40); });
}

// Random codebook parameters: per-group or shared codebooks, ascending levels and
// thresholds (some equal, some at +/-Inf), scales over many magnitudes.
codebook_params random_codebook(const granularity& g, index_t count, int bits) {
  codebook_params p;
  p.gran = g;
  p.bits = bits;
  p.shared = rand_int(0, 1) == 1;
  const index_t L = index_t{1} << bits, books = p.shared ? 1 : count;
  for (index_t b = 0; b < books; ++b) {
    std::vector<float> lv(static_cast<std::size_t>(L));
    for (float& v : lv) v = rand_int(0, 9) == 0 ? 0.0f : rand_float(-3.0f, 3.0f);
    std::sort(lv.begin(), lv.end());
    if (L > 2 && rand_int(0, 3) == 0) lv[1] = lv[0];  // a repeated level
    p.levels.insert(p.levels.end(), lv.begin(), lv.end());
    for (index_t i = 0; i + 1 < L; ++i) {
      float t = 0.5f * (lv[static_cast<std::size_t>(i)] + lv[static_cast<std::size_t>(i + 1)]);
      if (i == 0 && rand_int(0, 5) == 0) t = -INFINITY;
      p.thresholds.push_back(t);
    }
    if (rand_int(0, 5) == 0) p.thresholds.back() = INFINITY;
  }
  for (index_t k = 0; k < count; ++k)
    p.scale.push_back(rand_int(0, 3) == 0 ? 1.0f : std::exp(rand_float(-6.0f, 4.0f)));
  p.validate();
  return p;
}

// A value mix for codebook p: ordinary values, exact thresholds and levels times the
// scale (ties), huge values, NaN and +/-Inf.
float random_input(const codebook_params& p) {
  const index_t L = p.levels_per_codebook();
  switch (rand_int(0, 9)) {
    case 0: return p.thresholds[static_cast<std::size_t>(rand_int(0, static_cast<int>(p.thresholds.size()) - 1))];
    case 1: return p.levels[static_cast<std::size_t>(rand_int(0, static_cast<int>(p.levels.size()) - 1))];
    case 2: {
      const float s[] = {qnan, INFINITY, -INFINITY, -0.0f, 0.0f, 3e38f, -3e38f};
      return s[rand_int(0, 6)];
    }
    default: return rand_float(-4.0f, 4.0f) * p.scale[0] * (L > 2 ? 1.0f : 2.0f);
  }
}

template <class T, std::size_t R>
struct strided {
  std::vector<T> data;
  tensor_view<T, R> view;
  strided(const extents<R>& shape, int layout) {
    extents<R> st{};
    index_t s = 1;
    const index_t pad = layout == 1 ? rand_int(1, 5) : 0;
    for (std::size_t a = R; a-- > 0;) {
      st[a] = s;
      s *= shape[a] + (a == R - 1 ? pad : 0);
    }
    data.assign(static_cast<std::size_t>(s) + 4, T{});
    view = tensor_view<T, R>(data.data(), shape, st);
  }
};

template <std::size_t R>
void compare_paths_once() {
  extents<R> shape;
  for (auto& e : shape) e = rand_int(0, 3) == 0 ? rand_int(1, 3) : rand_int(1, 80);
  const granularity g = codebook_test_granularity(R);
  const int bits = rand_int(0, 2) == 0 ? rand_int(1, 8) : (rand_int(0, 1) ? 4 : 2);
  const codebook_params p = random_codebook(g, g.param_count(shape), bits);
  const int layout = rand_int(0, 1);
  INFO("shape " << detail::extents_string(shape) << " " << g.describe() << " bits " << bits << " shared "
                << p.shared << " layout " << layout);
  strided<float, R> x(shape, layout);
  strided<std::uint8_t, R> qraw(shape, layout);
  extents<R> idx{};
  do {
    x.view[idx] = random_input(p);
    qraw.view[idx] = static_cast<std::uint8_t>(rand_int(0, 255));  // bits above the codebook's too
  } while (detail::next_index(idx, shape));
  tensor<std::uint8_t, R> q_ref(shape), q(shape);
  reference::codebook_quantize(tensor_view<const float, R>(x.view), q_ref.view(), p);
  tensor<float, R> d_ref(shape), d(shape);
  reference::codebook_dequantize(tensor_view<const std::uint8_t, R>(qraw.view), d_ref.view(), p);
  tensor<float, R> dq_ref(shape);
  reference::codebook_dequantize(q_ref.cview(), dq_ref.view(), p);
  for_each_isa([&](isa) {
    quantize_codebook(tensor_view<const float, R>(x.view), q.view(), p);
    CHECK(std::memcmp(q.data(), q_ref.data(), static_cast<std::size_t>(q.size())) == 0);
    dequantize_codebook(tensor_view<const std::uint8_t, R>(qraw.view), d.view(), p);
    int bad = 0;
    for (index_t i = 0; i < d.size(); ++i)
      if (!same_bits(d.data()[i], d_ref.data()[i]) && bad++ < 3)
        FAIL_CHECK("dequantize element " << i << ": " << d.data()[i] << " want " << d_ref.data()[i]);
    if (bits <= 4) {
      packed_tensor<4, false, R> pk(shape);
      quantize_codebook(tensor_view<const float, R>(x.view), pk.view(), p);
      CHECK(std::memcmp(unpack(pk).data(), q_ref.data(), static_cast<std::size_t>(q.size())) == 0);
      strided<float, R> dp(shape, layout);
      dequantize_codebook(pk.cview(), dp.view, p);
      do {
        if (!same_bits(dp.view[idx], dq_ref.view()[idx]) && bad++ < 3)
          FAIL_CHECK("packed dequantize at " << detail::extents_string(idx));
      } while (detail::next_index(idx, shape));
    }
    if (bits <= 2) {
      packed_tensor<2, false, R> pk(shape);
      quantize_codebook(tensor_view<const float, R>(x.view), pk.view(), p);
      CHECK(std::memcmp(unpack(pk).data(), q_ref.data(), static_cast<std::size_t>(q.size())) == 0);
      tensor<float, R> dp(shape);
      dequantize_codebook(pk.cview(), dp.view(), p);
      CHECK(std::memcmp(dp.data(), dq_ref.data(), 4 * static_cast<std::size_t>(dp.size())) == 0);
    }
    CHECK(bad == 0);
  });
}

double mse(const std::vector<float>& x, const tensor<float, 1>& y) {
  double s = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double d = static_cast<double>(x[i]) - y.data()[i];
    s += d * d;
  }
  return s / static_cast<double>(x.size());
}

}  // namespace

TEST_CASE("equal-frequency codebooks: every level holds the same share, within one element", "[quantile][fit]") {
  for (int bits = 1; bits <= 8; ++bits) {
    for (index_t n : {index_t{5}, index_t{17}, index_t{1000}, index_t{1001}, index_t{4099}}) {
      INFO("bits " << bits << " n " << n);
      std::vector<float> v(static_cast<std::size_t>(n));
      for (float& x : v) x = rand_float(-5.0f, 5.0f) * rand_float(0.0f, 1.0f);  // distinct, non-uniform
      const tensor_view<const float, 1> xv(v.data(), extents<1>{n});
      const codebook_params p = fit_quantile_codebook(xv, granularity::per_tensor(), {bits, 0});
      tensor<std::uint8_t, 1> q(xv.shape());
      quantize_codebook(xv, q.view(), p);
      const auto c = level_counts(q, p)[0];
      CHECK(*std::max_element(c.begin(), c.end()) - *std::min_element(c.begin(), c.end()) <= 1);
      CHECK(std::is_sorted(p.levels.begin(), p.levels.end()));
      // Each level is the mean of the values in its bin.
      const index_t L = p.levels_per_codebook();
      for (index_t k = 0; k < L; ++k) {
        double sum = 0;
        index_t cnt = 0;
        for (index_t i = 0; i < n; ++i)
          if (q(i) == k) sum += v[static_cast<std::size_t>(i)], ++cnt;
        if (cnt) CHECK(p.levels[static_cast<std::size_t>(k)] == static_cast<float>(sum / static_cast<double>(cnt)));
      }
    }
  }
  SECTION("per-channel and per-group codebooks, each with equal shares") {
    tensor<float, 2> x({6, 200});
    for (float& v : x) v = rand_float(-1.0f, 1.0f) * rand_float(0.1f, 3.0f);
    for (const granularity& g : {granularity::per_channel(0), granularity::per_channel(1), granularity::per_group(1, 50),
                                 granularity::per_group(0, 4)}) {
      INFO(g.describe());
      const codebook_params p = fit_quantile_codebook(x.cview(), g, {3, 0});
      CHECK(p.size() == g.param_count(x.shape()));
      tensor<std::uint8_t, 2> q(x.shape());
      quantize_codebook(x.cview(), q.view(), p);
      for (const auto& c : level_counts(q, p))
        CHECK(*std::max_element(c.begin(), c.end()) - *std::min_element(c.begin(), c.end()) <= 1);
    }
  }
  SECTION("ties stay in one bin; a constant group is one repeated level") {
    std::vector<float> v(100, 1.0f);
    for (int i = 0; i < 30; ++i) v[static_cast<std::size_t>(i)] = static_cast<float>(i) * 0.01f;
    const codebook_params p = fit_quantile_codebook(make_view(v.data(), 100), granularity::per_tensor(), {2, 0});
    tensor<std::uint8_t, 1> q(extents<1>{100});
    quantize_codebook(make_view(v.data(), 100), q.view(), p);
    for (int i = 30; i < 100; ++i) CHECK(q(i) == q(30));
    CHECK(p.levels.back() == 1.0f);
    const std::vector<float> c(64, -2.5f);
    const codebook_params pc = fit_quantile_codebook(make_view(c.data(), 64), granularity::per_tensor(), {4, 0});
    for (float l : pc.levels) CHECK(l == -2.5f);
    tensor<std::uint8_t, 1> qc(extents<1>{64});
    quantize_codebook(make_view(c.data(), 64), qc.view(), pc);
    tensor<float, 1> dc(extents<1>{64});
    dequantize_codebook(qc.cview(), dc.view(), pc);
    for (float d : dc) CHECK(d == -2.5f);
  }
}

TEST_CASE("codebook quantize/dequantize: every ISA equals the reference bit for bit", "[quantile][isa]") {
  INFO("supported: " << supported_isa_list());
  for (int rep = 0; rep < 60; ++rep) {
    compare_paths_once<1>();
    compare_paths_once<2>();
    compare_paths_once<3>();
  }
}

TEST_CASE("codebook kernels: long rows and every tail", "[quantile][isa]") {
  for (index_t n : {1, 2, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 129, 1000, 4097, 9001}) {
    std::vector<float> x = normal(static_cast<std::size_t>(n), static_cast<unsigned>(n));
    x[0] = qnan;
    float amax = 1.0f;
    for (std::size_t i = 1; i < x.size(); ++i) amax = std::fmax(amax, std::fabs(x[i]));
    const tensor_view<const float, 1> xv(x.data(), extents<1>{n});
    for (const granularity& g : {granularity::per_tensor(), granularity::per_group(0, 64), granularity::per_group(0, 7)}) {
      const codebook_params pg =
          nf4_codebook_params(g, std::vector<float>(static_cast<std::size_t>(g.param_count(xv.shape())), amax));
      tensor<std::uint8_t, 1> want(xv.shape()), got(xv.shape());
      reference::codebook_quantize(xv, want.view(), pg);
      tensor<float, 1> dwant(xv.shape()), dgot(xv.shape());
      reference::codebook_dequantize(want.cview(), dwant.view(), pg);
      for_each_isa([&](isa) {
        INFO("n " << n << " " << g.describe());
        quantize_codebook(xv, got.view(), pg);
        CHECK(std::memcmp(got.data(), want.data(), static_cast<std::size_t>(n)) == 0);
        u4_tensor<1> pk(xv.shape());
        quantize_codebook(xv, pk.view(), pg);
        dequantize_codebook(pk.cview(), dgot.view(), pg);
        CHECK(std::memcmp(dgot.data(), dwant.data(), 4 * static_cast<std::size_t>(n)) == 0);
      });
    }
  }
}

TEST_CASE("NF4 round trip against the published codebook", "[quantile][nf4]") {
  // The published values (QLoRA / bitsandbytes), as float.
  const float published[16] = {-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
                               -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
                               0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f,
                               0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
                               0.7229568362236023f, 1.0f};
  const codebook_params p = nf4_codebook_params(granularity::per_tensor(), {2.5f});
  REQUIRE(p.shared);
  for (int i = 0; i < 16; ++i) CHECK(p.levels[static_cast<std::size_t>(i)] == published[i]);
  for (int i = 0; i < 15; ++i)
    CHECK(p.thresholds[static_cast<std::size_t>(i)] == Approx(0.5 * (published[i] + published[i + 1])).epsilon(1e-7));
  // Every code dequantizes to its level times the scale and quantizes back to itself.
  tensor<std::uint8_t, 1> codes(extents<1>{16});
  for (int i = 0; i < 16; ++i) codes(i) = static_cast<std::uint8_t>(i);
  tensor<float, 1> values(extents<1>{16});
  dequantize_codebook(codes.cview(), values.view(), p);
  for (int i = 0; i < 16; ++i) CHECK(values(i) == published[i] * 2.5f);
  u4_tensor<1> packed(extents<1>{16});
  quantize_codebook(values.cview(), packed.view(), p);
  for (int i = 0; i < 16; ++i) CHECK(packed.at({i}) == i);
  // Quantile data: nearest level, with exact absmax mapped to +/-1.
  tensor<float, 2> w({8, 128});
  const auto v = normal(static_cast<std::size_t>(w.size()), 5, 0.02f);
  std::copy(v.begin(), v.end(), w.begin());
  w(3, 7) = 0.0f;
  const codebook_tensor<4, 2> q = nf4_quantize(w.cview());
  CHECK(q.params.gran == granularity::per_group(1, 64));
  CHECK(q.indices.byte_size() == 8 * 64);
  const tensor<float, 2> d = q.dequantize();
  const detail::param_indexer<2> pi(q.params.gran, w.shape());
  for (index_t r = 0; r < 8; ++r)
    for (index_t c = 0; c < 128; ++c) {
      const float s = q.params.scale[static_cast<std::size_t>(pi.at({r, c}))];
      const float y = w(r, c) / s;
      float best = 1e9f;
      for (float l : published) best = std::fmin(best, std::fabs(y - l));
      CHECK(std::fabs(d(r, c) / s - y) <= best + 1e-6f);
    }
  CHECK(d(3, 7) == 0.0f);  // exact zero
  // An all-zero block gets scale 1 and the zero code.
  const tensor<float, 2> zeros({2, 64}, 0.0f);
  const codebook_tensor<4, 2> qz = nf4_quantize(zeros.cview());
  CHECK(qz.params.scale[0] == 1.0f);
  CHECK(qz.indices.at({1, 63}) == 7);
}

TEST_CASE("Lloyd-Max refinement lowers the error, toward Max's optimum for a normal", "[quantile][lloyd]") {
  const std::vector<float> v = normal(100000, 9);
  const tensor_view<const float, 1> xv(v.data(), extents<1>{100000});
  double prev = INFINITY;
  for (int it : {0, 1, 3, 10, 40}) {
    const codebook_tensor<4, 1> q = quantile_quantize<4>(xv, granularity::per_tensor(), it);
    const double e = mse(v, q.dequantize());
    INFO("iterations " << it << " mse " << e);
    CHECK(e <= prev * (1 + 1e-9));
    prev = e;
  }
  // Max (1960): the 16-level MSE-optimal quantizer of N(0, 1) has MSE 0.009497.
  CHECK(prev == Approx(0.009497).epsilon(0.05));
}

TEST_CASE("codebook storage: packed 4/2-bit indices, bytes otherwise", "[quantile][storage]") {
  tensor<float, 2> x({5, 33});
  for (float& v : x) v = rand_float(-1.0f, 1.0f);
  const auto q4 = quantile_quantize<4>(x.cview(), granularity::per_channel(0));
  const auto q2 = quantile_quantize<2>(x.cview(), granularity::per_tensor());
  const auto q3 = quantile_quantize<3>(x.cview(), granularity::per_group(1, 8));
  CHECK(q4.indices.byte_size() == 5 * 17);
  CHECK(q2.indices.byte_size() == 5 * 9);
  CHECK(q3.indices.size() == 5 * 33);
  CHECK(q4.storage_bytes() == 5 * 17 + 4 * (5 * 16 + 5 * 15 + 5));
  // Padding bits of a packed row are zero (the packed_int layout).
  CHECK((q4.indices.row(0)[16] & 0xf0) == 0);
  for (const auto* d : {&q4.params, &q2.params, &q3.params}) CHECK(d->scale[0] == 1.0f);
  // 16 levels per channel beat 4 levels for the whole tensor; 8 levels per group of 8
  // values are exact.
  const tensor<float, 2> d4 = q4.dequantize(), d2 = q2.dequantize(), d3 = q3.dequantize();
  double e4 = 0, e2 = 0, e3 = 0;
  for (index_t i = 0; i < x.size(); ++i) {
    e4 += std::pow(x.data()[i] - d4.data()[i], 2);
    e2 += std::pow(x.data()[i] - d2.data()[i], 2);
    e3 += std::pow(x.data()[i] - d3.data()[i], 2);
  }
  CHECK(e4 < e2);
  CHECK(e3 == 0.0);
}

TEST_CASE("quantile quantization refuses bad input", "[quantile][errors]") {
  tensor<float, 2> x({4, 8}, 1.0f);
  tensor<std::uint8_t, 2> q(x.shape());
  QLIB_REQUIRE_ERROR(fit_quantile_codebook(x.cview(), granularity::per_tensor(), {0, 0}), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(fit_quantile_codebook(x.cview(), granularity::per_tensor(), {9, 0}), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(fit_quantile_codebook(x.cview(), granularity::per_tensor(), {4, -1}), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(fit_quantile_codebook(x.cview(), granularity::per_channel(2), {4, 0}), errc::out_of_range);
  const tensor<float, 2> empty({0, 8});
  QLIB_REQUIRE_ERROR(fit_quantile_codebook(empty.cview(), granularity::per_tensor(), {4, 0}), errc::empty_tensor);
  x(1, 1) = qnan;
  QLIB_REQUIRE_ERROR(fit_quantile_codebook(x.cview(), granularity::per_tensor(), {4, 0}), errc::non_finite);
  QLIB_REQUIRE_ERROR(nf4_params(x.cview(), granularity::per_tensor()), errc::non_finite);
  for (float& v : x) v = rand_float(-1.0f, 1.0f);
  codebook_params p = fit_quantile_codebook(x.cview(), granularity::per_channel(0), {4, 0});
  QLIB_REQUIRE_ERROR(quantize_codebook(x.cview(), tensor<std::uint8_t, 2>({4, 7}).view(), p), errc::shape_mismatch);
  tensor<float, 2> xt({8, 4}, 1.0f);
  tensor<std::uint8_t, 2> qt(xt.shape());
  QLIB_REQUIRE_ERROR(quantize_codebook(xt.cview(), qt.view(), p), errc::shape_mismatch);  // 8 channels, 4 scales
  u2_tensor<2> too_narrow(x.shape());
  QLIB_REQUIRE_ERROR(quantize_codebook(x.cview(), too_narrow.view(), p), errc::invalid_argument);
  codebook_params bad = p;
  std::swap(bad.thresholds[0], bad.thresholds[5]);
  QLIB_REQUIRE_ERROR(quantize_codebook(x.cview(), q.view(), bad), errc::invalid_argument);
  bad = p;
  bad.levels[3] = qnan;
  QLIB_REQUIRE_ERROR(dequantize_codebook(q.cview(), x.view(), bad), errc::non_finite);
  bad = p;
  bad.scale[0] = 0.0f;
  QLIB_REQUIRE_ERROR(quantize_codebook(x.cview(), q.view(), bad), errc::invalid_argument);
  bad = p;
  bad.levels.pop_back();
  QLIB_REQUIRE_ERROR(quantize_codebook(x.cview(), q.view(), bad), errc::shape_mismatch);
  bad = p;
  bad.bits = 0;
  QLIB_REQUIRE_ERROR(quantize_codebook(x.cview(), q.view(), bad), errc::invalid_argument);
}
