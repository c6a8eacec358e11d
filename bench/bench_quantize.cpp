// Quantize/dequantize throughput beside a plain memcpy of the float tensor, interleaved.
//
// Throughput counts the bytes each operation moves: quantize reads 4 bytes and writes
// 1 per element, dequantize the reverse, memcpy reads and writes 4. Every iteration runs
// one memcpy of the float tensor and then the operation, each timed on its own, so both
// see the same machine state (turbo clock, other load); `vs_memcpy` is the operation's
// bytes/s over the memcpy's bytes/s from those same iterations. The benchmark's own time
// is the operation's alone (manual time).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstring>
#include <random>
#include <vector>

#include "qlib/quantize.hpp"

namespace {

const qlib::tensor<float, 2>& input(qlib::index_t rows) {
  static qlib::tensor<float, 2> x;
  if (x.shape(0) != rows) {
    x = qlib::tensor<float, 2>({rows, 4096});
    std::mt19937 g(1);
    std::student_t_distribution<float> d(3.0f);
    for (float& v : x) v = d(g);
  }
  return x;
}

qlib::granularity granularity_of(std::int64_t which) {
  switch (which) {
    case 0: return qlib::granularity::per_tensor();
    case 1: return qlib::granularity::per_channel(0);
    case 2: return qlib::granularity::per_group(1, 32);
    default: return qlib::granularity::per_group(1, 128);
  }
}

double seconds_of(const std::chrono::steady_clock::time_point& t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Runs `op` against an interleaved memcpy of the float tensor and reports both.
template <class Op>
void run_against_memcpy(benchmark::State& state, const qlib::tensor<float, 2>& x, double op_bytes, Op&& op) {
  std::vector<float> copy(static_cast<std::size_t>(x.size()), 1.0f);
  const double copy_bytes = 8.0 * static_cast<double>(x.size());
  double op_secs = 0, copy_secs = 0;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    std::memcpy(copy.data(), x.data(), sizeof(float) * copy.size());
    benchmark::ClobberMemory();
    copy_secs += seconds_of(t0);
    t0 = std::chrono::steady_clock::now();
    op();
    benchmark::ClobberMemory();
    const double s = seconds_of(t0);
    op_secs += s;
    state.SetIterationTime(s);
  }
  const double n = static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<std::int64_t>(op_bytes * n));
  state.counters["memcpy_GBps"] = copy_bytes * n / copy_secs / 1e9;
  state.counters["vs_memcpy"] = (op_bytes / op_secs) / (copy_bytes / copy_secs);
}

// Args: granularity index, rows of 4096 floats (4096 rows = 64 MiB).
void BM_quantize_s8(benchmark::State& state) {
  const auto& x = input(state.range(1));
  const qlib::granularity g = granularity_of(state.range(0));
  const qlib::quant_params p = qlib::choose_params(x.cview(), qlib::schemes::s8_symmetric, g);
  qlib::tensor<std::int8_t, 2> q(x.shape());
  state.SetLabel(g.describe());
  run_against_memcpy(state, x, 5.0 * static_cast<double>(x.size()), [&] { qlib::quantize(x.cview(), q.view(), p); });
}

void BM_dequantize_s8(benchmark::State& state) {
  const auto& x = input(state.range(1));
  const qlib::granularity g = granularity_of(state.range(0));
  const qlib::quant_params p = qlib::choose_params(x.cview(), qlib::schemes::s8_symmetric, g);
  qlib::tensor<std::int8_t, 2> q(x.shape());
  qlib::quantize(x.cview(), q.view(), p);
  qlib::tensor<float, 2> y(x.shape());
  state.SetLabel(g.describe());
  run_against_memcpy(state, x, 5.0 * static_cast<double>(x.size()), [&] { qlib::dequantize(q.cview(), y.view(), p); });
}

}  // namespace

BENCHMARK(BM_quantize_s8)->ArgsProduct({{0, 1, 2, 3}, {4096, 64}})->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_dequantize_s8)->ArgsProduct({{0, 1, 2, 3}, {4096, 64}})->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
