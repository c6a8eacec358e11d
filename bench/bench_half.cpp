// Throughput of float <-> fp16/bf16 bulk conversion, best ISA and each ISA, 1 Mi and 64 Mi elements.
//
// Bytes/s counts what each conversion moves per element: 4 bytes of float and 2 bytes of
// fp16/bf16 (read one, write the other). Arguments: element count, then the ISA cap
// (-1: the best this CPU has, as users get it; otherwise a qlib::isa value passed to
// set_isa_limit). 1 Mi elements (6 MiB moved) mostly stays in cache; 64 Mi (384 MiB)
// measures memory bandwidth.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "qlib/core/half_convert.hpp"

namespace {

// Buffers per element count, made once per process (the 64 Mi set is 768 MiB).
struct buffers {
  std::vector<float> f32_in, f32_out;
  std::vector<qlib::fp16> f16;
  std::vector<qlib::bf16> b16;
};

buffers& buffers_for(qlib::index_t n) {
  static std::map<qlib::index_t, buffers> cache;
  auto it = cache.find(n);
  if (it != cache.end()) return it->second;
  buffers& b = cache[n];
  const std::size_t un = static_cast<std::size_t>(n);
  b.f32_in.resize(un);
  b.f32_out.resize(un);
  b.f16.resize(un);
  b.b16.resize(un);
  std::mt19937 g(7);
  std::normal_distribution<float> d(0.0f, 2.0f);
  for (float& v : b.f32_in) v = d(g);
  qlib::float_to_fp16(b.f32_in.data(), b.f16.data(), n);
  qlib::float_to_bf16(b.f32_in.data(), b.b16.data(), n);
  return b;
}

// Applies the ISA cap of range(1); false (and the benchmark is skipped) if unsupported.
bool apply_isa(benchmark::State& state) {
  const int cap = static_cast<int>(state.range(1));
  if (cap < 0) {
    qlib::clear_isa_limit();
    state.SetLabel(std::string("best=") + qlib::isa_name(qlib::active_isa()));
    return true;
  }
  const qlib::isa i = static_cast<qlib::isa>(cap);
  if (!qlib::isa_supported(i)) {
    state.SkipWithError((std::string(qlib::isa_name(i)) + " not supported on this CPU").c_str());
    return false;
  }
  qlib::set_isa_limit(i);
  state.SetLabel(qlib::isa_name(i));
  return true;
}

template <class Convert>
void run(benchmark::State& state, Convert&& convert) {
  const qlib::index_t n = state.range(0);
  buffers& b = buffers_for(n);
  if (!apply_isa(state)) return;
  for (auto _ : state) {
    convert(b, n);
    benchmark::ClobberMemory();
  }
  qlib::clear_isa_limit();
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * n * 6);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * n);
}

void BM_float_to_fp16(benchmark::State& state) {
  run(state, [](buffers& b, qlib::index_t n) { qlib::float_to_fp16(b.f32_in.data(), b.f16.data(), n); });
}
void BM_fp16_to_float(benchmark::State& state) {
  run(state, [](buffers& b, qlib::index_t n) { qlib::fp16_to_float(b.f16.data(), b.f32_out.data(), n); });
}
void BM_float_to_bf16(benchmark::State& state) {
  run(state, [](buffers& b, qlib::index_t n) { qlib::float_to_bf16(b.f32_in.data(), b.b16.data(), n); });
}
void BM_bf16_to_float(benchmark::State& state) {
  run(state, [](buffers& b, qlib::index_t n) { qlib::bf16_to_float(b.b16.data(), b.f32_out.data(), n); });
}

void sizes_and_isas(benchmark::internal::Benchmark* b) {
  constexpr std::int64_t mi = 1 << 20;
  b->ArgNames({"n", "isa"});
  b->Args({mi, -1});
  b->Args({64 * mi, -1});
#if QLIB_ARCH_X86_64
  for (qlib::isa i : {qlib::isa::portable, qlib::isa::avx2, qlib::isa::avx512})
#elif QLIB_ARCH_AARCH64
  for (qlib::isa i : {qlib::isa::portable, qlib::isa::neon})
#else
  for (qlib::isa i : {qlib::isa::portable})
#endif
    b->Args({mi, static_cast<std::int64_t>(i)});
  b->Unit(benchmark::kMicrosecond);
  b->UseRealTime();
}

}  // namespace

BENCHMARK(BM_float_to_fp16)->Apply(sizes_and_isas);
BENCHMARK(BM_fp16_to_float)->Apply(sizes_and_isas);
BENCHMARK(BM_float_to_bf16)->Apply(sizes_and_isas);
BENCHMARK(BM_bf16_to_float)->Apply(sizes_and_isas);

BENCHMARK_MAIN();
