// Mixed-precision weights for the shipped Fashion-MNIST CNN: each layer's sensitivity to 2-8 bit weights, the exact
// best bit width per layer under several size budgets, checked jointly and as int8 models, against uniform widths.
//
//   bit_width_search                    budgets of 8, 6, 5, 4, 3 and 2.5 bits per weight on average
//   options: --data DIR  --weights FILE  --calibration N (training images, default 1000)
//            --metric kl|mse (sensitivity metric, default kl)  --budgets A,B,...  --out DIR (writes the table as CSV)
//            --quick  (200 calibration images, 500 test images: the CI smoke test)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "fashion_mnist_common.hpp"
#include "qlib/nn/bit_width_search.hpp"
#include "qlib/nn/quantized_io.hpp"
#include "qlib/nn/state_dict.hpp"
#include "qlib/nn/static_quantization.hpp"

namespace fm = fashion_mnist;
using qlib::index_t;

namespace {

struct options {
  std::string data = fm::default_data_dir;
  std::string weights = fm::default_weights;
  std::string out;  // empty: no CSV
  bool quick = false;
  index_t calibration = 1000;
  qlib::nn::sensitivity_metric metric = qlib::nn::sensitivity_metric::kl_divergence;
  std::vector<double> budgets{8, 6, 5, 4, 3, 2.5};
};

options parse(int argc, char** argv) {
  options o;
  bool calibration_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return fm::option_value(argc, argv, i); };
    if (a == "--data") o.data = next();
    else if (a == "--weights") o.weights = next();
    else if (a == "--out") o.out = next();
    else if (a == "--quick") o.quick = true;
    else if (a == "--calibration") {
      o.calibration = fm::parse_calibration(next());
      calibration_given = true;
    } else if (a == "--metric") {
      const std::string m = next();
      if (m != "kl" && m != "mse") {
        std::fprintf(stderr, "--metric is kl or mse, not %s\n", m.c_str());
        std::exit(2);
      }
      o.metric = m == "kl" ? qlib::nn::sensitivity_metric::kl_divergence : qlib::nn::sensitivity_metric::logit_mse;
    } else if (a == "--budgets") {
      o.budgets.clear();
      std::stringstream ss(next());
      std::string item;
      while (std::getline(ss, item, ','))
        o.budgets.push_back(fm::parse_number("--budgets", item, 2.0, 8.0, "an average bit width in [2, 8]"));
      if (o.budgets.empty()) fm::bad_value("--budgets", "", "a list of average bit widths in [2, 8]");
    } else {
      fm::help_or_unknown(a, __FILE__);
    }
  }
  if (o.quick && !calibration_given) o.calibration = 200;
  return o;
}

// One row of the table: a plan, its joint measurement and its int8 model's accuracy.
struct row {
  std::string budget, method, bits;
  double average_bits = 0, predicted = 0, measured = 0, weight_acc = 0, int8_acc = 0;
  std::int64_t bytes = 0, file_bytes = 0;
};

std::string bits_string(const qlib::nn::bit_width_plan& p) {
  std::string s;
  for (int b : p.bits_per_layer()) s += (s.empty() ? "" : " ") + std::to_string(b);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  const fm::dataset test = fm::load(o.data, "t10k", o.quick ? 500 : 0);
  const fm::dataset train = fm::load(o.data, "train", o.calibration);
  qlib::nn::state_dict_options sd;
  sd.input_shape = fm::input_shape;
  const auto file = qlib::io::safetensors_file::read(o.weights);
  qlib::nn::sequential model = fm::make_cnn(fm::width_of(file));
  qlib::nn::load_state_dict(model, file, sd);
  const auto calib = train.images.cview();
  std::printf("qlib bit-width search on the Fashion-MNIST CNN (%s)\n"
              "calibration: %td training images; test: %td images; metric: %s\n\n",
              o.weights.c_str(), calib.shape(0), test.size(), qlib::nn::metric_name(o.metric));

  // 1. Sensitivity of every conv/linear layer to every candidate bit width.
  qlib::nn::bit_width_search_options so;
  so.metric = o.metric;
  const auto t0 = std::chrono::steady_clock::now();
  const qlib::nn::sensitivity_report r = qlib::nn::measure_sensitivity(model, calib, so);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("sensitivity (%s vs the float model, one layer quantized at a time; %.2f s):\n%-6s %-7s %8s",
              qlib::nn::metric_name(o.metric), secs, "layer", "kind", "weights");
  for (int b : r.bits) std::printf("   %2d bits", b);
  std::printf("\n");
  for (const auto& l : r.layers) {
    std::printf("%-6zu %-7s %8td", l.layer, l.kind, l.weights);
    for (double s : l.sensitivity) std::printf(" %9.2e", s);
    std::printf("\n");
  }

  // 2. Plans per budget, and uniform widths of the same size. The float model's outputs on
  // the calibration and test images are computed once (plan_evaluator).
  const qlib::nn::plan_evaluator on_calib(model, calib), on_test(model, test.images.cview(), test.label_view());
  auto int8_model = [&](const qlib::nn::bit_width_plan& p, row& w) {
    // as examples/fashion_mnist.cpp, with the plan's per-layer weight bits; the file is
    // what nn::save_quantized writes (codes narrower than 8 bits packed at their width)
    qlib::nn::static_quantizer<qlib::histogram_observer> q(model, p.quantization_options());
    for (index_t b0 = 0; b0 < calib.shape(0); b0 += 100)
      q.observe(calib.slice(0, b0, std::min(calib.shape(0), b0 + 100)));
    const qlib::nn::quantized_sequential m = q.convert();
    w.int8_acc = fm::test_accuracy(m, test);
    w.file_bytes = static_cast<std::int64_t>(qlib::nn::save_quantized(m).to_bytes().size());
  };
  auto measure = [&](const std::string& budget, const std::string& method, const qlib::nn::bit_width_plan& p) {
    row w{budget, method, bits_string(p), p.average_bits(), p.predicted, 0, 0, 0, p.size_bytes(), 0};
    w.measured = on_calib(p).measured;
    w.weight_acc = on_test(p).accuracy;
    int8_model(p, w);
    return w;
  };
  std::vector<row> rows;
  for (double b : o.budgets) {  // each in [2, 8] (parse)
    char name[32];
    std::snprintf(name, sizeof name, "%g", b);
    const qlib::nn::bit_width_plan p = qlib::nn::choose_bit_widths(r, qlib::nn::size_budget::average_bits(b));
    rows.push_back(measure(name, "search", p));
    const int whole = static_cast<int>(b);
    if (whole == b && std::find(r.bits.begin(), r.bits.end(), whole) != r.bits.end())
      rows.push_back(measure(name, "uniform", qlib::nn::uniform_bit_widths(r, whole)));
  }

  const double float_acc = on_test.float_accuracy();
  std::printf("\nfloat model: test accuracy %.2f%%; weight bytes = weights packed at their bit widths + fp32 scales "
              "per channel\n\n",
              100 * float_acc);
  std::printf("%-7s %-8s %-12s %8s %8s %11s %11s %9s %9s %10s\n", "budget", "method", "bits/layer", "avg bits",
              "bytes", "predicted", "measured", "w-only", "int8", "int8 file");
  for (const row& w : rows)
    std::printf("%-7s %-8s %-12s %8.3f %8lld %11.3e %11.3e %8.2f%% %8.2f%% %10lld\n", w.budget.c_str(),
                w.method.c_str(), w.bits.c_str(), w.average_bits, static_cast<long long>(w.bytes), w.predicted,
                w.measured, 100 * w.weight_acc, 100 * w.int8_acc, static_cast<long long>(w.file_bytes));
  std::printf("(predicted: sum of the layers' sensitivities; measured: all layers quantized at once, on the "
              "calibration images;\n w-only: test accuracy with quantized weights and float activations; int8: the "
              "static int8 model with these weight bits;\n int8 file: its nn::save_quantized file, codes packed at their width or as mask + packed non-zero-point codes)\n");

  if (!o.out.empty()) {
    std::filesystem::create_directories(o.out);
    std::ofstream csv(o.out + "/bit_width_search.csv");
    csv << "budget,method,bits,average_bits,bytes,predicted,measured,weight_only_accuracy,int8_accuracy,int8_file_bytes\n";
    for (const row& w : rows)
      csv << w.budget << ',' << w.method << ',' << w.bits << ',' << w.average_bits << ',' << w.bytes << ','
          << w.predicted << ',' << w.measured << ',' << w.weight_acc << ',' << w.int8_acc << ',' << w.file_bytes
          << '\n';
  }
  return 0;
}
