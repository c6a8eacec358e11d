// The Fashion-MNIST CNN of the demo, float vs static int8, single thread: latency at batch 1, time per batch of 64.
//
//   build/bench/bench/bench_fashion_mnist --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// PyTorch's numbers for the same weights: bench/pytorch_fashion_mnist.py.
#include <benchmark/benchmark.h>

#include "fashion_mnist_common.hpp"
#include "qlib/nn/state_dict.hpp"
#include "qlib/nn/static_quantization.hpp"

namespace fm = fashion_mnist;

namespace {
struct models {
  fm::dataset test = fm::load(fm::default_data_dir, "t10k", 640);
  qlib::nn::sequential folded;
  qlib::nn::quantized_sequential int8;
  models() {
    qlib::nn::sequential m = fm::make_cnn();
    qlib::nn::state_dict_options sd;
    sd.input_shape = fm::input_shape;
    qlib::nn::load_state_dict(m, qlib::io::safetensors_file::read(fm::default_weights), sd);
    const fm::dataset calib = fm::load(fm::default_data_dir, "train", 1000);
    qlib::nn::static_quantizer<qlib::histogram_observer> q(m);
    for (qlib::index_t b = 0; b < 1000; b += 100) q.observe(calib.images.cview().slice(0, b, b + 100));
    int8 = q.convert();
    folded = q.folded_model();
  }
};
const models& get() {
  static const models m;
  return m;
}

template <class Model>
void run(benchmark::State& state, const Model& model, qlib::index_t batch) {
  const auto& t = get().test;
  qlib::index_t i = 0;
  for (auto _ : state) {
    const qlib::index_t b0 = (i++ * batch) % (t.size() - batch + 1);
    auto y = model.forward(t.images.cview().slice(0, b0, b0 + batch));
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["images/s"] = benchmark::Counter(static_cast<double>(state.iterations() * batch), benchmark::Counter::kIsRate);
}

void float_b1(benchmark::State& s) { run(s, get().folded, 1); }
void int8_b1(benchmark::State& s) { run(s, get().int8, 1); }
void float_b64(benchmark::State& s) { run(s, get().folded, 64); }
void int8_b64(benchmark::State& s) { run(s, get().int8, 64); }
}  // namespace

BENCHMARK(float_b1)->Unit(benchmark::kMicrosecond);
BENCHMARK(int8_b1)->Unit(benchmark::kMicrosecond);
BENCHMARK(float_b64)->Unit(benchmark::kMicrosecond);
BENCHMARK(int8_b64)->Unit(benchmark::kMicrosecond);
BENCHMARK_MAIN();
