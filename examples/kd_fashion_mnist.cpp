// Knowledge distillation on Fashion-MNIST: a half-width student trained plain vs distilled from a wider float CNN, over several seeds.
//
//   kd_fashion_mnist    the full run: 3 seeds, plain and distilled, 60k training images, 32 epochs,
//                       teacher: the shipped wide CNN (32,64,256, 92.82%), T = 1, alpha = 0.9
//                       (about 16 minutes of CPU)
//   options: --data DIR  --weights FILE[,FILE...] (the teacher; several files: the mean of their
//            logits; default examples/data/fashion_mnist_cnn_wide.safetensors)
//            --epochs N  --seeds N  --first-seed N (1)
//            --T X  --alpha X  --lr X (Adam, cosine to 0)  --batch N  --train N (images, 0 = all)
//            --flip / --no-flip  --shift S  (augmentation of both students' batches: random
//                                mirror, shift by up to S pixels; default none)
//            --online / --offline  (the teacher run on each batch as the student sees it, or its
//                                   logits of the unaugmented images computed once; the same
//                                   bits without augmentation. Default: online when augmenting)
//            --int8-teacher  (the teacher statically quantized to int8, as the demo does)
//            --kd-only / --plain-only  (one kind of student: for sweeps of T and alpha, which
//                                       plain does not use)
//            --quick  (2,000 training images, 500 test images, 1 epoch, 2 seeds: the CI smoke test)
//   numeric values are checked whole (else a message and exit code 2): --epochs 1-10000, --seeds 1-1000,
//   --first-seed 0-10^9, --T in (0, 1000], --alpha in [0, 1], --lr in (0, 10], --batch 1-60000,
//   --train 0-60000, --shift 0-27
#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "fashion_mnist_common.hpp"
#include "qlib/nn.hpp"
#include "qlib/nn/state_dict.hpp"
#include "qlib/train.hpp"
#include "qlib/train/distill.hpp"

namespace fm = fashion_mnist;
using qlib::index_t;

struct options {
  std::string data = fm::default_data_dir;
  std::string weights = fm::wide_weights;
  bool quick = false, kd_only = false, plain_only = false, int8_teacher = false;
  int online = -1;  // -1: online exactly when augmenting
  // The recipe: a stronger teacher (twice the shipped model's widths, trained 30 epochs on
  // mirrored and shifted images: `fashion_mnist --train --width 32,64,256 --epochs 30
  // --flip --shift 2`) and a long schedule. At 32 epochs the plain student overfits
  // (90.10%, down from 90.58% at 16) while the distilled one keeps its accuracy (91.11%),
  // a gain of 1.01 points against a seed range of 0.63 (seeds 4-6 confirm it); see
  // BENCHMARKS.md, issue 7, for every configuration tried.
  int epochs = 32, seeds = 3, first_seed = 1;
  float temperature = 1.0f, alpha = 0.9f, lr = 2e-3f;
  index_t batch = 64, train = 0;
  qlib::train::augmentation augment{false, 0};
};

static options parse(int argc, char** argv) {
  options o;
  bool epochs_given = false, seeds_given = false, train_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return fm::option_value(argc, argv, i); };
    if (a == "--data") o.data = next();
    else if (a == "--weights") o.weights = next();
    else if (a == "--quick") o.quick = true;
    else if (a == "--kd-only") o.kd_only = true;
    else if (a == "--plain-only") o.plain_only = true;
    else if (a == "--offline") o.online = 0;
    else if (a == "--online") o.online = 1;
    else if (a == "--int8-teacher") o.int8_teacher = true;
    else if (a == "--flip") o.augment.flip = true;
    else if (a == "--no-flip") o.augment.flip = false;
    else if (a == "--shift") o.augment.shift = fm::parse_shift(next());
    else if (a == "--epochs") o.epochs = fm::parse_epochs(next()), epochs_given = true;
    else if (a == "--seeds")
      o.seeds = static_cast<int>(fm::parse_integer("--seeds", next(), 1, 1000, "a number of seeds in [1, 1000]")),
      seeds_given = true;
    else if (a == "--first-seed")  // seeds first_seed .. first_seed + seeds - 1 must fit an int
      o.first_seed = static_cast<int>(fm::parse_integer("--first-seed", next(), 0, 1000000000, "a seed in [0, 10^9]"));
    else if (a == "--T") o.temperature = fm::parse_temperature(next());
    else if (a == "--alpha") o.alpha = fm::parse_alpha(next());
    else if (a == "--lr") o.lr = fm::parse_lr(next());
    else if (a == "--batch") o.batch = fm::parse_integer("--batch", next(), 1, 60000, "a batch size in [1, 60000]");
    else if (a == "--train") o.train = fm::parse_train_count(next()), train_given = true;
    else if (a == "--out") next();  // the CI smoke test passes --out to every Fashion-MNIST example; nothing is written
    else {
      fm::help_or_unknown(a, __FILE__);
    }
  }
  if (o.quick) {
    if (!epochs_given) o.epochs = 1;
    if (!seeds_given) o.seeds = 2;
    if (!train_given) o.train = 2000;
  }
  if (o.kd_only && o.plain_only) {
    std::fprintf(stderr, "--kd-only and --plain-only exclude each other\n");
    std::exit(2);
  }
  return o;
}

// The shipped CNN (fm::make_cnn) with half the channels and hidden units:
// conv 1->8, conv 8->16, linear 400->64->10 (27,610 parameters; the shipped model 108,714, the wide
// teacher 431,434).
static qlib::nn::sequential make_student() { return fm::make_cnn(fm::cnn_width{8, 16, 64}); }

static double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// What the distilled student learns from: the teacher model run on each batch as the
// student sees it (online), or its logits of the unaugmented training images (offline).
// A teacher of several files is the mean of their logits (an ensemble).
struct teacher_source {
  const qlib::train::mean_logits_ensemble<qlib::nn::sequential>* float_model = nullptr;
  const qlib::train::mean_logits_ensemble<qlib::nn::quantized_sequential>* int8_model = nullptr;
  const qlib::tensor<float, 2>* logits = nullptr;  // offline
};

// Trains a fresh student from `seed` (same initialization, sample order and augmentation
// for both modes): plain cross-entropy when teacher is null, else distillation.
static qlib::nn::sequential train_student(const fm::dataset& train, const teacher_source* teacher, std::uint64_t seed,
                                          const options& o) {
  qlib::nn::sequential m = make_student();
  qlib::train::init_parameters(m, seed);
  qlib::train::adam opt(qlib::train::adam_options{o.lr});
  const index_t steps = (train.size() + o.batch - 1) / o.batch;
  const qlib::train::cosine_schedule lr{o.lr, steps * o.epochs, 0.0f, 0};
  const qlib::train::distill_options d{o.temperature, o.alpha};
  const auto x = train.images.cview();
  const auto y = train.label_view();
  for (int e = 0; e < o.epochs; ++e) {
    qlib::train::epoch_options eo;
    eo.batch_size = o.batch;
    eo.seed = seed;
    eo.epoch = e;
    eo.learning_rate = lr;
    eo.augment = o.augment;
    const std::string what = std::string(teacher ? "KD" : "plain") + " s" + std::to_string(seed) + " e" +
                             std::to_string(e + 1) + "/" + std::to_string(o.epochs);
    auto bar = [&](const qlib::train::progress& p) {
      if (p.step % 100 == 0 || p.step + 1 == p.steps) {
        char extra[64];
        std::snprintf(extra, sizeof extra, "loss %.4f  acc %.2f%%", p.mean_loss, 100.0 * p.accuracy);
        fm::progress_bar(what.c_str(), p.step + 1, p.steps, extra);
      }
    };
    if (!teacher) qlib::train::train_epoch(m, x, y, opt, eo, bar);
    else if (teacher->logits) qlib::train::distill_epoch(m, x, y, teacher->logits->cview(), opt, d, eo, bar);
    else if (teacher->int8_model) qlib::train::distill_epoch(m, x, y, *teacher->int8_model, opt, d, eo, bar);
    else qlib::train::distill_epoch(m, x, y, *teacher->float_model, opt, d, eo, bar);
  }
  return m;
}

struct summary {
  double mean = 0, stddev = 0, min = 0, max = 0;
};
static summary summarize(const std::vector<double>& v) {
  summary s;
  s.min = *std::min_element(v.begin(), v.end());
  s.max = *std::max_element(v.begin(), v.end());
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  for (double x : v) s.stddev += (x - s.mean) * (x - s.mean);
  s.stddev = v.size() > 1 ? std::sqrt(s.stddev / static_cast<double>(v.size() - 1)) : 0.0;
  return s;
}

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  const double cpu0 = cpu_seconds();
  const fm::dataset test = fm::load(o.data, "t10k", o.quick ? 500 : 0);
  const fm::dataset train = fm::load(o.data, "train", o.train);

  // The teacher: one model, or the ensemble of the comma-separated files in --weights.
  std::vector<std::string> files;
  for (std::size_t b = 0, e = 0; b <= o.weights.size(); b = e + 1) {
    e = std::min(o.weights.find(',', b), o.weights.size());
    files.push_back(o.weights.substr(b, e - b));
  }
  qlib::nn::state_dict_options sd;
  sd.input_shape = fm::input_shape;
  std::vector<qlib::nn::sequential> teachers;
  std::vector<qlib::nn::quantized_sequential> int8_teachers;
  std::string widths;
  for (const std::string& f : files) {
    const auto file = qlib::io::safetensors_file::read(f);
    const fm::cnn_width w = fm::width_of(file);
    widths += (widths.empty() ? "" : " + ") + fm::to_string(w);
    teachers.push_back(fm::make_cnn(w));
    qlib::nn::load_state_dict(teachers.back(), file, sd);
    if (o.int8_teacher) {  // static PTQ as in the demo: histogram observers on 1,000 training images
      qlib::nn::static_quantizer<qlib::histogram_observer> ptq(teachers.back());
      const index_t calib = std::min<index_t>(1000, train.size());
      for (index_t b0 = 0; b0 < calib; b0 += 100)
        ptq.observe(train.images.cview().slice(0, b0, std::min(calib, b0 + 100)));
      int8_teachers.push_back(ptq.convert());
    }
  }
  qlib::train::mean_logits_ensemble<qlib::nn::sequential> teacher;
  qlib::train::mean_logits_ensemble<qlib::nn::quantized_sequential> int8_teacher;
  for (const auto& t : teachers) teacher.members.push_back(&t);
  for (const auto& t : int8_teachers) int8_teacher.members.push_back(&t);
  teacher_source source;
  if (o.int8_teacher) source.int8_model = &int8_teacher;
  else source.float_model = &teacher;
  // Offline: the teacher's targets, once for the whole training set (inference mode).
  qlib::tensor<float, 2> teacher_logits;
  const bool online = o.online == -1 ? o.augment.enabled() : o.online == 1;
  if (!online) {
    teacher_logits = o.int8_teacher ? qlib::train::predict_logits(int8_teacher, train.images.cview())
                                    : qlib::train::predict_logits(teacher, train.images.cview());
    source.logits = &teacher_logits;
  }
  const double teacher_acc = o.int8_teacher ? fm::test_accuracy(int8_teacher, test) : fm::test_accuracy(teacher, test);

  std::printf("Knowledge distillation, Fashion-MNIST: teacher %s (widths %s%s, test acc %.2f%%), student widths "
              "8,16,64\n",
              o.weights.c_str(), widths.c_str(), o.int8_teacher ? ", as static int8" : "", 100 * teacher_acc);
  std::printf("Adam lr %g cosine to 0, batch %td, %d epochs of %td images, %d seeds; augmentation: %s, shift %td; "
              "KD T = %g, alpha = %g, teacher %s\n\n",
              static_cast<double>(o.lr), o.batch, o.epochs, train.size(), o.seeds, o.augment.flip ? "flip" : "no flip",
              o.augment.shift, static_cast<double>(o.temperature), static_cast<double>(o.alpha),
              online ? "run on each batch (online)" : "logits of the unaugmented images (offline)");

  std::vector<double> plain, kd;
  // One row: label, plain and KD accuracy (%), their difference; "-" for a kind not run.
  auto row = [&](const std::string& label, double pa, double ka) {
    char p[32] = "-", k[32] = "-", d[32] = "-";
    if (!o.kd_only) std::snprintf(p, sizeof p, "%.2f%%", 100 * pa);
    if (!o.plain_only) std::snprintf(k, sizeof k, "%.2f%%", 100 * ka);
    if (!o.kd_only && !o.plain_only) std::snprintf(d, sizeof d, "%+.2f", 100 * (ka - pa));
    std::printf("%-6s %12s %12s %10s\n", label.c_str(), p, k, d);
  };
  std::printf("%-6s %12s %12s %10s\n", "seed", "plain acc", "KD acc", "KD-plain");
  for (int s = o.first_seed; s < o.first_seed + o.seeds; ++s) {
    const auto seed = static_cast<std::uint64_t>(s);
    if (!o.kd_only) plain.push_back(fm::test_accuracy(train_student(train, nullptr, seed, o), test));
    if (!o.plain_only) kd.push_back(fm::test_accuracy(train_student(train, &source, seed, o), test));
    row(std::to_string(s), o.kd_only ? 0.0 : plain.back(), o.plain_only ? 0.0 : kd.back());
    std::fflush(stdout);
  }
  const summary p = o.kd_only ? summary{} : summarize(plain), k = o.plain_only ? summary{} : summarize(kd);
  row("mean", p.mean, k.mean);
  std::printf("%-6s %12.2f %12.2f\n", "std", 100 * p.stddev, 100 * k.stddev);
  std::printf("%-6s %12.2f %12.2f\n", "range", 100 * (p.max - p.min), 100 * (k.max - k.min));
  if (!o.kd_only && !o.plain_only) {
    const double gain = k.mean - p.mean, spread = std::max(p.max - p.min, k.max - k.min);
    std::printf("\nKD vs plain: %+.2f points (mean over %d seeds); the larger seed range is %.2f points: KD %s\n",
                100 * gain, o.seeds, 100 * spread,
                gain > spread ? "beats plain by more than the seed spread"
                              : (gain > 0 ? "is better on average, but not by more than the seed spread"
                                          : "does not beat plain"));
  }
  std::printf("(test set: %td images; CPU time %.0f s)\n", test.size(), cpu_seconds() - cpu0);
  return 0;
}
