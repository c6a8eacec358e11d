// int8 GEMM: every bad input is refused at the API boundary with a clear error code.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "gemm_test_util.hpp"

using namespace qlib;
using namespace gemm_test;

namespace {
quant_params per_tensor_params() { return quant_params(granularity::per_tensor(), -128, 127, {1.0f}, {0}); }
}  // namespace

TEST_CASE("gemm errors: pack", "[gemm][errors]") {
  tensor<std::int8_t, 2> b({8, 5}, std::int8_t{1});
  SECTION("empty weights") {
    tensor<std::int8_t, 2> no_k({0, 5}), no_n({8, 0});
    QLIB_REQUIRE_ERROR(gemm::pack(no_k.cview()), errc::empty_tensor);
    QLIB_REQUIRE_ERROR(gemm::pack(no_n.cview()), errc::empty_tensor);
  }
  SECTION("granularity other than per-tensor or per-channel along N") {
    QLIB_REQUIRE_ERROR(gemm::pack(b.cview(), quant_params(granularity::per_channel(0), -128, 127,
                                                          std::vector<float>(8, 1.0f), std::vector<std::int32_t>(8, 0))),
                       errc::unsupported);
    QLIB_REQUIRE_ERROR(gemm::pack(b.cview(), quant_params(granularity::per_group(0, 4), -128, 127,
                                                          std::vector<float>(10, 1.0f), std::vector<std::int32_t>(10, 0))),
                       errc::unsupported);
  }
  SECTION("parameter count, range, scale, zero point") {
    QLIB_REQUIRE_ERROR(gemm::pack(b.cview(), quant_params(granularity::per_channel(1), -128, 127,
                                                          std::vector<float>(4, 1.0f), std::vector<std::int32_t>(4, 0))),
                       errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(gemm::pack(b.cview(), quant_params(granularity::per_tensor(), 0, 255, {1.0f}, {0})),
                       errc::invalid_argument);
    QLIB_REQUIRE_ERROR(gemm::pack(b.cview(), quant_params(granularity::per_tensor(), -128, 127, {NAN}, {0})),
                       errc::non_finite);
    QLIB_REQUIRE_ERROR(gemm::pack(b.cview(), quant_params(granularity::per_tensor(), -128, 127, {0.0f}, {0})),
                       errc::invalid_argument);
    QLIB_REQUIRE_ERROR(gemm::pack(b.cview(), quant_params(granularity::per_tensor(), -127, 127, {1.0f}, {-128})),
                       errc::invalid_argument);
  }
}

TEST_CASE("gemm errors: shapes, strides, zero points, threads", "[gemm][errors]") {
  const index_t m = 4, k = 8, n = 5;
  tensor<std::uint8_t, 2> a({m, k}, 1);
  tensor<std::int8_t, 2> as({m, k}, 1);
  tensor<std::int8_t, 2> b({k, n}, std::int8_t{1});
  const auto w = gemm::pack(b.cview());
  tensor<std::int32_t, 2> c({m, n});

  SECTION("a default-constructed packed_weights") {
    QLIB_REQUIRE_ERROR(gemm::gemm(a.cview(), {0}, gemm::packed_weights{}, c.view()), errc::invalid_argument);
  }
  SECTION("K of A and B differ; C has the wrong shape") {
    tensor<std::uint8_t, 2> a7({m, 7});
    QLIB_REQUIRE_ERROR(gemm::gemm(a7.cview(), {0}, w, c.view()), errc::shape_mismatch);
    tensor<std::int32_t, 2> c_rows({m + 1, n}), c_cols({m, n - 1});
    QLIB_REQUIRE_ERROR(gemm::gemm(a.cview(), {0}, w, c_rows.view()), errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(gemm::gemm(a.cview(), {0}, w, c_cols.view()), errc::shape_mismatch);
  }
  SECTION("rows of A or C not contiguous, C rows overlapping") {
    tensor<std::uint8_t, 2> at({k, m});
    QLIB_REQUIRE_ERROR(gemm::gemm(at.cview().transpose(0, 1), {0}, w, c.view()), errc::invalid_argument);
    tensor<std::int32_t, 2> ct({n, m});
    QLIB_REQUIRE_ERROR(gemm::gemm(a.cview(), {0}, w, ct.view().transpose(0, 1)), errc::invalid_argument);
    std::vector<std::int32_t> buf(64);
    tensor_view<std::int32_t, 2> overlapping(buf.data(), {m, n}, {n - 1, 1});
    QLIB_REQUIRE_ERROR(gemm::gemm(a.cview(), {0}, w, overlapping), errc::invalid_argument);
  }
  SECTION("activation zero point outside its type") {
    QLIB_REQUIRE_ERROR(gemm::gemm(a.cview(), {-1}, w, c.view()), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(gemm::gemm(a.cview(), {256}, w, c.view()), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(gemm::gemm(as.cview(), {128}, w, c.view()), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(gemm::gemm(as.cview(), {-129}, w, c.view()), errc::invalid_argument);
  }
  SECTION("thread count") {
    gemm::gemm_options opt;
    opt.threads = 0;
    QLIB_REQUIRE_ERROR(gemm::gemm(a.cview(), {0}, w, c.view(), opt), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(thread_pool(0), errc::invalid_argument);
  }
  SECTION("an ISA this CPU cannot run, chosen statically") {
    for (isa i : all_isas) {
      const bool arm = i == isa::neon || i == isa::neon_dotprod;
      if (isa_supported(i) || (QLIB_ARCH_X86_64 && arm) || (QLIB_ARCH_AARCH64 && !arm && i != isa::portable)) continue;
      INFO("isa " << isa_name(i));
      QLIB_REQUIRE_ERROR(dispatch_isa(i, [&](auto tag) { gemm::gemm(tag, a.cview(), {0}, w, std::tuple<>{}, c.view()); }),
                         errc::unsupported);
    }
  }
  SECTION("M = 0 is an empty batch, not an error") {
    tensor<std::uint8_t, 2> a0({0, k});
    tensor<std::int32_t, 2> c0({0, n});
    gemm::gemm(a0.cview(), {0}, w, c0.view());
  }
}

TEST_CASE("gemm errors: int32 overflow is refused, never computed wrong", "[gemm][errors][overflow]") {
  const index_t k = 70000;  // past 65,793 with worst-case weights
  tensor<std::uint8_t, 2> a({1, k}, 255);
  tensor<std::int8_t, 2> b({k, 1}, std::int8_t{-128});
  const auto w = gemm::pack(b.cview());
  tensor<std::int32_t, 2> c({1, 1});
  QLIB_REQUIRE_ERROR(gemm::gemm(a.cview(), {0}, w, c.view()), errc::overflow);
  // The reference refuses the same input for its actual value.
  QLIB_REQUIRE_ERROR(gemm::reference::gemm(a.cview(), 0, b.cview(), per_tensor_params(), std::tuple<>{}, c.view()),
                     errc::overflow);
  // The bound covers any activation of the type: with za = 128, |a - za| <= 128 and
  // 128 * 128 * 70000 fits, so the same K is accepted (and exact).
  gemm::gemm(a.cview(), {128}, w, c.view());
  CHECK(c(0, 0) == -127 * 128 * k);
  // Weight zero points count too: |b - zb| up to 255 halves the safe K.
  tensor<std::int8_t, 2> b2({40000, 1}, std::int8_t{-128});
  tensor<std::uint8_t, 2> a2({1, 40000}, 255);
  const auto w2 = gemm::pack(b2.cview(), quant_params(granularity::per_tensor(), -128, 127, {1.0f}, {127}));
  QLIB_REQUIRE_ERROR(gemm::gemm(a2.cview(), {0}, w2, c.view()), errc::overflow);
}

TEST_CASE("gemm errors: pipeline stages", "[gemm][errors][stages]") {
  const index_t m = 2, k = 4, n = 3;
  tensor<std::uint8_t, 2> a({m, k}, 1);
  tensor<std::int8_t, 2> b({k, n}, std::int8_t{1});
  const auto w = gemm::pack(b.cview());
  tensor<std::int32_t, 2> c({m, n});
  tensor<std::int8_t, 2> c8({m, n});
  tensor<float, 2> cf({m, n});
  const std::int32_t good3[] = {1, 2, 3};
  const float scales3[] = {1.0f, 2.0f, 3.0f};
  using fpr = fixed_point_rounding;
  using rq = gemm::requantize_fixed_point<fpr::double_rounding>;
  using rqc = gemm::requantize_fixed_point_per_channel<fpr::single_rounding>;
  auto run = [&](const auto& pipeline, auto& out) { gemm::gemm(a.cview(), {0}, w, pipeline, out.view()); };

  SECTION("per-channel arrays: null or the wrong length") {
    QLIB_REQUIRE_ERROR(run(gemm::make_pipeline(gemm::bias_add{nullptr, 3}), c), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(run(gemm::make_pipeline(gemm::bias_add{good3, 2}), c), errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(run(gemm::make_pipeline(rqc{good3, good3, 4, 0}), c), errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(run(gemm::make_pipeline(rqc{good3, nullptr, 3, 0}), c), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(run(gemm::make_pipeline(gemm::requantize_float_per_channel{scales3, 1, 0, -128, 127}), c),
                       errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(run(gemm::make_pipeline(gemm::dequantize_per_channel{1.0f, nullptr, 3}), cf),
                       errc::invalid_argument);
  }
  SECTION("fixed-point multiplier and shift") {
    QLIB_REQUIRE_ERROR(run(gemm::make_pipeline(rq{-1, 0, 0}), c), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(run(gemm::make_pipeline(rq{1 << 30, 31, 0}), c), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(run(gemm::make_pipeline(rq{1 << 30, -32, 0}), c), errc::invalid_argument);
    const std::int32_t bad_shift[] = {0, 0, 40};
    QLIB_REQUIRE_ERROR(run(gemm::make_pipeline(rqc{good3, bad_shift, 3, 0}), c), errc::invalid_argument);
  }
  SECTION("float requantize") {
    QLIB_REQUIRE_ERROR(run(gemm::make_pipeline(gemm::requantize_float{0.0f, 0, -128, 127}), c), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(run(gemm::make_pipeline(gemm::requantize_float{NAN, 0, -128, 127}), c), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(run(gemm::make_pipeline(gemm::requantize_float{1.0f, 0, 10, 5}), c), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(run(gemm::make_pipeline(gemm::requantize_float{1.0f, 0, -(1 << 24), 0}), c),
                       errc::invalid_argument);
    QLIB_REQUIRE_ERROR(run(gemm::make_pipeline(gemm::requantize_float{1.0f, 300, -128, 127}), c),
                       errc::invalid_argument);
    const float bad[] = {1.0f, -1.0f, 1.0f};
    QLIB_REQUIRE_ERROR(run(gemm::make_pipeline(gemm::requantize_float_per_channel{bad, 3, 0, -128, 127}), c),
                       errc::invalid_argument);
  }
  SECTION("clamps and scales") {
    QLIB_REQUIRE_ERROR(run(gemm::make_pipeline(gemm::clamp{5, 4}), c), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(run(gemm::make_pipeline(gemm::dequantize{1.0f}, gemm::clamp_float{NAN, 1.0f}), cf),
                       errc::invalid_argument);
    QLIB_REQUIRE_ERROR(run(gemm::make_pipeline(gemm::dequantize{1.0f}, gemm::clamp_float{2.0f, 1.0f}), cf),
                       errc::invalid_argument);
    QLIB_REQUIRE_ERROR(run(gemm::make_pipeline(gemm::dequantize{INFINITY}), cf), errc::non_finite);
    const float inf_scale[] = {1.0f, INFINITY, 1.0f};
    QLIB_REQUIRE_ERROR(run(gemm::make_pipeline(gemm::dequantize_per_channel{1.0f, inf_scale, 3}), cf),
                       errc::non_finite);
    QLIB_REQUIRE_ERROR(gemm::relu6(0, 0.0f), errc::invalid_argument);
  }
  SECTION("an int32 stage after one of unknown range") {
    // A saturating requantize can produce INT32_MAX, so a bias after it could overflow.
    QLIB_REQUIRE_ERROR(run(gemm::make_pipeline(rq{1 << 30, 0, 0}, gemm::bias_add{good3, 3}, gemm::saturating_cast<std::int8_t>{}), c8),
                       errc::overflow);
  }
  SECTION("quantize_multiplier") {
    QLIB_REQUIRE_ERROR(quantize_multiplier(-1.0), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(quantize_multiplier(NAN), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(quantize_multiplier(std::ldexp(1.0, 30)), errc::invalid_argument);
  }
}
