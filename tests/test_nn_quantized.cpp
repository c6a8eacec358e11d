// int8 layers and static PTQ: qconv2d / qlinear / quantized_sequential bit-exact against nn::reference on every
// ISA and thread count, the reference against float math, static_quantizer end to end, quantize_weights, errors.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "qlib/nn/qlinear.hpp"
#include "qlib/nn/quantized_reference.hpp"
#include "qlib/nn/static_quantization.hpp"
#include "test_util.hpp"

using namespace qlib;
using namespace qlib_test;

namespace {

// ---------------------------------------------------------------------------------------------
// Hand-built layers

nn::qactivation random_activation(const extents<4>& shape, nn::activation_qparams p) {
  nn::qactivation x{tensor<std::uint8_t, 4>(shape), p.scale, p.zero_point};
  for (auto& v : x.values) v = static_cast<std::uint8_t>(rand_int(0, 255));
  return x;
}

// Weights [out][k] drawn around their zero point (as real weights sit around real 0),
// with some -128 / 127 extremes; scales around `base_scale`; zero points 0 or, for
// affine weights, random in [-40, 40] (so gemm() adds its row-sum correction); int32
// bias worth about +-2 in real units.
nn::quantized_weights hand_weights(index_t out, index_t k, bool per_channel, bool weight_zp, float base_scale,
                                   float in_scale) {
  nn::quantized_weights w;
  const index_t np = per_channel ? out : 1;
  std::vector<float> scales;
  std::vector<std::int32_t> zps;
  for (index_t i = 0; i < np; ++i) {
    scales.push_back(base_scale * rand_float(0.8f, 1.25f));
    zps.push_back(weight_zp ? rand_int(-40, 40) : 0);
  }
  w.params = quant_params(per_channel ? granularity::per_channel(0) : granularity::per_tensor(), -128, 127, scales, zps);
  w.values = tensor<std::int8_t, 2>(extents<2>{out, k});
  std::normal_distribution<float> nd(0.0f, 40.0f);
  for (index_t o = 0; o < out; ++o)
    for (index_t j = 0; j < k; ++j) {
      const int r = rand_int(0, 39);
      const long v = r == 0 ? -128 : r == 1 ? 127 : std::lround(nd(rng())) + w.zero_point(o);
      w.values(o, j) = static_cast<std::int8_t>(std::min(127L, std::max(-128L, v)));
    }
  for (index_t o = 0; o < out; ++o) {
    const int b = static_cast<int>(2.0f / (in_scale * w.scale(o)));
    w.bias.push_back(rand_int(-b, b));
  }
  return w;
}

struct conv_case {
  index_t batch = 1, h = 6, w = 6, in_c = 4, out_c = 4;
  nn::conv2d_options opt;
  std::int32_t in_zp = 128;
  bool per_channel = true;
  bool weight_zp = false;  // affine int8 weights: non-zero zero points
  float relu_hi = -1.0f;   // < 0 none, 0 ReLU, 6 ReLU6
  std::int32_t out_zp = 100;

  std::string describe() const {
    std::ostringstream s;
    s << "input " << batch << "x" << h << "x" << w << "x" << in_c << " -> " << out_c << " channels, " << opt.describe()
      << ", zx " << in_zp << (per_channel ? ", per-channel" : ", per-tensor")
      << (weight_zp ? " affine weights" : " symmetric weights") << ", relu_hi " << relu_hi << ", out zp " << out_zp;
    return s.str();
  }
};

// A layer whose outputs spread over the uint8 range: the weight scale is chosen from the
// expected accumulator size so that the real outputs have a standard deviation of about
// 8, and the output scale puts +-3 sigma on about +-110 codes (ReLU6 then clips at 6).
nn::qconv2d make_qconv(const conv_case& cs) {
  nn::qconv2d L;
  L.opt = cs.opt;
  L.in_channels = cs.in_c;
  L.in = {0.03f, cs.in_zp};
  const index_t k = cs.opt.kernel_h * cs.opt.kernel_w * cs.in_c / cs.opt.groups;
  const double ex2 = 5461.0 + (127.5 - cs.in_zp) * (127.5 - cs.in_zp);  // E[(x - zx)^2], x uniform
  const double acc_sigma = std::sqrt(static_cast<double>(k) * ex2 * 1700.0);
  const float target = 8.0f;
  L.w = hand_weights(cs.out_c, k, cs.per_channel, cs.weight_zp, static_cast<float>(target / (L.in.scale * acc_sigma)),
                     L.in.scale);
  L.w.pack_groups(cs.opt.groups);
  L.output = nn::make_quantized_output(L.w, L.in, {3.0f * target / 110.0f, cs.out_zp}, cs.relu_hi);
  L.prepare();  // the implicit-GEMM path where it applies (AVX-512 VNNI, one thread)
  return L;
}

std::string first_difference(const tensor<std::uint8_t, 4>& got, const tensor<std::uint8_t, 4>& want) {
  if (got.shape() != want.shape())
    return "shape " + qlib::detail::extents_string(got.shape()) + " vs " + qlib::detail::extents_string(want.shape());
  for (index_t i = 0; i < want.size(); ++i)
    if (got.data()[i] != want.data()[i])
      return "element " + std::to_string(i) + ": " + std::to_string(got.data()[i]) + " vs reference " +
             std::to_string(want.data()[i]);
  return "";
}

std::string first_difference(const tensor<float, 4>& got, const tensor<float, 4>& want) {
  if (got.shape() != want.shape())
    return "shape " + qlib::detail::extents_string(got.shape()) + " vs " + qlib::detail::extents_string(want.shape());
  for (index_t i = 0; i < want.size(); ++i)
    if (!same_bits(got.data()[i], want.data()[i]))
      return "element " + std::to_string(i) + ": " + std::to_string(got.data()[i]) + " vs reference " +
             std::to_string(want.data()[i]);
  return "";
}

// Outputs strictly inside (qmin, qmax): a case where most outputs saturate would
// compare little more than the clamp.
double inside_fraction(const tensor<std::uint8_t, 4>& y, std::int32_t qmin, std::int32_t qmax) {
  index_t inside = 0;
  for (std::uint8_t v : y) inside += v > qmin && v < qmax;
  return static_cast<double>(inside) / static_cast<double>(y.size());
}

// The reference against float math: dequantized weights and input through nn::conv2d
// (im2col + float matmul, or its direct depthwise loop: another implementation), then
// quantized with the output parameters. Float rounding may move a value by one code
// near a rounding boundary, nothing more.
void check_conv_reference_against_float(const nn::qconv2d& L, const nn::qactivation& x, const nn::qactivation& ref) {
  nn::conv2d f(L.in_channels, L.out_channels(), L.opt, true);
  const index_t k = L.w.k();
  for (index_t o = 0; o < L.out_channels(); ++o) {
    for (index_t j = 0; j < k; ++j)
      f.weight.data()[o * k + j] = static_cast<float>(L.w.values(o, j) - L.w.zero_point(o)) * L.w.scale(o);
    f.bias(o) = static_cast<float>(static_cast<double>(L.w.bias[static_cast<std::size_t>(o)]) * L.in.scale * L.w.scale(o));
  }
  tensor<float, 4> xf(x.values.shape());
  for (index_t i = 0; i < xf.size(); ++i) xf.data()[i] = static_cast<float>(x.values.data()[i] - x.zero_point) * x.scale;
  const tensor<float, 4> yf = f.forward(xf.cview());
  REQUIRE(yf.shape() == ref.values.shape());
  index_t equal = 0;
  const nn::quantized_output& out = L.output;
  for (index_t i = 0; i < yf.size(); ++i) {
    const double q = std::nearbyint(static_cast<double>(yf.data()[i]) / out.out.scale) + out.out.zero_point;
    const double want = std::min<double>(out.qmax, std::max<double>(out.qmin, q));
    const double got = ref.values.data()[i];
    INFO("element " << i << " float " << yf.data()[i]);
    REQUIRE(std::fabs(got - want) <= 1.0);
    equal += got == want;
  }
  CHECK(static_cast<double>(equal) >= 0.97 * static_cast<double>(yf.size()));
}

// L.forward(x) on every ISA with 1 and 3 threads (so im2col + GEMM, the implicit GEMM
// where it applies, and the depthwise loop) equals `want` bit for bit.
void qconv_check_every_path(const nn::qconv2d& L, const nn::qactivation& x, const nn::qactivation& want) {
  for_each_isa([&](isa) {
    for (int threads : {1, 3}) {
      INFO("threads " << threads);
      gemm::gemm_options opt;
      opt.threads = threads;
      const nn::qactivation y = L.forward(x, opt);
      CHECK(y.scale == want.scale);
      CHECK(y.zero_point == want.zero_point);
      const std::string diff = first_difference(y.values, want.values);
      INFO(diff);
      REQUIRE(diff.empty());
    }
  });
}

void check_conv_case(const conv_case& cs) {
  INFO(cs.describe());
  const nn::qconv2d L = make_qconv(cs);
  const nn::qactivation x = random_activation({cs.batch, cs.h, cs.w, cs.in_c}, L.in);
  const nn::qactivation want = nn::reference::forward(L, x);
  CHECK(want.scale == L.output.out.scale);
  CHECK(want.zero_point == L.output.out.zero_point);
  // ReLU clamps about half of the outputs and heavy padding more (13-14% inside in the
  // worst standard cases); 10% still leaves dozens of unclamped values to compare.
  if (want.values.size() >= 50) CHECK(inside_fraction(want.values, L.output.qmin, L.output.qmax) >= 0.10);
  for (std::uint8_t v : want.values) REQUIRE((v >= L.output.qmin && v <= L.output.qmax));
  check_conv_reference_against_float(L, x, want);
  qconv_check_every_path(L, x, want);
}

nn::conv2d_options window(index_t kh, index_t kw, index_t stride, index_t pad_h, index_t pad_w, index_t dilation,
                          index_t groups) {
  return {kh, kw, stride, stride, pad_h, pad_w, dilation, dilation, groups};
}

conv_case make_case(index_t batch, index_t h, index_t w, index_t in_c, index_t out_c, nn::conv2d_options opt,
                    std::int32_t in_zp, bool per_channel, bool weight_zp, float relu_hi) {
  conv_case c;
  c.batch = batch;
  c.h = h;
  c.w = w;
  c.in_c = in_c;
  c.out_c = out_c;
  c.opt = opt;
  c.in_zp = in_zp;
  c.per_channel = per_channel;
  c.weight_zp = weight_zp;
  c.relu_hi = relu_hi;
  c.out_zp = relu_hi >= 0.0f ? rand_int(0, 60) : rand_int(60, 200);
  return c;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// qconv2d

TEST_CASE("qconv2d: every ISA and thread count equals the reference on the standard cases", "[nn][qconv2d]") {
  const float none = -1.0f, relu = 0.0f, relu6 = 6.0f;
  const std::vector<conv_case> cases = {
      // stride / padding / dilation on the im2col + GEMM path
      make_case(1, 7, 9, 5, 6, window(3, 3, 1, 1, 1, 1, 1), 128, true, false, none),
      make_case(1, 8, 7, 3, 8, window(3, 3, 2, 0, 0, 1, 1), 0, true, false, relu),
      make_case(3, 9, 8, 4, 5, window(3, 3, 2, 2, 2, 2, 1), 255, false, false, none),
      make_case(1, 7, 7, 3, 4, window(3, 3, 1, 2, 2, 2, 1), 128, true, true, relu6),
      make_case(1, 9, 11, 2, 7, window(5, 5, 1, 2, 2, 1, 1), 0, false, true, none),
      make_case(3, 5, 8, 3, 3, window(5, 5, 2, 1, 2, 1, 1), 255, true, false, relu),
      make_case(1, 5, 9, 6, 4, window(1, 3, 1, 0, 1, 1, 1), 128, true, true, none),
      make_case(3, 6, 7, 4, 6, window(1, 3, 2, 0, 2, 2, 1), 0, false, false, relu6),
      // groups 2 and 4 (not depthwise)
      make_case(1, 6, 7, 8, 6, window(3, 3, 1, 1, 1, 1, 2), 128, true, false, none),
      make_case(3, 7, 5, 8, 12, window(3, 3, 2, 1, 1, 1, 4), 255, true, true, relu),
      make_case(1, 5, 5, 8, 4, window(5, 5, 1, 2, 2, 2, 4), 0, false, true, relu6),
      make_case(1, 5, 6, 4, 8, window(1, 1, 1, 0, 0, 1, 2), 128, true, true, none),  // grouped 1x1: GEMM path
      // depthwise, multiplier 1 and 2 (the direct depthwise loop)
      make_case(1, 7, 7, 6, 6, window(3, 3, 1, 1, 1, 1, 6), 128, true, false, none),
      make_case(3, 8, 9, 5, 10, window(3, 3, 2, 1, 1, 1, 5), 0, true, true, relu),
      make_case(1, 9, 7, 4, 8, window(5, 5, 1, 2, 2, 2, 4), 255, false, true, relu6),
      make_case(1, 6, 5, 3, 3, window(1, 3, 2, 0, 1, 1, 3), 128, false, false, none),
      make_case(3, 5, 5, 2, 4, window(1, 1, 1, 0, 0, 1, 2), 0, true, true, none),  // depthwise 1x1
      // 1x1 (the direct path: the input is the im2col matrix) and 1x1 that is not direct
      make_case(1, 5, 7, 6, 9, window(1, 1, 1, 0, 0, 1, 1), 128, true, false, none),
      make_case(3, 4, 5, 9, 4, window(1, 1, 1, 0, 0, 1, 1), 0, false, true, relu),
      make_case(1, 3, 3, 3, 5, window(1, 1, 1, 0, 0, 1, 1), 255, true, true, relu6),
      make_case(3, 7, 6, 5, 6, window(1, 1, 2, 0, 0, 1, 1), 128, true, true, none),
      // more than one 64-column panel, and two im2col blocks (patch 5*5*128 -> 81 rows a block)
      make_case(1, 5, 6, 7, 70, window(3, 3, 1, 1, 1, 1, 1), 128, true, true, relu),
      make_case(1, 9, 10, 128, 4, window(5, 5, 1, 2, 2, 1, 1), 128, true, true, none),
      make_case(1, 6, 6, 140, 140, window(1, 1, 1, 0, 0, 1, 1), 0, true, false, none),
      // one output channel, per-channel parameters (a single scale)
      make_case(3, 6, 5, 3, 1, window(3, 3, 1, 1, 1, 1, 1), 128, true, true, none),
      make_case(3, 5, 6, 5, 1, window(1, 1, 1, 0, 0, 1, 1), 128, true, false, relu),
      // padding of a whole (dilated) window or more, as PyTorch accepts: some windows lie
      // entirely in the padding (bias only). Dense with symmetric weights takes the
      // implicit GEMM on AVX-512 VNNI with one thread, im2col + GEMM otherwise.
      make_case(3, 5, 6, 5, 6, window(3, 3, 1, 4, 4, 1, 1), 128, true, false, none),  // run 15: reads past each run
      make_case(1, 9, 8, 4, 5, {3, 3, 2, 2, 5, 3, 2, 1, 1}, 0, false, false, none),   // dilation_h 2, stride 2
      make_case(3, 4, 5, 6, 7, window(1, 1, 1, 2, 2, 1, 1), 255, true, false, none),  // 1x1 with padding: not direct
      make_case(1, 4, 4, 3, 4, window(3, 3, 1, 40, 40, 1, 1), 77, true, false, none),  // 82x82 output, mostly padding
      // pad and stride 4096 (the cap): a 3x3 output; the implicit path's padded copy would be
      // 8197^2 x C bytes, so this layer takes im2col + GEMM (implicit_conv_buffer_bounded)
      make_case(1, 5, 5, 4, 6, window(1, 1, 4096, 4096, 4096, 1, 1), 128, true, false, none),
      make_case(3, 6, 5, 4, 6, window(1, 3, 2, 3, 5, 1, 1), 128, true, true, none),    // affine weights: im2col
      make_case(1, 7, 6, 8, 6, window(3, 3, 1, 3, 4, 1, 2), 0, true, false, none),     // groups 2: im2col
      make_case(1, 6, 7, 6, 12, window(3, 3, 1, 3, 3, 1, 6), 128, true, true, none),   // depthwise x2
      make_case(3, 5, 5, 4, 4, window(1, 1, 1, 1, 1, 1, 4), 255, false, false, none),  // depthwise 1x1, pad 1
      make_case(1, 8, 7, 5, 5, window(3, 3, 2, 6, 5, 2, 5), 0, true, false, relu),     // depthwise, dilated, strided
  };
  for (const conv_case& cs : cases) check_conv_case(cs);
}

TEST_CASE("qconv2d: random geometries equal the reference", "[nn][qconv2d]") {
  int run = 0, padding_only = 0;
  for (int attempt = 0; run < 40 && attempt < 1000; ++attempt) {
    conv_case c;
    c.batch = rand_int(0, 2) == 0 ? 3 : 1;
    c.h = rand_int(1, 9);
    c.w = rand_int(1, 9);
    const index_t kernels[] = {1, 3, 5};
    c.opt.kernel_h = kernels[rand_int(0, 2)];
    c.opt.kernel_w = rand_int(0, 3) == 0 ? kernels[rand_int(0, 2)] : c.opt.kernel_h;
    c.opt.stride_h = rand_int(1, 2);
    c.opt.stride_w = rand_int(1, 2);
    c.opt.dilation_h = rand_int(1, 2);
    c.opt.dilation_w = rand_int(1, 2);
    // 0 to 2 as most layers pad, and one time in four 3 more: a whole window or more.
    c.opt.pad_h = rand_int(0, 2) + (rand_int(0, 3) == 0 ? 3 : 0);
    c.opt.pad_w = rand_int(0, 2) + (rand_int(0, 3) == 0 ? 3 : 0);
    const int kind = rand_int(0, 3);  // dense, grouped, depthwise x1, depthwise x2
    const index_t groups = kind == 0 ? 1 : kind == 1 ? 2 * rand_int(1, 2) : rand_int(2, 6);
    c.opt.groups = groups;
    c.in_c = kind == 1 ? groups * rand_int(1, 3) : kind == 0 ? rand_int(1, 9) : groups;
    c.out_c = kind == 3 ? 2 * groups : kind == 2 ? groups : groups * rand_int(1, 3);
    if (kind == 0) c.out_c = rand_int(1, 11);
    // The window must fit the padded input (padding may exceed the window, as in PyTorch).
    const index_t span_h = c.opt.dilation_h * (c.opt.kernel_h - 1) + 1, span_w = c.opt.dilation_w * (c.opt.kernel_w - 1) + 1;
    if (c.h + 2 * c.opt.pad_h < span_h || c.w + 2 * c.opt.pad_w < span_w) continue;
    padding_only += c.opt.pad_h >= span_h || c.opt.pad_w >= span_w;  // then the first window reads only padding
    const std::int32_t zps[] = {0, 128, 255, 77};
    c.in_zp = zps[rand_int(0, 3)];
    c.per_channel = rand_int(0, 1) == 1;
    c.weight_zp = rand_int(0, 1) == 1;
    const float relus[] = {-1.0f, 0.0f, 6.0f};
    c.relu_hi = relus[rand_int(0, 2)];
    c.out_zp = c.relu_hi >= 0.0f ? rand_int(0, 60) : rand_int(60, 200);
    INFO("attempt " << attempt);
    // Tiny outputs can be all clamped: compare them, skip only the spread check.
    const nn::qconv2d L = make_qconv(c);
    const nn::qactivation x = random_activation({c.batch, c.h, c.w, c.in_c}, L.in);
    INFO(c.describe());
    const nn::qactivation want = nn::reference::forward(L, x);
    check_conv_reference_against_float(L, x, want);
    qconv_check_every_path(L, x, want);
    ++run;
  }
  CHECK(run == 40);
  CHECK(padding_only >= 10);
}

TEST_CASE("qconv2d: outputs whose window lies entirely in the padding are the requantized bias", "[nn][qconv2d]") {
  // Every tap of such a window reads the input zero point, so the accumulator with its
  // zero-point corrections (affine weights included) is exactly 0, and the output is the
  // layer's pipeline on 0: bias, requantization, clamp (evaluated here without any
  // convolution loop). Checked on the reference, which every path must equal.
  const nn::conv2d_options windows[] = {
      window(3, 3, 1, 3, 3, 1, 1),   // dense: implicit GEMM (VNNI, one thread), im2col + GEMM
      window(1, 1, 1, 2, 1, 1, 1),   // 1x1 with padding
      {3, 3, 2, 2, 4, 5, 1, 1, 2},   // groups 2, strided
      window(3, 3, 1, 3, 4, 1, 4),   // depthwise, multiplier 2
      window(1, 1, 1, 1, 1, 1, 4),   // depthwise 1x1
  };
  for (const nn::conv2d_options& o : windows)
    for (bool weight_zp : {false, true})
      for (std::int32_t zx : {0, 128, 255}) {
        const conv_case cs = make_case(2, 5, 6, 4, 8, o, zx, true, weight_zp, -1.0f);
        INFO(cs.describe());
        const nn::qconv2d L = make_qconv(cs);
        const nn::qactivation x = random_activation({cs.batch, cs.h, cs.w, cs.in_c}, L.in);
        const nn::conv_geometry g = L.geometry(x.values.shape());
        const std::vector<bool> empty_h =
            padding_only_windows(g.in_h, o.kernel_h, o.stride_h, o.pad_h, o.dilation_h, g.out_h);
        const std::vector<bool> empty_w =
            padding_only_windows(g.in_w, o.kernel_w, o.stride_w, o.pad_w, o.dilation_w, g.out_w);
        const auto pipe = L.output.pipeline(L.w, 0, g.out_c);
        const nn::qactivation want = nn::reference::forward(L, x);
        REQUIRE(want.values.shape() == extents<4>{g.batch, g.out_h, g.out_w, g.out_c});
        index_t border = 0, wrong = 0;
        for (index_t n = 0; n < g.batch; ++n)
          for (index_t h = 0; h < g.out_h; ++h)
            for (index_t w = 0; w < g.out_w; ++w) {
              if (!empty_h[static_cast<std::size_t>(h)] && !empty_w[static_cast<std::size_t>(w)]) continue;
              ++border;
              const index_t pixel = (n * g.out_h + h) * g.out_w + w;
              for (index_t c = 0; c < g.out_c; ++c)
                wrong += want.values(n, h, w, c) != gemm::eval_pipeline(pipe, std::int32_t{0}, pixel, c);
            }
        CHECK(border >= 2 * g.batch);
        CHECK(wrong == 0);
        // Every path equals the reference bit for bit, so its border is the same.
        qconv_check_every_path(L, x, want);
      }
}

TEST_CASE("qconv2d: padding is real zero, ReLU and ReLU6 clamp at the right codes", "[nn][qconv2d]") {
  // A 3x3 all-ones kernel with pad 1 over a constant input: corners see 4 taps, edges 6,
  // the inside 9. With the input at its zero point + 2 the output is proportional to the
  // count of taps inside, whatever the zero point pads with.
  for (std::int32_t zx : {0, 100, 253}) {
    nn::qconv2d L;
    L.opt = nn::conv2d_options::square(3, 1, 1);
    L.in_channels = 1;
    L.in = {0.5f, zx};
    L.w.values = tensor<std::int8_t, 2>(extents<2>{1, 9}, std::int8_t{1});
    L.w.params = quant_params(granularity::per_tensor(), -127, 127, {0.25f}, {0});
    L.w.bias = {0};
    L.w.pack_groups(1);
    // real output = taps * 2 * 0.5 * 0.25 = taps / 4; output scale 1/8 -> 2 * taps codes above zp 10.
    L.output = nn::make_quantized_output(L.w, L.in, {0.125f, 10}, -1.0f);
    nn::qactivation x{tensor<std::uint8_t, 4>(extents<4>{1, 4, 5, 1}, static_cast<std::uint8_t>(zx + 2)), 0.5f, zx};
    for_each_isa([&](isa) {
      const nn::qactivation y = L.forward(x);
      for (index_t h = 0; h < 4; ++h)
        for (index_t w = 0; w < 5; ++w) {
          const int taps = (h == 0 || h == 3 ? 2 : 3) * (w == 0 || w == 4 ? 2 : 3);
          INFO("zx " << zx << " at " << h << "," << w);
          CHECK(int{y.values(0, h, w, 0)} == 10 + 2 * taps);
        }
      CHECK(first_difference(y.values, nn::reference::forward(L, x).values).empty());
    });
  }
  // ReLU: qmin is the output zero point; ReLU6: qmax = zp + round(6 / scale).
  nn::quantized_weights w;
  w.values = tensor<std::int8_t, 2>(extents<2>{2, 1});
  w.values(0, 0) = 100;
  w.values(1, 0) = -100;
  w.params = quant_params(granularity::per_tensor(), -127, 127, {0.01f}, {0});
  w.bias = {0, 0};
  w.pack_groups(1);
  const nn::quantized_output none = nn::make_quantized_output(w, {0.1f, 0}, {0.05f, 40}, -1.0f);
  const nn::quantized_output relu = nn::make_quantized_output(w, {0.1f, 0}, {0.05f, 40}, 0.0f);
  const nn::quantized_output relu6 = nn::make_quantized_output(w, {0.1f, 0}, {0.05f, 40}, 6.0f);
  CHECK((none.qmin == 0 && none.qmax == 255));
  CHECK((relu.qmin == 40 && relu.qmax == 255));
  CHECK((relu6.qmin == 40 && relu6.qmax == 40 + 120));
  for (float m : relu.multiplier) CHECK(m == Approx(0.1 * 0.01 / 0.05).epsilon(1e-6));
  // x = 255: real 25.5 * (+-1) = +-25.5 -> codes 40 +- 510: clamped to 255 / 0 (none),
  // 255 / 40 (ReLU), 160 / 40 (ReLU6).
  nn::qconv2d L;
  L.in_channels = 1;
  L.in = {0.1f, 0};
  L.w = w;
  nn::qactivation x{tensor<std::uint8_t, 4>(extents<4>{1, 1, 1, 1}, std::uint8_t{255}), 0.1f, 0};
  const std::pair<const nn::quantized_output*, std::pair<int, int>> expect[] = {
      {&none, {255, 0}}, {&relu, {255, 40}}, {&relu6, {160, 40}}};
  for (const auto& e : expect) {
    L.output = *e.first;
    for_each_isa([&](isa) {
      const nn::qactivation y = L.forward(x);
      CHECK(int{y.values(0, 0, 0, 0)} == e.second.first);
      CHECK(int{y.values(0, 0, 0, 1)} == e.second.second);
    });
    CHECK(first_difference(nn::reference::forward(L, x).values, L.forward(x).values).empty());
  }
}

// ---------------------------------------------------------------------------------------------
// qlinear

namespace {

struct linear_case {
  index_t batch, in, out;
  std::int32_t in_zp;
  bool per_channel, weight_zp;
  float relu_hi;
  bool float_output;
};

nn::qlinear make_qlinear(const linear_case& lc) {
  nn::qlinear L;
  L.in = {0.02f, lc.in_zp};
  const double ex2 = 5461.0 + (127.5 - lc.in_zp) * (127.5 - lc.in_zp);
  const double acc_sigma = std::sqrt(static_cast<double>(lc.in) * ex2 * 1700.0);
  L.w = hand_weights(lc.out, lc.in, lc.per_channel, lc.weight_zp, static_cast<float>(8.0 / (L.in.scale * acc_sigma)),
                     L.in.scale);
  L.w.pack_groups(1);
  L.float_output = lc.float_output;
  if (lc.float_output) {
    for (index_t o = 0; o < lc.out; ++o) L.channel_scale.push_back(L.w.scale(o));
  } else {
    L.output = nn::make_quantized_output(L.w, L.in, {24.0f / 110.0f, lc.relu_hi >= 0 ? 5 : 128}, lc.relu_hi);
  }
  return L;
}

}  // namespace

TEST_CASE("qlinear: uint8 and float outputs equal the reference on every ISA and thread count", "[nn][qlinear]") {
  const std::vector<linear_case> cases = {
      {1, 1, 1, 128, true, false, -1.0f, false},   {3, 7, 5, 0, false, true, 0.0f, false},
      {1, 64, 70, 255, true, true, 6.0f, false},   {3, 300, 17, 128, true, false, -1.0f, false},
      {5, 33, 64, 77, false, false, 0.0f, false},  {1, 1, 3, 0, true, true, -1.0f, true},
      {3, 7, 70, 128, true, false, -1.0f, true},   {2, 300, 10, 255, false, true, -1.0f, true},
      {7, 65, 129, 30, true, true, -1.0f, true},
  };
  for (const linear_case& lc : cases) {
    INFO("linear " << lc.batch << "x" << lc.in << " -> " << lc.out << " zx " << lc.in_zp << " per_channel "
                   << lc.per_channel << " weight zp " << lc.weight_zp << " relu_hi " << lc.relu_hi << " float "
                   << lc.float_output);
    const nn::qlinear L = make_qlinear(lc);
    const nn::qactivation x = random_activation({lc.batch, 1, 1, lc.in}, L.in);
    // The reference against double math: sum (x - zx)(w - zw) + bias, scaled.
    std::vector<double> exact;
    for (index_t r = 0; r < lc.batch; ++r)
      for (index_t o = 0; o < lc.out; ++o) {
        double s = L.w.bias[static_cast<std::size_t>(o)];
        for (index_t k = 0; k < lc.in; ++k)
          s += static_cast<double>(x.values(r, 0, 0, k) - lc.in_zp) * (L.w.values(o, k) - L.w.zero_point(o));
        exact.push_back(s * L.in.scale * L.w.scale(o));
      }
    if (lc.float_output) {
      const tensor<float, 4> want = nn::reference::forward_float(L, x);
      REQUIRE(want.shape() == (extents<4>{lc.batch, 1, 1, lc.out}));
      double range = 0.0;
      for (double e : exact) range = std::max(range, std::fabs(e));
      for (index_t i = 0; i < want.size(); ++i)
        REQUIRE(std::fabs(want.data()[i] - exact[static_cast<std::size_t>(i)]) <= 1e-5 * range);
      for_each_isa([&](isa) {
        for (int threads : {1, 3}) {
          const std::string diff = first_difference(L.forward_float(x, {threads, nullptr}), want);
          INFO("threads " << threads << ": " << diff);
          REQUIRE(diff.empty());
        }
      });
      QLIB_REQUIRE_ERROR(L.forward(x), errc::invalid_argument);
      QLIB_REQUIRE_ERROR(nn::reference::forward(L, x), errc::invalid_argument);
    } else {
      const nn::qactivation want = nn::reference::forward(L, x);
      REQUIRE(want.values.shape() == (extents<4>{lc.batch, 1, 1, lc.out}));
      index_t equal = 0;
      for (index_t i = 0; i < want.values.size(); ++i) {
        const double q = std::nearbyint(exact[static_cast<std::size_t>(i)] / L.output.out.scale) + L.output.out.zero_point;
        const double e = std::min<double>(L.output.qmax, std::max<double>(L.output.qmin, q));
        REQUIRE(std::fabs(want.values.data()[i] - e) <= 1.0);
        equal += want.values.data()[i] == e;
      }
      CHECK(static_cast<double>(equal) >= 0.95 * static_cast<double>(want.values.size()));
      if (lc.out * lc.batch >= 10) CHECK(inside_fraction(want.values, L.output.qmin, L.output.qmax) >= 0.15);
      for_each_isa([&](isa) {
        for (int threads : {1, 3}) {
          const std::string diff = first_difference(L.forward(x, {threads, nullptr}).values, want.values);
          INFO("threads " << threads << ": " << diff);
          REQUIRE(diff.empty());
        }
      });
      QLIB_REQUIRE_ERROR(L.forward_float(x), errc::invalid_argument);
      QLIB_REQUIRE_ERROR(nn::reference::forward_float(L, x), errc::invalid_argument);
    }
  }
}

TEST_CASE("qlinear: weights pruned 2:4 or 1:4 along the inputs run on the N:M kernel, same bits", "[nn][qlinear][sparse]") {
  const std::vector<linear_case> cases = {
      {6, 64, 70, 128, true, false, -1.0f, false}, {3, 37, 20, 77, false, true, 0.0f, false},
      {9, 100, 64, 0, true, true, -1.0f, true},    {1, 5, 3, 255, true, false, 6.0f, false},
  };
  for (const linear_case& lc : cases) {
    for (int keep : {2, 1}) {
      INFO("linear " << lc.batch << "x" << lc.in << " -> " << lc.out << " float " << lc.float_output << ", " << keep
                     << ":4");
      nn::qlinear L = make_qlinear(lc);
      for (index_t o = 0; o < lc.out; ++o)  // keep `keep` codes of every 4 inputs (the rest code 0)
        for (index_t k0 = 0; k0 < lc.in; k0 += 4) {
          const index_t first = rand_int(0, 3);
          for (index_t kk = k0; kk < std::min(lc.in, k0 + 4); ++kk)
            if ((kk - k0 - first + 4) % 4 >= keep) L.w.values(o, kk) = 0;
        }
      L.w.pack_groups(1);
      if (!lc.float_output)
        L.output = nn::make_quantized_output(L.w, L.in, {24.0f / 110.0f, lc.relu_hi >= 0 ? 5 : 128}, lc.relu_hi);
      L.prepare();
      REQUIRE(L.nm);
      CHECK(L.nm->keep() == keep);
      const nn::qactivation x = random_activation({lc.batch, 1, 1, lc.in}, L.in);
      // A decoy N:M form (every kept code replaced by 1): forward() must change exactly
      // where it claims to run the N:M path.
      nn::qlinear decoy = L;
      {
        tensor<std::int8_t, 2> ones = L.w.values;
        for (auto& v : ones) v = v != 0 ? std::int8_t{1} : std::int8_t{0};
        decoy.nm = std::make_shared<const prune::packed_nm>(prune::pack_nm(
            tensor_view<const std::int8_t, 2>(ones.data(), {lc.in, lc.out}, {1, lc.in}), keep, 4,
            L.w.group_params(0, lc.out)));
      }
      for_each_isa([&](isa i) {
        CHECK(L.runs_sparse() == (i == isa::avx512_vnni));
        const bool decoy_differs =
            lc.float_output ? !first_difference(decoy.forward_float(x), L.forward_float(x)).empty()
                            : !first_difference(decoy.forward(x).values, L.forward(x).values).empty();
        CHECK(decoy_differs == L.runs_sparse());
        for (int threads : {1, 2}) {
          INFO("threads " << threads);
          if (lc.float_output) {
            REQUIRE(first_difference(L.forward_float(x, {threads, nullptr}), nn::reference::forward_float(L, x)).empty());
          } else {
            REQUIRE(first_difference(L.forward(x, {threads, nullptr}).values, nn::reference::forward(L, x).values)
                        .empty());
          }
        }
      });
    }
  }
  // Three non-zero codes in one group: no N:M form, the dense path.
  nn::qlinear dense = make_qlinear({2, 8, 5, 128, true, false, -1.0f, false});
  for (index_t o = 0; o < 5; ++o)
    for (index_t kk = 0; kk < 8; ++kk) dense.w.values(o, kk) = static_cast<std::int8_t>(kk % 4 == 3 ? 0 : 1 + kk);
  dense.w.pack_groups(1);
  dense.prepare();
  CHECK(!dense.nm);
  CHECK(!dense.runs_sparse());
}

// ---------------------------------------------------------------------------------------------
// quantize_weights

TEST_CASE("quantize_weights: bias rounds half to even at input scale x weight scale", "[nn][quantize_weights]") {
  // Row amax 127/16 and 127/8: symmetric int8 scales 1/16 and 1/8 exactly. Input scale
  // 0.5: bias scales 1/32 and 1/16, so these biases land exactly on halves.
  tensor<float, 2> w(extents<2>{2, 3});
  w(0, 0) = 127.0f / 16;
  w(0, 1) = -1.0f;
  w(0, 2) = 0.5f;
  w(1, 0) = 2.0f;
  w(1, 1) = -127.0f / 8;
  w(1, 2) = 0.0f;
  struct tie {
    float b0, b1;
    std::int32_t q0, q1;
  };
  const tie ties[] = {{2.5f / 32, 2.5f / 16, 2, 2},     {3.5f / 32, 3.5f / 16, 4, 4},  {-2.5f / 32, -0.5f / 16, -2, 0},
                      {1.5f / 32, -1.5f / 16, 2, -2},  {0.25f / 32, 7.0f / 16, 0, 7}, {-3.5f / 32, 0.75f / 16, -4, 1}};
  for (const tie& t : ties) {
    const nn::quantized_weights q = nn::quantize_weights(w.cview(), {t.b0, t.b1}, 0.5f, true, 1);
    REQUIRE(q.params.size() == 2);
    CHECK(q.scale(0) == 1.0f / 16);
    CHECK(q.scale(1) == 1.0f / 8);
    CHECK((q.zero_point(0) == 0 && q.zero_point(1) == 0));
    CHECK(q.bias[0] == t.q0);
    CHECK(q.bias[1] == t.q1);
    CHECK((int{q.values(0, 0)} == 127 && int{q.values(0, 1)} == -16 && int{q.values(0, 2)} == 8));
    CHECK((int{q.values(1, 0)} == 16 && int{q.values(1, 1)} == -127 && int{q.values(1, 2)} == 0));
  }
  // Per tensor: one scale (the larger amax, 1/8) for both rows.
  const nn::quantized_weights pt = nn::quantize_weights(w.cview(), {2.5f / 16, -2.5f / 16}, 0.5f, false, 1);
  REQUIRE(pt.params.size() == 1);
  CHECK(pt.scale(1) == 1.0f / 8);
  CHECK((pt.bias[0] == 2 && pt.bias[1] == -2));
  CHECK(int{pt.values(0, 0)} == 64);  // 127/16 * 8 = 63.5 -> 64
  // No bias: zeros, one per output channel.
  const nn::quantized_weights nb = nn::quantize_weights(w.cview(), {}, 0.5f, true, 1);
  CHECK(nb.bias == std::vector<std::int32_t>{0, 0});
}

TEST_CASE("quantize_weights: random biases match the exact quotient; packing per group", "[nn][quantize_weights]") {
  const index_t out = 12, k = 18;
  tensor<float, 2> w(extents<2>{out, k});
  for (float& v : w) v = rand_float(-0.3f, 0.3f);
  std::vector<float> bias;
  for (index_t o = 0; o < out; ++o) bias.push_back(rand_float(-2.0f, 2.0f));
  for (bool per_channel : {false, true})
    for (index_t groups : {1, 3, 4}) {
      const float in_scale = 0.0137f;
      const nn::quantized_weights q = nn::quantize_weights(w.cview(), bias, in_scale, per_channel, groups);
      REQUIRE(q.bias.size() == static_cast<std::size_t>(out));
      REQUIRE(q.packed.size() == static_cast<std::size_t>(groups));
      for (index_t o = 0; o < out; ++o) {
        const double v = bias[static_cast<std::size_t>(o)] / (static_cast<double>(in_scale) * q.scale(o));
        REQUIRE(std::fabs(v) < 65536.0);
        if (std::fabs(v - std::floor(v) - 0.5) > 1e-3) CHECK(q.bias[static_cast<std::size_t>(o)] == std::lround(v));
        // Weights within half a step of the float ones, never past the range.
        for (index_t j = 0; j < k; ++j) {
          CHECK(std::fabs(q.values(o, j) * q.scale(o) - w(o, j)) <= 0.5f * q.scale(o) * 1.0001f);
          CHECK(q.values(o, j) >= -127);
        }
      }
      for (index_t g = 0; g < groups; ++g) {
        CHECK(q.packed[static_cast<std::size_t>(g)].k() == k);
        CHECK(q.packed[static_cast<std::size_t>(g)].n() == out / groups);
        CHECK(q.packed[static_cast<std::size_t>(g)].scale(0) == q.scale(g * (out / groups)));
      }
    }
  // An asymmetric scheme gives affine weights: non-zero zero points per channel.
  const nn::quantized_weights a = nn::quantize_weights(w.cview(), bias, 0.02f, true, 1, schemes::s8_asymmetric);
  bool some_nonzero = false;
  for (index_t o = 0; o < out; ++o) some_nonzero = some_nonzero || a.zero_point(o) != 0;
  CHECK(some_nonzero);
  CHECK(a.packed[0].has_zero_points());
}

TEST_CASE("quantize_weights: bias outside int32 is refused; bad arguments are refused", "[nn][quantize_weights]") {
  tensor<float, 2> w(extents<2>{2, 4});
  for (float& v : w) v = rand_float(-1.0f, 1.0f);
  w(0, 0) = 127.0f / 1024;  // amax of row 0 below: scale 2^-10
  for (index_t j = 1; j < 4; ++j) w(0, j) = 0.01f;
  // Input scale 2^-10: bias scale 2^-20, so bias b becomes b * 2^20.
  const float in_scale = 1.0f / 1024;
  const nn::quantized_weights ok = nn::quantize_weights(w.cview(), {1024.0f, 0.0f}, in_scale, true, 1);
  CHECK(ok.bias[0] == (1 << 30));
  const nn::quantized_weights neg = nn::quantize_weights(w.cview(), {-1536.0f, 0.0f}, in_scale, true, 1);
  CHECK(neg.bias[0] == -(3 << 29));
  QLIB_REQUIRE_ERROR(nn::quantize_weights(w.cview(), {2048.0f, 0.0f}, in_scale, true, 1), errc::overflow);  // 2^31
  QLIB_REQUIRE_ERROR(nn::quantize_weights(w.cview(), {-4096.0f, 0.0f}, in_scale, true, 1), errc::overflow);
  QLIB_REQUIRE_ERROR(nn::quantize_weights(w.cview(), {1e30f, 0.0f}, in_scale, true, 1), errc::overflow);
  QLIB_REQUIRE_ERROR(nn::quantize_weights(w.cview(), {0.0f, 1e30f}, 1e-30f, true, 1), errc::overflow);
  QLIB_REQUIRE_ERROR(nn::quantize_weights(w.cview(), {std::nanf(""), 0.0f}, in_scale, true, 1), errc::non_finite);
  QLIB_REQUIRE_ERROR(nn::quantize_weights(w.cview(), {0.0f, INFINITY}, in_scale, true, 1), errc::non_finite);
  QLIB_REQUIRE_ERROR(nn::quantize_weights(w.cview(), {1.0f}, in_scale, true, 1), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(nn::quantize_weights(w.cview(), {}, 0.0f, true, 1), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::quantize_weights(w.cview(), {}, -1.0f, true, 1), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::quantize_weights(w.cview(), {}, std::nanf(""), true, 1), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::quantize_weights(w.cview(), {}, INFINITY, true, 1), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::quantize_weights(w.cview(), {}, 0.1f, true, 3), errc::invalid_argument);  // 3 does not divide 2
  QLIB_REQUIRE_ERROR(nn::quantize_weights(w.cview(), {}, 0.1f, true, 0), errc::invalid_argument);
  w(1, 2) = std::nanf("");
  QLIB_REQUIRE_ERROR(nn::quantize_weights(w.cview(), {}, 0.1f, true, 1), errc::non_finite);
}

TEST_CASE("quantize_weights: all-zero weights give finite scales and a bias-only layer", "[nn][quantize_weights]") {
  tensor<float, 2> zero(extents<2>{3, 8});
  for (bool per_channel : {false, true}) {
    const nn::quantized_weights q = nn::quantize_weights(zero.cview(), {0.5f, -0.25f, 0.0f}, 0.05f, per_channel, 1);
    for (float s : q.params.scale) CHECK((std::isfinite(s) && s >= FLT_MIN));
    for (std::int8_t v : q.values) CHECK(v == 0);
    for (index_t o = 0; o < 3; ++o) CHECK(std::isfinite(q.scale(o)));
    const std::vector<float> m = nn::requantize_multipliers(q, 0.05f, 0.01f);
    for (float v : m) CHECK((std::isfinite(v) && v > 0.0f));
  }
  // One dead channel among live ones; the layer then outputs its bias, requantized.
  tensor<float, 2> w(extents<2>{3, 9});
  for (index_t j = 0; j < 9; ++j) {
    w(0, j) = rand_float(-0.5f, 0.5f);
    w(2, j) = rand_float(-0.5f, 0.5f);
  }
  const std::vector<float> bias = {0.1f, 0.5f, -0.2f};
  nn::qconv2d L;
  L.opt = nn::conv2d_options::square(3, 1, 1);
  L.in_channels = 1;
  L.in = {0.05f, 20};
  L.w = nn::quantize_weights(w.cview(), bias, L.in.scale, true, 1);
  CHECK((std::isfinite(L.w.scale(1)) && L.w.scale(1) >= FLT_MIN));
  L.output = nn::make_quantized_output(L.w, L.in, {0.01f, 128}, -1.0f);
  for (float v : L.output.multiplier) CHECK((std::isfinite(v) && v > 0.0f));
  const nn::qactivation x = random_activation({1, 4, 4, 1}, L.in);
  const nn::qactivation want = nn::reference::forward(L, x);
  for (index_t h = 0; h < 4; ++h)
    for (index_t wi = 0; wi < 4; ++wi) CHECK(int{want.values(0, h, wi, 1)} == 128 + 50);  // 0.5 / 0.01
  for_each_isa([&](isa) { CHECK(first_difference(L.forward(x).values, want.values).empty()); });
}

// ---------------------------------------------------------------------------------------------
// Static post-training quantization end to end

namespace {

void fill_uniform(tensor<float, 4>& t, float bound) {
  for (float& v : t) v = rand_float(-bound, bound);
}

// conv-bn-relu-maxpool-conv(groups 2)-relu-avgpool-flatten-linear-relu-linear on 8x8x3.
nn::sequential make_cnn() {
  nn::conv2d c1(3, 8, nn::conv2d_options::square(3, 1, 1));
  fill_uniform(c1.weight, std::sqrt(6.0f / 27));
  for (float& b : c1.bias) b = rand_float(-0.1f, 0.1f);
  nn::batch_norm2d bn(8);
  for (index_t c = 0; c < 8; ++c) {
    bn.weight(c) = rand_float(0.5f, 1.5f);
    bn.bias(c) = rand_float(-0.3f, 0.3f);
    bn.running_mean(c) = rand_float(-0.3f, 0.3f);
    bn.running_var(c) = rand_float(0.5f, 2.0f);
  }
  nn::conv2d c2(8, 8, nn::conv2d_options::square(3, 1, 1, 1, 2));
  fill_uniform(c2.weight, std::sqrt(6.0f / 36));
  for (float& b : c2.bias) b = rand_float(-0.1f, 0.1f);
  nn::linear l1(32, 16), l2(16, 10);
  for (float& v : l1.weight) v = rand_float(-std::sqrt(6.0f / 32), std::sqrt(6.0f / 32));
  for (float& v : l1.bias) v = rand_float(-0.1f, 0.1f);
  for (float& v : l2.weight) v = rand_float(-std::sqrt(3.0f / 16), std::sqrt(3.0f / 16));
  for (float& v : l2.bias) v = rand_float(-0.1f, 0.1f);
  return nn::sequential{c1,     bn, nn::relu{}, nn::max_pool2d::square(2), c2, nn::relu{}, nn::avg_pool2d::square(2),
                        nn::flatten{}, l1, nn::relu{}, l2};
}

tensor<float, 4> random_images(index_t n) {
  tensor<float, 4> x(extents<4>{n, 8, 8, 3});
  fill_uniform(x, 1.0f);
  return x;
}

// max |a - b| and the RMS of a - b, over the range of b.
double range_of(const tensor<float, 4>& b) {
  const auto mm = std::minmax_element(b.begin(), b.end());
  REQUIRE(*mm.second > *mm.first);
  return static_cast<double>(*mm.second) - *mm.first;
}
double max_relative_error(const tensor<float, 4>& a, const tensor<float, 4>& b) {
  REQUIRE(a.shape() == b.shape());
  double err = 0.0;
  for (index_t i = 0; i < b.size(); ++i) err = std::max(err, std::fabs(static_cast<double>(a.data()[i]) - b.data()[i]));
  return err / range_of(b);
}
double rms_relative_error(const tensor<float, 4>& a, const tensor<float, 4>& b) {
  REQUIRE(a.shape() == b.shape());
  double s = 0.0;
  for (index_t i = 0; i < b.size(); ++i) {
    const double d = static_cast<double>(a.data()[i]) - b.data()[i];
    s += d * d;
  }
  return std::sqrt(s / static_cast<double>(b.size())) / range_of(b);
}

template <class Observer>
void check_static_ptq(const Observer& prototype, bool per_channel) {
  const nn::sequential model = make_cnn();
  std::vector<tensor<float, 4>> calibration;
  for (int b = 0; b < 8; ++b) calibration.push_back(random_images(8));
  nn::static_quantization_options opt;
  opt.per_channel_weights = per_channel;
  nn::static_quantizer<Observer> sq(model, opt, prototype);
  CHECK(sq.folded_model().size() == model.size() - 1);  // the batch norm is folded
  for (const auto& b : calibration) sq.observe(b.cview());
  CHECK(sq.batches() == 8);
  const nn::quantized_sequential q = sq.convert();

  // Layer by layer: conv(+relu), maxpool, conv(+relu), avgpool, flatten, linear(+relu), linear with float logits.
  REQUIRE(q.layers.size() == 7);
  CHECK(std::holds_alternative<nn::qconv2d>(q.layers[0]));
  CHECK(std::holds_alternative<nn::max_pool2d>(q.layers[1]));
  CHECK(std::holds_alternative<nn::qconv2d>(q.layers[2]));
  CHECK(std::holds_alternative<nn::avg_pool2d>(q.layers[3]));
  CHECK(std::holds_alternative<nn::flatten>(q.layers[4]));
  REQUIRE(std::holds_alternative<nn::qlinear>(q.layers[5]));
  REQUIRE(std::holds_alternative<nn::qlinear>(q.layers[6]));
  CHECK(!std::get<nn::qlinear>(q.layers[5]).float_output);
  CHECK(std::get<nn::qlinear>(q.layers[6]).float_output);
  const auto& conv1 = std::get<nn::qconv2d>(q.layers[0]);
  const auto& conv2 = std::get<nn::qconv2d>(q.layers[2]);
  CHECK(conv1.w.params.size() == (per_channel ? 8 : 1));
  CHECK(conv2.w.packed.size() == 2);
  // Fused ReLU: the outputs' zero point is 0 and qmin too; each layer's input
  // parameters are the previous output's (pooling keeps them).
  CHECK((conv1.output.out.zero_point == 0 && conv1.output.qmin == 0));
  CHECK((conv2.in.scale == conv1.output.out.scale && conv2.in.zero_point == conv1.output.out.zero_point));
  CHECK(std::get<nn::qlinear>(q.layers[5]).in.scale == conv2.output.out.scale);
  CHECK((conv1.in.scale == q.input.scale && conv1.in.zero_point == q.input.zero_point));

  // The int8 model follows the float one: on calibration data within 3% of the output
  // range everywhere; on held-out data within 3% in RMS (a held-out input can leave the
  // calibrated range and be clipped: over 40 random models the worst max error was 8%
  // there, 2.1% on calibration data, 1.5% RMS).
  const tensor<float, 4> x = random_images(8);
  const double calib_err = max_relative_error(q.forward(calibration[0].cview()), model.forward(calibration[0].cview()));
  const double held_out_rms = rms_relative_error(q.forward(x.cview()), model.forward(x.cview()));
  INFO("max error / output range on calibration data " << calib_err << ", RMS error / range held out " << held_out_rms);
  CHECK(calib_err < 0.03);
  CHECK(held_out_rms < 0.03);
  CHECK(held_out_rms > 0.0);  // a quantized model is not the float one

  // The fast model equals its reference on every ISA, serial and with 3 threads.
  const tensor<float, 4> want = nn::reference::forward(q, x.cview());
  for_each_isa([&](isa) {
    for (int threads : {1, 3}) {
      nn::quantized_sequential qt = q;
      qt.gemm_options.threads = threads;
      const std::string diff = first_difference(qt.forward(x.cview()), want);
      INFO("threads " << threads << ": " << diff);
      REQUIRE(diff.empty());
    }
  });
}

}  // namespace

TEST_CASE("static PTQ: a small CNN quantized with min/max observers follows the float model", "[nn][ptq]") {
  for (bool per_channel : {false, true}) {
    INFO("per_channel " << per_channel);
    check_static_ptq(minmax_observer(), per_channel);
  }
}

TEST_CASE("static PTQ: the same with histogram observers", "[nn][ptq]") {
  for (bool per_channel : {false, true}) {
    INFO("per_channel " << per_channel);
    check_static_ptq(histogram_observer(), per_channel);
  }
}

TEST_CASE("static PTQ: the input parameters come from the calibration range", "[nn][ptq]") {
  const nn::sequential model = make_cnn();
  nn::static_quantizer<minmax_observer> sq(model);
  float lo = 0.0f, hi = 0.0f;  // the range includes 0
  for (int b = 0; b < 3; ++b) {
    tensor<float, 4> x = random_images(4);
    for (float& v : x) v = v * 1.5f + 0.7f;  // [-0.8, 2.2]
    for (float v : x) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    sq.observe(x.cview());
  }
  const nn::quantized_sequential q = sq.convert();
  const double scale = (static_cast<double>(hi) - lo) / 255.0;
  CHECK(q.input.scale == Approx(scale).epsilon(1e-6));
  CHECK(q.input.zero_point == static_cast<std::int32_t>(std::nearbyint(-lo / scale)));
  // Observers: the input and one per conv/linear output.
  CHECK(sq.observers().size() == 5);
}

TEST_CASE("static PTQ: errors", "[nn][ptq][errors]") {
  const nn::sequential model = make_cnn();
  {  // convert before observe
    nn::static_quantizer<minmax_observer> sq(model);
    QLIB_REQUIRE_ERROR(sq.convert(), errc::empty_tensor);
  }
  // Unsupported layer orders: a ReLU with no conv/linear before it; a second BN after a
  // linear (the first one folds into it).
  nn::conv2d c(3, 4, nn::conv2d_options::square(3));
  QLIB_REQUIRE_ERROR(nn::static_quantizer<minmax_observer>(nn::sequential{nn::relu{}, c}), errc::unsupported);
  QLIB_REQUIRE_ERROR(nn::static_quantizer<minmax_observer>(nn::sequential{nn::relu6{}, c}), errc::unsupported);
  QLIB_REQUIRE_ERROR(nn::static_quantizer<minmax_observer>(nn::sequential{nn::flatten{}, nn::linear(12, 4),
                                                                          nn::batch_norm2d(4), nn::batch_norm2d(4)}),
                     errc::unsupported);
  CHECK(nn::static_quantizer<minmax_observer>(nn::sequential{nn::flatten{}, nn::linear(12, 4), nn::batch_norm2d(4)})
            .folded_model()
            .size() == 2);
  QLIB_REQUIRE_ERROR(nn::static_quantizer<minmax_observer>(
                         nn::sequential{c, nn::max_pool2d::square(2), nn::batch_norm2d(4)}),
                     errc::unsupported);
  QLIB_REQUIRE_ERROR(nn::static_quantizer<minmax_observer>(nn::sequential{}), errc::empty_tensor);

  nn::static_quantizer<minmax_observer> sq(model);
  // Shape mismatch while observing: 4 channels for a 3-channel model.
  QLIB_REQUIRE_ERROR(sq.observe(tensor<float, 4>(extents<4>{2, 8, 8, 4}).cview()), errc::shape_mismatch);
  sq.observe(random_images(4).cview());
  const nn::quantized_sequential q = sq.convert();
  // The converted model refuses other input shapes: channels, and a size whose flatten
  // no longer matches the linear layer.
  QLIB_REQUIRE_ERROR(q.forward(tensor<float, 4>(extents<4>{1, 8, 8, 4}).cview()), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(q.forward(tensor<float, 4>(extents<4>{1, 12, 12, 3}).cview()), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(nn::reference::forward(q, tensor<float, 4>(extents<4>{1, 8, 8, 4}).cview()),
                     errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(nn::reference::forward(q, tensor<float, 4>(extents<4>{1, 12, 12, 3}).cview()),
                     errc::shape_mismatch);

  // Inputs quantized with other parameters than the layer was converted for.
  const auto& conv = std::get<nn::qconv2d>(q.layers[0]);
  nn::qactivation x = random_activation({1, 8, 8, 3}, conv.in);
  (void)conv.forward(x);  // the converted parameters are accepted
  nn::qactivation other_scale = x;
  other_scale.scale *= 2.0f;
  nn::qactivation other_zp = x;
  other_zp.zero_point = (x.zero_point + 1) % 256;
  QLIB_REQUIRE_ERROR(conv.forward(other_scale), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(conv.forward(other_zp), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::reference::forward(conv, other_scale), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::reference::forward(conv, other_zp), errc::invalid_argument);
  const auto& fc = std::get<nn::qlinear>(q.layers[5]);
  nn::qactivation v = random_activation({2, 1, 1, 32}, fc.in);
  (void)fc.forward(v);
  v.scale *= 0.5f;
  QLIB_REQUIRE_ERROR(fc.forward(v), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::reference::forward(fc, v), errc::invalid_argument);
  const auto& logits = std::get<nn::qlinear>(q.layers[6]);
  nn::qactivation u = random_activation({2, 1, 1, 16}, logits.in);
  (void)logits.forward_float(u);
  u.zero_point = (u.zero_point + 7) % 256;
  QLIB_REQUIRE_ERROR(logits.forward_float(u), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::reference::forward_float(logits, u), errc::invalid_argument);

  // Layer shape mismatches.
  const nn::qactivation four = random_activation({1, 8, 8, 4}, conv.in);
  QLIB_REQUIRE_ERROR(conv.forward(four), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(nn::reference::forward(conv, four), errc::shape_mismatch);
  const nn::qactivation wide = random_activation({2, 1, 1, 33}, fc.in);
  QLIB_REQUIRE_ERROR(fc.forward(wide), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(nn::reference::forward(fc, wide), errc::shape_mismatch);
  const nn::qactivation spatial = random_activation({2, 2, 2, 8}, fc.in);  // 32 values but not flattened
  QLIB_REQUIRE_ERROR(fc.forward(spatial), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(nn::reference::forward(fc, spatial), errc::shape_mismatch);
  // Weights that do not match the layer's window.
  nn::qconv2d bad = conv;
  bad.opt.kernel_w = 5;
  QLIB_REQUIRE_ERROR(bad.forward(x), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(nn::reference::forward(bad, x), errc::shape_mismatch);
  // A float-output layer anywhere but last.
  nn::quantized_sequential misplaced = q;
  std::swap(misplaced.layers[5], misplaced.layers[6]);
  QLIB_REQUIRE_ERROR(misplaced.forward(random_images(1).cview()), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::reference::forward(misplaced, random_images(1).cview()), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::quantized_sequential{}.forward(random_images(1).cview()), errc::empty_tensor);
  QLIB_REQUIRE_ERROR(nn::reference::forward(nn::quantized_sequential{}, random_images(1).cview()), errc::empty_tensor);
}

// ---------------------------------------------------------------------------------------------
// Accumulator overflow and malformed hand-built weights: refused, never undefined behaviour.

namespace {
// Weights all -128 with zero point 127 (|w - zw| = 255) against inputs 255 with zero
// point 0: taps * 65025 exceeds int32 from 33,026 taps on.
nn::qconv2d overflowing_conv(index_t channels, index_t groups, index_t kernel) {
  nn::qconv2d L;
  L.opt = nn::conv2d_options::square(kernel, 1, 0, 1, groups);
  L.in_channels = channels;
  L.in = {0.01f, 0};
  const index_t k = kernel * kernel * channels / groups;
  L.w.values = tensor<std::int8_t, 2>(extents<2>{channels, k}, std::int8_t{-128});
  L.w.params = quant_params(granularity::per_tensor(), -128, 127, {0.01f}, {127});
  L.w.bias.assign(static_cast<std::size_t>(channels), 0);
  L.w.pack_groups(groups);
  L.output = nn::make_quantized_output(L.w, L.in, {1.0f, 0}, -1.0f);
  return L;
}
}  // namespace

TEST_CASE("qconv2d: an int32 accumulator overflow is refused (GEMM path)", "[nn][qconv2d][errors]") {
  // 2 channels, one group, 129x129: K = 33,282 taps.
  const nn::qconv2d L = overflowing_conv(2, 1, 129);
  nn::qactivation x{tensor<std::uint8_t, 4>(extents<4>{1, 129, 129, 2}, std::uint8_t{255}), 0.01f, 0};
  QLIB_REQUIRE_ERROR(nn::reference::forward(L, x), errc::overflow);
  QLIB_REQUIRE_ERROR(L.forward(x), errc::overflow);
  // 2 x 127x127 = 32,258 taps: fits.
  const nn::qconv2d fits = overflowing_conv(2, 1, 127);
  nn::qactivation y{tensor<std::uint8_t, 4>(extents<4>{1, 127, 127, 2}, std::uint8_t{255}), 0.01f, 0};
  CHECK(first_difference(fits.forward(y).values, nn::reference::forward(fits, y).values).empty());
}

TEST_CASE("qconv2d: malformed hand-built weights are refused", "[nn][qconv2d][errors]") {
  conv_case cs = make_case(1, 5, 5, 4, 4, window(3, 3, 1, 1, 1, 1, 1), 128, true, false, -1.0f);
  nn::qconv2d L = make_qconv(cs);
  const nn::qactivation x = random_activation({1, 5, 5, 4}, L.in);
  nn::qconv2d no_multipliers = L;
  no_multipliers.output.multiplier.pop_back();
  QLIB_REQUIRE_ERROR(no_multipliers.forward(x), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(nn::reference::forward(no_multipliers, x), errc::shape_mismatch);
  nn::qconv2d unpacked = L;
  unpacked.w.packed.clear();
  QLIB_REQUIRE_ERROR(unpacked.forward(x), errc::shape_mismatch);
  CHECK(first_difference(nn::reference::forward(unpacked, x).values, L.forward(x).values).empty());
  nn::qconv2d zero_multiplier = L;
  zero_multiplier.output.multiplier[1] = 0.0f;
  QLIB_REQUIRE_ERROR(nn::reference::forward(zero_multiplier, x), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(zero_multiplier.forward(x), errc::invalid_argument);
}

// Regressions: the test cases below found bugs in the layers (missing checks, float
// rounding of the bias). The depthwise overflow stays last: should its check go, UBSan
// stops the program at the signed overflow and nothing after it would run.

TEST_CASE("qconv2d / qlinear: a bias of the wrong length is refused", "[nn][errors]") {
  for (index_t groups : {1, 2, 4}) {  // GEMM, grouped GEMM, depthwise
    conv_case cs = make_case(1, 5, 5, 4, 4, window(3, 3, 1, 1, 1, 1, groups), 128, true, false, -1.0f);
    nn::qconv2d L = make_qconv(cs);
    L.w.bias.pop_back();
    const nn::qactivation x = random_activation({1, 5, 5, 4}, L.in);
    INFO("groups " << groups);
    QLIB_REQUIRE_ERROR(nn::reference::forward(L, x), errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(L.forward(x), errc::shape_mismatch);
  }
  nn::qlinear fc = make_qlinear({2, 8, 5, 128, true, false, -1.0f, false});
  fc.w.bias.resize(3);
  const nn::qactivation x = random_activation({2, 1, 1, 8}, fc.in);
  QLIB_REQUIRE_ERROR(nn::reference::forward(fc, x), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(fc.forward(x), errc::shape_mismatch);
  nn::qlinear logits = make_qlinear({2, 8, 5, 128, true, false, -1.0f, true});
  logits.channel_scale.resize(2);
  QLIB_REQUIRE_ERROR(nn::reference::forward_float(logits, x), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(logits.forward_float(x), errc::shape_mismatch);
}

TEST_CASE("quantized_weights::pack_groups refuses per-channel parameters of the wrong count",
          "[nn][quantize_weights][errors]") {
  nn::quantized_weights w = hand_weights(8, 9, true, false, 0.01f, 0.05f);
  w.params.scale.resize(3);
  w.params.zero_point.resize(3);
  QLIB_REQUIRE_ERROR(w.pack_groups(1), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(w.pack_groups(2), errc::shape_mismatch);
}

TEST_CASE("quantize_weights: large biases round the exact quotient, not a float copy of it",
          "[nn][quantize_weights]") {
  // Bias scale 0.1 * 2^-10 = 9.765625e-5 (not a power of two): b / s is not an integer
  // and above 2^24 its float copy is off by up to 1 before the rounding.
  tensor<float, 2> w(extents<2>{1, 2});
  w(0, 0) = 127.0f / 1024;
  w(0, 1) = 0.0f;
  int checked = 0, wrong = 0;
  for (int i = 0; i < 200; ++i) {
    const float b = rand_float(2000.0f, 20000.0f);  // quotients 2e7 .. 2e8
    const nn::quantized_weights q = nn::quantize_weights(w.cview(), {b}, 0.1f, false, 1);
    const double v = static_cast<double>(b) / (static_cast<double>(0.1f) * q.scale(0));
    if (std::fabs(v - std::floor(v) - 0.5) < 1e-3) continue;
    ++checked;
    wrong += q.bias[0] != static_cast<std::int32_t>(std::lround(v));
  }
  INFO(wrong << " of " << checked << " biases differ from round(b / (input_scale * weight_scale))");
  CHECK(checked > 150);
  CHECK(wrong == 0);
}

TEST_CASE("qconv2d: depthwise int32 accumulator overflow is refused, not undefined", "[nn][qconv2d][errors]") {
  // Depthwise (groups = channels = 2), 182x182 taps = 33,124: 33,124 * 65,025 > 2^31.
  const nn::qconv2d L = overflowing_conv(2, 2, 182);
  nn::qactivation x{tensor<std::uint8_t, 4>(extents<4>{1, 182, 182, 2}, std::uint8_t{255}), 0.01f, 0};
  QLIB_REQUIRE_ERROR(nn::reference::forward(L, x), errc::overflow);
  QLIB_REQUIRE_ERROR(L.forward(x), errc::overflow);
}
