// Affine quantization: reference semantics, parameter choice, every ISA path against the
// reference on random shapes/strides/granularities, and every bad input.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "qlib/quantize.hpp"
#include "test_util.hpp"

using namespace qlib;
using qlib_test::rand_float;
using qlib_test::for_each_isa;
using qlib_test::rand_int;
using qlib_test::same_bits;

namespace {


// A random value mix: normal data, exact ties and grid points for the given scale,
// values far outside the range, and (optionally) NaN and +/-Inf.
float random_value(float scale, bool specials) {
  switch (rand_int(0, 9)) {
    case 0: return (static_cast<float>(rand_int(-300, 300)) + 0.5f) * scale;  // ties
    case 1: return static_cast<float>(rand_int(-300, 300)) * scale;           // grid
    case 2: return rand_float(-1e6f, 1e6f);
    case 3:
      if (specials) {
        const float s[] = {std::numeric_limits<float>::quiet_NaN(), INFINITY, -INFINITY, -0.0f, 0.0f};
        return s[rand_int(0, 4)];
      }
      return 0.0f;
    default: return rand_float(-200.0f, 200.0f) * scale;
  }
}

granularity affine_test_granularity(std::size_t rank) {
  return qlib_test::random_granularity(rank, [] { return rand_int(0, 3) == 0 ? rand_int(1, 5) : 16 * rand_int(1, 4); });
}

template <class Q>
affine_scheme<Q> random_scheme() {
  affine_scheme<Q> s;
  s.sym = rand_int(0, 1) ? symmetry::symmetric : symmetry::asymmetric;
  s.range = rand_int(0, 1) ? int_range::restricted : int_range::full;
  s.bits = rand_int(2, affine_scheme<Q>::max_bits);
  return s;
}

// Random parameters (not from data): scales over many magnitudes, zero points anywhere
// in the range.
template <class Q>
quant_params random_params(const affine_scheme<Q>& s, granularity g, index_t count) {
  std::vector<float> scales(static_cast<std::size_t>(count));
  std::vector<std::int32_t> zps(scales.size());
  for (std::size_t i = 0; i < scales.size(); ++i) {
    scales[i] = rand_int(0, 3) == 0 ? std::ldexp(1.0f, rand_int(-12, 4)) : std::exp(rand_float(-9.0f, 3.0f));
    zps[i] = s.sym == symmetry::symmetric ? s.symmetric_zero_point() : rand_int(s.qmin(), s.qmax());
  }
  return quant_params::make(s, g, scales, zps);
}

// A buffer holding a view of `shape` whose rows are padded (odd strides), or whose last
// two axes are transposed.
template <class T, std::size_t R>
struct strided_buffer {
  std::vector<T> data;
  tensor_view<T, R> view;
  strided_buffer(const extents<R>& shape, int layout) {
    extents<R> strides{};
    index_t s = 1;
    const index_t pad = layout == 1 ? rand_int(1, 7) : 0;
    for (std::size_t a = R; a-- > 0;) {
      strides[a] = s;
      s *= shape[a] + (a == R - 1 ? pad : 0);
    }
    if (layout == 2 && R >= 2) {  // column-major over the last two axes
      strides[R - 1] = shape[R - 2];
      strides[R - 2] = 1;
      index_t t = shape[R - 1] * shape[R - 2];
      for (std::size_t a = R - 2; a-- > 0;) {
        strides[a] = t;
        t *= shape[a];
      }
      s = t;
    }
    data.assign(static_cast<std::size_t>(s) + 8, T{});
    view = tensor_view<T, R>(data.data(), shape, strides);
  }
};

template <std::size_t R>
extents<R> random_shape() {
  extents<R> s;
  for (auto& e : s) e = rand_int(0, 3) == 0 ? rand_int(1, 3) : rand_int(1, 70);
  return s;
}

template <class Q, std::size_t R>
void compare_paths_once() {
  const extents<R> shape = random_shape<R>();
  const granularity g = affine_test_granularity(R);
  const affine_scheme<Q> scheme = random_scheme<Q>();
  const quant_params p = random_params(scheme, g, g.param_count(shape));
  const int layout_in = rand_int(0, 2), layout_out = rand_int(0, 2);
  INFO("shape " << detail::extents_string(shape) << " " << g.describe() << " bits " << scheme.bits << " layouts "
                << layout_in << "/" << layout_out);

  strided_buffer<float, R> x(shape, layout_in);
  {
    extents<R> idx{};
    do {
      x.view[idx] = random_value(p.scale[0], true);
    } while (detail::next_index(idx, shape));
  }
  strided_buffer<Q, R> q_ref(shape, 0), q(shape, layout_out);
  reference::quantize(tensor_view<const float, R>(x.view), q_ref.view, p);
  strided_buffer<float, R> d_ref(shape, 0), d(shape, layout_in);
  reference::dequantize(tensor_view<const Q, R>(q_ref.view), d_ref.view, p);
  strided_buffer<float, R> f_ref(shape, 0), f(shape, layout_out);
  reference::fake_quantize(tensor_view<const float, R>(x.view), f_ref.view, p);
  // requantize to another random scheme and granularity
  const granularity g2 = affine_test_granularity(R);
  const auto scheme2 = random_scheme<std::uint8_t>();
  const quant_params p2 = random_params(scheme2, g2, g2.param_count(shape));
  strided_buffer<std::uint8_t, R> r_ref(shape, 0), r(shape, layout_in);
  reference::requantize(tensor_view<const Q, R>(q_ref.view), p, r_ref.view, p2);

  for_each_isa([&](isa) {
    quantize(x.view, q.view, p);
    dequantize(q_ref.view, d.view, p);
    fake_quantize(x.view, f.view, p);
    requantize(q_ref.view, p, r.view, p2);
    extents<R> idx{};
    int bad = 0;
    do {
      if (q.view[idx] != q_ref.view[idx] && bad++ < 3)
        FAIL_CHECK("quantize at " << detail::extents_string(idx) << ": x=" << x.view[idx] << " got "
                                  << int(q.view[idx]) << " want " << int(q_ref.view[idx]));
      if (!same_bits(d.view[idx], d_ref.view[idx]) && bad++ < 3)
        FAIL_CHECK("dequantize at " << detail::extents_string(idx));
      if (!same_bits(f.view[idx], f_ref.view[idx]) && bad++ < 3)
        FAIL_CHECK("fake_quantize at " << detail::extents_string(idx) << ": x=" << x.view[idx] << " got "
                                       << f.view[idx] << " want " << f_ref.view[idx]);
      if (r.view[idx] != r_ref.view[idx] && bad++ < 3) FAIL_CHECK("requantize at " << detail::extents_string(idx));
    } while (detail::next_index(idx, shape));
    CHECK(bad == 0);
  });
}

}  // namespace

TEST_CASE("scheme ranges", "[affine][scheme]") {
  CHECK(schemes::s8_symmetric.qmin() == -127);
  CHECK(schemes::s8_symmetric.qmax() == 127);
  CHECK(schemes::s8_symmetric_full.qmin() == -128);
  CHECK(schemes::u8_asymmetric.qmin() == 0);
  CHECK(schemes::u8_asymmetric.qmax() == 255);
  CHECK(schemes::s4_symmetric.qmin() == -7);
  CHECK(schemes::s4_symmetric.qmax() == 7);
  CHECK(schemes::u4_asymmetric.qmax() == 15);
  CHECK(schemes::s16_symmetric.qmin() == -32767);
  affine_scheme<std::uint8_t> u8sym{symmetry::symmetric, 8, int_range::full};
  CHECK(u8sym.symmetric_zero_point() == 128);
  u8sym.range = int_range::restricted;
  CHECK(u8sym.qmin() == 1);
  CHECK(u8sym.symmetric_zero_point() == 128);
  CHECK(schemes::s8_symmetric_full.symmetric_zero_point() == 0);
  affine_scheme<std::int8_t> s2{symmetry::symmetric, 2, int_range::full};
  CHECK(s2.qmin() == -2);
  CHECK(s2.qmax() == 1);
  CHECK(s2.symmetric_zero_point() == 0);
}

TEST_CASE("round half to even and the scalar definition", "[affine][rounding]") {
  CHECK(round_half_even(0.5f) == 0.0f);
  CHECK(round_half_even(1.5f) == 2.0f);
  CHECK(round_half_even(2.5f) == 2.0f);
  CHECK(round_half_even(-0.5f) == 0.0f);
  CHECK(round_half_even(-1.5f) == -2.0f);
  CHECK(round_half_even(-2.5f) == -2.0f);
  CHECK(round_half_even(2.4999998f) == 2.0f);
  CHECK(round_half_even(8388607.5f) == 8388608.0f);
  CHECK(round_half_even(1e20f) == 1e20f);
  // NaN -> zero point, +Inf -> qmax, -Inf -> qmin (never a sign flip).
  CHECK(quantize_value(std::numeric_limits<float>::quiet_NaN(), 10.0f, 3, -128, 127) == 3);
  CHECK(quantize_value(INFINITY, 10.0f, 3, -128, 127) == 127);
  CHECK(quantize_value(-INFINITY, 10.0f, 3, -128, 127) == -128);
  CHECK(quantize_value(3e38f, 1e10f, 0, 0, 255) == 255);
  CHECK(quantize_value(-3e38f, 1e10f, 0, 0, 255) == 0);
  CHECK(quantize_value(0.25f, 2.0f, 0, -128, 127) == 0);  // 0.5 -> 0
  CHECK(quantize_value(0.75f, 2.0f, 0, -128, 127) == 2);  // 1.5 -> 2
  CHECK(quantize_value(-0.75f, 2.0f, 5, -128, 127) == 3);
}

TEST_CASE("parameter choice keeps real zero exact and covers the range", "[affine][params]") {
  SECTION("asymmetric u8") {
    const auto sz = choose_scale_zero_point(schemes::u8_asymmetric, -1.0f, 3.0f);
    CHECK(sz.scale == Approx(4.0f / 255.0f));
    CHECK(sz.zero_point == 64);  // 0 - round(-1 / (4/255)) = round(63.75)
    CHECK(dequantize_value(quantize_value(0.0f, 1.0f / sz.scale, sz.zero_point, 0, 255), sz.scale, sz.zero_point) ==
          0.0f);
  }
  SECTION("range widened to include zero") {
    const auto pos = choose_scale_zero_point(schemes::u8_asymmetric, 2.0f, 5.0f);
    CHECK(pos.zero_point == 0);
    CHECK(pos.scale == Approx(5.0f / 255.0f));
    const auto neg = choose_scale_zero_point(schemes::u8_asymmetric, -5.0f, -2.0f);
    CHECK(neg.zero_point == 255);
  }
  SECTION("symmetric: amax/127 restricted, amax/127.5 full") {
    CHECK(choose_scale_zero_point(schemes::s8_symmetric, -2.54f, 1.0f).scale == Approx(2.54f / 127.0f));
    CHECK(choose_scale_zero_point(schemes::s8_symmetric, -2.54f, 1.0f).zero_point == 0);
    CHECK(choose_scale_zero_point(schemes::s8_symmetric_full, -1.0f, 2.55f).scale == Approx(2.55f / 127.5f));
  }
  SECTION("min == max") {
    const auto z = choose_scale_zero_point(schemes::u8_asymmetric, 0.0f, 0.0f);
    CHECK(z.scale == 1.0f);
    CHECK(z.zero_point == 0);
    const auto c = choose_scale_zero_point(schemes::s8_asymmetric, 3.0f, 3.0f);
    CHECK(c.scale == Approx(3.0f / 255.0f));
    CHECK(quantize_value(3.0f, 1.0f / c.scale, c.zero_point, -128, 127) == 127);
    const auto s = choose_scale_zero_point(schemes::s8_symmetric, 0.0f, 0.0f);
    CHECK(s.scale == 1.0f);
    const auto tiny = choose_scale_zero_point(schemes::s8_symmetric, -1e-40f, 1e-40f);
    CHECK(tiny.scale == min_scale);
  }
}

TEST_CASE("round trips stay within half a step and grid points are exact", "[affine][roundtrip]") {
  for (int rep = 0; rep < 40; ++rep) {
    const extents<2> shape{rand_int(1, 20), rand_int(1, 90)};
    tensor<float, 2> x(shape);
    for (float& v : x) v = rand_float(-5.0f, 5.0f) * (rep % 4 + 1);
    const granularity grans[] = {granularity::per_tensor(), granularity::per_channel(0), granularity::per_channel(1),
                                 granularity::per_group(1, 32), granularity::per_group(0, 3)};
    for (const granularity& g : grans) {
      const auto s8 = quantize(x.cview(), schemes::s8_symmetric, g);
      const auto u8 = quantize(x.cview(), schemes::u8_asymmetric, g);
      const auto s4 = quantize(x.cview(), schemes::s4_symmetric, g);
      for (const auto* qt : {&s8.params, &u8.params, &s4.params}) (void)qt;
      const tensor<float, 2> d8 = s8.dequantize(), du = u8.dequantize(), d4 = s4.dequantize();
      detail::param_indexer<2> pi(g, shape);
      for (index_t i = 0; i < shape[0]; ++i)
        for (index_t j = 0; j < shape[1]; ++j) {
          const index_t k = pi.at({i, j});
          const float v = x(i, j);
          // Ranges come from the data, so every value is inside; a half step plus one
          // float rounding of the product.
          CHECK(std::fabs(v - d8(i, j)) <= s8.params.scale[k] * 0.5f * (1 + 1e-5f));
          CHECK(std::fabs(v - du(i, j)) <= u8.params.scale[k] * 0.5f * (1 + 1e-5f));
          CHECK(std::fabs(v - d4(i, j)) <= s4.params.scale[k] * 0.5f * (1 + 1e-5f));
        }
      // Dequantized values are grid points: quantizing them again is the identity.
      tensor<std::int8_t, 2> again(shape);
      quantize(d8.cview(), again.view(), s8.params);
      CHECK(std::memcmp(again.data(), s8.values.data(), static_cast<std::size_t>(again.size())) == 0);
    }
  }
}

TEST_CASE("every ISA path equals the reference bit for bit", "[affine][isa]") {
  INFO("supported: " << supported_isa_list());
  for (int rep = 0; rep < 60; ++rep) {
    compare_paths_once<std::int8_t, 1>();
    compare_paths_once<std::uint8_t, 2>();
    compare_paths_once<std::int8_t, 3>();
    compare_paths_once<std::int16_t, 2>();
    compare_paths_once<std::uint16_t, 1>();
  }
}

TEST_CASE("long rows hit the unrolled SIMD loops and every tail", "[affine][isa]") {
  for (index_t n : {1, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000, 4099}) {
    tensor<float, 1> x(extents<1>{n});
    for (float& v : x) v = random_value(0.05f, true);
    for (const granularity& g : {granularity::per_tensor(), granularity::per_group(0, 32),
                                 granularity::per_group(0, 17), granularity::per_channel(0)}) {
      const quant_params p = random_params(schemes::s8_asymmetric, g, g.param_count(x.shape()));
      tensor<std::int8_t, 1> want(x.shape()), got(x.shape());
      reference::quantize(x.cview(), want.view(), p);
      tensor<float, 1> dwant(x.shape()), dgot(x.shape());
      reference::dequantize(want.cview(), dwant.view(), p);
      for_each_isa([&](isa) {
        INFO("n " << n << " " << g.describe());
        quantize(x.cview(), got.view(), p);
        CHECK(std::memcmp(got.data(), want.data(), static_cast<std::size_t>(n)) == 0);
        dequantize(want.cview(), dgot.view(), p);
        CHECK(std::memcmp(dgot.data(), dwant.data(), sizeof(float) * static_cast<std::size_t>(n)) == 0);
      });
    }
  }
}

TEST_CASE("fake_quantize works in place", "[affine]") {
  tensor<float, 2> x({3, 50});
  for (float& v : x) v = rand_float(-3.0f, 3.0f);
  const quant_params p = choose_params(x.cview(), schemes::s8_symmetric, granularity::per_channel(0));
  tensor<float, 2> want(x.shape());
  reference::fake_quantize(x.cview(), want.view(), p);
  fake_quantize(x.view(), x.view(), p);
  CHECK(std::memcmp(x.data(), want.data(), sizeof(float) * 150) == 0);
}

TEST_CASE("a short last group is quantized with its own parameters", "[affine][group]") {
  tensor<float, 1> x(extents<1>{10});
  for (index_t i = 0; i < 10; ++i) x(i) = i < 8 ? 0.01f * static_cast<float>(i) : 100.0f * static_cast<float>(i);
  const auto q = quantize(x.cview(), schemes::s8_symmetric, granularity::per_group(0, 4));
  REQUIRE(q.params.size() == 3);
  CHECK(q.params.scale[2] == Approx(900.0f / 127.0f));
  CHECK(q.params.scale[0] == Approx(0.03f / 127.0f));
  QLIB_REQUIRE_ERROR(quantize(x.cview(), schemes::s8_symmetric, granularity::per_group(0, 4).require_divisible()),
                     errc::invalid_argument);
}

TEST_CASE("bad input is refused with a clear error", "[affine][errors]") {
  tensor<float, 2> x({4, 8}, 1.0f);
  tensor<std::int8_t, 2> q(x.shape());
  const quant_params ok = quant_params::per_tensor(schemes::s8_asymmetric, 0.1f, 0);

  SECTION("shapes") {
    tensor<std::int8_t, 2> wrong({4, 7});
    QLIB_REQUIRE_ERROR(quantize(x.cview(), wrong.view(), ok), errc::shape_mismatch);
    tensor<float, 2> empty({0, 8});
    tensor<std::int8_t, 2> qe({0, 8});
    QLIB_REQUIRE_ERROR(quantize(empty.cview(), qe.view(), ok), errc::empty_tensor);
    QLIB_REQUIRE_ERROR(quantize(empty.cview(), schemes::s8_symmetric, granularity::per_tensor()), errc::empty_tensor);
  }
  SECTION("granularity") {
    QLIB_REQUIRE_ERROR(quantize(x.cview(), schemes::s8_symmetric, granularity::per_channel(2)), errc::out_of_range);
    QLIB_REQUIRE_ERROR(quantize(x.cview(), schemes::s8_symmetric, granularity::per_group(1, 0)),
                       errc::invalid_argument);
    QLIB_REQUIRE_ERROR(quantize(x.cview(), schemes::s8_symmetric, granularity::per_group(1, 3).require_divisible()),
                       errc::invalid_argument);
    const quant_params pc = quant_params::make(schemes::s8_symmetric, granularity::per_channel(0), {1, 1, 1}, {0, 0, 0});
    QLIB_REQUIRE_ERROR(quantize(x.cview(), q.view(), pc), errc::shape_mismatch);
  }
  SECTION("bit width") {
    affine_scheme<std::int8_t> s9{symmetry::symmetric, 9, int_range::full};
    QLIB_REQUIRE_ERROR(quantize(x.cview(), s9, granularity::per_tensor()), errc::invalid_argument);
    affine_scheme<std::uint8_t> s1{symmetry::asymmetric, 1, int_range::full};
    QLIB_REQUIRE_ERROR(quantize(x.cview(), s1, granularity::per_tensor()), errc::invalid_argument);
    // a 16-bit range does not fit int8 storage
    const quant_params wide(granularity::per_tensor(), -1000, 1000, {0.1f}, {0});
    QLIB_REQUIRE_ERROR(quantize(x.cview(), q.view(), wide), errc::invalid_argument);
  }
  SECTION("scale and zero point") {
    for (float bad : {0.0f, -1.0f, 1e-40f}) {
      const quant_params p = quant_params::per_tensor(schemes::s8_asymmetric, bad, 0);
      QLIB_REQUIRE_ERROR(quantize(x.cview(), q.view(), p), errc::invalid_argument);
    }
    for (float bad : {INFINITY, std::numeric_limits<float>::quiet_NaN()}) {
      const quant_params p = quant_params::per_tensor(schemes::s8_asymmetric, bad, 0);
      QLIB_REQUIRE_ERROR(quantize(x.cview(), q.view(), p), errc::non_finite);
      QLIB_REQUIRE_ERROR(dequantize(q.cview(), x.view(), p), errc::non_finite);
    }
    QLIB_REQUIRE_ERROR(quantize(x.cview(), q.view(), quant_params::per_tensor(schemes::s8_asymmetric, 0.1f, 128)),
                       errc::invalid_argument);
    QLIB_REQUIRE_ERROR(quantize(x.cview(), q.view(), quant_params::per_tensor(schemes::s8_symmetric, 0.1f, -128)),
                       errc::invalid_argument);
    const quant_params mismatched(granularity::per_tensor(), -128, 127, {0.1f}, {});
    QLIB_REQUIRE_ERROR(quantize(x.cview(), q.view(), mismatched), errc::shape_mismatch);
  }
  SECTION("non-finite data and ranges") {
    x(1, 2) = std::numeric_limits<float>::quiet_NaN();
    QLIB_REQUIRE_ERROR(choose_params(x.cview(), schemes::s8_symmetric, granularity::per_tensor()), errc::non_finite);
    x(1, 2) = INFINITY;
    QLIB_REQUIRE_ERROR(choose_params(x.cview(), schemes::s8_symmetric, granularity::per_tensor()), errc::non_finite);
    QLIB_REQUIRE_ERROR(choose_scale_zero_point(schemes::s8_symmetric, 1.0f, -1.0f), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(choose_scale_zero_point(schemes::s8_symmetric, -INFINITY, 1.0f), errc::non_finite);
  }
  SECTION("requantize checks both sides") {
    tensor<std::uint8_t, 2> out(x.shape());
    const quant_params bad = quant_params::per_tensor(schemes::u8_asymmetric, 0.0f, 0);
    QLIB_REQUIRE_ERROR(requantize(q.cview(), ok, out.view(), bad), errc::invalid_argument);
    tensor<std::uint8_t, 2> small({2, 8});
    QLIB_REQUIRE_ERROR(requantize(q.cview(), ok, small.view(), ok), errc::shape_mismatch);
  }
}
