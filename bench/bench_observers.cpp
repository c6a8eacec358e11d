// Observer and quantile throughput beside a plain read of the same bytes, in one run.
//
// `vs_plain_read` is this benchmark's bytes/s over the bytes/s of a plain read of the
// same float buffer (an XOR of every 64-byte line at the widest vector width the CPU
// has), measured at start-up in the same process (median of 9 passes). Both rates use
// this thread's CPU time, not wall time: on a shared machine other processes preempt
// this one, which inflates wall time by whatever they happen to do. Two sizes: 64 MiB
// (from DRAM) and 512 KiB (from L2), since a reduction that keeps up with DRAM can still
// be compute-bound in cache.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <random>
#include <vector>

#include "qlib/arch/target.hpp"
#include "qlib/quantize.hpp"

#if QLIB_HAS_X86_KERNELS
#include <immintrin.h>
#endif

namespace {

constexpr qlib::index_t big_rows = 4096, big_cols = 4096;  // 16 Mi floats = 64 MiB
constexpr qlib::index_t small_rows = 128, small_cols = 1024;  // 128 Ki floats = 512 KiB

qlib::tensor<float, 2> make_input(qlib::index_t rows, qlib::index_t cols, unsigned seed) {
  qlib::tensor<float, 2> t({rows, cols});
  std::mt19937 g(seed);
  std::student_t_distribution<float> d(3.0f);
  for (float& v : t) v = d(g);
  return t;
}
const qlib::tensor<float, 2>& input(bool big) {
  static const qlib::tensor<float, 2> b = make_input(big_rows, big_cols, 1);
  static const qlib::tensor<float, 2> s = make_input(small_rows, small_cols, 2);
  return big ? b : s;
}

// XOR of every 64 bytes: the cheapest pass that still loads every byte.
std::uint64_t plain_read_portable(const float* p, std::size_t n) {
  std::uint64_t acc[8] = {};
  const std::size_t words = n / 2;
  std::uint64_t w[8];
  for (std::size_t i = 0; i + 8 <= words; i += 8) {
    std::memcpy(w, p + 2 * i, 64);
    for (int k = 0; k < 8; ++k) acc[k] ^= w[k];
  }
  std::uint64_t r = 0;
  for (auto a : acc) r ^= a;
  return r;
}
#if QLIB_HAS_X86_KERNELS
QLIB_TARGET_AVX512 std::uint64_t plain_read_avx512(const float* p, std::size_t n) {
  __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
  for (std::size_t i = 0; i + 64 <= n; i += 64) {
    a = _mm512_xor_si512(a, _mm512_loadu_si512(p + i));
    b = _mm512_xor_si512(b, _mm512_loadu_si512(p + i + 16));
    c = _mm512_xor_si512(c, _mm512_loadu_si512(p + i + 32));
    d = _mm512_xor_si512(d, _mm512_loadu_si512(p + i + 48));
  }
  a = _mm512_xor_si512(_mm512_xor_si512(a, b), _mm512_xor_si512(c, d));
  alignas(64) std::uint64_t lanes[8];
  _mm512_store_si512(lanes, a);
  std::uint64_t r = 0;
  for (std::uint64_t l : lanes) r ^= l;
  return r;
}
QLIB_TARGET_AVX2 std::uint64_t plain_read_avx2(const float* p, std::size_t n) {
  __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
  for (std::size_t i = 0; i + 32 <= n; i += 32) {
    a = _mm256_xor_si256(a, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
    b = _mm256_xor_si256(b, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 8)));
    c = _mm256_xor_si256(c, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 16)));
    d = _mm256_xor_si256(d, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 24)));
  }
  a = _mm256_xor_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(c, d));
  return static_cast<std::uint64_t>(_mm256_extract_epi64(a, 0) ^ _mm256_extract_epi64(a, 3));
}
#endif
std::uint64_t plain_read(const float* p, std::size_t n) {
#if QLIB_HAS_X86_KERNELS
  if (qlib::isa_supported(qlib::isa::avx512)) return plain_read_avx512(p, n);
  if (qlib::isa_supported(qlib::isa::avx2)) return plain_read_avx2(p, n);
#endif
  return plain_read_portable(p, n);
}

// This thread's CPU time in seconds.
double cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double plain_read_bytes_per_second(bool big) {
  auto measure = [](bool b) {
    const auto& x = input(b);
    const std::size_t n = static_cast<std::size_t>(x.size());
    const int reps = b ? 1 : 128;  // the small buffer is timed over many passes
    std::vector<double> secs;
    for (int r = 0; r < 9; ++r) {
      const double t0 = cpu_seconds();
      for (int k = 0; k < reps; ++k) benchmark::DoNotOptimize(plain_read(x.data(), n));
      secs.push_back((cpu_seconds() - t0) / reps);
    }
    std::sort(secs.begin(), secs.end());
    return 4.0 * static_cast<double>(n) / secs[secs.size() / 2];
  };
  static const double big_rate = measure(true), small_rate = measure(false);
  return big ? big_rate : small_rate;
}

// Times the benchmark loop itself in thread CPU time.
struct loop_timer {
  double start = cpu_seconds();
  double seconds() const { return cpu_seconds() - start; }
};

// Bytes/s counter plus the ratio to a plain read of the input floats.
void set_counters(benchmark::State& state, double bytes_per_iter, double elements_per_iter, const loop_timer& t,
                  bool big) {
  const double secs = t.seconds();
  const double iters = static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes_per_iter * iters));
  state.SetItemsProcessed(static_cast<std::int64_t>(elements_per_iter * iters));
  state.counters["vs_plain_read"] = bytes_per_iter * iters / secs / plain_read_bytes_per_second(big);
}

qlib::granularity granularity_of(int which) {
  switch (which) {
    case 0: return qlib::granularity::per_tensor();
    case 1: return qlib::granularity::per_channel(0);   // one channel per row
    case 2: return qlib::granularity::per_channel(1);   // one channel per column
    default: return qlib::granularity::per_group(1, 64);
  }
}

void BM_plain_read(benchmark::State& state) {
  const bool big = state.range(0) != 0;
  const auto& x = input(big);
  const loop_timer timer;
  for (auto _ : state) benchmark::DoNotOptimize(plain_read(x.data(), static_cast<std::size_t>(x.size())));
  set_counters(state, 4.0 * static_cast<double>(x.size()), static_cast<double>(x.size()), timer, big);
}

void BM_minmax_observer(benchmark::State& state) {
  const bool big = state.range(0) != 0;
  const auto& x = input(big);
  const qlib::granularity g = granularity_of(static_cast<int>(state.range(1)));
  qlib::minmax_observer obs(g);
  state.SetLabel(std::string(qlib::isa_name(qlib::active_isa())) + " " + g.describe());
  const loop_timer timer;
  for (auto _ : state) {
    obs.observe(x.cview());
    benchmark::ClobberMemory();
  }
  set_counters(state, 4.0 * static_cast<double>(x.size()), static_cast<double>(x.size()), timer, big);
}

void BM_histogram_observer(benchmark::State& state) {
  const auto& x = input(true);
  const qlib::granularity g = granularity_of(static_cast<int>(state.range(0)));
  qlib::histogram_observer obs(g);
  state.SetLabel(g.describe());
  const loop_timer timer;
  for (auto _ : state) {
    obs.observe(x.cview());
    benchmark::ClobberMemory();
  }
  set_counters(state, 4.0 * static_cast<double>(x.size()), static_cast<double>(x.size()), timer, true);
}

// Choosing the range from a per-tensor histogram (the searches cost O(bins x candidates)).
void BM_histogram_ranges(benchmark::State& state) {
  const auto& x = input(false);
  qlib::histogram_observer obs;
  obs.observe(x.cview());
  const auto m = static_cast<qlib::range_method>(state.range(0));
  state.SetLabel(qlib::range_method_name(m));
  for (auto _ : state) benchmark::DoNotOptimize(obs.ranges(qlib::schemes::s8_symmetric, m));
}

qlib::codebook_params codebook_of(int which, const qlib::tensor<float, 2>& x) {
  if (which == 0) return qlib::nf4_params(x.cview(), qlib::granularity::per_group(1, 64));
  // A fitted 16-level codebook per row (fitted on the small input, tiled over the rows).
  const auto& s = input(false);
  qlib::codebook_params p = qlib::fit_quantile_codebook(s.cview(), qlib::granularity::per_channel(0), {4, 0});
  qlib::codebook_params q = p;
  q.levels.clear();
  q.thresholds.clear();
  q.scale.clear();
  for (qlib::index_t r = 0; r < x.shape(0); ++r) {
    const qlib::index_t k = r % s.shape(0);
    q.levels.insert(q.levels.end(), p.levels_of(k), p.levels_of(k) + 16);
    q.thresholds.insert(q.thresholds.end(), p.thresholds_of(k), p.thresholds_of(k) + 15);
    q.scale.push_back(1.0f);
  }
  return q;
}

// float -> packed 4-bit indices; bytes = 4 read + 0.5 written per element.
void BM_quantile_quantize_u4(benchmark::State& state) {
  const auto& x = input(true);
  const qlib::codebook_params p = codebook_of(static_cast<int>(state.range(0)), x);
  qlib::u4_tensor<2> q(x.shape());
  state.SetLabel(state.range(0) == 0 ? "nf4 groups of 64" : "fitted codebook per row");
  const loop_timer timer;
  for (auto _ : state) {
    qlib::quantize_codebook(x.cview(), q.view(), p);
    benchmark::ClobberMemory();
  }
  set_counters(state, 4.5 * static_cast<double>(x.size()), static_cast<double>(x.size()), timer, true);
}

// packed 4-bit indices -> float by table lookup; bytes = 0.5 read + 4 written per element.
void BM_quantile_dequantize_u4(benchmark::State& state) {
  const auto& x = input(true);
  const qlib::codebook_params p = codebook_of(static_cast<int>(state.range(0)), x);
  qlib::u4_tensor<2> q(x.shape());
  qlib::quantize_codebook(x.cview(), q.view(), p);
  qlib::tensor<float, 2> y(x.shape());
  state.SetLabel(std::string(qlib::isa_name(qlib::active_isa())) + " " +
                 (state.range(0) == 0 ? "nf4 groups of 64" : "fitted codebook per row"));
  const loop_timer timer;
  for (auto _ : state) {
    qlib::dequantize_codebook(q.cview(), y.view(), p);
    benchmark::ClobberMemory();
  }
  set_counters(state, 4.5 * static_cast<double>(x.size()), static_cast<double>(x.size()), timer, true);
}

// Fitting a 16-level equal-frequency codebook (a sort of the 128 Ki values).
void BM_quantile_fit(benchmark::State& state) {
  const auto& x = input(false);
  for (auto _ : state)
    benchmark::DoNotOptimize(qlib::fit_quantile_codebook(x.cview(), qlib::granularity::per_tensor(), {4, 0}));
  state.SetItemsProcessed(static_cast<std::int64_t>(x.size()) * state.iterations());
}

}  // namespace

BENCHMARK(BM_plain_read)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_minmax_observer)
    ->ArgsProduct({{1, 0}, {0, 1, 2, 3}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_histogram_observer)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_histogram_ranges)->DenseRange(0, 3)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_quantile_quantize_u4)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_quantile_dequantize_u4)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_quantile_fit)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_MAIN();
