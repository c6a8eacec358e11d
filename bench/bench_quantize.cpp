// Quantize/dequantize throughput beside a plain memcpy of the float tensor, in one run.
//
// Throughput counts the bytes each operation moves: quantize reads 4 bytes and writes
// 1 per element, dequantize the reverse, memcpy reads and writes 4. The counter
// `vs_memcpy` is this benchmark's bytes/s over the memcpy's bytes/s measured at start-up
// in the same process (median of 9 copies of the same float tensor).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>
#include <vector>

#include "qlib/quantize.hpp"

namespace {

constexpr qlib::index_t rows = 4096, cols = 4096;  // 16 Mi floats = 64 MiB

const qlib::tensor<float, 2>& input() {
  static const qlib::tensor<float, 2> x = [] {
    qlib::tensor<float, 2> t({rows, cols});
    std::mt19937 g(1);
    std::student_t_distribution<float> d(3.0f);
    for (float& v : t) v = d(g);
    return t;
  }();
  return x;
}

double memcpy_bytes_per_second() {
  static const double rate = [] {
    const auto& x = input();
    const std::size_t bytes = sizeof(float) * static_cast<std::size_t>(x.size());
    std::vector<float> dst(static_cast<std::size_t>(x.size()));
    std::vector<double> secs;
    for (int r = 0; r < 9; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      std::memcpy(dst.data(), x.data(), bytes);
      benchmark::ClobberMemory();
      secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(secs.begin(), secs.end());
    return 2.0 * static_cast<double>(bytes) / secs[secs.size() / 2];
  }();
  return rate;
}

qlib::granularity granularity_of(int which) {
  switch (which) {
    case 0: return qlib::granularity::per_tensor();
    case 1: return qlib::granularity::per_channel(0);
    case 2: return qlib::granularity::per_group(1, 32);
    default: return qlib::granularity::per_group(1, 128);
  }
}

// Times the benchmark loop itself, so the ratio needs no rate counter.
struct loop_timer {
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); }
};

void set_counters(benchmark::State& state, double bytes_per_iter, const loop_timer& t) {
  const double secs = t.seconds();
  const double total = bytes_per_iter * static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<std::int64_t>(total));
  state.counters["vs_memcpy"] = total / secs / memcpy_bytes_per_second();
}

void BM_memcpy_float(benchmark::State& state) {
  const auto& x = input();
  std::vector<float> dst(static_cast<std::size_t>(x.size()));
  const loop_timer timer;
  for (auto _ : state) {
    std::memcpy(dst.data(), x.data(), sizeof(float) * dst.size());
    benchmark::ClobberMemory();
  }
  set_counters(state, 8.0 * static_cast<double>(x.size()), timer);
}

void BM_quantize_s8(benchmark::State& state) {
  const auto& x = input();
  const qlib::granularity g = granularity_of(static_cast<int>(state.range(0)));
  const qlib::quant_params p = qlib::choose_params(x.cview(), qlib::schemes::s8_symmetric, g);
  qlib::tensor<std::int8_t, 2> q(x.shape());
  state.SetLabel(g.describe());
  const loop_timer timer;
  for (auto _ : state) {
    qlib::quantize(x.cview(), q.view(), p);
    benchmark::ClobberMemory();
  }
  set_counters(state, 5.0 * static_cast<double>(x.size()), timer);
}

void BM_dequantize_s8(benchmark::State& state) {
  const auto& x = input();
  const qlib::granularity g = granularity_of(static_cast<int>(state.range(0)));
  const qlib::quant_params p = qlib::choose_params(x.cview(), qlib::schemes::s8_symmetric, g);
  qlib::tensor<std::int8_t, 2> q(x.shape());
  qlib::quantize(x.cview(), q.view(), p);
  qlib::tensor<float, 2> y(x.shape());
  state.SetLabel(g.describe());
  const loop_timer timer;
  for (auto _ : state) {
    qlib::dequantize(q.cview(), y.view(), p);
    benchmark::ClobberMemory();
  }
  set_counters(state, 5.0 * static_cast<double>(x.size()), timer);
}

}  // namespace

BENCHMARK(BM_memcpy_float)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_quantize_s8)->DenseRange(0, 3)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_dequantize_s8)->DenseRange(0, 3)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_MAIN();
