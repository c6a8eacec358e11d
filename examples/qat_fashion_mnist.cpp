// Quantization-aware training on Fashion-MNIST from the shipped float CNN: int8 and 4-bit weights / 8-bit activations, vs static PTQ at the same bit widths.
//
//   qat_fashion_mnist                 1 epoch of QAT per configuration on the 60,000 training images
//   options: --data DIR  --weights FILE  --epochs E  --lr LR  --seed S
//            --distill  (also a QAT student trained with the distillation loss from the float
//                        model as teacher, converted to int8: the "KD QAT" columns)
//            --T X  --alpha X  (its temperature and weight of the soft term)
//            --lsq  (learned scales and zero points, LSQ, with their own learning rate:
//                    --lsq-lr-scale X times the weights', default 0.01)
//            --quick  (2,000 training images, 500 test images, --distill: the CI smoke test)
//   numeric values are checked whole (else a message and exit code 2): --epochs 1-10000, --lr in (0, 10],
//   --seed 0 to 2^64-1, --T in (0, 1000], --alpha in [0, 1], --lsq-lr-scale in (0, 1000]
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "fashion_mnist_common.hpp"
#include "qlib/nn.hpp"
#include "qlib/train.hpp"
#include "qlib/train/qat.hpp"
#include "qlib/train/qat_convert.hpp"

namespace fm = fashion_mnist;
using qlib::index_t;

namespace {
struct options {
  std::string data = fm::default_data_dir, weights = fm::default_weights;
  index_t epochs = 1;
  float lr = 1e-4f;
  std::uint64_t seed = 1;
  bool quick = false, distill = false, lsq = false;
  float temperature = 1.0f, alpha = 0.5f, lsq_lr_scale = 0.01f;
};

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return fm::option_value(argc, argv, i); };
    if (a == "--data") o.data = next();
    else if (a == "--weights") o.weights = next();
    else if (a == "--epochs") o.epochs = fm::parse_epochs(next());
    else if (a == "--lr") o.lr = fm::parse_lr(next());
    else if (a == "--seed") o.seed = fm::parse_seed("--seed", next());
    else if (a == "--quick") o.quick = o.distill = true;
    else if (a == "--distill") o.distill = true;
    else if (a == "--T") o.temperature = fm::parse_temperature(next());
    else if (a == "--alpha") o.alpha = fm::parse_alpha(next());
    else if (a == "--lsq") o.lsq = true;
    else if (a == "--lsq-lr-scale")
      o.lsq_lr_scale = fm::parse_float("--lsq-lr-scale", next(), 0.0f, 1000.0f, "a scale in (0, 1000]", true);
    else if (a == "--out") next();  // accepted for the CI smoke test; nothing is written
    else {
      fm::help_or_unknown(a, __FILE__);
    }
  }
  return o;
}

// QAT from the float model at the given weight width: BN folded, moving-average activation
// ranges (or LSQ), Adam with cosine decay, observers frozen for the last epoch; with
// teacher_logits, trained with the distillation loss instead of cross-entropy.
qlib::train::qat_model train_qat(const qlib::nn::sequential& model, qlib::affine_scheme<std::int8_t> weights,
                                 const fm::dataset& train, const qlib::tensor<float, 2>* teacher_logits,
                                 const options& o, const char* name) {
  qlib::train::qat_options qo;
  qo.weight_scheme = weights;
  qo.lsq_weights = qo.lsq_activations = o.lsq;
  qo.lsq_lr_scale = o.lsq_lr_scale;
  qlib::train::qat_model qat(model, qo);
  qlib::train::adam opt({o.lr});
  qlib::train::epoch_options eo;
  eo.batch_size = 64;
  eo.seed = o.seed;
  const index_t steps = (train.size() + 63) / 64;
  eo.learning_rate = qlib::train::cosine_schedule{o.lr, o.epochs * steps, o.lr * 0.1f, 0};
  const auto bar = [&](const qlib::train::progress& p) {
    if (p.step % 20 == 0 || p.step + 1 == p.steps)
      fm::progress_bar(name, p.step + 1, p.steps, "loss " + std::to_string(p.mean_loss).substr(0, 6));
  };
  for (index_t e = 0; e < o.epochs; ++e) {
    eo.epoch = e;
    if (e + 1 == o.epochs && o.epochs > 1) qat.freeze_observers();  // the last epoch trains on fixed ranges
    if (teacher_logits)
      qlib::train::distill_epoch(qat, train.images.cview(), train.label_view(), teacher_logits->cview(), opt,
                                 {o.temperature, o.alpha}, eo, bar);
    else
      qlib::train::train_epoch(qat, train.images.cview(), train.label_view(), opt, eo, bar);
  }
  return qat;
}

// Fraction of test images on which two models predict the same class.
template <class A, class B>
double agreement(const A& a, const B& b, const fm::dataset& d) {
  index_t same = 0;
  for (index_t b0 = 0; b0 < d.size(); b0 += 500) {
    const auto x = d.images.cview().slice(0, b0, std::min(d.size(), b0 + 500));
    const qlib::tensor<float, 4> la = a.forward(x), lb = b.forward(x);
    for (index_t i = 0; i < la.shape(0); ++i) {
      const float* ra = la.data() + i * 10;
      const float* rb = lb.data() + i * 10;
      same += (std::max_element(ra, ra + 10) - ra) == (std::max_element(rb, rb + 10) - rb) ? 1 : 0;
    }
  }
  return static_cast<double>(same) / static_cast<double>(d.size());
}
}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  const fm::dataset train = fm::load(o.data, "train", o.quick ? 2000 : 0);
  const fm::dataset test = fm::load(o.data, "t10k", o.quick ? 500 : 0);
  qlib::nn::sequential model = fm::make_cnn();
  qlib::nn::state_dict_options sd;
  sd.input_shape = fm::input_shape;
  qlib::nn::load_state_dict(model, qlib::io::safetensors_file::read(o.weights), sd);
  const double float_acc = fm::test_accuracy(model, test);

  struct config {
    const char* name;
    qlib::affine_scheme<std::int8_t> weights;
  };
  const config configs[] = {{"int8 (w8 a8)", qlib::schemes::s8_symmetric}, {"w4 a8", qlib::schemes::s4_symmetric}};
  // The float model is the distillation teacher; its logits of the training images, once.
  qlib::tensor<float, 2> teacher_logits;
  if (o.distill) teacher_logits = qlib::train::predict_logits(model, train.images.cview());
  std::printf("%-14s %10s %10s %14s %12s %16s", "weights/acts", "float", "PTQ int8", "QAT fake-quant", "QAT int8",
              "QAT fake==int8");
  if (o.distill) std::printf(" %12s %14s", "KD QAT int8", "KD fake==int8");
  std::printf("\n");
  for (const config& c : configs) {
    // Static PTQ, per-channel weights, histogram (MSE) activation ranges on 1,000 images.
    qlib::nn::static_quantization_options po;
    po.weight_scheme = c.weights;
    qlib::nn::static_quantizer<qlib::histogram_observer> ptq(model, po);
    const index_t calib = std::min<index_t>(1000, train.size());
    for (index_t b0 = 0; b0 < calib; b0 += 100) ptq.observe(train.images.cview().slice(0, b0, b0 + 100));
    const double ptq_acc = fm::test_accuracy(ptq.convert(), test);

    const qlib::train::qat_model qat = train_qat(model, c.weights, train, nullptr, o, c.name);
    const qlib::nn::quantized_sequential int8 = qlib::train::convert(qat);
    std::printf("%-14s %9.2f%% %9.2f%% %13.2f%% %11.2f%% %15.2f%%", c.name, 100 * float_acc, 100 * ptq_acc,
                100 * fm::test_accuracy(qat, test), 100 * fm::test_accuracy(int8, test), 100 * agreement(qat, int8, test));
    if (o.distill) {
      const std::string name = std::string("KD ") + c.name;
      const qlib::train::qat_model kd = train_qat(model, c.weights, train, &teacher_logits, o, name.c_str());
      const qlib::nn::quantized_sequential kd8 = qlib::train::convert(kd);
      std::printf(" %11.2f%% %13.2f%%", 100 * fm::test_accuracy(kd8, test), 100 * agreement(kd, kd8, test));
    }
    std::printf("\n");
    std::fflush(stdout);
  }
  char lsq[64] = "";
  if (o.lsq) std::snprintf(lsq, sizeof lsq, ", LSQ scales at %g x lr", static_cast<double>(o.lsq_lr_scale));
  std::printf("\n(test set: %td images; QAT: %td epoch(s) on %td training images, Adam lr %g cosine%s; PTQ: 1,000 "
              "calibration images)\n",
              test.size(), o.epochs, train.size(), static_cast<double>(o.lr), lsq);
  if (o.distill)
    std::printf("(KD QAT: the same QAT trained with alpha T^2 KL + (1 - alpha) CE from the float model, T = %g, "
                "alpha = %g)\n",
                static_cast<double>(o.temperature), static_cast<double>(o.alpha));
  return 0;
}
