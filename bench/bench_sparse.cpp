// Sparse int8 GEMMs (2:4, block-sparse at 90%) and a layer shrunk to half its outputs, as ratios to qlib's dense int8 GEMM.
//
// Single thread, C = A x B with A uint8 (M x K), B int8 (K x N), C int32, zero points 0.
// Per shape (M, N, K): dense gemm::gemm, prune::sparse_gemm on 2:4 weights,
// prune::sparse_block_gemm on weights with 90% of their 4 x 16 blocks zero, and the
// dense GEMM with N/2 columns (half the output channels removed by structured pruning);
// then the 2:4 weights as an int8 layer (nn::qlinear, uint8 in and out) on its dense
// panels and on its N:M form (qlinear::prepare), the second against the first.
// GOPS are dense-equivalent (2 * M * N * K / time, the full N even for the shrunk layer).
// Google Benchmark reports each repetition's mean; after the run a table prints, per
// shape and kind, the fastest single call of all repetitions, its GOPS and the speed-up
// over dense, and the load average. The fastest call is the kernel's own speed: on a
// shared machine (a VM whose core's other hardware thread runs someone else's vector
// code) means drift by 10-20% between repetitions, and the shuffle-heavy 2:4 kernel
// more than the dense one. Interleave the repetitions so all kinds see the same load:
//   taskset -c 1 ./bench_sparse --benchmark_repetitions=5 --benchmark_enable_random_interleaving=true
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>

#include "qlib/gemm.hpp"
#include "qlib/nn/qlinear.hpp"
#include "qlib/prune/sparse_block.hpp"
#include "qlib/prune/sparse_nm.hpp"

namespace {

using qlib::index_t;

struct shape {
  index_t m, n, k;
};
// The two shapes, then a long-K layer (a 7B LLM's MLP down-projection, 128 tokens).
const shape shapes[] = {{128, 3072, 768}, {1024, 1024, 1024}, {128, 4096, 11008}};
constexpr int shape_count = 3;
enum kind { dense, nm_2_4, block_90, shrunk_half, layer_dense, layer_2_4, kind_count };
const char* kind_names[] = {"dense", "2:4", "block 90%", "dense N/2", "layer", "layer 2:4"};

struct operands {
  shape s;
  qlib::tensor<std::uint8_t, 2> a;
  qlib::tensor<std::int32_t, 2> c;
  qlib::gemm::packed_weights dense, half;
  qlib::prune::packed_nm nm;
  qlib::prune::packed_block block;
  qlib::nn::qlinear layer, layer_nm;  // the 2:4 weights as an int8 layer: dense panels, and its N:M form
  qlib::nn::qactivation x;

  explicit operands(const shape& sh) : s(sh), a({sh.m, sh.k}), c({sh.m, sh.n}) {
    std::mt19937 g(42);
    for (auto& v : a) v = static_cast<std::uint8_t>(g());
    auto nonzero = [&] { return static_cast<std::int8_t>(1 + g() % 127); };
    qlib::tensor<std::int8_t, 2> b({sh.k, sh.n}), b24({sh.k, sh.n}), b90({sh.k, sh.n});
    for (auto& v : b) v = nonzero();
    for (index_t j = 0; j < sh.n; ++j)
      for (index_t k0 = 0; k0 < sh.k; k0 += 4) {  // 2 of every 4 at random places
        const int drop1 = static_cast<int>(g() % 4), drop2 = (drop1 + 1 + static_cast<int>(g() % 3)) % 4;
        for (int i = 0; i < 4; ++i) b24(k0 + i, j) = (i == drop1 || i == drop2) ? 0 : b(k0 + i, j);
      }
    for (index_t k0 = 0; k0 < sh.k; k0 += 4)
      for (index_t s0 = 0; s0 < sh.n; s0 += 16) {  // 10% of the 4 x 16 blocks kept
        const bool keep = g() % 10 == 0;
        for (index_t i = 0; i < 4; ++i)
          for (index_t j = 0; j < 16; ++j) b90(k0 + i, s0 + j) = keep ? b(k0 + i, s0 + j) : std::int8_t{0};
      }
    dense = qlib::gemm::pack(b.cview());
    half = qlib::gemm::pack(qlib::tensor_view<const std::int8_t, 2>(b.data(), {sh.k, sh.n / 2}, {sh.n, 1}));
    nm = qlib::prune::pack_nm(b24.cview(), 2, 4);
    block = qlib::prune::pack_block(b90.cview());
    // In K, out N, uint8 in and out (bias, per-tensor fixed-point requantize, ReLU).
    layer.in = {0.02f, 128};
    layer.w.values = qlib::tensor<std::int8_t, 2>({sh.n, sh.k});
    for (index_t j = 0; j < sh.n; ++j)
      for (index_t kk = 0; kk < sh.k; ++kk) layer.w.values(j, kk) = b24(kk, j);
    layer.w.params = qlib::quant_params(qlib::granularity::per_tensor(), -128, 127, {0.001f}, {0});
    layer.w.bias.assign(static_cast<std::size_t>(sh.n), 100);
    layer.w.pack_groups(1);
    layer.output = qlib::nn::make_quantized_output(layer.w, layer.in, {0.5f, 0}, 0.0f);
    layer.prepare();
    layer_nm = layer;
    layer.nm.reset();
    x = {qlib::tensor<std::uint8_t, 4>(qlib::extents<4>{sh.m, 1, 1, sh.k}), 0.02f, 128};
    std::copy(a.begin(), a.end(), x.values.begin());
  }
};
operands& operands_of(int i) {
  static std::unique_ptr<operands> cache[shape_count];
  if (!cache[i]) cache[i] = std::make_unique<operands>(shapes[i]);
  return *cache[i];
}

std::map<std::pair<int, int>, double>& best_seconds() {
  static std::map<std::pair<int, int>, double> t;
  return t;
}

void run(operands& o, int k) {
  switch (k) {
    case dense: return qlib::gemm::gemm(o.a.cview(), {0}, o.dense, o.c.view());
    case nm_2_4: return qlib::prune::sparse_gemm(o.a.cview(), {0}, o.nm, o.c.view());
    case block_90: return qlib::prune::sparse_block_gemm(o.a.cview(), {0}, o.block, o.c.view());
    case layer_dense: benchmark::DoNotOptimize(o.layer.forward(o.x)); return;
    case layer_2_4: benchmark::DoNotOptimize(o.layer_nm.forward(o.x)); return;
    default: {
      qlib::tensor_view<std::int32_t, 2> c(o.c.data(), {o.s.m, o.s.n / 2}, {o.s.n, 1});
      return qlib::gemm::gemm(o.a.cview(), {0}, o.half, c);
    }
  }
}

void BM_sparse(benchmark::State& state) {
  const int i = static_cast<int>(state.range(0)), k = static_cast<int>(state.range(1));
  operands& o = operands_of(i);
  state.SetLabel(std::to_string(o.s.m) + "x" + std::to_string(o.s.n) + "x" + std::to_string(o.s.k) + " " +
                 kind_names[k]);
  run(o, k);  // warm caches
  double& best = best_seconds()[{i, k}];
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    const auto call_start = std::chrono::steady_clock::now();
    run(o, k);
    benchmark::ClobberMemory();
    const double call = std::chrono::duration<double>(std::chrono::steady_clock::now() - call_start).count();
    best = best == 0 ? call : std::min(best, call);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / static_cast<double>(state.iterations());
  const double ops = 2.0 * static_cast<double>(o.s.m) * static_cast<double>(o.s.n) * static_cast<double>(o.s.k);
  state.counters["GOPS"] = ops / seconds / 1e9;
}
BENCHMARK(BM_sparse)
    ->ArgsProduct({{0, 1, 2}, {dense, nm_2_4, block_90, shrunk_half, layer_dense, layer_2_4}})
    ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  std::printf("\nkernels: dense %s, 2:4 %s, block %s; block density %.3f\n", qlib::gemm::kernel_name(qlib::active_isa()),
              qlib::prune::sparse_nm_kernel_name(qlib::active_isa()),
              qlib::prune::sparse_block_kernel_name(qlib::active_isa()), operands_of(0).block.density());
  std::printf("%-16s %-10s %10s %10s %8s\n", "shape MxNxK", "kind", "ms (best)", "GOPS eq", "x dense");
  for (int i = 0; i < shape_count; ++i)
    for (int k = 0; k < kind_count; ++k) {
      // The layer kinds against the dense layer, the GEMMs against the dense GEMM.
      const double t = best_seconds()[{i, k}], td = best_seconds()[{i, k >= layer_dense ? layer_dense : dense}];
      if (t <= 0) continue;
      const shape& s = shapes[i];
      const double ops = 2.0 * static_cast<double>(s.m) * static_cast<double>(s.n) * static_cast<double>(s.k);
      std::printf("%-16s %-10s %10.3f %10.1f %8.2f\n",
                  (std::to_string(s.m) + "x" + std::to_string(s.n) + "x" + std::to_string(s.k)).c_str(), kind_names[k],
                  t * 1e3, ops / t / 1e9, td > 0 ? td / t : 0.0);
    }
  if (std::FILE* f = std::fopen("/proc/loadavg", "r")) {
    char buf[128] = {};
    if (std::fgets(buf, sizeof buf, f)) std::printf("load average: %s", buf);
    std::fclose(f);
  }
  return 0;
}
