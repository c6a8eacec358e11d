// fp32 GEMM throughput: qlib::gemm::sgemm (B packed on the fly and packed once) beside OpenBLAS cblas_sgemm, in one run.
//
// Shapes (M, N, K) are those of float layers and their training: a linear layer, conv
// layers as im2col GEMMs, transformer blocks, a square GEMM, and the backward-pass
// products dW = X^T dY (A transposed) and dX = dY W^T (B transposed). Counters: GFLOPS =
// 2*M*N*K / time. After the run a table prints each entry's best of QLIB_BENCH_ROUNDS
// (default 3) rounds of the whole suite and qlib / OpenBLAS (the machine may be shared).
// Single thread by default; QLIB_BENCH_THREADS sets qlib's and OpenBLAS's thread count.
//   taskset -c 1 ./bench_sgemm
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>

#include "qlib/gemm/sgemm.hpp"

#if QLIB_BENCH_WITH_OPENBLAS
#include <cblas.h>
#endif

namespace {

using qlib::index_t;

struct shape {
  index_t m, n, k;
  bool a_t, b_t;  // A stored as K x M (passed transposed), B stored as N x K
};
const shape shapes[] = {{64, 128, 800, false, false},  {7744, 32, 144, false, false}, {43264, 16, 9, false, false},
                        {128, 768, 768, false, false}, {512, 512, 512, false, false}, {800, 128, 64, true, false},
                        {64, 800, 128, false, true}};
constexpr int shape_count = static_cast<int>(sizeof(shapes) / sizeof(shapes[0]));

std::string shape_name(const shape& s) {
  return std::to_string(s.m) + "x" + std::to_string(s.n) + "x" + std::to_string(s.k) + (s.a_t ? " A^T" : "") +
         (s.b_t ? " B^T" : "");
}
double flops(const shape& s) { return 2.0 * static_cast<double>(s.m) * static_cast<double>(s.n) * static_cast<double>(s.k); }

int env_int(const char* name, int fallback) {
  const char* e = std::getenv(name);
  const int v = e ? std::atoi(e) : fallback;
  return v >= 1 ? v : fallback;
}
int bench_rounds() { return env_int("QLIB_BENCH_ROUNDS", 3); }
int bench_threads() { return env_int("QLIB_BENCH_THREADS", 1); }

// Operands of one shape, made once; A and B stored as the shape says (transposed or not).
struct operands {
  shape s;
  qlib::tensor<float, 2> a, b, c;
  qlib::gemm::packed_float_weights packed;
  explicit operands(const shape& sh)
      : s(sh),
        a(sh.a_t ? qlib::extents<2>{sh.k, sh.m} : qlib::extents<2>{sh.m, sh.k}),
        b(sh.b_t ? qlib::extents<2>{sh.n, sh.k} : qlib::extents<2>{sh.k, sh.n}),
        c({sh.m, sh.n}) {
    std::mt19937 g(42);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    for (auto& v : a) v = u(g);
    for (auto& v : b) v = u(g);
    packed = qlib::gemm::pack_float(bview());
  }
  qlib::tensor_view<const float, 2> aview() const { return s.a_t ? a.cview().transpose(0, 1) : a.cview(); }
  qlib::tensor_view<const float, 2> bview() const { return s.b_t ? b.cview().transpose(0, 1) : b.cview(); }
};
operands& operands_of(int i) {
  static std::unique_ptr<operands> cache[shape_count];
  if (!cache[i]) cache[i] = std::make_unique<operands>(shapes[i]);
  return *cache[i];
}

struct row {
  double qlib = 0, qlib_packed = 0, openblas = 0;  // best GFLOPS over the rounds
};
std::map<int, row>& table() {
  static std::map<int, row> t;
  return t;
}

template <class F>
double run_loop(benchmark::State& state, const shape& s, F&& f) {
  f();  // warm-up (scratch buffers, caches)
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    f();
    benchmark::ClobberMemory();
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double gflops = flops(s) * static_cast<double>(state.iterations()) / secs / 1e9;
  state.counters["GFLOPS"] = gflops;
  state.SetLabel(shape_name(s));
  return gflops;
}

void BM_qlib(benchmark::State& state) {
  const int i = static_cast<int>(state.range(0));
  operands& o = operands_of(i);
  qlib::gemm::sgemm_options opt;
  opt.threads = bench_threads();
  const double g = run_loop(state, o.s, [&] { qlib::gemm::sgemm(o.aview(), o.bview(), o.c.view(), opt); });
  table()[i].qlib = std::max(table()[i].qlib, g);
}

void BM_qlib_packed(benchmark::State& state) {
  const int i = static_cast<int>(state.range(0));
  operands& o = operands_of(i);
  qlib::gemm::sgemm_options opt;
  opt.threads = bench_threads();
  const double g = run_loop(state, o.s, [&] { qlib::gemm::sgemm(o.aview(), o.packed, o.c.view(), opt); });
  table()[i].qlib_packed = std::max(table()[i].qlib_packed, g);
}

#if QLIB_BENCH_WITH_OPENBLAS
void BM_openblas(benchmark::State& state) {
  const int i = static_cast<int>(state.range(0));
  operands& o = operands_of(i);
  const shape& s = o.s;
  const auto m = static_cast<int>(s.m), n = static_cast<int>(s.n), k = static_cast<int>(s.k);
  const int lda = static_cast<int>(s.a_t ? s.m : s.k), ldb = static_cast<int>(s.b_t ? s.k : s.n);
  const double g = run_loop(state, s, [&] {
    cblas_sgemm(CblasRowMajor, s.a_t ? CblasTrans : CblasNoTrans, s.b_t ? CblasTrans : CblasNoTrans, m, n, k, 1.0f,
                o.a.data(), lda, o.b.data(), ldb, 0.0f, o.c.data(), n);
  });
  table()[i].openblas = std::max(table()[i].openblas, g);
}
#endif

void register_benchmarks() {
  for (int i = 0; i < shape_count; ++i) {
    const std::string name = shape_name(shapes[i]);
    benchmark::RegisterBenchmark(("qlib/" + name).c_str(), BM_qlib)->Arg(i)->Unit(benchmark::kMicrosecond)->UseRealTime();
    benchmark::RegisterBenchmark(("qlib_packed/" + name).c_str(), BM_qlib_packed)
        ->Arg(i)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
#if QLIB_BENCH_WITH_OPENBLAS
    benchmark::RegisterBenchmark(("openblas/" + name).c_str(), BM_openblas)->Arg(i)->Unit(benchmark::kMicrosecond)->UseRealTime();
#endif
  }
}

void print_summary() {
  std::printf("\nsgemm, kernel %s, threads %d, best of %d rounds (GFLOPS)\n",
              qlib::gemm::sgemm_kernel_name(qlib::active_isa()), bench_threads(), bench_rounds());
  std::printf("%-22s %9s %12s %9s %13s\n", "M x N x K", "qlib", "qlib-packed", "OpenBLAS", "qlib/OpenBLAS");
  for (const auto& kv : table()) {
    const row& r = kv.second;
    std::printf("%-22s %9.1f %12.1f %9.1f %13.2f\n", shape_name(shapes[kv.first]).c_str(), r.qlib, r.qlib_packed,
                r.openblas, r.openblas > 0 ? r.qlib / r.openblas : 0.0);
  }
}

}  // namespace

int main(int argc, char** argv) {
#if QLIB_BENCH_WITH_OPENBLAS
  openblas_set_num_threads(bench_threads());
#endif
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_benchmarks();
  benchmark::ConsoleReporter reporter(benchmark::ConsoleReporter::OO_None);
  for (int round = 0; round < bench_rounds(); ++round) benchmark::RunSpecifiedBenchmarks(&reporter);
  print_summary();
  return 0;
}
