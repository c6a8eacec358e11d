// The end-to-end demo: a Fashion-MNIST CNN in float and static int8 - accuracy, file size, latency, throughput.
//
//   fashion_mnist                       load the shipped float weights, calibrate, quantize, report
//   fashion_mnist --train [--epochs N]  train the float model first (reproduces the shipped weights)
//   options: --data DIR  --weights FILE  --save FILE  --seed S  --calibration N  --out DIR
//            --width C1,C2,HIDDEN  (with --train: the CNN's widths, default 16,32,128; a loaded
//                                   file's widths are read off its shapes)
//            --flip  --shift S  (with --train: random mirror / shift by up to S pixels per batch)
//            --lr X  (with --train: Adam's peak learning rate, cosine to 0; default 1e-3)
//            --quick  (500 test images, 200 calibration images, no timing: the CI smoke test)
//   numeric values are checked whole (else a message and exit code 2): --epochs 1-10000, --seed 0 to 2^64-1,
//   --calibration 1-60000, --shift 0-27, --lr in (0, 10]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>

#include "fashion_mnist_common.hpp"
#include "qlib/arch/isa.hpp"
#include "qlib/gemm/driver.hpp"
#include "qlib/nn/quantized_io.hpp"
#include "qlib/nn/state_dict.hpp"
#include "qlib/nn/static_quantization.hpp"
#include "qlib/train.hpp"

namespace fm = fashion_mnist;
using qlib::index_t;

struct options {
  std::string data = fm::default_data_dir;
  std::string weights = fm::default_weights;
  std::string save;
  std::string out = (std::filesystem::temp_directory_path() / "qlib_fashion_mnist").string();
  bool train = false, quick = false;
  int epochs = 10;
  std::uint64_t seed = 1;
  fm::cnn_width width;
  qlib::train::augmentation augment;
  float lr = 1e-3f;
  index_t calibration = 1000;
};

static options parse(int argc, char** argv) {
  options o;
  bool calibration_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return fm::option_value(argc, argv, i); };
    if (a == "--data") o.data = next();
    else if (a == "--weights") o.weights = next();
    else if (a == "--save") o.save = next();
    else if (a == "--out") o.out = next();
    else if (a == "--train") o.train = true;
    else if (a == "--quick") o.quick = true;
    else if (a == "--epochs") o.epochs = fm::parse_epochs(next());
    else if (a == "--seed") o.seed = fm::parse_seed("--seed", next());
    else if (a == "--width") o.width = fm::parse_width(next());
    else if (a == "--flip") o.augment.flip = true;
    else if (a == "--shift") o.augment.shift = fm::parse_shift(next());
    else if (a == "--lr") o.lr = fm::parse_lr(next());
    else if (a == "--calibration") {
      o.calibration = fm::parse_calibration(next());
      calibration_given = true;
    }
    else {
      fm::help_or_unknown(a, __FILE__);
    }
  }
  if (o.quick && !calibration_given) o.calibration = 200;  // the CI smoke test (also under ASan and qemu)
  return o;
}

// Adam with a cosine learning rate, batch 64: the recipe behind the shipped weights
// (which used no augmentation).
static void train_model(qlib::nn::sequential& model, const fm::dataset& train, const options& o) {
  qlib::train::init_parameters(model, o.seed);
  qlib::train::adam opt(qlib::train::adam_options{});
  const index_t steps_per_epoch = (train.size() + 63) / 64;
  const qlib::train::cosine_schedule lr{o.lr, steps_per_epoch * o.epochs, 0.0f, 0};
  for (int e = 0; e < o.epochs; ++e) {
    qlib::train::epoch_options eo;
    eo.batch_size = 64;
    eo.seed = o.seed;
    eo.epoch = e;
    eo.learning_rate = lr;
    eo.augment = o.augment;
    const std::string what = "epoch " + std::to_string(e + 1) + "/" + std::to_string(o.epochs);
    qlib::train::train_epoch(model, train.images.cview(), train.label_view(), opt, eo, [&](const qlib::train::progress& p) {
      if (p.step % 50 == 0 || p.step + 1 == p.steps) {
        char extra[64];
        std::snprintf(extra, sizeof extra, "loss %.4f  acc %.2f%%", p.mean_loss, 100.0 * p.accuracy);
        fm::progress_bar(what.c_str(), p.step + 1, p.steps, extra);
      }
    });
  }
}

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  std::printf("qlib Fashion-MNIST demo  (ISA %s, int8 GEMM kernel %s, 1 thread)\n", qlib::isa_name(qlib::active_isa()),
              qlib::gemm::kernel_name(qlib::active_isa()));
  const fm::dataset test = fm::load(o.data, "t10k", o.quick ? 500 : 0);
  const fm::dataset train = fm::load(o.data, "train", o.train ? 0 : o.calibration);

  qlib::nn::state_dict_options sd;
  sd.input_shape = fm::input_shape;
  std::optional<qlib::io::safetensors_file> weights_file;
  if (!o.train) weights_file = qlib::io::safetensors_file::read(o.weights);
  qlib::nn::sequential model = fm::make_cnn(weights_file ? fm::width_of(*weights_file) : o.width);
  if (o.train) {
    train_model(model, train, o);
    // Does the trainer reproduce the shipped weights (same recipe, same seed)?
    const auto file = std::filesystem::exists(o.weights) ? std::optional(qlib::io::safetensors_file::read(o.weights))
                                                         : std::nullopt;
    if (file && fm::width_of(*file) == o.width) {
      const auto mine = qlib::nn::save_state_dict(model, sd).to_bytes();
      qlib::nn::sequential shipped = fm::make_cnn(o.width);
      qlib::nn::load_state_dict(shipped, *file, sd);
      const auto theirs = qlib::nn::save_state_dict(shipped, sd).to_bytes();
      std::printf("trained weights are %s the shipped ones (%s)\n",
                  mine == theirs ? "bit-identical to" : "NOT identical to", o.weights.c_str());
    }
    if (!o.save.empty()) {
      auto w = qlib::nn::save_state_dict(model, sd);
      std::string recipe = "fashion_mnist --train --epochs " + std::to_string(o.epochs) + " --seed " +
                           std::to_string(o.seed) + " --width " + fm::to_string(o.width);
      if (o.augment.flip) recipe += " --flip";
      if (o.augment.shift > 0) recipe += " --shift " + std::to_string(o.augment.shift);
      if (o.lr != 1e-3f) recipe += " --lr " + std::to_string(o.lr);
      w.set_metadata("qlib.recipe", recipe);
      w.write(o.save);
      std::printf("saved the float weights to %s\n", o.save.c_str());
    }
  } else {
    qlib::nn::load_state_dict(model, *weights_file, sd);
    std::printf("float weights: %s\n", o.weights.c_str());
  }

  // Static PTQ: BN folded, a histogram (MSE) observer on every activation, per-channel int8 weights.
  qlib::nn::static_quantizer<qlib::histogram_observer> quantizer(model);
  const index_t calib = std::min(o.calibration, train.size()), cb = 100;
  for (index_t b0 = 0; b0 < calib; b0 += cb) {
    quantizer.observe(train.images.cview().slice(0, b0, std::min(calib, b0 + cb)));
    fm::progress_bar("calibrating", std::min(calib, b0 + cb), calib);
  }
  const qlib::nn::quantized_sequential qmodel = quantizer.convert();
  const qlib::nn::sequential folded = quantizer.folded_model();  // the float model as it runs (BN folded)

  std::filesystem::create_directories(o.out);
  const std::string float_file = o.out + "/fashion_mnist_float.safetensors";
  const std::string int8_file = o.out + "/fashion_mnist_int8.safetensors";
  qlib::nn::save_state_dict(model, sd).write(float_file);
  qlib::nn::save_quantized(qmodel).write(int8_file);
  // The int8 model that is measured is the one read back from its file.
  const qlib::nn::quantized_sequential loaded = qlib::nn::load_quantized(qlib::io::safetensors_file::read(int8_file));

  const double acc_f = fm::test_accuracy(folded, test), acc_q = fm::test_accuracy(loaded, test);
  const auto bytes_f = std::filesystem::file_size(float_file), bytes_q = std::filesystem::file_size(int8_file);

  double b1_f = 0, b1_q = 0, b64_f = 0, b64_q = 0;
  if (!o.quick) {
    const index_t n1 = std::min<index_t>(test.size(), 500);
    index_t i = 0;
    b1_f = fm::median_seconds([&] { folded.forward(test.images.cview().slice(0, i % n1, i % n1 + 1)); ++i; }, 400, 20);
    b1_q = fm::median_seconds([&] { loaded.forward(test.images.cview().slice(0, i % n1, i % n1 + 1)); ++i; }, 400, 20);
    const auto batch = test.images.cview().slice(0, 0, 64);
    b64_f = fm::median_seconds([&] { folded.forward(batch); }, 40);
    b64_q = fm::median_seconds([&] { loaded.forward(batch); }, 40);
  }

  std::printf("\n%-22s %10s %12s %16s %18s %12s\n", "model", "test acc", "file bytes", "batch 1 (us)",
              "batch 64 (ms)", "images/s");
  auto row = [&](const char* name, double acc, std::uintmax_t bytes, double b1, double b64) {
    if (o.quick) std::printf("%-22s %9.2f%% %12ju %16s %18s %12s\n", name, 100 * acc, bytes, "-", "-", "-");
    else
      std::printf("%-22s %9.2f%% %12ju %16.1f %18.3f %12.0f\n", name, 100 * acc, bytes, 1e6 * b1, 1e3 * b64,
                  64.0 / b64);
  };
  row("float32 (BN folded)", acc_f, bytes_f, b1_f, b64_f);
  row("int8 static per-chan", acc_q, bytes_q, b1_q, b64_q);
  std::printf("\nint8 vs float: accuracy %+.2f points, file %.3fx", 100 * (acc_q - acc_f),
              static_cast<double>(bytes_q) / static_cast<double>(bytes_f));
  if (!o.quick) std::printf(", batch 1 %.2fx faster, batch 64 %.2fx faster", b1_f / b1_q, b64_f / b64_q);
  std::printf("\n(test set: %td images; calibration: %td training images; files in %s)\n", test.size(), calib,
              o.out.c_str());
  return 0;
}
