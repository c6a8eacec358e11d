// Calibration report: quantization MSE of min/max vs MSE-search vs KL vs percentile ranges on
// heavy-tailed data, and 4-bit quantile/NF4 codebooks vs 4-bit affine on normal data.
//
//   calibration_report            1M values per distribution (fixed seeds)
//   calibration_report N          N values instead (a whole number in [1024, 2^26], else exit code 2)
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "qlib/quantize.hpp"

namespace {

using qlib::index_t;

std::vector<float> draw(const std::string& dist, index_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::vector<float> v(static_cast<std::size_t>(n));
  if (dist == "laplace") {
    std::exponential_distribution<float> e(1.0f);
    std::bernoulli_distribution sign(0.5);
    for (float& x : v) x = sign(g) ? e(g) : -e(g);
  } else if (dist == "student-t(3)") {
    std::student_t_distribution<float> t(3.0f);
    for (float& x : v) x = t(g);
  } else {
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (float& x : v) x = nd(g);
  }
  return v;
}

template <std::size_t R>
double mse(const std::vector<float>& x, const qlib::tensor<float, R>& y) {
  double s = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double d = static_cast<double>(x[i]) - y.data()[i];
    s += d * d;
  }
  return s / static_cast<double>(x.size());
}

template <class S>
void range_table(const char* dist, const std::vector<float>& x, const char* scheme_name, const qlib::affine_scheme<S>& scheme) {
  const index_t n = static_cast<index_t>(x.size());
  const qlib::tensor_view<const float, 1> xv(x.data(), qlib::extents<1>{n});
  qlib::histogram_observer h;  // 2048 bins, fed in 16 batches like a calibration run
  for (index_t b = 0; b < 16; ++b) {
    const index_t lo = n * b / 16, hi = n * (b + 1) / 16;
    h.observe(qlib::tensor_view<const float, 1>(x.data() + lo, qlib::extents<1>{hi - lo}));
  }
  double base = 0;
  for (qlib::range_method m : {qlib::range_method::minmax, qlib::range_method::mse, qlib::range_method::kl_divergence,
                               qlib::range_method::percentile}) {
    const auto r = h.ranges(scheme, m);
    const qlib::quant_params p = qlib::params_from_ranges(scheme, qlib::granularity::per_tensor(), r.first, r.second);
    qlib::tensor<float, 1> y(xv.shape());
    qlib::fake_quantize(xv, y.view(), p);
    const double e = mse(x, y);
    if (m == qlib::range_method::minmax) base = e;
    std::printf("%-13s %-15s %-14s [%9.3f, %8.3f]  %11.4e  %6.3f\n", dist, scheme_name, qlib::range_method_name(m),
                r.first[0], r.second[0], e, e / base);
  }
}

template <int Bits>
void codebook_row(const char* name, const std::vector<float>& x, const qlib::codebook_tensor<Bits, 1>& q, double base) {
  const double e = mse(x, q.dequantize());
  std::printf("%-36s %11.4e  %6.3f  %6.3f\n", name, e, e / base,
              8.0 * static_cast<double>(q.storage_bytes()) / static_cast<double>(x.size()));
}

}  // namespace

int main(int argc, char** argv) {
  index_t n = index_t{1} << 20;
  if (argc > 1) {
    char* end = nullptr;
    errno = 0;
    n = std::strtol(argv[1], &end, 10);
    if (*argv[1] == '\0' || *end != '\0' || errno == ERANGE || n < 1024 || n > (index_t{1} << 26)) {
      std::fprintf(stderr, "N: '%s' is not a number of values in [1024, 2^26]\n", argv[1]);
      return 2;
    }
  }
  std::printf("Range selection (histogram observer, 2048 bins), %ld values per distribution\n", static_cast<long>(n));
  std::printf("%-13s %-15s %-14s %-22s %11s  %6s\n", "data", "scheme", "method", "range", "mse", "/minmax");
  for (const char* dist : {"laplace", "student-t(3)"}) {
    const std::vector<float> x = draw(dist, n, dist[0] == 'l' ? 11u : 12u);
    range_table(dist, x, "s8 [-127,127]", qlib::schemes::s8_symmetric);
    range_table(dist, x, "u8 asymmetric", qlib::schemes::u8_asymmetric);
    range_table(dist, x, "s4 [-7,7]", qlib::schemes::s4_symmetric);
  }

  std::printf("\n4-bit codebooks vs 4-bit affine on N(0,1), %ld values\n", static_cast<long>(n));
  std::printf("%-36s %11s  %6s  %6s\n", "method", "mse", "/u4", "bits/v");
  const std::vector<float> x = draw("normal", n, 13);
  const qlib::tensor_view<const float, 1> xv(x.data(), qlib::extents<1>{n});
  const qlib::granularity per_tensor = qlib::granularity::per_tensor();
  const auto u4 = qlib::quantize(xv, qlib::schemes::u4_asymmetric, per_tensor);
  const double base = mse(x, u4.dequantize());
  auto affine_row = [&](const char* name, const qlib::tensor<float, 1>& y, double bits) {
    const double e = mse(x, y);
    std::printf("%-36s %11.4e  %6.3f  %6.3f\n", name, e, e / base, bits);
  };
  const double tensor_bits = 4.0 + 64.0 / static_cast<double>(n);
  affine_row("affine u4, min/max", u4.dequantize(), tensor_bits);
  affine_row("affine s4 [-7,7], min/max", qlib::quantize(xv, qlib::schemes::s4_symmetric, per_tensor).dequantize(),
             tensor_bits);
  qlib::histogram_observer h;
  h.observe(xv);
  qlib::tensor<float, 1> y(xv.shape());
  qlib::fake_quantize(xv, y.view(), h.params(qlib::schemes::s4_symmetric, qlib::range_method::mse));
  affine_row("affine s4 [-7,7], MSE range", y, tensor_bits);
  const auto g64 = qlib::granularity::per_group(0, 64);
  affine_row("affine s4 [-7,7], min/max, groups 64", qlib::quantize(xv, qlib::schemes::s4_symmetric, g64).dequantize(),
             4.0 + 32.0 / 64.0);
  codebook_row("quantile-4 (equal frequency)", x, qlib::quantile_quantize<4>(xv, per_tensor), base);
  codebook_row("quantile-4 + Lloyd-Max (20 passes)", x, qlib::quantile_quantize<4>(xv, per_tensor, 20), base);
  codebook_row("NF4, one absmax scale", x, qlib::nf4_quantize(xv, per_tensor), base);
  codebook_row("NF4, absmax per group of 64", x, qlib::nf4_quantize(xv, g64), base);
  std::printf("\nbits/v counts the packed indices plus codebooks and float32 scales.\n");
  return 0;
}
