// int8 GEMM throughput beside the measured VNNI peak, oneDNN's int8 matmul and OpenBLAS sgemm, in one run.
//
// Every GEMM is C = A x B with A uint8 (M x K), B int8 (K x N, packed once: qlib::gemm::pack,
// oneDNN's reorder to the layout its primitive asks for with format_tag::any) and C
// int32, zero points 0; sgemm runs the same shapes in fp32. Counters:
//   GOPS      2*M*N*K / time
//   pct_peak  GOPS over a register-only loop of independent vpdpbusd measured at start-up
//             in this process (the same clock, same run)
//   pct_read  (M = 1) packed-weight bytes/s over a plain zmm read of the same buffer
// qlib_int8_out runs the same GEMM with an int8 layer epilogue (bias, per-channel
// requantize, ReLU, saturating cast), to show what the output pipeline costs;
// qlib_u8_out (the CNN shapes only) the uint8 epilogue of a conv layer feeding the next.
// avx2/ and avx2_7bit/ (M >= 128 shapes) run qlib on the AVX2 path: 8-bit weights (the
// 16-bit widening kernel) and the same weights halved into [-64, 63] (the vpmaddubsw
// kernel that 7-bit weights get).
// After the run a table prints qlib/oneDNN and qlib/sgemm per shape, each number the
// best of QLIB_BENCH_ROUNDS rounds of the whole suite (the machine may be shared).
//
// Threads: QLIB_BENCH_THREADS (default 1) sets qlib's gemm_options::threads, OpenBLAS's
// thread count and OMP_NUM_THREADS for oneDNN. Pin the process, e.g.
//   taskset -c 1 ./bench_gemm                                   (single thread)
//   QLIB_BENCH_THREADS=2 taskset -c 0,1 ./bench_gemm            (two threads)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "qlib/gemm.hpp"
#include "qlib/kernels/avx512/read_probe.hpp"
#include "qlib/kernels/avx512vnni/dpbusd_probe.hpp"

#if QLIB_BENCH_WITH_ONEDNN
#include "oneapi/dnnl/dnnl.hpp"
#endif
#if QLIB_BENCH_WITH_OPENBLAS
#include <cblas.h>
#endif

namespace {

using qlib::index_t;

struct shape {
  index_t m, n, k;
};
const shape shapes[] = {{1, 4096, 4096},   {8, 4096, 4096},   {128, 768, 768}, {128, 3072, 768},
                        {512, 512, 512},   {1024, 1024, 1024}, {3136, 64, 576}, {196, 256, 2304},
                        // A long-K layer (a 7B LLM's MLP down-projection, 128 tokens): B is 45 MB.
                        {128, 4096, 11008},
                        // The Fashion-MNIST CNN at batch 64 (im2col, NHWC): conv1 3x3x1 -> 16 on
                        // 26x26, conv2 3x3x16 -> 32 on 11x11, then the 800 -> 128 linear layer.
                        {43264, 16, 9},    {7744, 32, 144},    {64, 128, 800}};
constexpr int shape_count = static_cast<int>(sizeof(shapes) / sizeof(shapes[0]));
constexpr int first_cnn_shape = 9;  // the CNN shapes also run with a uint8 layer epilogue

std::string shape_name(const shape& s) {
  return std::to_string(s.m) + "x" + std::to_string(s.n) + "x" + std::to_string(s.k);
}
double ops(const shape& s) { return 2.0 * static_cast<double>(s.m) * static_cast<double>(s.n) * static_cast<double>(s.k); }

// QLIB_BENCH_ROUNDS (default 3): the whole suite runs this many times, interleaving
// the libraries, and the summary keeps each entry's best.
int bench_rounds() {
  static const int n = [] {
    const char* e = std::getenv("QLIB_BENCH_ROUNDS");
    const int v = e ? std::atoi(e) : 3;
    return v >= 1 ? v : 1;
  }();
  return n;
}

int bench_threads() {
  static const int t = [] {
    const char* e = std::getenv("QLIB_BENCH_THREADS");
    const int v = e ? std::atoi(e) : 1;
    return v >= 1 ? v : 1;
  }();
  return t;
}

struct loop_timer {
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); }
};

// The VNNI peak of this core in GOPS: the best of 7 runs of the register-only probe,
// re-measured at every round (measure_vnni_peak) and the best kept. Other processes
// on a shared machine can only slow a run down, so the best is the estimate.
double& vnni_peak_slot() {
  static double peak = 0;
  return peak;
}
void measure_vnni_peak() {
  if (!qlib::isa_supported(qlib::isa::avx512_vnni)) return;
  constexpr index_t iterations = 2000000;
  for (int r = 0; r < 7; ++r) {
    const loop_timer t;
    benchmark::DoNotOptimize(qlib::kernels::dpbusd_peak_probe(iterations));
    vnni_peak_slot() = std::max(vnni_peak_slot(),
                                qlib::kernels::dpbusd_probe_ops_per_iteration * iterations / t.seconds() / 1e9);
  }
}
double vnni_peak_gops() { return vnni_peak_slot(); }

// The operands of one shape, made once: A, B (plain and packed), C, and float copies.
struct operands {
  shape s;
  qlib::tensor<std::uint8_t, 2> a;
  qlib::tensor<std::int8_t, 2> b;
  qlib::gemm::packed_weights packed, packed_7bit;
  qlib::tensor<std::int32_t, 2> c;

  explicit operands(const shape& sh) : s(sh), a({sh.m, sh.k}), b({sh.k, sh.n}), c({sh.m, sh.n}) {
    std::mt19937 g(42);
    for (auto& v : a) v = static_cast<std::uint8_t>(g());
    for (auto& v : b) v = static_cast<std::int8_t>(g());
    packed = qlib::gemm::pack(b.cview());
    qlib::tensor<std::int8_t, 2> b7({sh.k, sh.n});
    for (index_t i = 0; i < b.size(); ++i) b7.data()[i] = static_cast<std::int8_t>(b.data()[i] >> 1);
    packed_7bit = qlib::gemm::pack(b7.cview());
  }
};
operands& operands_of(int i) {
  static std::unique_ptr<operands> cache[shape_count];
  if (!cache[i]) cache[i] = std::make_unique<operands>(shapes[i]);
  return *cache[i];
}

struct row {
  double qlib = 0, qlib_int8 = 0, qlib_u8 = 0, onednn = 0, sgemm = 0;  // best GOPS over the rounds
  double avx2 = 0, avx2_7bit = 0;
  std::string onednn_impl;
  bool onednn_matches = true;
};
std::map<int, row>& table() {
  static std::map<int, row> t;
  return t;
}

// The best rate of plain reads of a shape's packed weights, measured by
// read_packed_weights (which runs before the GEMMs in every round).
std::map<int, double>& read_rates() {
  static std::map<int, double> r;
  return r;
}
double read_bytes_per_second(int shape_index) { return read_rates()[shape_index]; }

void set_gemm_counters(benchmark::State& state, const shape& s, double seconds) {
  const double gops = ops(s) * static_cast<double>(state.iterations()) / seconds / 1e9;
  state.counters["GOPS"] = gops;
  if (vnni_peak_gops() > 0) state.counters["pct_peak"] = 100.0 * gops / vnni_peak_gops();
}

void BM_vnni_peak(benchmark::State& state) {
  constexpr index_t iterations = 100000;
  const loop_timer t;
  for (auto _ : state) benchmark::DoNotOptimize(qlib::kernels::dpbusd_peak_probe(iterations));
  state.counters["GOPS"] = qlib::kernels::dpbusd_probe_ops_per_iteration * iterations *
                           static_cast<double>(state.iterations()) / t.seconds() / 1e9;
}

void BM_read_packed_weights(benchmark::State& state) {
  const auto& w = operands_of(static_cast<int>(state.range(0))).packed;
  state.SetLabel(shape_name(shapes[state.range(0)]) + " packed B");
  const loop_timer t;
  for (auto _ : state) benchmark::DoNotOptimize(qlib::kernels::read_probe(w.data(), w.byte_size()));
  const double bps = static_cast<double>(w.byte_size()) * static_cast<double>(state.iterations()) / t.seconds();
  state.counters["GBps"] = bps / 1e9;
  double& best = read_rates()[static_cast<int>(state.range(0))];
  best = std::max(best, bps);
}

void BM_qlib(benchmark::State& state) {
  const int i = static_cast<int>(state.range(0));
  operands& o = operands_of(i);
  qlib::gemm::gemm_options opt;
  opt.threads = bench_threads();
  state.SetLabel(shape_name(o.s) + " " + qlib::gemm::kernel_name(qlib::active_isa()));
  qlib::gemm::gemm(o.a.cview(), {0}, o.packed, o.c.view(), opt);  // warm caches and the thread pool
  const loop_timer t;
  for (auto _ : state) {
    qlib::gemm::gemm(o.a.cview(), {0}, o.packed, o.c.view(), opt);
    benchmark::ClobberMemory();
  }
  const double secs = t.seconds();
  set_gemm_counters(state, o.s, secs);
  row& r = table()[i];
  r.qlib = std::max(r.qlib, ops(o.s) * static_cast<double>(state.iterations()) / secs / 1e9);
  if (o.s.m == 1 && read_bytes_per_second(i) > 0) {
    const double bps = static_cast<double>(o.packed.byte_size()) * static_cast<double>(state.iterations()) / secs;
    state.counters["pct_read"] = 100.0 * bps / read_bytes_per_second(i);
  }
}

// qlib on the AVX2 path (static dispatch), 8-bit weights (range(1) = 0) or 7-bit (1).
void BM_qlib_avx2(benchmark::State& state) {
  const int i = static_cast<int>(state.range(0));
  const bool seven = state.range(1) != 0;
  operands& o = operands_of(i);
  const qlib::gemm::packed_weights& w = seven ? o.packed_7bit : o.packed;
  state.SetLabel(shape_name(o.s) + " " + qlib::gemm::kernel_name(qlib::isa::avx2, w));
  qlib::gemm::gemm(qlib::arch::avx2{}, o.a.cview(), {0}, w, std::tuple<>{}, o.c.view());
  const loop_timer t;
  for (auto _ : state) {
    qlib::gemm::gemm(qlib::arch::avx2{}, o.a.cview(), {0}, w, std::tuple<>{}, o.c.view());
    benchmark::ClobberMemory();
  }
  const double secs = t.seconds();
  set_gemm_counters(state, o.s, secs);
  double& best = seven ? table()[i].avx2_7bit : table()[i].avx2;
  best = std::max(best, ops(o.s) * static_cast<double>(state.iterations()) / secs / 1e9);
}

// Per-channel bias and fixed-point multipliers of a layer epilogue (real multiplier
// `scale` times 1 to 2 by channel).
struct channel_params {
  std::vector<std::int32_t> bias, multiplier, shift;
  channel_params(index_t n, double scale) {
    for (index_t j = 0; j < n; ++j) {
      bias.push_back(static_cast<std::int32_t>(j * 37 % 2001) - 1000);
      const auto q = qlib::quantize_multiplier(scale * (1.0 + static_cast<double>(j % 7) / 7.0));
      multiplier.push_back(q.multiplier);
      shift.push_back(q.shift);
    }
  }
};

// Shape i's GEMM with `pipeline` into C of type Out; returns the best GOPS so far in `best`.
template <class Out, class Pipeline>
void run_pipeline_benchmark(benchmark::State& state, int i, const Pipeline& pipeline, const std::string& label,
                            double& best) {
  operands& o = operands_of(i);
  qlib::gemm::gemm_options opt;
  opt.threads = bench_threads();
  qlib::tensor<Out, 2> c({o.s.m, o.s.n});
  state.SetLabel(shape_name(o.s) + " " + label);
  qlib::gemm::gemm(o.a.cview(), {0}, o.packed, pipeline, c.view(), opt);
  const loop_timer t;
  for (auto _ : state) {
    qlib::gemm::gemm(o.a.cview(), {0}, o.packed, pipeline, c.view(), opt);
    benchmark::ClobberMemory();
  }
  const double secs = t.seconds();
  set_gemm_counters(state, o.s, secs);
  best = std::max(best, ops(o.s) * static_cast<double>(state.iterations()) / secs / 1e9);
}

// The same GEMM with a typical int8 layer epilogue: per-channel bias, per-channel
// fixed-point requantize (TFLite double rounding), ReLU, saturating cast to int8.
void BM_qlib_int8_out(benchmark::State& state) {
  const int i = static_cast<int>(state.range(0));
  const index_t n = shapes[i].n;
  const channel_params p(n, 0.0001);
  const auto pipeline = qlib::gemm::make_pipeline(
      qlib::gemm::bias_add{p.bias.data(), n},
      qlib::gemm::requantize_fixed_point_per_channel<>{p.multiplier.data(), p.shift.data(), n, 3}, qlib::gemm::relu(3),
      qlib::gemm::saturating_cast<std::int8_t>{});
  run_pipeline_benchmark<std::int8_t>(state, i, pipeline, "bias+requant+relu+int8", table()[i].qlib_int8);
}

// The CNN's layer epilogue: per-channel bias, per-channel fixed-point requantize to a
// zero point of 0, saturating cast to uint8 (ReLU comes with the cast), so C is the
// next layer's uint8 input.
void BM_qlib_u8_out(benchmark::State& state) {
  const int i = static_cast<int>(state.range(0));
  const index_t n = shapes[i].n;
  const channel_params p(n, 0.001);
  const auto pipeline = qlib::gemm::make_pipeline(
      qlib::gemm::bias_add{p.bias.data(), n},
      qlib::gemm::requantize_fixed_point_per_channel<>{p.multiplier.data(), p.shift.data(), n, 0},
      qlib::gemm::saturating_cast<std::uint8_t>{});
  run_pipeline_benchmark<std::uint8_t>(state, i, pipeline, "bias+requant+uint8", table()[i].qlib_u8);
}

#if QLIB_BENCH_WITH_ONEDNN
void BM_onednn(benchmark::State& state) {
  using namespace dnnl;
  using dt = memory::data_type;
  using tag = memory::format_tag;
  const int i = static_cast<int>(state.range(0));
  operands& o = operands_of(i);
  const memory::dim m = o.s.m, n = o.s.n, k = o.s.k;
  engine eng(engine::kind::cpu, 0);
  stream strm(eng);
  const memory::desc a_md({m, k}, dt::u8, tag::ab), c_md({m, n}, dt::s32, tag::ab);
  const memory::desc b_any({k, n}, dt::s8, tag::any), b_plain({k, n}, dt::s8, tag::ab);
  const matmul::primitive_desc pd(matmul::desc(a_md, b_any, c_md), eng);
  memory b_user(b_plain, eng, o.b.data());
  memory b_packed(pd.weights_desc(), eng);
  reorder(b_user, b_packed).execute(strm, b_user, b_packed);
  strm.wait();
  qlib::tensor<std::int32_t, 2> c({o.s.m, o.s.n});
  memory a_mem(a_md, eng, o.a.data()), c_mem(c_md, eng, c.data());
  const matmul prim(pd);
  const std::unordered_map<int, memory> args{{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_packed}, {DNNL_ARG_DST, c_mem}};
  prim.execute(strm, args);
  strm.wait();
  row& r = table()[i];
  r.onednn_impl = pd.impl_info_str();
  qlib::gemm::gemm(o.a.cview(), {0}, o.packed, o.c.view());
  r.onednn_matches = std::memcmp(c.data(), o.c.data(), sizeof(std::int32_t) * static_cast<std::size_t>(c.size())) == 0;
  state.SetLabel(shape_name(o.s) + " " + r.onednn_impl);
  const loop_timer t;
  for (auto _ : state) {
    prim.execute(strm, args);
    strm.wait();
  }
  const double secs = t.seconds();
  set_gemm_counters(state, o.s, secs);
  r.onednn = std::max(r.onednn, ops(o.s) * static_cast<double>(state.iterations()) / secs / 1e9);
}
#endif

#if QLIB_BENCH_WITH_OPENBLAS
void BM_openblas_sgemm(benchmark::State& state) {
  const int i = static_cast<int>(state.range(0));
  operands& o = operands_of(i);
  std::vector<float> a(static_cast<std::size_t>(o.a.size())), b(static_cast<std::size_t>(o.b.size()));
  std::vector<float> c(static_cast<std::size_t>(o.s.m * o.s.n));
  std::copy(o.a.begin(), o.a.end(), a.begin());
  std::copy(o.b.begin(), o.b.end(), b.begin());
  const auto m = static_cast<int>(o.s.m), n = static_cast<int>(o.s.n), k = static_cast<int>(o.s.k);
  state.SetLabel(shape_name(o.s) + " fp32");
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n);
  const loop_timer t;
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n);
    benchmark::ClobberMemory();
  }
  const double secs = t.seconds();
  set_gemm_counters(state, o.s, secs);
  table()[i].sgemm = std::max(table()[i].sgemm, ops(o.s) * static_cast<double>(state.iterations()) / secs / 1e9);
}
#endif

void register_benchmarks() {
  benchmark::RegisterBenchmark("vnni_peak", BM_vnni_peak)->Unit(benchmark::kMillisecond)->UseRealTime();
  benchmark::RegisterBenchmark("read_packed_weights", BM_read_packed_weights)
      ->Arg(0)
      ->Unit(benchmark::kMicrosecond)
      ->UseRealTime();
  for (int i = 0; i < shape_count; ++i) {
    const std::string name = shape_name(shapes[i]);
    benchmark::RegisterBenchmark(("qlib/" + name).c_str(), BM_qlib)->Arg(i)->Unit(benchmark::kMicrosecond)->UseRealTime();
    if (shapes[i].m >= 128 && qlib::isa_supported(qlib::isa::avx2))
      for (int seven = 0; seven < 2; ++seven)
        benchmark::RegisterBenchmark(((seven ? "avx2_7bit/" : "avx2/") + name).c_str(), BM_qlib_avx2)
            ->Args({i, seven})
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime();
    benchmark::RegisterBenchmark(("qlib_int8_out/" + name).c_str(), BM_qlib_int8_out)
        ->Arg(i)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
    if (i >= first_cnn_shape)
      benchmark::RegisterBenchmark(("qlib_u8_out/" + name).c_str(), BM_qlib_u8_out)
          ->Arg(i)
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
#if QLIB_BENCH_WITH_ONEDNN
    benchmark::RegisterBenchmark(("onednn/" + name).c_str(), BM_onednn)->Arg(i)->Unit(benchmark::kMicrosecond)->UseRealTime();
#endif
#if QLIB_BENCH_WITH_OPENBLAS
    benchmark::RegisterBenchmark(("openblas_sgemm/" + name).c_str(), BM_openblas_sgemm)
        ->Arg(i)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
#endif
  }
}

void print_summary() {
  std::printf("\nthreads %d, %d rounds (best of each), VNNI peak %.1f GOPS (register-only vpdpbusd, same process)\n",
              bench_threads(), bench_rounds(), vnni_peak_gops());
  std::printf("%-16s %9s %6s %9s %6s %9s %6s %9s %6s %11s %9s %10s %s\n", "M x N x K", "qlib", "%peak", "qlib-int8",
              "%peak", "qlib-u8", "%peak", "oneDNN", "%peak", "qlib/oneDNN", "sgemm", "qlib/sgemm", "notes");
  for (const auto& kv : table()) {
    const shape& s = shapes[kv.first];
    const row& r = kv.second;
    const double peak = vnni_peak_gops() > 0 ? vnni_peak_gops() : 1.0;
    std::string notes;
    if (s.m == 1 && read_bytes_per_second(kv.first) > 0) {
      const double qlib_bps = static_cast<double>(operands_of(kv.first).packed.byte_size()) * r.qlib / ops(s) * 1e9;
      notes += "qlib reads packed B at " +
               std::to_string(static_cast<int>(100.0 * qlib_bps / read_bytes_per_second(kv.first) + 0.5)) +
               "% of a plain read (" + std::to_string(static_cast<int>(read_bytes_per_second(kv.first) / 1e9 + 0.5)) +
               " GB/s); ";
    }
    if (!r.onednn_matches) notes += "oneDNN result DIFFERS; ";
    std::printf("%-16s %9.1f %6.1f %9.1f %6.1f %9.1f %6.1f %9.1f %6.1f %11.3f %9.1f %10.2f %s\n",
                shape_name(s).c_str(), r.qlib, 100.0 * r.qlib / peak, r.qlib_int8, 100.0 * r.qlib_int8 / peak,
                r.qlib_u8, 100.0 * r.qlib_u8 / peak, r.onednn, 100.0 * r.onednn / peak,
                r.onednn > 0 ? r.qlib / r.onednn : 0.0, r.sgemm, r.sgemm > 0 ? r.qlib / r.sgemm : 0.0, notes.c_str());
  }
  std::printf("\nAVX2 path (no VNNI): %-16s %9s %11s %8s\n", "M x N x K", "8-bit w", "7-bit w", "7/8");
  for (const auto& kv : table())
    if (kv.second.avx2 > 0)
      std::printf("                     %-16s %9.1f %11.1f %8.2f\n", shape_name(shapes[kv.first]).c_str(),
                  kv.second.avx2, kv.second.avx2_7bit, kv.second.avx2_7bit / kv.second.avx2);
  for (const auto& kv : table())
    if (!kv.second.onednn_impl.empty())
      std::printf("oneDNN implementation for %s: %s\n", shape_name(shapes[kv.first]).c_str(),
                  kv.second.onednn_impl.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  // Peers take their thread counts from the environment or their own API; set them
  // before either library starts its threads.
  const std::string threads = std::to_string(bench_threads());
  setenv("OMP_NUM_THREADS", threads.c_str(), 1);
  // Idle OpenMP workers must sleep, not spin: a spinning oneDNN worker would steal the
  // second core from the next library's threads.
  setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
#if QLIB_BENCH_WITH_OPENBLAS
  openblas_set_num_threads(bench_threads());
#endif
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_benchmarks();
  // One reporter for all rounds (the default one is not reusable); plain text, counters as name=value.
  benchmark::ConsoleReporter reporter(benchmark::ConsoleReporter::OO_None);
  for (int round = 0; round < bench_rounds(); ++round) {
    measure_vnni_peak();
    benchmark::RunSpecifiedBenchmarks(&reporter);
  }
  print_summary();
  return 0;
}
