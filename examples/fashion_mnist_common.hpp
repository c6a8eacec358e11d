// Shared by the Fashion-MNIST examples and benchmark: the dataset (IDX, gzip via zlib), the CNN, timing helpers.
#pragma once

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "qlib/io/idx.hpp"
#include "qlib/io/safetensors.hpp"
#include "qlib/nn/sequential.hpp"

namespace fashion_mnist {

#ifndef QLIB_FASHION_MNIST_DIR
#define QLIB_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"
#endif
#ifndef QLIB_EXAMPLES_DATA_DIR
#define QLIB_EXAMPLES_DATA_DIR "examples/data"
#endif
inline const char* default_data_dir = QLIB_FASHION_MNIST_DIR;  // Debian's dataset-fashion-mnist
inline const std::string default_weights = std::string(QLIB_EXAMPLES_DATA_DIR) + "/fashion_mnist_cnn.safetensors";
// The distillation teacher: widths 32,64,256 (fashion_mnist --train --width 32,64,256 --epochs 30 --flip --shift 2).
inline const std::string wide_weights = std::string(QLIB_EXAMPLES_DATA_DIR) + "/fashion_mnist_cnn_wide.safetensors";

// Reads an IDX file, gunzipping it when the name ends in .gz (Debian ships .gz files).
inline qlib::io::idx_array read_idx_file(const std::string& path) {
  if (path.size() < 3 || path.compare(path.size() - 3, 3, ".gz") != 0) return qlib::io::read_idx(path);
  gzFile f = gzopen(path.c_str(), "rb");
  QLIB_CHECK(f != nullptr, qlib::errc::io_error, "cannot open " + path);
  std::vector<std::uint8_t> bytes;
  std::uint8_t buf[1 << 16];
  int n = 0;
  while ((n = gzread(f, buf, sizeof buf)) > 0) bytes.insert(bytes.end(), buf, buf + n);
  const bool ok = n == 0;
  gzclose(f);
  QLIB_CHECK(ok, qlib::errc::io_error, "cannot decompress " + path);
  return qlib::io::parse_idx(bytes, path);
}

struct dataset {
  qlib::tensor<float, 4> images;     // [N, 28, 28, 1], pixel / 255
  std::vector<std::int32_t> labels;  // [N], 0..9
  qlib::index_t size() const { return images.shape(0); }
  qlib::tensor_view<const std::int32_t, 1> label_view() const {
    return qlib::tensor_view<const std::int32_t, 1>(labels.data(), {static_cast<qlib::index_t>(labels.size())});
  }
};

// split = "train" or "t10k"; the first `limit` samples (all if limit <= 0).
inline dataset load(const std::string& dir, const std::string& split, qlib::index_t limit = 0) {
  const qlib::io::idx_array img = read_idx_file(dir + "/" + split + "-images-idx3-ubyte.gz");
  const qlib::io::idx_array lab = read_idx_file(dir + "/" + split + "-labels-idx1-ubyte.gz");
  QLIB_CHECK(img.shape.size() == 3 && img.shape[1] == 28 && img.shape[2] == 28 && lab.shape.size() == 1 &&
                 lab.shape[0] == img.shape[0],
             qlib::errc::shape_mismatch, "Fashion-MNIST " + split + ": unexpected IDX shapes");
  const qlib::index_t n = limit > 0 ? std::min(limit, img.shape[0]) : img.shape[0];
  dataset d{qlib::tensor<float, 4>(qlib::extents<4>{n, 28, 28, 1}), {}};
  for (qlib::index_t i = 0; i < n * 784; ++i) d.images.data()[i] = static_cast<float>(img.data[static_cast<std::size_t>(i)]) / 255.0f;
  for (qlib::index_t i = 0; i < n; ++i) {
    const int l = lab.data[static_cast<std::size_t>(i)];
    QLIB_CHECK(l < 10, qlib::errc::invalid_argument, "Fashion-MNIST label out of range");
    d.labels.push_back(l);
  }
  return d;
}

// The CNN (PyTorch equivalent in bench/pytorch_fashion_mnist.py), at widths c1, c2, hidden:
//   Conv2d(1,c1,3) BatchNorm2d ReLU MaxPool2d(2) Conv2d(c1,c2,3) BatchNorm2d ReLU MaxPool2d(2)
//   Flatten Linear(25*c2,hidden) ReLU Linear(hidden,10)  (valid convolutions: 28 -> 26 -> 13 -> 11 -> 5)
// The shipped model is 16, 32, 128; the distillation student 8, 16, 64.
struct cnn_width {
  qlib::index_t c1 = 16, c2 = 32, hidden = 128;
  bool operator==(const cnn_width& o) const noexcept { return c1 == o.c1 && c2 == o.c2 && hidden == o.hidden; }
};
inline qlib::nn::sequential make_cnn(cnn_width w = {}) {
  using namespace qlib::nn;
  return sequential{conv2d(1, w.c1, conv2d_options::square(3)),    batch_norm2d(w.c1), relu{}, max_pool2d::square(2),
                    conv2d(w.c1, w.c2, conv2d_options::square(3)), batch_norm2d(w.c2), relu{}, max_pool2d::square(2),
                    flatten{},  linear(25 * w.c2, w.hidden), relu{}, linear(w.hidden, 10)};
}
// "C1,C2,HIDDEN" (e.g. 32,64,256); exits with a message on anything else.
inline cnn_width parse_width(const std::string& s) {
  cnn_width w;
  long a = 0, b = 0, c = 0;
  char tail = 0;
  if (std::sscanf(s.c_str(), "%ld,%ld,%ld%c", &a, &b, &c, &tail) != 3 || a < 1 || b < 1 || c < 1) {
    std::fprintf(stderr, "a width is C1,C2,HIDDEN with three positive integers, not '%s'\n", s.c_str());
    std::exit(2);
  }
  w.c1 = a, w.c2 = b, w.hidden = c;
  return w;
}
// The widths of a model file written by save_state_dict(make_cnn(w)): read off its tensor shapes.
inline cnn_width width_of(const qlib::io::safetensors_file& f) {
  const auto& conv2 = f.at("4.weight").shape;
  const auto& fc = f.at("9.weight").shape;
  QLIB_CHECK(conv2.size() == 4 && fc.size() == 2, qlib::errc::shape_mismatch,
             "not a Fashion-MNIST CNN file (4.weight must be a conv kernel, 9.weight a matrix)");
  return cnn_width{conv2[1], conv2[0], fc[0]};
}
inline std::string to_string(cnn_width w) {
  return std::to_string(w.c1) + "," + std::to_string(w.c2) + "," + std::to_string(w.hidden);
}
inline const qlib::extents<4> input_shape{1, 28, 28, 1};

// Fraction of rows of logits [N,1,1,10] whose argmax equals the label.
inline double accuracy(const qlib::tensor<float, 4>& logits, const std::vector<std::int32_t>& labels, qlib::index_t offset) {
  qlib::index_t correct = 0;
  const qlib::index_t n = logits.shape(0), k = logits.shape(3);
  for (qlib::index_t i = 0; i < n; ++i) {
    const float* r = logits.data() + i * k;
    if (std::max_element(r, r + k) - r == labels[static_cast<std::size_t>(offset + i)]) ++correct;
  }
  return static_cast<double>(correct);
}

// Test accuracy of any model with forward(tensor_view<const float,4>) -> logits.
template <class Model>
double test_accuracy(const Model& m, const dataset& d, qlib::index_t batch = 500) {
  double correct = 0;
  for (qlib::index_t b0 = 0; b0 < d.size(); b0 += batch) {
    const qlib::index_t b1 = std::min(d.size(), b0 + batch);
    correct += accuracy(m.forward(d.images.cview().slice(0, b0, b1)), d.labels, b0);
  }
  return correct / static_cast<double>(d.size());
}

// Median seconds of `reps` calls of f() after `warmup` calls.
template <class F>
double median_seconds(F&& f, int reps, int warmup = 3) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto a = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// The value of command-line option argv[i] (argv[i + 1], and i moves onto it); exits with a
// message when it is missing.
inline std::string option_value(int argc, char** argv, int& i) {
  if (i + 1 >= argc) {
    std::fprintf(stderr, "%s needs a value\n", argv[i]);
    std::exit(2);
  }
  return argv[++i];
}

// The last branch of every example's option loop: --help (or -h) prints the usage, the
// comment block at the top of the example's source file (`source`, its __FILE__: the
// examples run from the tree they were built in), and exits 0; anything else is an
// unknown option: a message and exit code 2.
[[noreturn]] inline void help_or_unknown(const std::string& option, const char* source) {
  if (option != "--help" && option != "-h") {
    std::fprintf(stderr, "unknown option %s (--help lists the options)\n", option.c_str());
    std::exit(2);
  }
  std::FILE* f = std::fopen(source, "r");
  if (!f) {
    std::printf("the options are described at the top of %s\n", source);
    std::exit(0);
  }
  char line[1024];
  while (std::fgets(line, sizeof line, f) && line[0] == '/' && line[1] == '/')
    std::fputs(line[2] == ' ' ? line + 3 : line + 2, stdout);
  std::fclose(f);
  std::exit(0);
}

// Strict option values: the whole string must parse and lie in range, else "<option>: '<value>' is not <expected>"
// on stderr and exit code 2 (as option_value does for a missing value), never a silent 0 from atoi and friends.
[[noreturn]] inline void bad_value(const char* option, const std::string& value, const char* expected) {
  std::fprintf(stderr, "%s: '%s' is not %s\n", option, value.c_str(), expected);
  std::exit(2);
}

// A whole-string integer in [lo, hi].
inline long parse_integer(const char* option, const std::string& v, long lo, long hi, const char* expected) {
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE || x < lo || x > hi) bad_value(option, v, expected);
  return x;
}

// A whole-string finite number in [lo, hi] (parsed as double: strtod).
inline double parse_number(const char* option, const std::string& v, double lo, double hi, const char* expected) {
  char* end = nullptr;
  errno = 0;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(x) || x < lo || x > hi)
    bad_value(option, v, expected);
  return x;
}

// A whole-string finite float in [lo, hi], or in (lo, hi] with lo_open (parsed as float: strtof, the same bits the
// examples always read).
inline float parse_float(const char* option, const std::string& v, float lo, float hi, const char* expected,
                         bool lo_open = false) {
  char* end = nullptr;
  errno = 0;
  const float x = std::strtof(v.c_str(), &end);
  if (v.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(x) || x < lo || (lo_open && x == lo) || x > hi)
    bad_value(option, v, expected);
  return x;
}

// A random seed: any whole-string decimal integer in [0, 2^64 - 1] (digits only: no sign, no spaces).
inline std::uint64_t parse_seed(const char* option, const std::string& v) {
  const char* expected = "a seed: an integer in [0, 2^64 - 1]";
  if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos) bad_value(option, v, expected);
  errno = 0;
  const unsigned long long x = std::strtoull(v.c_str(), nullptr, 10);
  if (errno == ERANGE) bad_value(option, v, expected);
  return static_cast<std::uint64_t>(x);
}

// The options several examples share, with one range each.
inline int parse_epochs(const std::string& v) {
  return static_cast<int>(parse_integer("--epochs", v, 1, 10000, "a number of epochs in [1, 10000]"));
}
inline qlib::index_t parse_shift(const std::string& v) {  // augmentation: a 28x28 image shifted by 28 is empty
  return parse_integer("--shift", v, 0, 27, "a shift in pixels in [0, 27]");
}
inline qlib::index_t parse_calibration(const std::string& v) {
  return parse_integer("--calibration", v, 1, 60000, "a number of training images in [1, 60000]");
}
inline qlib::index_t parse_train_count(const std::string& v) {
  return parse_integer("--train", v, 0, 60000, "a number of training images in [0, 60000] (0 = all)");
}
inline float parse_lr(const std::string& v) {
  return parse_float("--lr", v, 0.0f, 10.0f, "a learning rate in (0, 10]", true);
}
inline float parse_temperature(const std::string& v) {
  return parse_float("--T", v, 0.0f, 1000.0f, "a temperature in (0, 1000]", true);
}
inline float parse_alpha(const std::string& v) { return parse_float("--alpha", v, 0.0f, 1.0f, "a weight in [0, 1]"); }

// A one-line progress bar on stderr ("\r" redraws it).
inline void progress_bar(const char* what, qlib::index_t done, qlib::index_t total, const std::string& extra = "") {
  const int width = 30, filled = total > 0 ? static_cast<int>(width * done / total) : width;
  std::fprintf(stderr, "\r%-12s [%s%s] %6td/%td %s", what, std::string(static_cast<std::size_t>(filled), '#').c_str(),
               std::string(static_cast<std::size_t>(width - filled), ' ').c_str(), done, total, extra.c_str());
  if (done >= total) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

}  // namespace fashion_mnist
