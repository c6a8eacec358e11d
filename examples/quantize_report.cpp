// Quantizes a weight matrix with every scheme and granularity and prints error and size.
//
//   quantize_report                 a synthetic heavy-tailed 512 x 1024 matrix
//   quantize_report weights.npy     a float32/float64 .npy array (all axes but the last
//                                   are flattened into rows)
#include <cmath>
#include <cstdio>
#include <random>
#include <string>

#include "qlib/io/npy.hpp"
#include "qlib/quantize.hpp"

namespace {

// Rows with different magnitudes and Student-t(3) tails, like trained weights.
qlib::tensor<float, 2> synthetic_weights() {
  qlib::tensor<float, 2> w({512, 1024});
  std::mt19937 g(7);
  std::student_t_distribution<float> t3(3.0f);
  std::lognormal_distribution<float> row_scale(-3.0f, 0.7f);
  for (qlib::index_t r = 0; r < w.shape(0); ++r) {
    const float s = row_scale(g);
    for (qlib::index_t c = 0; c < w.shape(1); ++c) w(r, c) = s * t3(g);
  }
  return w;
}

qlib::tensor<float, 2> load(const std::string& path) {
  const qlib::npy_array a = qlib::read_npy(path);
  qlib::index_t cols = a.shape.empty() ? 1 : a.shape.back();
  const qlib::index_t rows = cols == 0 ? 0 : static_cast<qlib::index_t>(a.data.size()) / cols;
  qlib::npy_array flat{{rows, cols}, a.data};
  return flat.as_tensor<2>();
}

struct row_stats {
  double sqnr_db, max_err;
};

row_stats compare(const qlib::tensor<float, 2>& x, const qlib::tensor<float, 2>& y) {
  double sig = 0, noise = 0, max_err = 0;
  for (qlib::index_t i = 0; i < x.size(); ++i) {
    const double d = static_cast<double>(x.data()[i]) - y.data()[i];
    sig += static_cast<double>(x.data()[i]) * x.data()[i];
    noise += d * d;
    max_err = std::fmax(max_err, std::fabs(d));
  }
  return {noise > 0 ? 10.0 * std::log10(sig / noise) : INFINITY, max_err};
}

template <class S>
void report(const char* name, const qlib::affine_scheme<S>& scheme, const qlib::tensor<float, 2>& w) {
  const qlib::granularity grans[] = {qlib::granularity::per_tensor(), qlib::granularity::per_channel(0),
                                     qlib::granularity::per_group(1, 128), qlib::granularity::per_group(1, 32)};
  for (const qlib::granularity& g : grans) {
    if (g.type == qlib::granularity::kind::per_group && w.shape(1) < g.group_size) continue;
    const auto q = qlib::quantize(w.cview(), scheme, g);
    const row_stats st = compare(w, q.dequantize());
    // Payload bits plus one float scale per parameter, and a zero point of the storage
    // width when the scheme is asymmetric.
    const double params = static_cast<double>(q.params.size());
    const double zp_bits = scheme.sym == qlib::symmetry::asymmetric ? 8.0 * sizeof(S) : 0.0;
    const double bits = scheme.bits * static_cast<double>(w.size()) + params * (32.0 + zp_bits);
    std::printf("%-22s %-34s %8.2f %12.3g %10.3f %10.1f\n", name, g.describe().c_str(), st.sqnr_db, st.max_err,
                bits / static_cast<double>(w.size()), bits / 8.0 / 1024.0);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 2) {
    std::fprintf(stderr, "usage: %s [weights.npy]\n", argv[0]);
    return 2;
  }
  const qlib::tensor<float, 2> w = argc == 2 ? load(argv[1]) : synthetic_weights();
  std::printf("tensor %s: %ld x %ld floats (%.1f KiB), dispatch ISA %s\n\n",
              argc == 2 ? argv[1] : "synthetic Student-t(3), per-row lognormal scale", static_cast<long>(w.shape(0)),
              static_cast<long>(w.shape(1)), 4.0 * static_cast<double>(w.size()) / 1024.0,
              qlib::isa_name(qlib::active_isa()));
  std::printf("%-22s %-34s %8s %12s %10s %10s\n", "scheme", "granularity", "SQNR dB", "max |err|", "bits/w",
              "KiB");
  report("int16 symmetric", qlib::schemes::s16_symmetric, w);
  report("uint8 asymmetric", qlib::schemes::u8_asymmetric, w);
  report("int8 symmetric [-127]", qlib::schemes::s8_symmetric, w);
  report("int8 symmetric [-128]", qlib::schemes::s8_symmetric_full, w);
  report("uint4 asymmetric", qlib::schemes::u4_asymmetric, w);
  report("int4 symmetric [-7,7]", qlib::schemes::s4_symmetric, w);
  return 0;
}
