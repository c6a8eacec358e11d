// nn float layers against references written from their definitions (NCHW/OIHW, in double) and PyTorch 1.13 golden vectors.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "qlib/io/npy.hpp"
#include "qlib/nn/sequential.hpp"
#include "test_util.hpp"

using namespace qlib;
using qlib_test::rand_float;
using qlib_test::rand_int;

namespace {

// ---------------------------------------------------------------------------------------
// Plain arrays and references. Nothing here uses qlib's nn code: the references follow
// PyTorch's definitions over NCHW activations and OIHW weights.

// A dense 4-D float array (NCHW activations or OIHW weights).
struct arr4 {
  index_t d[4] = {0, 0, 0, 0};
  std::vector<float> v;
  arr4() = default;
  arr4(index_t a, index_t b, index_t c, index_t e) : d{a, b, c, e}, v(static_cast<std::size_t>(a * b * c * e)) {}
  float& operator()(index_t a, index_t b, index_t c, index_t e) {
    return v[static_cast<std::size_t>(((a * d[1] + b) * d[2] + c) * d[3] + e)];
  }
  float operator()(index_t a, index_t b, index_t c, index_t e) const {
    return v[static_cast<std::size_t>(((a * d[1] + b) * d[2] + c) * d[3] + e)];
  }
  tensor_view<const float, 4> view() const { return tensor_view<const float, 4>(v.data(), {d[0], d[1], d[2], d[3]}); }
};

arr4 random_arr(index_t a, index_t b, index_t c, index_t e, float lo = -1.0f, float hi = 1.0f) {
  arr4 x(a, b, c, e);
  for (float& f : x.v) f = rand_float(lo, hi);
  return x;
}
std::vector<float> random_vec(index_t n, float lo = -1.0f, float hi = 1.0f) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (float& f : v) f = rand_float(lo, hi);
  return v;
}

// NCHW -> NHWC, element by element.
tensor<float, 4> to_nhwc(const arr4& x) {
  tensor<float, 4> t(extents<4>{x.d[0], x.d[2], x.d[3], x.d[1]});
  for (index_t n = 0; n < x.d[0]; ++n)
    for (index_t c = 0; c < x.d[1]; ++c)
      for (index_t h = 0; h < x.d[2]; ++h)
        for (index_t w = 0; w < x.d[3]; ++w) t(n, h, w, c) = x(n, c, h, w);
  return t;
}

// An expected NCHW output: values and the absolute error allowed for each.
struct expected4 {
  index_t d[4] = {0, 0, 0, 0};
  std::vector<double> y, tol;
  expected4(index_t a, index_t b, index_t c, index_t e)
      : d{a, b, c, e}, y(static_cast<std::size_t>(a * b * c * e)), tol(y.size()) {}
  std::size_t at(index_t a, index_t b, index_t c, index_t e) const {
    return static_cast<std::size_t>(((a * d[1] + b) * d[2] + c) * d[3] + e);
  }
};

constexpr double unit_roundoff = 1.0 / (1 << 24);  // float's u = 2^-24

// Floor division as PyTorch's output-size formula uses it.
index_t floor_div(index_t a, index_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
// PyTorch's conv/pool output size: floor((in + 2p - d (k - 1) - 1) / s) + 1.
index_t torch_out_size(index_t in, index_t k, index_t s, index_t p, index_t d) {
  return floor_div(in + 2 * p - d * (k - 1) - 1, s) + 1;
}

// Convolution straight from the definition, in double:
// y[n][o][oh][ow] = b[o] + sum_{ci, kh, kw} x[n][g*Cg + ci][oh*sh - ph + kh*dh][ow*sw - pw + kw*dw] * w[o][ci][kh][kw]
// with g = o / (O / groups) and taps outside the input reading 0. The tolerance is the
// float summation bound (K + 2) u sum |terms|, doubled.
expected4 conv_reference(const arr4& x, const arr4& w, const std::vector<float>& bias, const nn::conv2d_options& o) {
  const index_t n_ = x.d[0], c_ = x.d[1], h_ = x.d[2], w_ = x.d[3], oc = w.d[0], icg = w.d[1];
  REQUIRE(icg * o.groups == c_);
  const index_t oh_ = torch_out_size(h_, o.kernel_h, o.stride_h, o.pad_h, o.dilation_h);
  const index_t ow_ = torch_out_size(w_, o.kernel_w, o.stride_w, o.pad_w, o.dilation_w);
  expected4 r(n_, oc, oh_, ow_);
  const index_t ocg = oc / o.groups, terms = icg * o.kernel_h * o.kernel_w;
  for (index_t n = 0; n < n_; ++n)
    for (index_t oo = 0; oo < oc; ++oo)
      for (index_t oh = 0; oh < oh_; ++oh)
        for (index_t ow = 0; ow < ow_; ++ow) {
          const index_t g = oo / ocg;
          double s = bias.empty() ? 0.0 : bias[static_cast<std::size_t>(oo)];
          double a = std::fabs(s);
          for (index_t ci = 0; ci < icg; ++ci)
            for (index_t kh = 0; kh < o.kernel_h; ++kh)
              for (index_t kw = 0; kw < o.kernel_w; ++kw) {
                const index_t ih = oh * o.stride_h - o.pad_h + kh * o.dilation_h;
                const index_t iw = ow * o.stride_w - o.pad_w + kw * o.dilation_w;
                if (ih < 0 || ih >= h_ || iw < 0 || iw >= w_) continue;
                const double t = double(x(n, g * icg + ci, ih, iw)) * double(w(oo, ci, kh, kw));
                s += t;
                a += std::fabs(t);
              }
          r.y[r.at(n, oo, oh, ow)] = s;
          r.tol[r.at(n, oo, oh, ow)] = 2.0 * double(terms + 2) * unit_roundoff * a + 1e-30;
        }
  return r;
}

// Worst |got - want| / tol over an NHWC result against an NCHW expectation (> 1 fails).
// A NaN expected must be NaN; a NaN where none is expected is infinitely wrong.
double worst_error(tensor_view<const float, 4> got, const expected4& e) {
  if (got.shape(0) != e.d[0] || got.shape(1) != e.d[2] || got.shape(2) != e.d[3] || got.shape(3) != e.d[1])
    return std::numeric_limits<double>::infinity();
  double worst = 0.0;
  for (index_t n = 0; n < e.d[0]; ++n)
    for (index_t c = 0; c < e.d[1]; ++c)
      for (index_t h = 0; h < e.d[2]; ++h)
        for (index_t w = 0; w < e.d[3]; ++w) {
          const double g = got(n, h, w, c), want = e.y[e.at(n, c, h, w)];
          if (std::isnan(want) || std::isnan(g)) {
            if (std::isnan(want) != std::isnan(g)) return std::numeric_limits<double>::infinity();
            continue;
          }
          if (g == want) continue;  // also equal infinities
          worst = std::max(worst, std::fabs(g - want) / e.tol[e.at(n, c, h, w)]);
        }
  return worst;
}

std::string describe(const nn::conv2d_options& o, index_t n, index_t c, index_t h, index_t w, index_t oc) {
  std::ostringstream s;
  s << "input [" << n << "," << c << "," << h << "," << w << "] -> " << oc << " channels, " << o.describe();
  return s.str();
}

// A conv2d layer from PyTorch-layout (OIHW) weights.
nn::conv2d make_conv(const arr4& w_oihw, const std::vector<float>& bias, const nn::conv2d_options& o) {
  nn::conv2d conv(w_oihw.d[1] * o.groups, w_oihw.d[0], o, !bias.empty());
  conv.weight = nn::oihw_to_ohwi(w_oihw.view());
  for (std::size_t i = 0; i < bias.size(); ++i) conv.bias(static_cast<index_t>(i)) = bias[i];
  return conv;
}

// Max pooling from the definition: the largest in-bounds tap; any NaN tap gives NaN.
expected4 max_pool_reference(const arr4& x, const nn::conv2d_options& o) {
  const index_t oh_ = torch_out_size(x.d[2], o.kernel_h, o.stride_h, o.pad_h, o.dilation_h);
  const index_t ow_ = torch_out_size(x.d[3], o.kernel_w, o.stride_w, o.pad_w, o.dilation_w);
  expected4 r(x.d[0], x.d[1], oh_, ow_);
  for (index_t n = 0; n < x.d[0]; ++n)
    for (index_t c = 0; c < x.d[1]; ++c)
      for (index_t oh = 0; oh < oh_; ++oh)
        for (index_t ow = 0; ow < ow_; ++ow) {
          double m = -std::numeric_limits<double>::infinity();
          bool nan = false;
          for (index_t kh = 0; kh < o.kernel_h; ++kh)
            for (index_t kw = 0; kw < o.kernel_w; ++kw) {
              const index_t ih = oh * o.stride_h - o.pad_h + kh * o.dilation_h;
              const index_t iw = ow * o.stride_w - o.pad_w + kw * o.dilation_w;
              if (ih < 0 || ih >= x.d[2] || iw < 0 || iw >= x.d[3]) continue;
              const float v = x(n, c, ih, iw);
              if (std::isnan(v)) nan = true;
              else m = std::max(m, double(v));
            }
          r.y[r.at(n, c, oh, ow)] = nan ? std::numeric_limits<double>::quiet_NaN() : m;
          r.tol[r.at(n, c, oh, ow)] = 0.0;  // max is exact
        }
  return r;
}

// Average pooling as PyTorch's avg_pool2d computes it (no dilation): the window
// [oh*s - p, min(oh*s - p + k, H + p)) is the divisor with count_include_pad, its part
// inside the input without. `zero_point` is subtracted from each value (quantized input).
expected4 avg_pool_reference(const arr4& x, const nn::conv2d_options& o, bool count_include_pad,
                             double zero_point = 0.0) {
  REQUIRE(o.dilation_h == 1);
  REQUIRE(o.dilation_w == 1);
  const index_t h_ = x.d[2], w_ = x.d[3];
  const index_t oh_ = torch_out_size(h_, o.kernel_h, o.stride_h, o.pad_h, 1);
  const index_t ow_ = torch_out_size(w_, o.kernel_w, o.stride_w, o.pad_w, 1);
  expected4 r(x.d[0], x.d[1], oh_, ow_);
  for (index_t n = 0; n < x.d[0]; ++n)
    for (index_t c = 0; c < x.d[1]; ++c)
      for (index_t oh = 0; oh < oh_; ++oh)
        for (index_t ow = 0; ow < ow_; ++ow) {
          index_t hs = oh * o.stride_h - o.pad_h, ws = ow * o.stride_w - o.pad_w;
          index_t he = std::min(hs + o.kernel_h, h_ + o.pad_h), we = std::min(ws + o.kernel_w, w_ + o.pad_w);
          const index_t pool_size = (he - hs) * (we - ws);
          hs = std::max<index_t>(hs, 0);
          ws = std::max<index_t>(ws, 0);
          he = std::min(he, h_);
          we = std::min(we, w_);
          double s = 0.0, a = 0.0;
          for (index_t ih = hs; ih < he; ++ih)
            for (index_t iw = ws; iw < we; ++iw) {
              s += double(x(n, c, ih, iw)) - zero_point;
              a += std::fabs(double(x(n, c, ih, iw)) - zero_point);
            }
          const index_t div = count_include_pad ? pool_size : (he - hs) * (we - ws);
          r.y[r.at(n, c, oh, ow)] = s / double(div);
          r.tol[r.at(n, c, oh, ow)] = 2.0 * double(o.kernel_h * o.kernel_w + 2) * unit_roundoff * a / double(div) + 1e-30;
        }
  return r;
}

// ---------------------------------------------------------------------------------------
// Golden vectors from tests/data/make_nn_golden.py.

std::string golden_path(const std::string& name) { return std::string(QLIB_TEST_DATA_DIR) + "/nn_golden/" + name + ".npy"; }
arr4 load4(const std::string& name) {
  const npy_array a = read_npy(golden_path(name));
  REQUIRE(a.shape.size() == 4);
  arr4 x(a.shape[0], a.shape[1], a.shape[2], a.shape[3]);
  x.v = a.data;
  return x;
}
std::vector<float> load1(const std::string& name) {
  const npy_array a = read_npy(golden_path(name));
  REQUIRE(a.shape.size() == 1);
  return a.data;
}
// PyTorch's output as an expectation, ~1e-5 relative: PyTorch sums in another order.
expected4 golden_expected(const arr4& y, double rel = 1e-5) {
  expected4 e(y.d[0], y.d[1], y.d[2], y.d[3]);
  double mean_abs = 0.0;
  for (float v : y.v) mean_abs += std::isnan(v) ? 0.0 : std::fabs(double(v));
  mean_abs /= double(std::max<std::size_t>(y.v.size(), 1));
  for (std::size_t i = 0; i < y.v.size(); ++i) {
    e.y[i] = y.v[i];
    e.tol[i] = rel * (std::fabs(double(y.v[i])) + mean_abs) + 1e-30;
  }
  return e;
}
std::vector<std::vector<std::string>> golden_cases(const std::string& kind) {
  std::ifstream in(std::string(QLIB_TEST_DATA_DIR) + "/nn_golden/cases.txt");
  REQUIRE(in.good());
  std::vector<std::vector<std::string>> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream s(line);
    std::vector<std::string> f;
    std::string word;
    while (s >> word) f.push_back(word);
    if (!f.empty() && f[0] == kind) out.push_back(f);
  }
  return out;
}
// A batch_norm2d from the golden files <prefix>weight, bias, <mean>, <var>.
nn::batch_norm2d load_bn(const std::string& prefix, const std::string& mean, const std::string& var, float eps) {
  const std::vector<float> g = load1(prefix + "weight"), b = load1(prefix + "bias"), m = load1(prefix + mean),
                           v = load1(prefix + var);
  nn::batch_norm2d bn(static_cast<index_t>(g.size()));
  bn.eps = eps;
  std::copy(g.begin(), g.end(), bn.weight.data());
  std::copy(b.begin(), b.end(), bn.bias.data());
  std::copy(m.begin(), m.end(), bn.running_mean.data());
  std::copy(v.begin(), v.end(), bn.running_var.data());
  bn.validate(bn.channels());  // all four have the same length
  return bn;
}
index_t num(const std::vector<std::string>& f, std::size_t i) {
  REQUIRE(i < f.size());
  return std::stoll(f[i]);
}

// Bitwise-equal floats, or both NaN.
bool same_value(float a, float b) { return (std::isnan(a) && std::isnan(b)) || qlib_test::same_bits(a, b); }
bool same_tensor(const tensor<float, 4>& a, const tensor<float, 4>& b) {
  if (a.shape() != b.shape()) return false;
  for (index_t i = 0; i < a.size(); ++i)
    if (!same_value(a.data()[i], b.data()[i])) return false;
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// conv2d

TEST_CASE("oihw_to_ohwi puts PyTorch's [O][I][H][W] weights in [O][H][W][I] order", "[nn][conv]") {
  const arr4 w = random_arr(5, 3, 2, 4);
  const tensor<float, 4> t = nn::oihw_to_ohwi(w.view());
  REQUIRE(t.shape() == extents<4>{5, 2, 4, 3});
  for (index_t o = 0; o < 5; ++o)
    for (index_t i = 0; i < 3; ++i)
      for (index_t h = 0; h < 2; ++h)
        for (index_t x = 0; x < 4; ++x) REQUIRE(t(o, h, x, i) == w(o, i, h, x));
}

TEST_CASE("conv2d matches a direct convolution over strides, padding, dilation, groups and kernels", "[nn][conv]") {
  struct hw {
    index_t h, w;
  };
  struct channels {
    index_t in, out, groups;
  };
  const hw kernels[] = {{1, 1}, {3, 3}, {1, 3}, {5, 5}, {3, 2}};
  const hw strides[] = {{1, 1}, {2, 2}, {3, 3}, {2, 1}};
  // The last three pad by a whole window or more for most kernels: output pixels whose
  // window lies entirely in the padding (bias only, as PyTorch) occur often.
  const hw pads[] = {{0, 0}, {1, 1}, {2, 2}, {1, 0}, {0, 2}, {3, 3}, {5, 1}, {0, 6}};
  const hw dilations[] = {{1, 1}, {2, 2}, {1, 2}};
  // dense, groups 2 and 4, depthwise with channel multiplier 1 and 2, one input channel
  const channels chans[] = {{3, 5, 1}, {4, 6, 2}, {8, 4, 4}, {6, 6, 6}, {4, 8, 4}, {1, 3, 1}};
  const hw inputs[] = {{7, 5}, {1, 1}, {13, 9}, {4, 6}};

  index_t checked = 0, padding_only = 0, padding_only_depthwise = 0, refused_fit = 0, depthwise = 0, case_no = 0;
#if QLIB_EXCEPTIONS
  const index_t error_checks = 1 << 30;
#else
  const index_t error_checks = 3;  // each check forks a process without exceptions
#endif
  for (const hw& k : kernels)
    for (const hw& s : strides)
      for (const hw& p : pads)
        for (const hw& d : dilations)
          for (const channels& ch : chans) {
            ++case_no;
            const hw in = inputs[rand_int(0, 3)];
            const index_t batch = rand_int(0, 1) ? 3 : 1;
            const nn::conv2d_options o{k.h, k.w, s.h, s.w, p.h, p.w, d.h, d.w, ch.groups};
            const bool bias = case_no % 3 != 0;
            const arr4 x = random_arr(batch, ch.in, in.h, in.w);
            const arr4 w = random_arr(ch.out, ch.in / ch.groups, k.h, k.w);
            const std::vector<float> b = bias ? random_vec(ch.out) : std::vector<float>();
            const nn::conv2d conv = make_conv(w, b, o);
            const tensor<float, 4> xt = to_nhwc(x);
            // PyTorch's output size, whatever the padding.
            const index_t oh = torch_out_size(in.h, k.h, s.h, p.h, d.h), ow = torch_out_size(in.w, k.w, s.w, p.w, d.w);
            INFO(describe(o, batch, ch.in, in.h, in.w, ch.out));
            if (oh < 1 || ow < 1) {
              if (refused_fit++ < error_checks) QLIB_REQUIRE_ERROR(conv.forward(xt.cview()), errc::shape_mismatch);
              continue;
            }
            REQUIRE(conv.output_shape(xt.shape()) == extents<4>{batch, oh, ow, ch.out});
            const expected4 want = conv_reference(x, w, b, o);
            const bool is_depthwise = ch.groups == ch.in && ch.groups > 1;
            depthwise += is_depthwise;
            // Output rows / columns whose window holds no input tap: the pixels on them are
            // the bias (or 0) exactly, on every path.
            const std::vector<bool> empty_h = qlib_test::padding_only_windows(in.h, k.h, s.h, p.h, d.h, oh),
                                    empty_w = qlib_test::padding_only_windows(in.w, k.w, s.w, p.w, d.w, ow);
            const bool has_empty = std::find(empty_h.begin(), empty_h.end(), true) != empty_h.end() ||
                                   std::find(empty_w.begin(), empty_w.end(), true) != empty_w.end();
            padding_only += has_empty;
            padding_only_depthwise += has_empty && is_depthwise;
            qlib_test::for_each_isa([&](isa) {
              const tensor<float, 4> y = conv.forward(xt.cview());
              const double err = worst_error(y.cview(), want);
              if (!(err <= 1.0)) FAIL_CHECK("error " << err << " x tolerance");
              index_t wrong = 0;
              for (index_t n = 0; n < batch; ++n)
                for (index_t h = 0; h < oh; ++h)
                  for (index_t ww = 0; ww < ow; ++ww) {
                    if (!empty_h[static_cast<std::size_t>(h)] && !empty_w[static_cast<std::size_t>(ww)]) continue;
                    for (index_t c = 0; c < ch.out; ++c)
                      wrong += !qlib_test::same_bits(y(n, h, ww, c), bias ? b[static_cast<std::size_t>(c)] : 0.0f);
                  }
              if (wrong > 0) FAIL_CHECK(wrong << " padding-only outputs differ from the bias");
            });
            ++checked;
          }
  // The sweep must exercise every branch it claims to.
  CHECK(checked > 1800);
  CHECK(depthwise > 600);
  CHECK(padding_only > 1000);  // cases with an output pixel whose window is all padding
  CHECK(padding_only_depthwise > 300);
  CHECK(refused_fit > 300);
}

TEST_CASE("conv2d reads strided input views (row padding) on the im2col and depthwise paths", "[nn][conv]") {
  for (index_t groups : {1, 2, 6}) {
    INFO("groups " << groups);
    const nn::conv2d_options o{3, 2, 2, 1, 1, 1, 1, 2, groups};
    const arr4 x = random_arr(2, 6, 7, 8);
    const arr4 w = random_arr(12, 6 / groups, 3, 2);
    const std::vector<float> b = random_vec(12);
    const nn::conv2d conv = make_conv(w, b, o);
    // The input inside a larger buffer: W stride 6, H stride (8 + 3) * 6, N stride 9 * H stride.
    tensor<float, 4> big(extents<4>{2, 9, 11, 6}, std::numeric_limits<float>::quiet_NaN());
    const tensor_view<float, 4> xv = big.view().slice(1, 1, 8).slice(2, 2, 10);
    const tensor<float, 4> dense = to_nhwc(x);
    for (index_t n = 0; n < 2; ++n)
      for (index_t h = 0; h < 7; ++h)
        for (index_t ww = 0; ww < 8; ++ww)
          for (index_t c = 0; c < 6; ++c) xv(n, h, ww, c) = dense(n, h, ww, c);
    const expected4 want = conv_reference(x, w, b, o);
    qlib_test::for_each_isa([&](isa) {
      const tensor<float, 4> y = conv.forward(tensor_view<const float, 4>(xv));
      CHECK(worst_error(y.cview(), want) <= 1.0);
    });
  }
}

TEST_CASE("conv2d refuses bad configurations", "[nn][conv][errors]") {
  const nn::conv2d_options k3 = nn::conv2d_options::square(3, 1, 1);
  // groups that do not divide the channels; zero sizes
  QLIB_REQUIRE_ERROR(nn::conv2d(6, 4, nn::conv2d_options::square(3, 1, 1, 1, 4)), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::conv2d(4, 6, nn::conv2d_options::square(3, 1, 1, 1, 4)), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::conv2d(0, 4, k3), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::conv2d(4, 0, k3), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::conv2d(4, 4, nn::conv2d_options::square(0)), errc::invalid_argument);

  nn::conv2d conv(4, 6, k3);
  const tensor<float, 4> x(extents<4>{1, 5, 5, 4}, 1.0f);
  CHECK(conv.output_shape(x.shape()) == extents<4>{1, 5, 5, 6});
  // channel mismatch, empty input
  QLIB_REQUIRE_ERROR(conv.forward(tensor<float, 4>(extents<4>{1, 5, 5, 3}).cview()), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(conv.forward(tensor<float, 4>(extents<4>{0, 5, 5, 4}).cview()), errc::empty_tensor);
  QLIB_REQUIRE_ERROR(conv.forward(tensor<float, 4>(extents<4>{1, 0, 5, 4}).cview()), errc::empty_tensor);
  QLIB_REQUIRE_ERROR(conv.forward(tensor<float, 4>(extents<4>{1, 5, 0, 4}).cview()), errc::empty_tensor);
  // window (dilated 3x3 = 5x5) larger than the padded input
  nn::conv2d dil(4, 6, nn::conv2d_options::square(3, 1, 0, 2));
  QLIB_REQUIRE_ERROR(dil.forward(tensor<float, 4>(extents<4>{1, 4, 9, 4}).cview()), errc::shape_mismatch);
  CHECK(dil.output_shape({1, 5, 9, 4}) == extents<4>{1, 1, 5, 6});
  // Padding of a whole window or more is accepted with PyTorch's output size (pad 3 and 2
  // on a 3-wide window); above 4096 it is refused like the other window parameters.
  nn::conv2d conv_pad = conv;
  conv_pad.opt.pad_w = 3;
  CHECK(conv_pad.output_shape(x.shape()) == extents<4>{1, 5, 9, 6});
  conv_pad.opt.pad_w = 2;
  CHECK(conv_pad.output_shape(x.shape()) == extents<4>{1, 5, 7, 6});
  conv_pad.opt.pad_h = 4097;
  QLIB_REQUIRE_ERROR(conv_pad.forward(x.cview()), errc::invalid_argument);
  // stride, dilation 0 and negative padding
  for (int field = 0; field < 3; ++field) {
    nn::conv2d bad = conv;
    if (field == 0) bad.opt.stride_h = 0;
    if (field == 1) bad.opt.dilation_w = 0;
    if (field == 2) bad.opt.pad_h = -1;
    QLIB_REQUIRE_ERROR(bad.forward(x.cview()), errc::invalid_argument);
  }
  // parameters that no longer match the options
  nn::conv2d wrong_bias = conv;
  wrong_bias.bias = tensor<float, 1>(extents<1>{5});
  QLIB_REQUIRE_ERROR(wrong_bias.forward(x.cview()), errc::shape_mismatch);
  nn::conv2d wrong_kernel = conv;
  wrong_kernel.opt.kernel_h = 2;
  QLIB_REQUIRE_ERROR(wrong_kernel.forward(x.cview()), errc::shape_mismatch);
  nn::conv2d wrong_groups = conv;
  wrong_groups.opt.groups = 3;  // 4 * 3 = 12 input channels expected now
  QLIB_REQUIRE_ERROR(wrong_groups.forward(x.cview()), errc::shape_mismatch);
  // channels not contiguous
  const tensor<float, 4> xt(extents<4>{1, 5, 4, 5});
  QLIB_REQUIRE_ERROR(conv.forward(xt.cview().transpose(2, 3)), errc::invalid_argument);
  // an empty (default) layer
  QLIB_REQUIRE_ERROR(nn::conv2d().forward(x.cview()), errc::shape_mismatch);
}

TEST_CASE("conv2d with padding of a whole window or more gives PyTorch's shapes and a bias-only border",
          "[nn][conv]") {
  // 1x1 with pad 1 on 5x5 -> 7x7 (PyTorch's Conv2d(kernel_size=1, padding=1)): the border
  // reads only padding and is the bias exactly (0 without bias), the inside is bias + w.x.
  // Dense (im2col + GEMM) and depthwise (the direct loop), with and without bias.
  for (index_t groups : {1, 4})
    for (bool with_bias : {true, false}) {
      INFO("groups " << groups << (with_bias ? ", bias" : ", no bias"));
      const index_t out_c = groups == 1 ? 6 : 4;
      const nn::conv2d_options o = nn::conv2d_options::square(1, 1, 1, 1, groups);
      const std::vector<float> bias_values = with_bias ? random_vec(out_c) : std::vector<float>();
      const nn::conv2d conv = make_conv(random_arr(out_c, 4 / groups, 1, 1), bias_values, o);
      const tensor<float, 4> x = qlib_test::rand_tensor({2, 5, 5, 4});
      REQUIRE(conv.output_shape(x.shape()) == extents<4>{2, 7, 7, out_c});
      qlib_test::for_each_isa([&](isa) {
        const tensor<float, 4> y = conv.forward(x.cview());
        REQUIRE(y.shape() == extents<4>{2, 7, 7, out_c});
        for (index_t n = 0; n < 2; ++n)
          for (index_t h = 0; h < 7; ++h)
            for (index_t w = 0; w < 7; ++w)
              for (index_t c = 0; c < out_c; ++c) {
                INFO("at " << n << "," << h << "," << w << "," << c);
                const float b = with_bias ? conv.bias(c) : 0.0f;
                if (h == 0 || h == 6 || w == 0 || w == 6) {
                  REQUIRE(qlib_test::same_bits(y(n, h, w, c), b));
                  continue;
                }
                double want = b;
                const index_t cg = 4 / groups, g = c / (out_c / groups);
                for (index_t i = 0; i < cg; ++i)
                  want += double(conv.weight(c, 0, 0, i)) * x(n, h - 1, w - 1, g * cg + i);
                REQUIRE(y(n, h, w, c) == Approx(want).margin(1e-5));
              }
      });
    }
  // The largest padding accepted, 4096, with stride 4096 over 5x5: a 3x3 output whose
  // centre reads x(0, 0) and whose other pixels read only padding.
  const nn::conv2d big = make_conv(random_arr(3, 2, 1, 1), random_vec(3), nn::conv2d_options::square(1, 4096, 4096));
  const tensor<float, 4> x = qlib_test::rand_tensor({1, 5, 5, 2});
  qlib_test::for_each_isa([&](isa) {
    const tensor<float, 4> y = big.forward(x.cview());
    REQUIRE(y.shape() == extents<4>{1, 3, 3, 3});
    for (index_t h = 0; h < 3; ++h)
      for (index_t w = 0; w < 3; ++w)
        for (index_t c = 0; c < 3; ++c) {
          if (h == 1 && w == 1) {
            const double want = double(big.bias(c)) + double(big.weight(c, 0, 0, 0)) * x(0, 0, 0, 0) +
                                double(big.weight(c, 0, 0, 1)) * x(0, 0, 0, 1);
            CHECK(y(0, h, w, c) == Approx(want).margin(1e-5));
          } else {
            CHECK(qlib_test::same_bits(y(0, h, w, c), big.bias(c)));
          }
        }
  });
}

// ---------------------------------------------------------------------------------------
// linear, batch norm, folding
// ---------------------------------------------------------------------------------------
// linear, batch norm, folding

TEST_CASE("linear computes x W^T + b over [N,1,1,in]", "[nn][linear]") {
  for (bool bias : {true, false}) {
    INFO("bias " << bias);
    const index_t n = 3, in = 37, out = 11;
    nn::linear fc(in, out, bias);
    for (float& v : fc.weight) v = rand_float(-1, 1);
    for (float& v : fc.bias) v = rand_float(-1, 1);
    tensor<float, 4> x(extents<4>{n, 1, 1, in});
    for (float& v : x) v = rand_float(-2, 2);
    qlib_test::for_each_isa([&](isa) {
      const tensor<float, 4> y = fc.forward(x.cview());
      REQUIRE(y.shape() == extents<4>{n, 1, 1, out});
      for (index_t i = 0; i < n; ++i)
        for (index_t o = 0; o < out; ++o) {
          double s = bias ? fc.bias(o) : 0.0, a = std::fabs(s);
          for (index_t k = 0; k < in; ++k) {
            s += double(x(i, 0, 0, k)) * fc.weight(o, k);
            a += std::fabs(double(x(i, 0, 0, k)) * fc.weight(o, k));
          }
          REQUIRE(std::fabs(y(i, 0, 0, o) - s) <= 2.0 * (in + 2) * unit_roundoff * a);
        }
    });
  }
  nn::linear fc(8, 3);
  QLIB_REQUIRE_ERROR(fc.forward(tensor<float, 4>(extents<4>{2, 1, 1, 7}).cview()), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(fc.forward(tensor<float, 4>(extents<4>{2, 2, 1, 4}).cview()), errc::shape_mismatch);
  nn::linear wrong_bias = fc;
  wrong_bias.bias = tensor<float, 1>(extents<1>{4});
  QLIB_REQUIRE_ERROR(wrong_bias.forward(tensor<float, 4>(extents<4>{2, 1, 1, 8}).cview()), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(nn::linear(0, 3), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::linear().forward(tensor<float, 4>(extents<4>{2, 1, 1, 8}).cview()), errc::empty_tensor);
}

namespace {
nn::batch_norm2d random_bn(index_t c) {
  nn::batch_norm2d bn(c);
  bn.eps = 1e-3f;
  for (index_t i = 0; i < c; ++i) {
    bn.weight(i) = rand_float(0.3f, 2.0f) * (rand_int(0, 3) == 0 ? -1.0f : 1.0f);
    bn.bias(i) = rand_float(-1, 1);
    bn.running_mean(i) = rand_float(-0.5f, 0.5f);
    bn.running_var(i) = rand_float(0.01f, 3.0f);
  }
  return bn;
}
// BN from its definition, over NCHW: (x - mean) / sqrt(var + eps) * gamma + beta.
expected4 bn_reference(const expected4& x, const nn::batch_norm2d& bn) {
  expected4 r = x;
  for (index_t n = 0; n < x.d[0]; ++n)
    for (index_t c = 0; c < x.d[1]; ++c) {
      const double inv = 1.0 / std::sqrt(double(bn.running_var(c)) + double(bn.eps));
      for (index_t h = 0; h < x.d[2]; ++h)
        for (index_t w = 0; w < x.d[3]; ++w) {
          const std::size_t i = x.at(n, c, h, w);
          r.y[i] = (x.y[i] - bn.running_mean(c)) * inv * bn.weight(c) + bn.bias(c);
          // the input's own error, scaled, plus a few roundings of the affine map
          r.tol[i] = x.tol[i] * std::fabs(inv * bn.weight(c)) +
                     8 * unit_roundoff * (std::fabs(r.y[i]) + std::fabs((std::fabs(x.y[i]) + std::fabs(bn.running_mean(c))) *
                                                                        inv * bn.weight(c)) +
                                          std::fabs(bn.bias(c)));
        }
    }
  return r;
}
}  // namespace

TEST_CASE("batch_norm2d inference is (x - mean) / sqrt(var + eps) * weight + bias per channel", "[nn][bn]") {
  const nn::batch_norm2d bn = random_bn(5);
  const arr4 x = random_arr(2, 5, 4, 3, -3, 3);
  expected4 xe(2, 5, 4, 3);
  for (std::size_t i = 0; i < x.v.size(); ++i) xe.y[i] = x.v[i];
  const expected4 want = bn_reference(xe, bn);
  CHECK(worst_error(bn.forward(to_nhwc(x).cview()).cview(), want) <= 1.0);

  QLIB_REQUIRE_ERROR(bn.forward(tensor<float, 4>(extents<4>{1, 2, 2, 4}).cview()), errc::shape_mismatch);
  nn::batch_norm2d neg = bn;
  neg.running_var(2) = -1.0f;
  QLIB_REQUIRE_ERROR(neg.forward(to_nhwc(x).cview()), errc::invalid_argument);
  nn::batch_norm2d zero = bn;
  zero.running_var(1) = 0.0f;
  zero.eps = 0.0f;
  QLIB_REQUIRE_ERROR(zero.forward(to_nhwc(x).cview()), errc::invalid_argument);
  nn::batch_norm2d nan_eps = bn;
  nan_eps.eps = std::numeric_limits<float>::quiet_NaN();
  QLIB_REQUIRE_ERROR(nan_eps.forward(to_nhwc(x).cview()), errc::invalid_argument);
  nn::batch_norm2d short_mean = bn;
  short_mean.running_mean = tensor<float, 1>(extents<1>{4});
  QLIB_REQUIRE_ERROR(short_mean.forward(to_nhwc(x).cview()), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(nn::batch_norm2d(0), errc::invalid_argument);
}

TEST_CASE("fold_batch_norm: the folded conv equals conv then BN", "[nn][bn][conv]") {
  struct setup {
    index_t in, out, groups;
    bool bias;
  };
  for (const setup& st : {setup{3, 6, 1, true}, setup{3, 6, 1, false}, setup{4, 6, 2, true}, setup{5, 10, 5, false},
                          setup{6, 6, 6, true}}) {
    INFO("in " << st.in << " out " << st.out << " groups " << st.groups << " bias " << st.bias);
    const nn::conv2d_options o{3, 3, 2, 1, 1, 1, 1, 1, st.groups};
    const arr4 x = random_arr(2, st.in, 7, 6);
    const arr4 w = random_arr(st.out, st.in / st.groups, 3, 3);
    const std::vector<float> b = st.bias ? random_vec(st.out) : std::vector<float>();
    const nn::conv2d conv = make_conv(w, b, o);
    const nn::batch_norm2d bn = random_bn(st.out);
    const nn::conv2d folded = nn::fold_batch_norm(conv, bn);
    CHECK(folded.has_bias());
    CHECK(folded.weight.shape() == conv.weight.shape());
    CHECK(conv.has_bias() == st.bias);  // the input layer is untouched

    const expected4 want = bn_reference(conv_reference(x, w, b, o), bn);
    const tensor<float, 4> xt = to_nhwc(x);
    qlib_test::for_each_isa([&](isa) {
      CHECK(worst_error(folded.forward(xt.cview()).cview(), want) <= 1.0);
      CHECK(worst_error(bn.forward(conv.forward(xt.cview()).cview()).cview(), want) <= 1.0);
    });
  }
  nn::conv2d conv(3, 6, nn::conv2d_options::square(3));
  QLIB_REQUIRE_ERROR(nn::fold_batch_norm(conv, nn::batch_norm2d(5)), errc::shape_mismatch);
}

TEST_CASE("fold_batch_norm: the folded linear equals linear then BN", "[nn][bn][linear]") {
  for (bool bias : {true, false}) {
    INFO("bias " << bias);
    nn::linear fc(7, 5, bias);
    for (float& v : fc.weight) v = rand_float(-0.5f, 0.5f);
    for (float& v : fc.bias) v = rand_float(-0.5f, 0.5f);
    const nn::batch_norm2d bn = random_bn(5);
    const nn::linear folded = nn::fold_batch_norm(fc, bn);
    CHECK(folded.has_bias());
    CHECK(folded.weight.shape() == fc.weight.shape());
    const tensor<float, 4> x = to_nhwc(random_arr(3, 7, 1, 1, -2, 2));
    const tensor<float, 4> want = bn.forward(fc.forward(x.cview()).cview()), got = folded.forward(x.cview());
    REQUIRE(got.shape() == want.shape());
    float scale = 0.0f;
    for (float v : want) scale = std::max(scale, std::fabs(v));
    CHECK(scale > 0.0f);
    for (index_t i = 0; i < want.size(); ++i) CHECK(std::fabs(got.data()[i] - want.data()[i]) <= 1e-5f * scale);
  }
  QLIB_REQUIRE_ERROR(nn::fold_batch_norm(nn::linear(7, 5), nn::batch_norm2d(4)), errc::shape_mismatch);
}

TEST_CASE("fold_batch_norms on a sequential gives the unfolded model's outputs", "[nn][bn][sequential]") {
  auto conv = [](index_t in, index_t out, const nn::conv2d_options& o, bool bias) {
    return make_conv(random_arr(out, in / o.groups, o.kernel_h, o.kernel_w), bias ? random_vec(out) : std::vector<float>(),
                     o);
  };
  nn::linear fc(4 * 2 * 2, 5);
  for (float& v : fc.weight) v = rand_float(-0.5f, 0.5f);
  for (float& v : fc.bias) v = rand_float(-0.5f, 0.5f);
  const nn::sequential m{conv(3, 6, nn::conv2d_options::square(3, 1, 1), true),
                         random_bn(6),
                         nn::relu{},
                         nn::max_pool2d::square(2),
                         conv(6, 4, nn::conv2d_options::square(3, 1, 1, 1, 2), false),
                         random_bn(4),
                         nn::relu6{},
                         nn::avg_pool2d::square(2),
                         random_bn(4),  // after a pooling layer: stays
                         nn::flatten{},
                         fc,
                         random_bn(5)};  // after a linear layer: folded too
  const nn::sequential f = nn::fold_batch_norms(m);
  REQUIRE(f.size() == m.size() - 3);
  index_t bns = 0;
  for (std::size_t i = 0; i < f.size(); ++i) bns += std::holds_alternative<nn::batch_norm2d>(f[i]);
  CHECK(bns == 1);
  CHECK(std::holds_alternative<nn::batch_norm2d>(f[6]));
  const tensor<float, 4> x = to_nhwc(random_arr(2, 3, 9, 8, -2, 2));
  const tensor<float, 4> want = m.forward(x.cview()), got = f.forward(x.cview());
  REQUIRE(got.shape() == (extents<4>{2, 1, 1, 5}));
  REQUIRE(want.shape() == got.shape());
  float scale = 0.0f;
  for (float v : want) scale = std::max(scale, std::fabs(v));
  CHECK(scale > 0.0f);
  for (index_t i = 0; i < want.size(); ++i) CHECK(std::fabs(got.data()[i] - want.data()[i]) <= 1e-5f * scale);
}

// ---------------------------------------------------------------------------------------
// pooling

TEST_CASE("max_pool2d and avg_pool2d on float match their definitions", "[nn][pool]") {
  struct win {
    index_t kh, kw, sh, sw, ph, pw, dh, dw;
  };
  // stride == kernel, stride != kernel, asymmetric padding, a window as wide as the input
  const win wins[] = {{2, 2, 2, 2, 0, 0, 1, 1}, {3, 3, 2, 2, 1, 1, 1, 1}, {3, 2, 1, 3, 1, 0, 1, 1},
                      {2, 3, 3, 1, 1, 1, 1, 1}, {3, 3, 1, 1, 2, 2, 1, 1}, {1, 7, 1, 1, 0, 3, 1, 1},
                      {5, 3, 2, 2, 2, 1, 1, 1}};
  const arr4 x = random_arr(2, 3, 7, 7, -4, 4);
  const tensor<float, 4> xt = to_nhwc(x);
  for (const win& wn : wins) {
    const nn::conv2d_options o{wn.kh, wn.kw, wn.sh, wn.sw, wn.ph, wn.pw, wn.dh, wn.dw, 1};
    INFO(o.describe());
    const nn::max_pool2d mp{o};
    CHECK(worst_error(nn::pool(mp, xt.cview()).cview(), max_pool_reference(x, o)) == 0.0);
    CHECK(nn::output_shape(mp, xt.shape()) ==
          extents<4>{2, torch_out_size(7, wn.kh, wn.sh, wn.ph, 1), torch_out_size(7, wn.kw, wn.sw, wn.pw, 1), 3});
    for (bool incl : {true, false}) {
      INFO("count_include_pad " << incl);
      const nn::avg_pool2d ap{o, incl};
      CHECK(worst_error(nn::pool(ap, xt.cview()).cview(), avg_pool_reference(x, o, incl)) <= 1.0);
    }
  }
  // max pooling with dilation (as PyTorch's MaxPool2d)
  for (const nn::conv2d_options& o :
       {nn::conv2d_options{3, 3, 1, 1, 1, 1, 2, 2, 1}, nn::conv2d_options{2, 3, 2, 1, 1, 2, 3, 2, 1}}) {
    INFO(o.describe());
    CHECK(worst_error(nn::pool(nn::max_pool2d{o}, xt.cview()).cview(), max_pool_reference(x, o)) == 0.0);
  }
  // count_include_pad matters: a corner window of ones sees 4 of its 9 taps
  const tensor<float, 4> ones(extents<4>{1, 4, 4, 1}, 1.0f);
  const nn::avg_pool2d incl = nn::avg_pool2d::square(3, 1, 1);
  CHECK(nn::pool(incl, ones.cview())(0, 0, 0, 0) == 4.0f / 9.0f);
  CHECK(nn::pool(nn::avg_pool2d{incl.window, false}, ones.cview())(0, 0, 0, 0) == 1.0f);
}

TEST_CASE("max_pool2d propagates NaN wherever it is in the window", "[nn][pool]") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  arr4 x = random_arr(1, 2, 6, 6);
  x(0, 0, 0, 0) = nan;  // the first tap of its window
  x(0, 0, 3, 4) = nan;  // an inner tap
  x(0, 1, 5, 5) = nan;  // the last tap
  x(0, 1, 1, 1) = -std::numeric_limits<float>::infinity();
  const tensor<float, 4> xt = to_nhwc(x);
  for (const nn::conv2d_options& o :
       {nn::conv2d_options::square(2, 2), nn::conv2d_options::square(3, 2, 1), nn::conv2d_options::square(3, 1, 1)}) {
    INFO(o.describe());
    const expected4 want = max_pool_reference(x, o);
    index_t nans = 0;
    for (double v : want.y) nans += std::isnan(v);
    CHECK(nans >= 3);
    CHECK(worst_error(nn::pool(nn::max_pool2d{o}, xt.cview()).cview(), want) == 0.0);
  }
}

namespace {
// Quantized average pooling from its definition: mean of (q - zp) over the PyTorch
// divisor, rounded half to even (std::nearbyint in the default rounding mode; the double
// quotient of small integers is a tie exactly when the rational one is), plus zp, clamped.
template <class T>
double quantized_avg(double mean, std::int32_t zp) {
  const double q = std::nearbyint(mean) + zp;
  return std::min<double>(std::max<double>(q, std::numeric_limits<T>::min()), std::numeric_limits<T>::max());
}

template <class T>
void check_quantized_pooling(std::int32_t zp) {
  INFO("zero point " << zp);
  const index_t n_ = 2, c_ = 5, h_ = 7, w_ = 6;
  arr4 x(n_, c_, h_, w_);  // the codes, as floats for the references
  tensor<T, 4> xq(extents<4>{n_, h_, w_, c_});
  for (index_t n = 0; n < n_; ++n)
    for (index_t c = 0; c < c_; ++c)
      for (index_t h = 0; h < h_; ++h)
        for (index_t w = 0; w < w_; ++w) {
          // mostly near the zero point (means of both signs), some at the range ends
          int v = rand_int(0, 5) == 0 ? (rand_int(0, 1) ? std::numeric_limits<T>::min() : std::numeric_limits<T>::max())
                                      : zp + rand_int(-20, 20);
          v = std::min<int>(std::max<int>(v, std::numeric_limits<T>::min()), std::numeric_limits<T>::max());
          x(n, c, h, w) = float(v);
          xq(n, h, w, c) = static_cast<T>(v);
        }
  const nn::conv2d_options wins[] = {nn::conv2d_options::square(2, 2), nn::conv2d_options::square(3, 2, 1),
                                     nn::conv2d_options{2, 3, 1, 2, 1, 1, 1, 1, 1}, nn::conv2d_options::square(2, 1, 1)};
  for (const nn::conv2d_options& o : wins) {
    INFO(o.describe());
    // max: exact, on the codes
    const expected4 mx = max_pool_reference(x, o);
    const tensor<T, 4> ym = nn::pool(nn::max_pool2d{o}, xq.cview());
    REQUIRE(ym.shape() == (extents<4>{n_, mx.d[2], mx.d[3], c_}));
    for (index_t n = 0; n < n_; ++n)
      for (index_t c = 0; c < c_; ++c)
        for (index_t h = 0; h < mx.d[2]; ++h)
          for (index_t w = 0; w < mx.d[3]; ++w) REQUIRE(double(ym(n, h, w, c)) == mx.y[mx.at(n, c, h, w)]);
    for (bool incl : {true, false}) {
      INFO("count_include_pad " << incl);
      const expected4 av = avg_pool_reference(x, o, incl, zp);
      const tensor<T, 4> ya = nn::pool(nn::avg_pool2d{o, incl}, xq.cview(), zp);
      REQUIRE(ya.shape() == (extents<4>{n_, av.d[2], av.d[3], c_}));
      index_t ties = 0;
      for (index_t n = 0; n < n_; ++n)
        for (index_t c = 0; c < c_; ++c)
          for (index_t h = 0; h < av.d[2]; ++h)
            for (index_t w = 0; w < av.d[3]; ++w) {
              const double mean = av.y[av.at(n, c, h, w)];
              ties += mean - std::floor(mean) == 0.5;
              REQUIRE(double(ya(n, h, w, c)) == quantized_avg<T>(mean, zp));
            }
      if (o.kernel_h * o.kernel_w % 2 == 0 && incl) CHECK(ties > 0);  // even divisors give ties
    }
  }
}
}  // namespace

TEST_CASE("quantized max and average pooling (uint8, int8) with zero points", "[nn][pool][quantized]") {
  check_quantized_pooling<std::uint8_t>(128);
  check_quantized_pooling<std::uint8_t>(37);
  check_quantized_pooling<std::uint8_t>(0);
  check_quantized_pooling<std::int8_t>(0);
  check_quantized_pooling<std::int8_t>(-5);
  check_quantized_pooling<std::int8_t>(100);
}

TEST_CASE("quantized average pooling rounds exact ties half to even", "[nn][pool][quantized]") {
  // 1x2 windows: the mean of (q - zp) over two codes is a tie whenever their sum is odd.
  const nn::avg_pool2d p{nn::conv2d_options{1, 2, 1, 2, 0, 0, 1, 1, 1}, true};
  {
    const std::int32_t zp = 100;
    const std::uint8_t in[] = {101, 102, 102, 103, 99, 98, 98, 97, 100, 101, 100, 99, 110, 111, 90, 89};
    // means 1.5, 2.5, -1.5, -2.5, 0.5, -0.5, 10.5, -10.5 -> 2, 2, -2, -2, 0, 0, 10, -10
    const std::uint8_t want[] = {102, 102, 98, 98, 100, 100, 110, 90};
    tensor<std::uint8_t, 4> x(extents<4>{1, 1, 16, 1});
    for (index_t i = 0; i < 16; ++i) x(0, 0, i, 0) = in[i];
    const tensor<std::uint8_t, 4> y = nn::pool(p, x.cview(), zp);
    REQUIRE(y.shape() == (extents<4>{1, 1, 8, 1}));
    for (index_t i = 0; i < 8; ++i) CHECK(int(y(0, 0, i, 0)) == int(want[i]));
  }
  {
    const std::int32_t zp = -128;  // the bottom of the range: [-128, -127] has mean 0.5 -> 0
    const std::int8_t in[] = {-128, -127, -127, -126, 126, 127, 127, 127};
    const std::int8_t want[] = {-128, -126, 126, 127};  // 0.5 -> 0, 1.5 -> 2, 254.5 -> 254, 255 -> 255
    tensor<std::int8_t, 4> x(extents<4>{1, 1, 8, 1});
    for (index_t i = 0; i < 8; ++i) x(0, 0, i, 0) = in[i];
    const tensor<std::int8_t, 4> y = nn::pool(p, x.cview(), zp);
    for (index_t i = 0; i < 4; ++i) CHECK(int(y(0, 0, i, 0)) == int(want[i]));
  }
  {
    // 2x2 windows with padding and count_include_pad: a corner sees 1 code over a divisor
    // of 4; (q - zp) = 2 gives 0.5 -> 0, 6 gives 1.5 -> 2, -10 gives -2.5 -> -2.
    const nn::avg_pool2d pad{nn::conv2d_options::square(2, 2, 1), true};
    const std::int32_t zp = 3;
    tensor<std::int8_t, 4> x(extents<4>{3, 2, 2, 1});
    const std::int8_t corner[] = {5, 9, -7};
    const std::int8_t want[] = {3, 5, 1};
    for (index_t n = 0; n < 3; ++n) {
      x(n, 0, 0, 0) = corner[n];
      x(n, 0, 1, 0) = x(n, 1, 0, 0) = x(n, 1, 1, 0) = zp;
    }
    const tensor<std::int8_t, 4> y = nn::pool(pad, x.cview(), zp);
    REQUIRE(y.shape() == (extents<4>{3, 2, 2, 1}));
    for (index_t n = 0; n < 3; ++n) CHECK(int(y(n, 0, 0, 0)) == int(want[n]));
  }
}

TEST_CASE("pooling refuses bad windows and inputs", "[nn][pool][errors]") {
  const tensor<float, 4> x(extents<4>{1, 5, 5, 3});
  const tensor<std::uint8_t, 4> xq(extents<4>{1, 5, 5, 3});
  QLIB_REQUIRE_ERROR(nn::pool(nn::max_pool2d::square(6), x.cview()), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(nn::pool(nn::avg_pool2d::square(6), xq.cview(), 0), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(nn::pool(nn::max_pool2d::square(3, 1, 3), x.cview()), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::pool(nn::avg_pool2d::square(2, 1, 2), x.cview()), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::pool(nn::max_pool2d{nn::conv2d_options::square(2, 2, 0, 1, 3)}, x.cview()),
                     errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::pool(nn::avg_pool2d{nn::conv2d_options{2, 2, 0, 1, 0, 0, 1, 1, 1}, true}, x.cview()),
                     errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::pool(nn::max_pool2d::square(2), tensor<float, 4>(extents<4>{1, 5, 5, 0}).cview()),
                     errc::empty_tensor);
  QLIB_REQUIRE_ERROR(nn::pool(nn::avg_pool2d::square(2), tensor<float, 4>(extents<4>{0, 5, 5, 2}).cview()),
                     errc::empty_tensor);
  QLIB_REQUIRE_ERROR(nn::pool(nn::max_pool2d::square(2), x.cview().transpose(2, 3)), errc::invalid_argument);
}

// Windows that hold no input tap at all (possible with dilation > 1) are refused: avg_pool2d
// with count_include_pad = false would divide by zero and max_pool2d would have no value.
TEST_CASE("pooling windows without an input tap are refused", "[nn][pool]") {
  // kernel 2x1, dilation 3, pad 3 over a 1x1 input: out_h = 4, windows 1 and 2 read only padding.
  const nn::conv2d_options o{2, 1, 1, 1, 3, 0, 3, 1, 1};
  const tensor<float, 4> x(extents<4>{1, 1, 1, 1}, 5.0f);
  const tensor<std::uint8_t, 4> xq(extents<4>{1, 1, 1, 1}, 7);
  QLIB_REQUIRE_ERROR(nn::pool(nn::avg_pool2d{o, false}, x.cview()), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::pool(nn::max_pool2d{o}, x.cview()), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::pool(nn::avg_pool2d{o, false}, xq.cview(), 3), errc::invalid_argument);
}

// Convolutions accept padding of a whole window or more (windows in the padding give the
// bias); pooling keeps refusing it, since such a window has no max or average. The
// refusal comes from pool_geometry's own check, with errc::invalid_argument as before.
TEST_CASE("pooling with padding of a whole window or more is refused", "[nn][pool][errors]") {
  const tensor<float, 4> x = qlib_test::rand_tensor({1, 5, 5, 3});
  const tensor<std::uint8_t, 4> xu(extents<4>{1, 5, 5, 3}, std::uint8_t{9});
  const tensor<std::int8_t, 4> xs(extents<4>{1, 5, 5, 3}, std::int8_t{-9});
  // pad == window, pad > window (both axes and one), and pad == the dilated window (2 taps, dilation 3: span 4)
  const nn::conv2d_options windows[] = {nn::conv2d_options::square(2, 1, 2), nn::conv2d_options::square(3, 2, 5),
                                        nn::conv2d_options{1, 3, 1, 1, 1, 0, 1, 1, 1},
                                        nn::conv2d_options{2, 2, 1, 1, 0, 4, 1, 3, 1}};
  for (const nn::conv2d_options& o : windows) {
    INFO(o.describe());
    const nn::max_pool2d mp{o};
    QLIB_REQUIRE_ERROR(nn::output_shape(mp, x.shape()), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(nn::pool(mp, x.cview()), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(nn::pool(mp, xu.cview()), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(nn::pool(mp, xs.cview()), errc::invalid_argument);
    for (bool include_pad : {true, false}) {
      const nn::avg_pool2d ap{o, include_pad};
      QLIB_REQUIRE_ERROR(nn::output_shape(ap, x.shape()), errc::invalid_argument);
      QLIB_REQUIRE_ERROR(nn::pool(ap, x.cview()), errc::invalid_argument);
      QLIB_REQUIRE_ERROR(nn::pool(ap, xu.cview(), 9), errc::invalid_argument);
      QLIB_REQUIRE_ERROR(nn::pool(ap, xs.cview(), -9), errc::invalid_argument);
    }
#if QLIB_EXCEPTIONS
    // The message says why.
    try {
      (void)nn::pool(mp, x.cview());
    } catch (const qlib::error& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find("covers only padding") != std::string::npos);
    }
#endif
    // The same window on a convolution is accepted.
    CHECK(nn::conv2d(3, 3, o).output_shape(x.shape())[0] == 1);
  }
  // One less than the window is still fine for pooling (every window keeps an input tap).
  CHECK(nn::output_shape(nn::max_pool2d{nn::conv2d_options::square(3, 2, 2)}, x.shape()) == extents<4>{1, 4, 4, 3});
}

// ---------------------------------------------------------------------------------------
// activations, flatten, sequential

TEST_CASE("relu and relu6 fused into conv2d / linear by sequential equal the unfused layers", "[nn][sequential]") {
  const nn::conv2d_options o = nn::conv2d_options::square(3, 1, 1);
  const arr4 w1 = random_arr(6, 3, 3, 3, -1.5f, 1.5f), w2 = random_arr(4, 6, 3, 3, -1, 1);
  const std::vector<float> b1 = random_vec(6, -1, 1), b2 = random_vec(4, -1, 1);
  nn::linear fc(4 * 5 * 4, 7);
  for (float& v : fc.weight) v = rand_float(-1, 1);
  for (float& v : fc.bias) v = rand_float(-1, 1);
  const nn::sequential m{make_conv(w1, b1, o), nn::relu{},  nn::conv2d(make_conv(w2, b2, o)), nn::relu6{},
                         nn::flatten{},        fc,          nn::relu{}};
  arr4 x = random_arr(2, 3, 5, 4, -3, 3);
  x(1, 2, 2, 1) = std::numeric_limits<float>::quiet_NaN();  // NaN goes through both paths alike
  const tensor<float, 4> xt = to_nhwc(x);

  qlib_test::for_each_isa([&](isa) {
    const tensor<float, 4> fused = m.forward(xt.cview());
    tensor<float, 4> cur(xt.cview());
    for (std::size_t i = 0; i < m.size(); ++i) cur = nn::sequential::forward_layer(m[i], cur.cview());
    CHECK(same_tensor(fused, cur));
  });

  // And against the references: relu6(conv2(relu(conv1(x)))), with sample 0 free of NaN.
  const tensor<float, 4> y2 = nn::sequential{m[0], m[1], m[2], m[3]}.forward(xt.cview());
  expected4 r1 = conv_reference(x, w1, b1, o);
  arr4 h1(2, 6, 5, 4);
  for (std::size_t i = 0; i < r1.y.size(); ++i) h1.v[i] = float(std::max(r1.y[i], 0.0));
  expected4 r2 = conv_reference(h1, w2, b2, o);
  index_t at_zero = 0, at_six = 0;
  for (index_t c = 0; c < 4; ++c)
    for (index_t h = 0; h < 5; ++h)
      for (index_t w = 0; w < 4; ++w) {
        const std::size_t i = r2.at(0, c, h, w);
        const double want = std::min(std::max(r2.y[i], 0.0), 6.0);
        at_zero += want == 0.0;
        at_six += want == 6.0;
        // h1 is rounded to float here and in qlib, each with its own conv1 error
        CHECK(std::fabs(y2(0, h, w, c) - want) <= r2.tol[i] + 1e-5 * (1.0 + std::fabs(want)));
      }
  CHECK(at_zero > 0);  // both clamps are exercised
  CHECK(at_six > 0);
  // relu / relu6 after a pooling layer run on their own; NaN stays NaN
  tensor<float, 4> v(extents<4>{1, 1, 2, 3});
  const float in[] = {-2.0f, 0.5f, 7.0f, std::numeric_limits<float>::quiet_NaN(), 6.0f, -0.0f};
  std::copy(in, in + 6, v.data());
  const tensor<float, 4> r = nn::sequential{nn::max_pool2d::square(1), nn::relu6{}}.forward(v.cview());
  const float want6[] = {0.0f, 0.5f, 6.0f, std::numeric_limits<float>::quiet_NaN(), 6.0f, 0.0f};
  for (index_t i = 0; i < 6; ++i) CHECK((r.data()[i] == want6[i] || (std::isnan(r.data()[i]) && std::isnan(want6[i]))));
  CHECK(nn::apply_activation(nn::relu{}, v.cview()).data()[2] == 7.0f);
}

TEST_CASE("flatten keeps NHWC order: feature (h * W + w) * C + c", "[nn][sequential]") {
  tensor<float, 4> x(extents<4>{2, 3, 4, 5});
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = float(i);
  CHECK(nn::output_shape(nn::flatten{}, x.shape()) == extents<4>{2, 1, 1, 60});
  // from a dense tensor and from a strided view (a transposed copy, transposed back)
  const tensor<float, 4> y = nn::apply_flatten<float>(x.cview());
  REQUIRE(y.shape() == (extents<4>{2, 1, 1, 60}));
  for (index_t n = 0; n < 2; ++n)
    for (index_t h = 0; h < 3; ++h)
      for (index_t w = 0; w < 4; ++w)
        for (index_t c = 0; c < 5; ++c) REQUIRE(y(n, 0, 0, (h * 4 + w) * 5 + c) == x(n, h, w, c));
  const tensor<float, 4> xt(x.cview().transpose(1, 2));  // [2, 4, 3, 5]
  const tensor<float, 4> yt = nn::apply_flatten<float>(xt.cview().transpose(1, 2));
  for (index_t i = 0; i < y.size(); ++i) REQUIRE(yt.data()[i] == y.data()[i]);
  // a linear layer after flatten reads the same features
  nn::linear fc(60, 60, false);
  for (index_t i = 0; i < 60; ++i) fc.weight(i, i) = 1.0f;
  const tensor<float, 4> z = nn::sequential{nn::flatten{}, fc}.forward(x.cview());
  for (index_t n = 0; n < 2; ++n)
    for (index_t h = 0; h < 3; ++h)
      for (index_t w = 0; w < 4; ++w)
        for (index_t c = 0; c < 5; ++c) REQUIRE(z(n, 0, 0, (h * 4 + w) * 5 + c) == x(n, h, w, c));
  const tensor<std::int8_t, 4> q(extents<4>{1, 2, 2, 2});
  CHECK(nn::apply_flatten<std::int8_t>(q.cview()).shape() == extents<4>{1, 1, 1, 8});
}

TEST_CASE("sequential validates the whole chain before running", "[nn][sequential][errors]") {
  nn::linear fc(8, 2);
  const nn::sequential m{nn::conv2d(3, 4, nn::conv2d_options::square(3)), nn::flatten{}, fc};
  // conv 3x3 on 5x5 -> 3x3x4 = 36 features, not 8
  QLIB_REQUIRE_ERROR(m.forward(tensor<float, 4>(extents<4>{1, 5, 5, 3}).cview()), errc::shape_mismatch);
  const nn::sequential no_flatten{nn::conv2d(3, 4, nn::conv2d_options::square(3)), nn::linear(36, 2)};
  QLIB_REQUIRE_ERROR(no_flatten.forward(tensor<float, 4>(extents<4>{1, 5, 5, 3}).cview()), errc::shape_mismatch);
  CHECK(m.output_shape({1, 4, 3, 3}) == extents<4>{1, 1, 1, 2});
  CHECK(std::string(nn::layer_kind(m[1])) == "Flatten");
  CHECK(m.parameter_count() == 4 * 3 * 3 * 3 + 4 + 8 * 2 + 2);
}

// ---------------------------------------------------------------------------------------
// PyTorch 1.13 golden vectors (tests/data/make_nn_golden.py)

TEST_CASE("conv2d matches PyTorch's Conv2d on golden vectors", "[nn][conv][golden]") {
  const auto cases = golden_cases("conv");
  REQUIRE(cases.size() >= 8);
  for (const auto& f : cases) {
    const std::string name = f[1];
    INFO(name);
    const index_t n = num(f, 2), c = num(f, 3), h = num(f, 4), w = num(f, 5), oc = num(f, 6);
    const nn::conv2d_options o{num(f, 7),  num(f, 8),  num(f, 9),  num(f, 10), num(f, 11),
                               num(f, 12), num(f, 13), num(f, 14), num(f, 15)};
    const arr4 x = load4(name + "_x"), wt = load4(name + "_w"), y = load4(name + "_y");
    REQUIRE((x.d[0] == n && x.d[1] == c && x.d[2] == h && x.d[3] == w));
    REQUIRE((wt.d[0] == oc && wt.d[1] == c / o.groups && wt.d[2] == o.kernel_h && wt.d[3] == o.kernel_w));
    const std::vector<float> b = num(f, 16) ? load1(name + "_b") : std::vector<float>();
    const nn::conv2d conv = make_conv(wt, b, o);
    const tensor<float, 4> xt = to_nhwc(x);
    // PyTorch's output shape, in NHWC
    CHECK(conv.output_shape(xt.shape()) == extents<4>{y.d[0], y.d[2], y.d[3], y.d[1]});
    qlib_test::for_each_isa([&](isa) { CHECK(worst_error(conv.forward(xt.cview()).cview(), golden_expected(y)) <= 1.0); });
    // and the direct reference agrees with PyTorch (the reference is what the sweep trusts)
    const expected4 ref = conv_reference(x, wt, b, o);
    arr4 ry(ref.d[0], ref.d[1], ref.d[2], ref.d[3]);
    for (std::size_t i = 0; i < ref.y.size(); ++i) ry.v[i] = float(ref.y[i]);
    CHECK(worst_error(to_nhwc(ry).cview(), golden_expected(y)) <= 1.0);
  }
}

TEST_CASE("pooling matches PyTorch's MaxPool2d / AvgPool2d on golden vectors", "[nn][pool][golden]") {
  const auto cases = golden_cases("pool");
  REQUIRE(cases.size() >= 5);
  for (const auto& f : cases) {
    const std::string name = f[1], kind = f[2];
    INFO(name);
    const nn::conv2d_options o{num(f, 7),  num(f, 8),  num(f, 9),  num(f, 10), num(f, 11),
                               num(f, 12), num(f, 13), num(f, 14), 1};
    const arr4 x = load4(name + "_x"), y = load4(name + "_y");
    const tensor<float, 4> xt = to_nhwc(x);
    const tensor<float, 4> got = kind == "max" ? nn::pool(nn::max_pool2d{o}, xt.cview())
                                               : nn::pool(nn::avg_pool2d{o, num(f, 15) != 0}, xt.cview());
    // max pooling is exact (NaN included); average pooling to ~1e-5
    const expected4 want = golden_expected(y, kind == "max" ? 0.0 : 1e-5);
    CHECK(worst_error(got.cview(), want) <= 1.0);
  }
}

TEST_CASE("batch_norm2d matches PyTorch's BatchNorm2d (eval) on golden vectors", "[nn][bn][golden]") {
  const auto cases = golden_cases("bn");
  REQUIRE(cases.size() == 1);
  const arr4 x = load4("bn_x"), y = load4("bn_y");
  REQUIRE(cases[0].size() == 7);
  const nn::batch_norm2d bn = load_bn("bn_", "mean", "var", std::stof(cases[0][6]));
  CHECK(worst_error(bn.forward(to_nhwc(x).cview()).cview(), golden_expected(y)) <= 1.0);
}

TEST_CASE("a conv-bn-relu-maxpool-conv-relu-avgpool-flatten-linear model matches PyTorch", "[nn][sequential][golden]") {
  const arr4 x = load4("seq_x");
  const npy_array y = read_npy(golden_path("seq_y"));
  const arr4 w0 = load4("seq_0.weight"), w4 = load4("seq_4.weight");
  nn::sequential model{make_conv(w0, load1("seq_0.bias"), nn::conv2d_options::square(3, 1, 1)),
                       load_bn("seq_1.", "running_mean", "running_var", 1e-5f),  // BatchNorm2d's default eps
                       nn::relu{},
                       nn::max_pool2d::square(2),
                       make_conv(w4, load1("seq_4.bias"), nn::conv2d_options::square(3, 1, 1, 1, 2)),
                       nn::relu{},
                       nn::avg_pool2d::square(2)};
  // torch.flatten orders the linear layer's inputs (C, H, W); qlib's flatten is NHWC, so
  // the columns move from c*H*W + h*W + w to (h*W + w)*C + c (a model loader does the same).
  const extents<4> pooled = model.output_shape({x.d[0], x.d[2], x.d[3], x.d[1]});
  const index_t ph = pooled[1], pw = pooled[2], pc = pooled[3];
  const npy_array lw = read_npy(golden_path("seq_8.weight"));
  REQUIRE(lw.shape.size() == 2);
  REQUIRE(lw.shape[1] == ph * pw * pc);
  nn::linear fc(lw.shape[1], lw.shape[0]);
  for (index_t o = 0; o < lw.shape[0]; ++o)
    for (index_t c = 0; c < pc; ++c)
      for (index_t h = 0; h < ph; ++h)
        for (index_t w = 0; w < pw; ++w)
          fc.weight(o, (h * pw + w) * pc + c) = lw.data[static_cast<std::size_t>(o * lw.shape[1] + (c * ph + h) * pw + w)];
  const std::vector<float> lb = load1("seq_8.bias");
  for (index_t o = 0; o < lw.shape[0]; ++o) fc.bias(o) = lb[static_cast<std::size_t>(o)];
  model.layers.emplace_back(nn::flatten{});
  model.layers.emplace_back(fc);

  REQUIRE(y.shape.size() == 2);
  arr4 y4(y.shape[0], y.shape[1], 1, 1);
  y4.v = y.data;
  const expected4 want = golden_expected(y4, 1e-5);
  const tensor<float, 4> xt = to_nhwc(x);
  qlib_test::for_each_isa([&](isa) {
    CHECK(worst_error(model.forward(xt.cview()).cview(), want) <= 1.0);
    CHECK(worst_error(nn::fold_batch_norms(model).forward(xt.cview()).cview(), want) <= 1.0);
  });
  // Without the permutation the model is wrong: the check above can fail.
  nn::sequential unpermuted = model;
  auto& ufc = std::get<nn::linear>(unpermuted.layers.back());
  std::copy(lw.data.begin(), lw.data.end(), ufc.weight.data());
  CHECK(worst_error(unpermuted.forward(xt.cview()).cview(), want) > 1.0);
}

// The 2x2 / stride 2 fast path (blocks of 16 channels and a tail) against a plain loop, float
// with NaNs and uint8, odd input sizes (the last row/column is dropped).
TEST_CASE("max_pool2d 2x2 stride 2 fast path equals the definition", "[nn][pool]") {
  for (index_t c : {1, 8, 12, 16, 24, 32, 37}) {
    tensor<float, 4> xf(extents<4>{2, 7, 9, c});
    tensor<std::uint8_t, 4> xq(extents<4>{2, 7, 9, c});
    for (index_t i = 0; i < xf.size(); ++i) {
      xf.data()[i] = rand_float(-5.0f, 5.0f);
      xq.data()[i] = static_cast<std::uint8_t>(rand_int(0, 255));
    }
    xf.data()[5] = std::numeric_limits<float>::quiet_NaN();
    xf.data()[3 * c + 1] = std::numeric_limits<float>::quiet_NaN();
    const auto yf = nn::pool(nn::max_pool2d::square(2), xf.cview());
    const auto yq = nn::pool(nn::max_pool2d::square(2), xq.cview());
    REQUIRE(yf.shape() == extents<4>{2, 3, 4, c});
    for (index_t n = 0; n < 2; ++n)
      for (index_t h = 0; h < 3; ++h)
        for (index_t w = 0; w < 4; ++w)
          for (index_t ch = 0; ch < c; ++ch) {
            float mf = xf(n, 2 * h, 2 * w, ch);
            std::uint8_t mq = xq(n, 2 * h, 2 * w, ch);
            bool nan = std::isnan(mf);
            for (index_t t = 1; t < 4; ++t) {
              const float v = xf(n, 2 * h + t / 2, 2 * w + t % 2, ch);
              nan = nan || std::isnan(v);
              mf = std::max(mf, v);
              mq = std::max(mq, xq(n, 2 * h + t / 2, 2 * w + t % 2, ch));
            }
            if (nan) REQUIRE(std::isnan(yf(n, h, w, ch)));
            else REQUIRE(yf(n, h, w, ch) == mf);
            REQUIRE(yq(n, h, w, ch) == mq);
          }
  }
}
