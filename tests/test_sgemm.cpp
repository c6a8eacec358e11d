// fp32 GEMM: every ISA against the double-sum reference (exactly on integer data, within the
// documented bound on real data), transposes, strides, tails, K blocks, epilogue, threads, packed B, errors.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "qlib/gemm/sgemm.hpp"
#include "qlib/gemm/sgemm_reference.hpp"
#include "test_util.hpp"

using namespace qlib;
using qlib_test::for_each_isa;
using qlib_test::rand_float;
using qlib_test::rand_int;
using qlib_test::same_bits;

namespace {

constexpr float inf = std::numeric_limits<float>::infinity();

// One problem: storage for A, B, C (possibly transposed or padded) and the views on it.
struct problem {
  index_t m, n, k;
  bool a_t = false, b_t = false;  // A given as the transpose of K x M storage, likewise B of N x K
  bool a_strided = false;         // A's columns at stride 2 (neither stride is 1)
  index_t c_pad = 0;
  bool integers = true;  // small integers: every sum is exact in float, so every ISA must equal the reference
  tensor<float, 2> a_store, b_store, c_init;
  std::vector<float> bias;

  problem(index_t m_, index_t n_, index_t k_, bool at = false, bool bt = false, index_t cpad = 0, bool ints = true,
          bool astr = false)
      : m(m_), n(n_), k(k_), a_t(at), b_t(bt), a_strided(astr), c_pad(cpad), integers(ints) {
    a_store = tensor<float, 2>(a_t ? extents<2>{k, m} : extents<2>{m, a_strided ? 2 * k : k});
    b_store = tensor<float, 2>(b_t ? extents<2>{n, k} : extents<2>{k, n});
    c_init = tensor<float, 2>(extents<2>{m, n + c_pad});
    fill(a_store.data(), a_store.size());
    fill(b_store.data(), b_store.size());
    fill(c_init.data(), c_init.size());
    bias.resize(static_cast<std::size_t>(n));
    fill(bias.data(), n);
  }
  void fill(float* p, index_t count) {
    for (index_t i = 0; i < count; ++i) p[i] = integers ? static_cast<float>(rand_int(-8, 8)) : rand_float(-1.f, 1.f);
  }
  tensor_view<const float, 2> a() const {
    if (a_t) return a_store.cview().transpose(0, 1);
    if (a_strided) return tensor_view<const float, 2>(a_store.data(), {m, k}, {2 * k, 2});
    return a_store.cview();
  }
  tensor_view<const float, 2> b() const { return b_t ? b_store.cview().transpose(0, 1) : b_store.cview(); }
  // A fresh copy of the initial C (padding included) and its M x N view.
  tensor<float, 2> fresh_c() const { return c_init; }
  tensor_view<float, 2> c(tensor<float, 2>& store) const { return store.view().slice(1, 0, n); }
  // The reference result on a copy of the initial C.
  tensor<float, 2> reference(const gemm::sgemm_options& opt) const {
    tensor<float, 2> out = fresh_c();
    gemm::reference::sgemm(a(), b(), c(out), opt);
    return out;
  }
};

// Every element of got equals want bit for bit, padding columns of C untouched.
void require_same(const problem& p, const tensor<float, 2>& got, const tensor<float, 2>& want) {
  for (index_t i = 0; i < p.m; ++i)
    for (index_t j = 0; j < p.n + p.c_pad; ++j) {
      INFO("C[" << i << "][" << j << "] = " << got(i, j) << ", expected " << want(i, j));
      REQUIRE(same_bits(got(i, j), want(i, j)));
    }
}

// |got - want| <= (K + 2) * 2^-23 * (|c_old| + sum_k |a||b| + |bias|), the bound
// documented in gemm/sgemm_reference.hpp (before the clamp, which only shrinks errors).
void require_close(const problem& p, const gemm::sgemm_options& opt, const tensor<float, 2>& got,
                   const tensor<float, 2>& want) {
  const auto a = p.a(), b = p.b();
  for (index_t i = 0; i < p.m; ++i) {
    for (index_t j = 0; j < p.n; ++j) {
      double mag = opt.accumulate ? std::fabs(p.c_init(i, j)) : 0.0;
      for (index_t kk = 0; kk < p.k; ++kk) mag += std::fabs(static_cast<double>(a(i, kk)) * b(kk, j));
      if (opt.bias) mag += std::fabs(opt.bias[j]);
      const double bound = static_cast<double>(p.k + 2) * std::ldexp(1.0, -23) * mag;
      INFO("C[" << i << "][" << j << "] = " << got(i, j) << ", reference " << want(i, j) << ", bound " << bound);
      REQUIRE(std::fabs(static_cast<double>(got(i, j)) - want(i, j)) <= bound);
    }
    for (index_t j = p.n; j < p.n + p.c_pad; ++j) REQUIRE(same_bits(got(i, j), p.c_init(i, j)));
  }
}

gemm::sgemm_options options(const problem& p, bool accumulate, bool bias, int clamp) {
  gemm::sgemm_options o;
  o.accumulate = accumulate;
  o.bias = bias ? p.bias.data() : nullptr;
  if (clamp == 1) o.clamp_lo = 0;  // ReLU
  if (clamp == 2) {
    o.clamp_lo = p.integers ? -20.f : -0.5f;
    o.clamp_hi = p.integers ? 20.f : 0.5f;
  }
  return o;
}

}  // namespace

TEST_CASE("sgemm: every ISA equals the reference exactly on integer data (tails, K blocks, transposes, strides)") {
  // M across 1..tile+1 of every kernel (4, 6, 12), N across the 16/32 column split and
  // panel tails, K across the 256 K block.
  const index_t ms[] = {1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 25};
  const index_t ns[] = {1, 7, 15, 16, 17, 31, 32, 33, 64, 65};
  const index_t ks[] = {0, 1, 2, 5, 16, 255, 256, 257, 513};
  for_each_isa([&](isa) {
    for (int trial = 0; trial < 60; ++trial) {
      const index_t m = ms[rand_int(0, 10)], n = ns[rand_int(0, 9)], k = ks[rand_int(0, 8)];
      const int layout = rand_int(0, 4);  // 0 plain, 1 A^T, 2 B^T, 3 both, 4 A strided both ways
      problem p(m, n, k, layout == 1 || layout == 3, layout == 2 || layout == 3, rand_int(0, 1) * 3, true,
                layout == 4);
      const auto opt = options(p, rand_int(0, 1) == 1, rand_int(0, 1) == 1, rand_int(0, 2));
      INFO("M " << m << " N " << n << " K " << k << " layout " << layout << " c_pad " << p.c_pad << " accumulate "
                << opt.accumulate << " bias " << (opt.bias != nullptr) << " clamp [" << opt.clamp_lo << ", "
                << opt.clamp_hi << "]");
      tensor<float, 2> got = p.fresh_c();
      gemm::sgemm(p.a(), p.b(), p.c(got), opt);
      require_same(p, got, p.reference(opt));
    }
  });
}

TEST_CASE("sgemm: real data within the documented bound of the double-sum reference on every ISA") {
  for_each_isa([&](isa) {
    for (int trial = 0; trial < 12; ++trial) {
      const index_t m = rand_int(1, 30), n = rand_int(1, 70), k = rand_int(1, 600);
      const int layout = rand_int(0, 3);
      problem p(m, n, k, layout & 1, (layout >> 1) & 1, 2, false);
      const auto opt = options(p, rand_int(0, 1) == 1, rand_int(0, 1) == 1, rand_int(0, 2));
      INFO("M " << m << " N " << n << " K " << k << " layout " << layout);
      tensor<float, 2> got = p.fresh_c();
      gemm::sgemm(p.a(), p.b(), p.c(got), opt);
      require_close(p, opt, got, p.reference(opt));
    }
  });
}

TEST_CASE("sgemm: threads 1..4 give the bits of threads = 1; packed B gives the bits of unpacked B") {
  for_each_isa([&](isa) {
    for (const auto& shape : {extents<3>{40, 100, 300}, extents<3>{26, 300, 40}, extents<3>{5, 33, 513}}) {
      problem p(shape[0], shape[1], shape[2], false, true, 1, false);
      gemm::sgemm_options opt = options(p, true, true, 1);
      tensor<float, 2> one = p.fresh_c();
      gemm::sgemm(p.a(), p.b(), p.c(one), opt);
      const gemm::packed_float_weights w = gemm::pack_float(p.b());
      for (int threads = 1; threads <= 4; ++threads) {
        INFO("M " << p.m << " N " << p.n << " K " << p.k << " threads " << threads);
        opt.threads = threads;
        tensor<float, 2> got = p.fresh_c();
        gemm::sgemm(p.a(), p.b(), p.c(got), opt);
        require_same(p, got, one);
        tensor<float, 2> packed = p.fresh_c();
        gemm::sgemm(p.a(), w, p.c(packed), opt);
        require_same(p, packed, one);
      }
      serial_executor serial;
      opt.threads = 3;
      opt.executor = &serial;
      tensor<float, 2> got = p.fresh_c();
      gemm::sgemm(p.a(), w, p.c(got), opt);
      require_same(p, got, one);
    }
  });
}

TEST_CASE("sgemm: static dispatch on a tag equals run-time dispatch capped at that ISA") {
  problem p(29, 45, 270, true, false, 0, false);
  const auto opt = options(p, false, true, 2);
  auto check = [&](auto tag, isa i) {
    if (!isa_supported(i)) {
      tensor<float, 2> got = p.fresh_c();
      QLIB_REQUIRE_ERROR(gemm::sgemm(tag, p.a(), p.b(), p.c(got), opt), errc::unsupported);
      return;
    }
    tensor<float, 2> stat = p.fresh_c(), dyn = p.fresh_c(), packed = p.fresh_c();
    gemm::sgemm(tag, p.a(), p.b(), p.c(stat), opt);
    gemm::sgemm(tag, p.a(), gemm::pack_float(p.b()), p.c(packed), opt);
    set_isa_limit(i);
    gemm::sgemm(p.a(), p.b(), p.c(dyn), opt);
    clear_isa_limit();
    require_same(p, stat, dyn);
    require_same(p, packed, dyn);
  };
  check(arch::portable{}, isa::portable);
#if QLIB_ARCH_X86_64
  check(arch::avx2{}, isa::avx2);
  check(arch::avx512{}, isa::avx512);
#endif
  CHECK(std::string(gemm::sgemm_kernel_name(isa::portable)) == "portable_sgemm_4x16");
}

TEST_CASE("sgemm: empty M or N is a no-op; K = 0 gives clamp(C or 0, + bias)") {
  for_each_isa([&](isa) {
    tensor<float, 2> a({0, 4}), b({4, 3}), c({0, 3});
    gemm::sgemm(a.cview(), b.cview(), c.view());  // nothing to do, nothing read
    tensor<float, 2> a2({3, 4}, 1.f), b2({4, 0}), c2({3, 0});
    gemm::sgemm(a2.cview(), b2.cview(), c2.view());

    problem p(5, 40, 0);
    for (bool acc : {false, true}) {
      const auto opt = options(p, acc, true, 2);
      tensor<float, 2> got = p.fresh_c();
      gemm::sgemm(p.a(), p.b(), p.c(got), opt);
      for (index_t i = 0; i < p.m; ++i)
        for (index_t j = 0; j < p.n; ++j) {
          const float want = std::min(20.f, std::max(-20.f, (acc ? p.c_init(i, j) : 0.f) + p.bias[j]));
          REQUIRE(got(i, j) == want);
        }
      tensor<float, 2> packed = p.fresh_c();
      gemm::sgemm(p.a(), gemm::pack_float(p.b()), p.c(packed), opt);
      require_same(p, packed, got);
    }
  });
}

TEST_CASE("sgemm: NaN and Inf propagate as IEEE, also through ReLU") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for_each_isa([&](isa) {
    problem p(14, 40, 300);
    p.a_store(3, 280) = nan;  // row 3 of C: NaN everywhere (in the second K block)
    p.b_store(7, 35) = inf;   // column 35 of C: +-Inf or NaN (0 * Inf) in the other rows
    gemm::sgemm_options opt;
    opt.clamp_lo = 0;  // ReLU keeps NaN
    tensor<float, 2> got = p.fresh_c();
    gemm::sgemm(p.a(), p.b(), p.c(got), opt);
    for (index_t i = 0; i < p.m; ++i)
      for (index_t j = 0; j < p.n; ++j) {
        INFO("C[" << i << "][" << j << "] = " << got(i, j));
        if (i == 3) {
          REQUIRE(std::isnan(got(i, j)));
        } else if (j == 35) {
          const float x = p.a_store(i, 7);
          if (x == 0) REQUIRE(std::isnan(got(i, j)));
          else if (x > 0) REQUIRE(got(i, j) == inf);
          else REQUIRE(got(i, j) == 0.f);  // -Inf clamped to 0 by ReLU
        } else {
          REQUIRE(std::isfinite(got(i, j)));
          REQUIRE(got(i, j) >= 0.f);
        }
      }
  });
}

TEST_CASE("sgemm: transposed operands give the same values as copies in row-major order") {
  // The backward-pass shapes: dW = X^T dY (A transposed), dX = dY W^T (B transposed).
  for_each_isa([&](isa) {
    problem p(40, 50, 70, true, true, 0, false);
    const tensor<float, 2> a_copy(p.a()), b_copy(p.b());
    tensor<float, 2> t = p.fresh_c(), r = p.fresh_c();
    gemm::sgemm(p.a(), p.b(), p.c(t));
    gemm::sgemm(a_copy.cview(), b_copy.cview(), p.c(r));
    require_same(p, t, r);  // same K blocks and chains: the layout of the operands does not change the bits
  });
}

TEST_CASE("sgemm: invalid input is refused at the boundary") {
  tensor<float, 2> a({4, 5}), b({5, 6}), c({4, 6}), bad_b({4, 6}), bad_c({4, 7});
  QLIB_REQUIRE_ERROR(gemm::sgemm(a.cview(), bad_b.cview(), c.view()), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(gemm::sgemm(a.cview(), b.cview(), bad_c.view()), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(gemm::sgemm(a.cview(), gemm::packed_float_weights{}, c.view()), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(gemm::sgemm(a.cview(), gemm::pack_float(bad_b.cview()), c.view()), errc::shape_mismatch);
  // A null pointer cannot make a non-empty view.
  QLIB_REQUIRE_ERROR(gemm::sgemm(tensor_view<const float, 2>(nullptr, {4, 5}), b.cview(), c.view()),
                     errc::invalid_argument);
  // C with a column stride, or rows that overlap.
  tensor<float, 2> wide({4, 12});
  QLIB_REQUIRE_ERROR(gemm::sgemm(a.cview(), b.cview(), tensor_view<float, 2>(wide.data(), {4, 6}, {12, 2})),
                     errc::invalid_argument);
  QLIB_REQUIRE_ERROR(gemm::sgemm(a.cview(), b.cview(), tensor_view<float, 2>(wide.data(), {4, 6}, {3, 1})),
                     errc::invalid_argument);
  // C overlapping A, B or the bias.
  tensor<float, 2> sq({6, 6});
  QLIB_REQUIRE_ERROR(gemm::sgemm(sq.cview(), tensor<float, 2>({6, 6}).cview(), sq.view()), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(gemm::sgemm(tensor<float, 2>({6, 6}).cview(), sq.cview().slice(0, 0, 6), sq.view()),
                     errc::invalid_argument);
  gemm::sgemm_options opt;
  opt.bias = c.data() + 6;
  QLIB_REQUIRE_ERROR(gemm::sgemm(a.cview(), b.cview(), c.view(), opt), errc::invalid_argument);
  opt = {};
  opt.clamp_lo = 1;
  opt.clamp_hi = 0;
  QLIB_REQUIRE_ERROR(gemm::sgemm(a.cview(), b.cview(), c.view(), opt), errc::invalid_argument);
  opt = {};
  opt.clamp_hi = std::numeric_limits<float>::quiet_NaN();
  QLIB_REQUIRE_ERROR(gemm::sgemm(a.cview(), b.cview(), c.view(), opt), errc::invalid_argument);
  opt = {};
  opt.threads = 0;
  QLIB_REQUIRE_ERROR(gemm::sgemm(a.cview(), b.cview(), c.view(), opt), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(gemm::pack_float(tensor<float, 2>({5, 0}).cview()), errc::empty_tensor);
  // Disjoint halves of one buffer are fine: C = top rows, A = bottom rows.
  tensor<float, 2> buf({8, 5}, 1.f);
  tensor<float, 2> b55({5, 5}, 1.f);
  gemm::sgemm(buf.cview().slice(0, 4, 8), b55.cview(), buf.view().slice(0, 0, 4));
  CHECK(buf(0, 0) == 5.f);
  CHECK(buf(7, 4) == 1.f);
}

TEST_CASE("sgemm: pack_float is a plain copy, the same on every ISA, for any strides of B") {
  for (int layout = 0; layout < 3; ++layout) {
    const index_t k = 300, n = 45;  // K: a full block and a tail not a multiple of 8; N: a panel and a tail
    tensor<float, 2> store(layout == 1 ? extents<2>{n, k} : extents<2>{k, layout == 2 ? 2 * n : n});
    for (index_t i = 0; i < store.size(); ++i) store.data()[i] = rand_float(-1.f, 1.f);
    const tensor_view<const float, 2> b =
        layout == 1 ? store.cview().transpose(0, 1)
                    : layout == 2 ? tensor_view<const float, 2>(store.data(), {k, n}, {2 * n, 2}) : store.cview();
    INFO("layout " << layout);
    for_each_isa([&](isa) {
      const gemm::packed_float_weights w = gemm::pack_float(b);
      REQUIRE(w.k() == k);
      REQUIRE(w.n() == n);
      REQUIRE(w.n_padded() == 64);
      for (index_t kk = 0; kk < k; ++kk)
        for (index_t j = 0; j < w.n_padded(); ++j) {
          const float want = j < n ? b(kk, j) : 0.0f;  // the layout documented in gemm/sgemm_packed.hpp
          const float got = w.block(kk / 256).panel(j / 32)[(kk % 256) * 32 + j % 32];
          INFO("B[" << kk << "][" << j << "]");
          REQUIRE(same_bits(got, want));
        }
    });
  }
}
