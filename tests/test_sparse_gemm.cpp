// Sparse int8 GEMMs (N:M and block-sparse weights): bit-exact vs the dense reference on every ISA, and refusals.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "gemm_test_util.hpp"
#include "qlib/gemm.hpp"
#include "qlib/prune/sparse_block.hpp"
#include "qlib/prune/sparse_nm.hpp"

using namespace qlib;
using gemm_test::strided_matrix;
using qlib_test::rand_int;

namespace {

// Random int8 weights (K x N) whose zeros follow n:m along K: each group of m keeps a
// random number of non-zeros in [0, n] (exactly n when `full`), at random places;
// values anywhere in [-128, 127] without 0.
tensor<std::int8_t, 2> random_nm(index_t k, index_t n, int keep, int group, bool full) {
  tensor<std::int8_t, 2> b({k, n});
  for (index_t j = 0; j < n; ++j)
    for (index_t k0 = 0; k0 < k; k0 += group) {
      const int len = static_cast<int>(std::min<index_t>(group, k - k0));
      std::vector<int> pos(static_cast<std::size_t>(len));
      for (int i = 0; i < len; ++i) pos[static_cast<std::size_t>(i)] = i;
      for (int i = len - 1; i > 0; --i) std::swap(pos[static_cast<std::size_t>(i)], pos[static_cast<std::size_t>(rand_int(0, i))]);
      const int count = std::min(len, full ? keep : rand_int(0, keep));
      for (int i = 0; i < len; ++i) b(k0 + i, j) = 0;
      for (int i = 0; i < count; ++i) {
        int v = rand_int(-128, 126);
        b(k0 + pos[static_cast<std::size_t>(i)], j) = static_cast<std::int8_t>(v >= 0 ? v + 1 : v);
      }
    }
  return b;
}

// Random int8 weights whose 4 x 16 blocks (k groups x column strips) are each kept with
// probability `density` (kept blocks hold random values, zeros included).
tensor<std::int8_t, 2> random_blocks(index_t k, index_t n, double density) {
  tensor<std::int8_t, 2> b({k, n});
  for (index_t g = 0; g < k; g += 4)
    for (index_t s = 0; s < n; s += 16) {
      const bool kept = qlib_test::rand_float(0.0f, 1.0f) < density;
      for (index_t kk = g; kk < std::min(k, g + 4); ++kk)
        for (index_t j = s; j < std::min(n, s + 16); ++j)
          b(kk, j) = kept ? static_cast<std::int8_t>(rand_int(-128, 127)) : std::int8_t{0};
    }
  return b;
}

bool same_matrix(const tensor<std::int8_t, 2>& x, const tensor<std::int8_t, 2>& y) {
  return x.shape(0) == y.shape(0) && x.shape(1) == y.shape(1) && std::equal(x.begin(), x.end(), y.begin());
}

quant_params weight_params(index_t n, int kind) {
  switch (kind) {
    case 0: return quant_params(granularity::per_tensor(), -128, 127, {1.0f}, {0});
    case 1: return quant_params(granularity::per_tensor(), -128, 127, {0.5f}, {rand_int(-5, 5)});
    default: {
      std::vector<float> s(static_cast<std::size_t>(n));
      std::vector<std::int32_t> z(static_cast<std::size_t>(n));
      for (auto& v : s) v = qlib_test::rand_float(0.01f, 1.0f);
      for (auto& v : z) v = rand_int(-3, 3);
      return quant_params(granularity::per_channel(1), -128, 127, s, z);
    }
  }
}

// Runs sparse(a, ap, pipeline, c, opt) on every ISA and thread count 1..3 and compares C
// (and the guard elements around it) with gemm::reference::gemm on the dense B.
template <class Act, class Run, class Pipeline>
void check_case(index_t m, const tensor<std::int8_t, 2>& b, const quant_params& wp, std::int32_t za,
                const Pipeline& pipeline, const Run& sparse) {
  using Out = gemm::pipeline_output_t<Pipeline>;
  const index_t k = b.shape(0), n = b.shape(1);
  strided_matrix<Act> a(m, k, k + rand_int(0, 3));
  for (auto& v : a.buf) v = gemm_test::random_value<Act>();
  tensor<Out, 2> want({m, n});
  gemm::reference::gemm(a.cview(), za, b.cview(), wp, pipeline, want.view());
  const Out sentinel = gemm_test::sentinel_value<Out>();
  qlib_test::for_each_isa([&](isa i) {
    for (int threads = 1; threads <= 3; ++threads) {
      INFO("M K N = " << m << " " << k << " " << n << ", za " << za << ", threads " << threads << ", isa "
                      << isa_name(i));
      strided_matrix<Out> c(m, n, n + rand_int(0, 2), sentinel);
      gemm::gemm_options opt;
      opt.threads = threads;
      sparse(a.cview(), gemm::activation_params{za}, pipeline, c.view(), opt);
      const std::string diff = gemm_test::compare(c, want, sentinel);
      CHECK(diff == "");
      if (!diff.empty()) return;
    }
  });
}

// The pipelines of the test: int32 out, requantize to uint8, dequantize to float.
template <class Act, class Run>
void check_pipelines(index_t m, const tensor<std::int8_t, 2>& b, const quant_params& wp, const Run& sparse) {
  const index_t n = b.shape(1);
  const std::int32_t za = std::is_signed<Act>::value ? rand_int(-20, 20) : rand_int(0, 255);
  std::vector<std::int32_t> bias(static_cast<std::size_t>(n));
  for (auto& v : bias) v = rand_int(-5000, 5000);
  switch (rand_int(0, 2)) {
    case 0: return check_case<Act>(m, b, wp, za, std::tuple<>{}, sparse);
    case 1:
      return check_case<Act>(m, b, wp, za,
                             gemm::make_pipeline(gemm::bias_add{bias.data(), n},
                                                 gemm::requantize_float{0.0007f, 128, 0, 255},
                                                 gemm::saturating_cast<std::uint8_t>{}),
                             sparse);
    default:
      return check_case<Act>(m, b, wp, za, gemm::make_pipeline(gemm::dequantize{0.002f}), sparse);
  }
}

}  // namespace

TEST_CASE("sparse_gemm N:M equals the dense reference on every ISA", "[sparse][nm]") {
  const int patterns[][2] = {{2, 4}, {1, 4}, {2, 8}, {4, 8}, {1, 8}, {1, 2}, {3, 4}, {4, 4}};
  for (int it = 0; it < 3 * QLIB_GEMM_TEST_SCALE; ++it) {
    const auto& pat = patterns[it % 8];
    // K around the window (16) and group sizes, M around the tile heights, N around 16-64 tails.
    const index_t k = rand_int(0, 3) == 0 ? rand_int(1, 20) : rand_int(1, 150);
    const index_t n = rand_int(0, 2) == 0 ? rand_int(1, 70) : rand_int(60, 140);
    const index_t m = rand_int(1, 14);
    const auto b = random_nm(k, n, pat[0], pat[1], rand_int(0, 1) == 0);
    const auto wp = weight_params(n, rand_int(0, 2));
    INFO(pat[0] << ":" << pat[1]);
    const auto w = prune::pack_nm(b.cview(), pat[0], pat[1], wp);
    CHECK(same_matrix(prune::unpack(w), b));
    auto run = [&](auto a, gemm::activation_params ap, const auto& pipe, auto c, gemm::gemm_options opt) {
      prune::sparse_gemm(a, ap, w, pipe, c, opt);
    };
    if (rand_int(0, 1)) check_pipelines<std::uint8_t>(m, b, wp, run);
    else check_pipelines<std::int8_t>(m, b, wp, run);
  }
}

TEST_CASE("sparse_gemm N:M on every tile width and height of the AVX-512 kernel", "[sparse][nm]") {
  // Panels with 1-16, 17-32, 33-48 and 49-64 real columns take the 10 x 16, 8 x 32,
  // 7 x 48 and 5 x 64 tiles; M from 1 to 11 takes each full height, the shorter ones
  // below it and a partial last tile. int32 output, so every sum is compared.
  const index_t k = 40;
  for (const index_t n : {9, 16, 25, 32, 41, 48, 57, 64})
    for (index_t m = 1; m <= 11; ++m) {
      const auto b = random_nm(k, n, 2, 4, true);
      const auto wp = weight_params(n, 0);
      const auto w = prune::pack_nm(b.cview(), 2, 4, wp);
      auto run = [&](auto a, gemm::activation_params ap, const auto& pipe, auto c, gemm::gemm_options opt) {
        prune::sparse_gemm(a, ap, w, pipe, c, opt);
      };
      check_case<std::uint8_t>(m, b, wp, rand_int(0, 255), std::tuple<>{}, run);
    }
}

TEST_CASE("sparse_gemm N:M over several row blocks (each copied for the AVX-512 kernel)", "[sparse][nm]") {
  // K = 2100 makes the driver's row blocks 144 rows (gemm::detail::row_block_rows, at
  // its floor), so M = 300 runs three blocks, the last one 12 rows; K is not a multiple
  // of 16 either. N = 20: one 16-column group and a tail (the case is slow under ASan
  // otherwise).
  const index_t k = 2100, n = 20, m = 300;
  REQUIRE(gemm::detail::row_block_rows(k) == gemm::detail::min_row_block);
  REQUIRE(gemm::detail::row_block_rows(k) < m / 2);
  const auto b = random_nm(k, n, 2, 4, true);
  const auto wp = weight_params(n, 0);
  const auto w = prune::pack_nm(b.cview(), 2, 4, wp);
  auto run = [&](auto a, gemm::activation_params ap, const auto& pipe, auto c, gemm::gemm_options opt) {
    prune::sparse_gemm(a, ap, w, pipe, c, opt);
  };
  check_case<std::int8_t>(m, b, wp, 3, std::tuple<>{}, run);
  check_case<std::uint8_t>(m, b, wp, 200, std::tuple<>{}, run);
}

TEST_CASE("sparse_block_gemm equals the dense reference on every ISA", "[sparse][block]") {
  const double densities[] = {0.0, 0.1, 0.5, 1.0, 0.3};
  for (int it = 0; it < 3 * QLIB_GEMM_TEST_SCALE; ++it) {
    const double density = densities[it % 5];
    const index_t k = rand_int(0, 3) == 0 ? rand_int(1, 12) : rand_int(1, 150);
    const index_t n = rand_int(0, 2) == 0 ? rand_int(1, 70) : rand_int(60, 140);
    const index_t m = rand_int(1, 30);
    const auto b = random_blocks(k, n, density);
    const auto wp = weight_params(n, rand_int(0, 2));
    INFO("density " << density);
    const auto w = prune::pack_block(b.cview(), wp);
    CHECK(same_matrix(prune::unpack(w), b));
    auto run = [&](auto a, gemm::activation_params ap, const auto& pipe, auto c, gemm::gemm_options opt) {
      prune::sparse_block_gemm(a, ap, w, pipe, c, opt);
    };
    if (rand_int(0, 1)) check_pipelines<std::uint8_t>(m, b, wp, run);
    else check_pipelines<std::int8_t>(m, b, wp, run);
  }
}

TEST_CASE("unpack_panel gives gemm::pack's bytes of the masked weights (the densified kernels' input)",
          "[sparse][densified]") {
  for (int it = 0; it < 12; ++it) {
    const index_t k = rand_int(1, 90), n = rand_int(1, 150);  // K and N tails of every kind
    INFO("K " << k << ", N " << n);
    const auto check_panels = [&](const tensor<std::int8_t, 2>& b, const auto& w) {
      const auto dense = gemm::pack(b.cview());
      std::vector<std::int8_t> panel(static_cast<std::size_t>(dense.k_padded() * gemm::panel_width), 99);
      for (index_t p = 0; p < dense.panel_count(); ++p) {
        unpack_panel(w, p, panel.data());
        CHECK(std::equal(panel.begin(), panel.end(), dense.panel(p)));
      }
    };
    const int patterns[][2] = {{2, 4}, {1, 4}, {4, 8}, {1, 2}};
    const auto& pat = patterns[it % 4];
    const auto b_nm = random_nm(k, n, pat[0], pat[1], it % 2 == 0);
    check_panels(b_nm, prune::pack_nm(b_nm.cview(), pat[0], pat[1]));
    const auto b_blk = random_blocks(k, n, 0.4);
    check_panels(b_blk, prune::pack_block(b_blk.cview()));
  }
}

#if QLIB_HAS_X86_KERNELS
TEST_CASE("densified sparse GEMM on the AVX-VNNI kernel (its EVEX twin)", "[sparse][densified]") {
  // Every other densified ISA runs in the ISA loops above (AVX2 and AVX-512 here, NEON
  // under qemu); AVX-VNNI only through the EVEX twin of its kernel, as in test_gemm.
  if (!isa_supported(isa::avx512_vnni)) return;
  using kernel = kernels::densified_sparse_kernel<kernels::avx_vnni_evex_gemm_kernel>;
  for (int it = 0; it < 6; ++it) {
    const index_t k = rand_int(1, 150), n = rand_int(1, 140), m = rand_int(1, 30);
    INFO("M K N = " << m << " " << k << " " << n);
    const auto b = it % 2 ? random_nm(k, n, 2, 4, false) : random_blocks(k, n, 0.3);
    const auto wp = quant_params(granularity::per_tensor(), -128, 127, {1.0f}, {0});
    tensor<std::uint8_t, 2> a({m, k});
    for (auto& v : a) v = static_cast<std::uint8_t>(rand_int(0, 255));
    const std::int32_t za = rand_int(0, 255);
    tensor<std::int32_t, 2> want({m, n}), c({m, n});
    gemm::reference::gemm(a.cview(), za, b.cview(), wp, std::tuple<>{}, want.view());
    for (auto& v : c) v = 0;
    if (it % 2) {
      prune::detail::run_sparse_gemm<kernel>(arch::avx2{}, a.cview(), za, prune::pack_nm(b.cview(), 2, 4), std::tuple<>{},
                                             c.view(), gemm::gemm_options{});
    } else {
      prune::detail::run_sparse_gemm<kernel>(arch::avx2{}, a.cview(), za, prune::pack_block(b.cview()), std::tuple<>{},
                                             c.view(), gemm::gemm_options{});
    }
    CHECK(std::equal(c.begin(), c.end(), want.begin()));
  }
}
#endif

TEST_CASE("sparse formats refuse bad patterns, shapes and overflow-prone K", "[sparse][errors]") {
  // 3 non-zeros in one group of 4: not 2:4 (but 3:4 and 4:4).
  tensor<std::int8_t, 2> b({10, 3});
  for (auto& v : b) v = 0;
  b(4, 1) = 1;
  b(5, 1) = -2;
  b(7, 1) = 3;
  QLIB_REQUIRE_ERROR(prune::pack_nm(b.cview(), 2, 4), errc::invalid_argument);
  CHECK(prune::pack_nm(b.cview(), 3, 4).keep() == 3);
  // The tail group [8, 10) counts as padded with zeros: 2 non-zeros are fine for 2:4, not for 1:4.
  b(5, 1) = 0;
  b(8, 2) = 5;
  b(9, 2) = 6;
  CHECK(prune::pack_nm(b.cview(), 2, 4).k() == 10);
  QLIB_REQUIRE_ERROR(prune::pack_nm(b.cview(), 1, 4), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::pack_nm(b.cview(), 2, 3), errc::unsupported);
  QLIB_REQUIRE_ERROR(prune::pack_nm(b.cview(), 5, 8), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::pack_nm(b.cview(), 0, 4), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::pack_nm(b.cview(), 3, 2), errc::invalid_argument);
  tensor<std::int8_t, 2> empty({0, 4});
  QLIB_REQUIRE_ERROR(prune::pack_nm(empty.cview(), 2, 4), errc::empty_tensor);
  QLIB_REQUIRE_ERROR(prune::pack_block(empty.cview()), errc::empty_tensor);
  QLIB_REQUIRE_ERROR(prune::pack_block(b.cview(), quant_params(granularity::per_channel(0), -128, 127,
                                                               std::vector<float>(10, 1.0f), std::vector<std::int32_t>(10, 0))),
                     errc::unsupported);

  const auto nm = prune::pack_nm(b.cview(), 2, 4);
  const auto blk = prune::pack_block(b.cview());
  tensor<std::uint8_t, 2> a({2, 10}), a_short({2, 9});
  tensor<std::int32_t, 2> c({2, 3}), c_wide({2, 4});
  for (auto& v : a) v = 1;
  QLIB_REQUIRE_ERROR(prune::sparse_gemm(a_short.cview(), {0}, nm, c.view()), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(prune::sparse_gemm(a.cview(), {0}, nm, c_wide.view()), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(prune::sparse_block_gemm(a_short.cview(), {0}, blk, c.view()), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(prune::sparse_block_gemm(a.cview(), {0}, blk, c_wide.view()), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(prune::sparse_gemm(a.cview(), {300}, nm, c.view()), errc::invalid_argument);
  gemm::gemm_options zero_threads;
  zero_threads.threads = 0;
  QLIB_REQUIRE_ERROR(prune::sparse_block_gemm(a.cview(), {0}, blk, std::tuple<>{}, c.view(), zero_threads),
                     errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::sparse_gemm(a.cview(), {0}, prune::packed_nm{}, c.view()), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::sparse_block_gemm(a.cview(), {0}, prune::packed_block{}, c.view()),
                     errc::invalid_argument);
  // A transposed (non-contiguous rows) view of A.
  tensor<std::uint8_t, 2> at({10, 2});
  QLIB_REQUIRE_ERROR(prune::sparse_gemm(at.cview().transpose(0, 1), {0}, nm, c.view()), errc::invalid_argument);

  // Overflow: the same bound as gemm::gemm. A 2:4 column of -128s over K = 160000 has
  // sum |b| = 80000 * 128; times 255 (uint8 A) that exceeds 2^31 - 1, times 128 (int8 A) not.
  const index_t k = 160000;
  tensor<std::int8_t, 2> big({k, 1});
  for (index_t i = 0; i < k; ++i) big(i, 0) = (i % 4 < 2) ? std::int8_t{-128} : std::int8_t{0};
  const auto big_nm = prune::pack_nm(big.cview(), 2, 4);
  const auto big_blk = prune::pack_block(big.cview());
  const auto dense = gemm::pack(big.cview());
  CHECK(big_nm.max_abs_column_sum() == dense.max_abs_column_sum());
  CHECK(big_blk.max_abs_column_sum() == dense.max_abs_column_sum());
  tensor<std::uint8_t, 2> au({1, k});
  tensor<std::int8_t, 2> as({1, k});
  tensor<std::int32_t, 2> c1({1, 1}), want({1, 1});
  for (auto& v : au) v = 255;
  for (auto& v : as) v = -128;
  QLIB_REQUIRE_ERROR(gemm::gemm(au.cview(), {0}, dense, c1.view()), errc::overflow);
  QLIB_REQUIRE_ERROR(prune::sparse_gemm(au.cview(), {0}, big_nm, c1.view()), errc::overflow);
  QLIB_REQUIRE_ERROR(prune::sparse_block_gemm(au.cview(), {0}, big_blk, c1.view()), errc::overflow);
  // int8 A at -128 fits and gives the extreme value exactly.
  gemm::reference::gemm(as.cview(), 0, big.cview(), quant_params(granularity::per_tensor(), -128, 127, {1.0f}, {0}),
                        std::tuple<>{}, want.view());
  qlib_test::for_each_isa([&](isa) {
    prune::sparse_gemm(as.cview(), {0}, big_nm, c1.view());
    CHECK(c1(0, 0) == want(0, 0));
    prune::sparse_block_gemm(as.cview(), {0}, big_blk, c1.view());
    CHECK(c1(0, 0) == want(0, 0));
  });
}

TEST_CASE("sparse formats: 100% sparse weights and static dispatch", "[sparse][edge]") {
  tensor<std::int8_t, 2> zero({37, 70});
  for (auto& v : zero) v = 0;
  const auto wp = quant_params(granularity::per_tensor(), -128, 127, {1.0f}, {3});  // zb != 0: C = -3 * row sum
  const auto nm = prune::pack_nm(zero.cview(), 1, 4, wp);
  const auto blk = prune::pack_block(zero.cview(), wp);
  CHECK(blk.block_count() == 0);
  CHECK(blk.density() == 0.0);
  tensor<std::int8_t, 2> a({9, 37});
  for (auto& v : a) v = static_cast<std::int8_t>(rand_int(-128, 127));
  tensor<std::int32_t, 2> want({9, 70}), c({9, 70});
  gemm::reference::gemm(a.cview(), 7, zero.cview(), wp, std::tuple<>{}, want.view());
  auto same = [&] { return std::equal(c.begin(), c.end(), want.begin()); };
  prune::sparse_gemm(arch::portable{}, a.cview(), {7}, nm, std::tuple<>{}, c.view());
  CHECK(same());
  prune::sparse_block_gemm(arch::portable{}, a.cview(), {7}, blk, std::tuple<>{}, c.view());
  CHECK(same());
#if QLIB_ARCH_X86_64
  if (isa_supported(isa::avx512_vnni)) {
    for (auto& v : c) v = 0;
    prune::sparse_gemm(arch::avx512_vnni{}, a.cview(), {7}, nm, std::tuple<>{}, c.view());
    CHECK(same());
    for (auto& v : c) v = 0;
    prune::sparse_block_gemm(arch::avx512_vnni{}, a.cview(), {7}, blk, std::tuple<>{}, c.view());
    CHECK(same());
  } else {
    QLIB_REQUIRE_ERROR(prune::sparse_gemm(arch::avx512_vnni{}, a.cview(), {7}, nm, std::tuple<>{}, c.view()),
                       errc::unsupported);
  }
#endif
}
