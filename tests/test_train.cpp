// Tests for the trainer: layer and model gradients vs finite differences, loss, optimizers, determinism, learning.
#include "qlib/train.hpp"
#include "test_util.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <vector>

using namespace qlib;
using qlib_test::rand_float;
using qlib_test::rand_int;

namespace {

using qlib_test::rand_tensor;

// A random objective L(y) = sum r * y, evaluated in double; dL/dy = r.
struct linear_objective {
  tensor<float, 4> r;
  explicit linear_objective(const extents<4>& s) : r(rand_tensor(s)) {}
  double operator()(const tensor<float, 4>& y) const {
    REQUIRE(y.shape() == r.shape());
    double s = 0.0;
    for (index_t i = 0; i < y.size(); ++i) s += static_cast<double>(y.data()[i]) * r.data()[i];
    return s;
  }
};

// Compares an analytic gradient with central differences (step eps, in float, the
// objective summed in double) on up to `samples` coordinates of `values`. `f` evaluates
// the objective; `kink` (optional) tells when a perturbation crossed a ReLU or max-pool
// decision, and that coordinate is skipped.
void check_gradient(const char* what, float* values, const float* analytic, index_t n, const std::function<double()>& f,
                    int samples = 24, float eps = 1e-3f, const std::function<bool()>& kink = {}) {
  INFO(what);
  REQUIRE(n > 0);
  // Every coordinate of a small tensor; else random ones until `samples` of them are away
  // from a kink (a ReLU or max-pool decision that the +-eps probe flips), trying at most
  // 8 x samples: first-layer weights move many decisions at once.
  const bool all = n <= samples;
  const int wanted = all ? static_cast<int>(n) : samples, tries = all ? static_cast<int>(n) : 8 * samples;
  std::vector<index_t> coords;
  double diff2 = 0.0, ref2 = 0.0;
  int checked = 0;
  std::vector<double> num, ana;
  for (int t = 0; t < tries && checked < wanted; ++t) {
    const index_t i = all ? t : rand_int(0, static_cast<int>(n - 1));
    const float saved = values[i];
    values[i] = saved + eps;
    const double fp = f();
    const bool kp = kink && kink();
    values[i] = saved - eps;
    const double fm = f();
    const bool km = kink && kink();
    values[i] = saved;
    coords.push_back(i);
    num.push_back(std::numeric_limits<double>::quiet_NaN());
    ana.push_back(0.0);
    if (kp || km) continue;
    num.back() = (fp - fm) / (2.0 * static_cast<double>(eps));
    ana.back() = analytic[i];
    diff2 += (num.back() - ana.back()) * (num.back() - ana.back());
    ref2 += num.back() * num.back();
    ++checked;
  }
  REQUIRE(checked >= (all ? wanted / 2 : wanted));
  const double rms = std::sqrt(ref2 / checked);
  INFO("rms of the numeric gradient " << rms);
  CHECK(rms > 1e-4);  // the check would be empty on a zero gradient
  CHECK(std::sqrt(diff2) <= 1e-2 * std::sqrt(ref2));
  for (std::size_t k = 0; k < coords.size(); ++k) {
    if (std::isnan(num[k])) continue;
    INFO("coordinate " << coords[k] << " numeric " << num[k] << " analytic " << ana[k]);
    CHECK(std::abs(num[k] - ana[k]) <= 2e-2 * std::max(std::abs(num[k]), std::abs(ana[k])) + 3e-3 * rms);
  }
}

nn::conv2d make_conv(index_t in, index_t out, const nn::conv2d_options& o, bool bias = true) {
  nn::conv2d c(in, out, o, bias);
  for (float& v : c.weight) v = rand_float(-0.5f, 0.5f);
  for (float& v : c.bias) v = rand_float(-0.5f, 0.5f);
  return c;
}

// dL/dw and dL/dx of y = conv(x) for dL/dy = dy from the definition, in double: each tap
// inside the input adds dy * x to dw and dy * w to dx (taps in the padding add nothing);
// dw and dx must match up to float rounding of those sums.
void train_test_check_conv_grads_direct(const nn::conv2d& conv, const tensor<float, 4>& x, const tensor<float, 4>& dy,
                                        const tensor<float, 1>& dw, const tensor<float, 4>& dx) {
  const nn::conv_geometry g = conv.geometry(x.shape());
  const auto& o = g.opt;
  const index_t cg = g.in_c_per_group(), cog = g.out_c_per_group();
  std::vector<double> wantw(static_cast<std::size_t>(dw.size())), absw(wantw.size());
  std::vector<double> wantx(static_cast<std::size_t>(x.size())), absx(wantx.size());
  for (index_t n = 0; n < g.batch; ++n)
    for (index_t oh = 0; oh < g.out_h; ++oh)
      for (index_t ow = 0; ow < g.out_w; ++ow)
        for (index_t oc = 0; oc < g.out_c; ++oc)
          for (index_t kh = 0; kh < o.kernel_h; ++kh)
            for (index_t kw = 0; kw < o.kernel_w; ++kw) {
              const index_t ih = oh * o.stride_h - o.pad_h + kh * o.dilation_h;
              const index_t iw = ow * o.stride_w - o.pad_w + kw * o.dilation_w;
              if (ih < 0 || ih >= g.in_h || iw < 0 || iw >= g.in_w) continue;
              const double d = dy(n, oh, ow, oc);
              for (index_t ci = 0; ci < cg; ++ci) {
                const index_t c = oc / cog * cg + ci;
                const auto wi = static_cast<std::size_t>(((oc * o.kernel_h + kh) * o.kernel_w + kw) * cg + ci);
                const auto xi = static_cast<std::size_t>(((n * g.in_h + ih) * g.in_w + iw) * g.in_c + c);
                wantw[wi] += d * x.data()[xi];
                absw[wi] += std::abs(d * x.data()[xi]);
                wantx[xi] += d * conv.weight.data()[wi];
                absx[xi] += std::abs(d * conv.weight.data()[wi]);
              }
            }
  REQUIRE(dx.shape() == x.shape());
  index_t wrong = 0;
  for (std::size_t i = 0; i < wantw.size(); ++i)
    wrong += !(std::abs(dw.data()[i] - wantw[i]) <= 1e-4 * absw[i] + 1e-30);
  for (std::size_t i = 0; i < wantx.size(); ++i)
    wrong += !(std::abs(dx.data()[i] - wantx[i]) <= 1e-4 * absx[i] + 1e-30);
  CHECK(wrong == 0);
}

}  // namespace

TEST_CASE("rng: splitmix64 reference value, uniform and normal moments, permutations", "[train][rng]") {
  std::uint64_t s = 0;
  CHECK(train::splitmix64(s) == 0xe220a8397b1dcdafull);  // the published splitmix64 sequence from state 0
  train::rng g(42);
  double sum = 0.0, sum2 = 0.0, nsum = 0.0, nsum2 = 0.0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const float u = g.uniform();
    REQUIRE(u >= 0.0f);
    REQUIRE(u < 1.0f);
    sum += u;
    sum2 += u * u;
    const float z = g.normal();
    REQUIRE(std::isfinite(z));
    nsum += z;
    nsum2 += static_cast<double>(z) * z;
  }
  CHECK(sum / n == Approx(0.5).margin(0.01));
  CHECK(sum2 / n - (sum / n) * (sum / n) == Approx(1.0 / 12).margin(0.003));
  CHECK(nsum / n == Approx(0.0).margin(0.03));
  CHECK(nsum2 / n == Approx(1.0).margin(0.04));
  train::rng a(7), b(7), c(7, 1);
  bool same = true, differ = false;
  for (int i = 0; i < 8; ++i) {
    const std::uint64_t x = a.next_u64(), y = b.next_u64(), z = c.next_u64();
    same = same && x == y;
    differ = differ || x != z;
  }
  CHECK(same);
  CHECK(differ);
  const auto p = train::shuffled_indices(100, g);
  std::vector<int> seen(100, 0);
  int moved = 0;
  for (index_t i = 0; i < 100; ++i) {
    seen[static_cast<std::size_t>(p[static_cast<std::size_t>(i)])]++;
    moved += p[static_cast<std::size_t>(i)] != i;
  }
  CHECK(std::all_of(seen.begin(), seen.end(), [](int v) { return v == 1; }));
  CHECK(moved > 80);
  for (int i = 0; i < 1000; ++i) REQUIRE(g.below(3) < 3);
}

TEST_CASE("init: PyTorch default bounds, BN identity, deterministic per seed", "[train][init]") {
  nn::sequential m{nn::conv2d(2, 16, nn::conv2d_options::square(3, 1, 0, 1, 2)), nn::batch_norm2d(16), nn::relu{},
                   nn::flatten{}, nn::linear(400, 128)};
  std::get<nn::batch_norm2d>(m[1]).running_mean(3) = 5.0f;
  train::init_parameters(m, 123);
  const auto& conv = std::get<nn::conv2d>(m[0]);
  const auto& fc = std::get<nn::linear>(m[4]);
  const auto& bn = std::get<nn::batch_norm2d>(m[1]);
  const float cb = 1.0f / std::sqrt(9.0f), fb = 1.0f / 20.0f;  // fan_in = 1 * 3 * 3 (groups 2), 400
  for (float v : conv.weight) REQUIRE(std::abs(v) <= cb);
  for (float v : conv.bias) REQUIRE(std::abs(v) <= cb);
  double s2 = 0.0, maxabs = 0.0;
  for (float v : fc.weight) {
    REQUIRE(std::abs(v) <= fb);
    s2 += static_cast<double>(v) * v;
    maxabs = std::max(maxabs, static_cast<double>(std::abs(v)));
  }
  CHECK(std::sqrt(s2 / fc.weight.size()) == Approx(fb / std::sqrt(3.0)).epsilon(0.02));  // U(-b, b) has std b/sqrt(3)
  CHECK(maxabs > 0.99 * fb);
  for (float v : fc.bias) REQUIRE(std::abs(v) <= fb);
  for (index_t c = 0; c < 16; ++c) {
    CHECK(bn.weight(c) == 1.0f);
    CHECK(bn.bias(c) == 0.0f);
    CHECK(bn.running_mean(c) == 0.0f);
    CHECK(bn.running_var(c) == 1.0f);
  }
  nn::sequential m2 = m, m3 = m;
  train::init_parameters(m2, 123);
  train::init_parameters(m3, 124);
  const auto& fc2 = std::get<nn::linear>(m2[4]);
  const auto& fc3 = std::get<nn::linear>(m3[4]);
  bool same = true, differ = false;
  for (index_t i = 0; i < fc.weight.size(); ++i) {
    same = same && qlib_test::same_bits(fc.weight.data()[i], fc2.weight.data()[i]);
    differ = differ || fc.weight.data()[i] != fc3.weight.data()[i];
  }
  CHECK(same);
  CHECK(differ);
}

namespace {
// conv2d_backward of a random layer on a random [2, 7, 6, in] input, checked against finite
// differences, against the definition on every element (train_test_check_conv_grads_direct),
// without dx, and from the im2col matrix conv2d_forward_train keeps. Returns whether some
// output pixel's window lies entirely in the padding.
bool train_test_conv_backward_case(const char* name, index_t in, index_t out, const nn::conv2d_options& opt,
                                   bool bias) {
  INFO(name);
  nn::conv2d conv = make_conv(in, out, opt, bias);
  tensor<float, 4> x = rand_tensor({2, 7, 6, in});
  const linear_objective obj(conv.output_shape(x.shape()));
  tensor<float, 1> dw(extents<1>{conv.weight.size()}), db(extents<1>{conv.bias.size()});
  const tensor<float, 4> dx = train::conv2d_backward(conv, x.cview(), obj.r.cview(), dw.view(), db.view());
  // Every element of dx and dw against the sums of the definition (finite differences
  // below sample only some): a padding-only window scattered onto the input shows here.
  train_test_check_conv_grads_direct(conv, x, obj.r, dw, dx);
  auto f = [&] { return obj(conv.forward(x.cview())); };
  check_gradient("dx", x.data(), dx.data(), x.size(), f);
  check_gradient("dw", conv.weight.data(), dw.data(), conv.weight.size(), f);
  if (bias) check_gradient("db", conv.bias.data(), db.data(), conv.bias.size(), f);
  // need_dx = false gives the same parameter gradients and no dx.
  tensor<float, 1> dw2(extents<1>{conv.weight.size()}), db2(extents<1>{conv.bias.size()});
  const tensor<float, 4> none = train::conv2d_backward(conv, x.cview(), obj.r.cview(), dw2.view(), db2.view(), false);
  CHECK(none.empty());
  CHECK(std::equal(dw.begin(), dw.end(), dw2.begin()));
  // The training forward (im2col kept for backward) computes the same convolution, and
  // the backward from the kept matrix the same gradients (up to the order of the sums).
  tensor<float, 2> cols;
  tensor<float, 4> y, dx3;
  train::conv2d_forward_train(conv, x.cview(), cols, y);
  REQUIRE(!cols.empty());
  const tensor<float, 4> yref = conv.forward(x.cview());
  REQUIRE(y.shape() == yref.shape());
  for (index_t i = 0; i < y.size(); ++i) REQUIRE(y.data()[i] == Approx(yref.data()[i]).margin(1e-5));
  tensor<float, 1> dw3(extents<1>{conv.weight.size()}), db3(extents<1>{conv.bias.size()});
  train::conv2d_backward(conv, x.cview(), cols, obj.r.cview(), dw3.view(), db3.view(), dx3);
  for (index_t i = 0; i < dw.size(); ++i) REQUIRE(dw3.data()[i] == Approx(dw.data()[i]).margin(1e-5));
  for (index_t i = 0; i < db.size(); ++i) REQUIRE(db3.data()[i] == db.data()[i]);
  REQUIRE(dx3.shape() == dx.shape());
  for (index_t i = 0; i < dx.size(); ++i) REQUIRE(dx3.data()[i] == dx.data()[i]);
  const nn::conv_geometry g = conv.geometry(x.shape());
  const std::vector<bool> h =
      qlib_test::padding_only_windows(7, opt.kernel_h, opt.stride_h, opt.pad_h, opt.dilation_h, g.out_h);
  const std::vector<bool> w =
      qlib_test::padding_only_windows(6, opt.kernel_w, opt.stride_w, opt.pad_w, opt.dilation_w, g.out_w);
  return std::count(h.begin(), h.end(), true) + std::count(w.begin(), w.end(), true) > 0;
}
}  // namespace

TEST_CASE("conv2d backward matches finite differences (stride, padding, dilation, groups, depthwise)",
          "[train][conv2d]") {
  struct conv_case {
    const char* name;
    index_t in, out;
    nn::conv2d_options opt;
    bool bias;
  };
  const conv_case cases[] = {
      {"3x3 valid", 3, 4, nn::conv2d_options::square(3), true},
      {"3x3 stride 2 pad 1", 3, 5, nn::conv2d_options::square(3, 2, 1), true},
      {"3x2 stride (2,1) pad (2,1) dilation (2,1)", 2, 3, {3, 2, 2, 1, 2, 1, 2, 1, 1}, true},
      {"1x1 no bias", 4, 3, nn::conv2d_options::square(1), false},
      {"groups 2", 4, 6, nn::conv2d_options::square(3, 1, 1, 1, 2), true},
      {"depthwise", 3, 3, nn::conv2d_options::square(3, 1, 1, 1, 3), true},
      {"depthwise multiplier 2, stride 2", 3, 6, nn::conv2d_options::square(3, 2, 1, 1, 3), false},
  };
  for (const conv_case& cc : cases) CHECK(!train_test_conv_backward_case(cc.name, cc.in, cc.out, cc.opt, cc.bias));
}

TEST_CASE("linear backward matches finite differences", "[train][linear]") {
  for (bool bias : {true, false}) {
    nn::linear fc(5, 4, bias);
    for (float& v : fc.weight) v = rand_float(-1, 1);
    for (float& v : fc.bias) v = rand_float(-1, 1);
    tensor<float, 4> x = rand_tensor({3, 1, 1, 5});
    const linear_objective obj({3, 1, 1, 4});
    tensor<float, 1> dw(extents<1>{fc.weight.size()}), db(extents<1>{fc.bias.size()});
    const tensor<float, 4> dx = train::linear_backward(fc, x.cview(), obj.r.cview(), dw.view(), db.view());
    auto f = [&] { return obj(fc.forward(x.cview())); };
    check_gradient("dx", x.data(), dx.data(), x.size(), f);
    check_gradient("dw", fc.weight.data(), dw.data(), fc.weight.size(), f);
    if (bias) check_gradient("db", fc.bias.data(), db.data(), fc.bias.size(), f);
  }
}

TEST_CASE("batch_norm2d training backward matches finite differences; running stats follow PyTorch",
          "[train][batch_norm]") {
  nn::batch_norm2d bn(4);
  for (index_t c = 0; c < 4; ++c) {
    bn.weight(c) = rand_float(0.5f, 1.5f);
    bn.bias(c) = rand_float(-0.5f, 0.5f);
  }
  tensor<float, 4> x = rand_tensor({2, 3, 3, 4}, -2.0f, 3.0f);
  const linear_objective obj(x.shape());
  train::batch_norm_cache cache;
  const nn::batch_norm2d before = bn;
  const tensor<float, 4> y = train::batch_norm_forward_train(bn, x.cview(), cache);
  // Running statistics: running = 0.9 running + 0.1 batch, unbiased variance.
  for (index_t c = 0; c < 4; ++c) {
    double mean = 0.0, var = 0.0;
    for (index_t p = 0; p < 18; ++p) mean += x.data()[p * 4 + c];
    mean /= 18;
    for (index_t p = 0; p < 18; ++p) var += (x.data()[p * 4 + c] - mean) * (x.data()[p * 4 + c] - mean);
    CHECK(bn.running_mean(c) == Approx(0.9 * before.running_mean(c) + 0.1 * mean).epsilon(1e-5));
    CHECK(bn.running_var(c) == Approx(0.9 * before.running_var(c) + 0.1 * var / 17).epsilon(1e-5));
    // The output is normalized with the biased batch variance.
    const double yp = (x.data()[c] - mean) / std::sqrt(var / 18 + bn.eps) * bn.weight(c) + bn.bias(c);
    CHECK(y.data()[c] == Approx(yp).epsilon(1e-4));
  }
  tensor<float, 1> dg(extents<1>{4}), dbeta(extents<1>{4});
  const tensor<float, 4> dx = train::batch_norm_backward(bn, cache, obj.r.cview(), dg.view(), dbeta.view());
  auto f = [&] {
    train::batch_norm_cache c2;
    return obj(train::batch_norm_forward_train(bn, x.cview(), c2, false));
  };
  check_gradient("dx", x.data(), dx.data(), x.size(), f, 36);
  check_gradient("dgamma", bn.weight.data(), dg.data(), 4, f);
  check_gradient("dbeta", bn.bias.data(), dbeta.data(), 4, f);
  // A batch of one value per channel has no variance to train with.
  nn::batch_norm2d one(4);
  train::batch_norm_cache c1;
  QLIB_REQUIRE_ERROR(train::batch_norm_forward_train(one, tensor<float, 4>(extents<4>{1, 1, 1, 4}).cview(), c1),
                     errc::invalid_argument);
}

TEST_CASE("relu and relu6 backward pass the gradient inside the linear range only", "[train][activation]") {
  tensor<float, 4> x({2, 3, 3, 5});
  // Away from the kinks at 0 and 6 by construction.
  const float pool[] = {-2.0f, -0.3f, 0.2f, 1.5f, 4.0f, 5.5f, 6.5f, 9.0f};
  for (float& v : x) v = pool[rand_int(0, 7)] + rand_float(-0.05f, 0.05f);
  const linear_objective obj(x.shape());
  const tensor<float, 4> d1 = train::activation_backward(nn::relu{}, x.cview(), obj.r.cview());
  const tensor<float, 4> d6 = train::activation_backward(nn::relu6{}, x.cview(), obj.r.cview());
  check_gradient("relu", x.data(), d1.data(), x.size(), [&] { return obj(nn::apply_activation(nn::relu{}, x.cview())); },
                 90);
  check_gradient("relu6", x.data(), d6.data(), x.size(),
                 [&] { return obj(nn::apply_activation(nn::relu6{}, x.cview())); }, 90);
  // The exact rule, including PyTorch's zero gradient at the kinks themselves.
  tensor<float, 4> k({1, 1, 1, 4});
  k(0, 0, 0, 0) = 0.0f;
  k(0, 0, 0, 1) = 6.0f;
  k(0, 0, 0, 2) = 3.0f;
  k(0, 0, 0, 3) = -1.0f;
  const tensor<float, 4> ones({1, 1, 1, 4}, 1.0f);
  const auto r = train::activation_backward(nn::relu{}, k.cview(), ones.cview());
  const auto r6 = train::activation_backward(nn::relu6{}, k.cview(), ones.cview());
  CHECK(r(0, 0, 0, 0) == 0.0f);
  CHECK(r(0, 0, 0, 1) == 1.0f);
  CHECK(r6(0, 0, 0, 1) == 0.0f);
  CHECK(r6(0, 0, 0, 2) == 1.0f);
  CHECK(r6(0, 0, 0, 3) == 0.0f);
}

TEST_CASE("max and average pooling backward match finite differences", "[train][pooling]") {
  const nn::conv2d_options windows[] = {nn::conv2d_options::square(2, 2), nn::conv2d_options::square(3, 2, 1),
                                        {3, 2, 1, 2, 1, 0, 1, 1, 1}, nn::conv2d_options::square(2, 1, 0, 2)};
  for (const auto& w : windows) {
    INFO(w.describe());
    // Distinct values 0.01 apart: a 1e-3 step never changes a window's maximum.
    tensor<float, 4> x({2, 6, 5, 3});
    std::vector<index_t> perm = [&] {
      train::rng g(static_cast<std::uint64_t>(rand_int(0, 1000)));
      return train::shuffled_indices(x.size(), g);
    }();
    for (index_t i = 0; i < x.size(); ++i) x.data()[i] = 0.01f * static_cast<float>(perm[static_cast<std::size_t>(i)]) - 1.0f;
    const nn::max_pool2d mp{w};
    std::vector<std::int32_t> argmax;
    const tensor<float, 4> y = train::max_pool_forward_train(mp, x.cview(), argmax);
    const tensor<float, 4> yref = nn::pool(mp, x.cview());
    REQUIRE(y.shape() == yref.shape());
    CHECK(std::equal(y.begin(), y.end(), yref.begin()));
    const linear_objective obj(y.shape());
    const tensor<float, 4> dx = train::max_pool_backward(mp, x.shape(), argmax, obj.r.cview());
    check_gradient("max", x.data(), dx.data(), x.size(), [&] { return obj(nn::pool(mp, x.cview())); }, 48);
    for (bool include_pad : {true, false}) {
      const nn::avg_pool2d ap{w, include_pad};
      const tensor<float, 4> da = train::avg_pool_backward(ap, x.shape(), obj.r.cview());
      check_gradient("avg", x.data(), da.data(), x.size(), [&] { return obj(nn::pool(ap, x.cview())); }, 48);
    }
  }
}

// Convolutions accept padding of a whole window or more; pooling, whose windows would then
// hold no input, keeps refusing it in training too.
TEST_CASE("training pooling refuses padding of a whole window or more", "[train][pooling][errors]") {
  const tensor<float, 4> x(extents<4>{2, 6, 5, 3}, 0.5f);  // constant: no draw from the shared generator
  // pad == window, pad > window on one axis, pad == the dilated window (2 taps, dilation 3)
  for (const nn::conv2d_options& w : {nn::conv2d_options::square(2, 2, 2),
                                      nn::conv2d_options{3, 1, 1, 1, 4, 0, 1, 1, 1},
                                      nn::conv2d_options{2, 2, 1, 1, 0, 4, 1, 3, 1}}) {
    INFO(w.describe());
    const nn::max_pool2d mp{w};
    std::vector<std::int32_t> argmax;
    QLIB_REQUIRE_ERROR(train::max_pool_forward_train(mp, x.cview(), argmax), errc::invalid_argument);
    const tensor<float, 4> dy(extents<4>{2, 3, 3, 3}, 1.0f);  // any shape: the window is refused first
    QLIB_REQUIRE_ERROR(train::max_pool_backward(mp, x.shape(), argmax, dy.cview()), errc::invalid_argument);
    for (bool include_pad : {true, false})
      QLIB_REQUIRE_ERROR(train::avg_pool_backward(nn::avg_pool2d{w, include_pad}, x.shape(), dy.cview()),
                         errc::invalid_argument);
  }
}

namespace {
// conv-bn-relu-maxpool-conv-bn-relu6-avgpool-flatten-linear on [2, 8, 8, 2].
nn::sequential small_cnn(std::uint64_t seed) {
  nn::sequential m{nn::conv2d(2, 4, nn::conv2d_options::square(3, 1, 1)),
                   nn::batch_norm2d(4),
                   nn::relu{},
                   nn::max_pool2d::square(2),
                   nn::conv2d(4, 6, nn::conv2d_options::square(3, 1, 1, 1, 2)),
                   nn::batch_norm2d(6),
                   nn::relu6{},
                   nn::avg_pool2d::square(2),
                   nn::flatten{},
                   nn::linear(24, 5)};
  train::init_parameters(m, seed);
  return m;
}

// The decisions of a training forward (ReLU input signs and ranges, max-pool argmax).
std::vector<index_t> decisions(const nn::sequential& m, const train::forward_cache& c) {
  std::vector<index_t> d;
  for (std::size_t i = 0; i < m.size(); ++i) {
    if (std::holds_alternative<nn::relu>(m[i]) || std::holds_alternative<nn::relu6>(m[i]))
      for (float v : c.layers[i].output) d.push_back((v > 0.0f) + 2 * (v < 6.0f));  // same sides as the input
    d.insert(d.end(), c.layers[i].argmax.begin(), c.layers[i].argmax.end());
  }
  return d;
}

double ce_loss_double(tensor_view<const float, 4> logits, const std::vector<std::int32_t>& labels) {
  double total = 0.0;
  const index_t n = logits.shape(0), k = logits.shape(3);
  for (index_t i = 0; i < n; ++i) {
    double s = 0.0;
    for (index_t j = 0; j < k; ++j) s += std::exp(static_cast<double>(logits(i, 0, 0, j)));
    total += std::log(s) - logits(i, 0, 0, labels[static_cast<std::size_t>(i)]);
  }
  return total / static_cast<double>(n);
}
}  // namespace

TEST_CASE("whole-model gradients (conv-bn-relu-pool-conv-bn-relu6-avgpool-flatten-linear) match finite differences",
          "[train][model]") {
  // Its own random stream: which sampled coordinates sit next to a ReLU/max-pool kink must
  // not depend on how many numbers the tests before it drew.
  qlib_test::rng().seed(452);
  nn::sequential m = small_cnn(5);
  tensor<float, 4> x = rand_tensor({3, 8, 8, 2});
  const std::vector<std::int32_t> labels{1, 4, 0};
  train::forward_cache cache;
  const tensor<float, 4> logits(train::forward_train(m, x.cview(), cache, false));
  const auto loss = train::softmax_cross_entropy(logits.cview(), train::view_of(labels));
  CHECK(loss.loss == Approx(ce_loss_double(logits.cview(), labels)).epsilon(1e-5));
  train::gradients g = train::make_gradients(m);
  const tensor<float, 4> dx(train::backward(m, cache, loss.grad.cview(), g, true));
  REQUIRE(dx.shape() == x.shape());
  const std::vector<index_t> base = decisions(m, cache);
  train::forward_cache probe;
  auto f = [&] { return ce_loss_double(train::forward_train(m, x.cview(), probe, false), labels); };
  auto kink = [&] { return decisions(m, probe) != base; };
  check_gradient("dx", x.data(), dx.data(), x.size(), f, 24, 1e-3f, kink);
  for (const train::parameter& p : train::parameters(m, g)) {
    // A convolution bias right before batch_norm2d cancels in the batch mean: its true
    // gradient is 0 and finite differences only see rounding.
    const std::size_t layer = std::stoul(p.name);
    if (p.name.find(".bias") != std::string::npos && layer + 1 < m.size() &&
        std::holds_alternative<nn::batch_norm2d>(m[layer + 1])) {
      INFO(p.name);
      for (index_t i = 0; i < p.size; ++i) CHECK(std::abs(p.grad[i]) < 1e-6f);
      continue;
    }
    check_gradient(p.name.c_str(), p.value, p.grad, p.size, f, 12, 1e-3f, kink);
  }
}

TEST_CASE("softmax cross-entropy: value and gradient vs the direct formula, stability, errors", "[train][loss]") {
  tensor<float, 2> z({4, 3});
  for (float& v : z) v = rand_float(-3, 3);
  z(3, 0) = 1000.0f;  // log-sum-exp must not overflow
  z(3, 1) = -1000.0f;
  const std::vector<std::int32_t> y{0, 2, 1, 0};
  const auto r = train::softmax_cross_entropy(z.cview(), train::view_of(y));
  double loss = 0.0;
  for (index_t i = 0; i < 4; ++i) {
    const double m = std::max({z(i, 0), z(i, 1), z(i, 2)});
    double s = 0.0;
    for (index_t j = 0; j < 3; ++j) s += std::exp(z(i, j) - m);
    loss += -(z(i, y[static_cast<std::size_t>(i)]) - m - std::log(s));
    double row = 0.0;
    for (index_t j = 0; j < 3; ++j) {
      const double p = std::exp(z(i, j) - m) / s;
      CHECK(r.grad(i, j) == Approx((p - (j == y[static_cast<std::size_t>(i)])) / 4).margin(1e-7));
      row += r.grad(i, j);
    }
    CHECK(row == Approx(0.0).margin(1e-7));
  }
  CHECK(std::isfinite(r.loss));
  CHECK(r.loss == Approx(loss / 4).epsilon(1e-6));
  index_t correct = 0;
  for (index_t i = 0; i < 4; ++i) {
    index_t best = 0;
    for (index_t j = 1; j < 3; ++j)
      if (z(i, j) > z(i, best)) best = j;
    correct += best == y[static_cast<std::size_t>(i)];
  }
  CHECK(r.correct == correct);
  // [N,1,1,C] form gives the same numbers.
  const tensor<float, 4> z4(z.cview().reshape(extents<4>{4, 1, 1, 3}));
  const auto r4 = train::softmax_cross_entropy(z4.cview(), train::view_of(y));
  CHECK(qlib_test::same_bits(r4.loss, r.loss));
  CHECK(r4.grad.shape() == extents<4>{4, 1, 1, 3});
  CHECK(std::equal(r4.grad.begin(), r4.grad.end(), r.grad.begin()));

  const std::vector<std::int32_t> bad{0, 3, 1, 0}, negative{0, -1, 1, 0}, short_labels{0, 1};
  QLIB_REQUIRE_ERROR(train::softmax_cross_entropy(z.cview(), train::view_of(bad)), errc::out_of_range);
  QLIB_REQUIRE_ERROR(train::softmax_cross_entropy(z.cview(), train::view_of(negative)), errc::out_of_range);
  QLIB_REQUIRE_ERROR(train::softmax_cross_entropy(z.cview(), train::view_of(short_labels)), errc::shape_mismatch);
  tensor<float, 2> zn = z;
  zn(1, 1) = std::numeric_limits<float>::quiet_NaN();
  QLIB_REQUIRE_ERROR(train::softmax_cross_entropy(zn.cview(), train::view_of(y)), errc::non_finite);
  QLIB_REQUIRE_ERROR(train::softmax_cross_entropy(tensor<float, 4>(extents<4>{4, 2, 1, 3}).cview(), train::view_of(y)),
                     errc::shape_mismatch);
}

TEST_CASE("SGD and Adam steps follow PyTorch's formulas", "[train][optimizer]") {
  std::vector<float> w0{0.5f, -1.25f, 2.0f, 0.0f}, g1{0.1f, -0.4f, 1.5f, -2.0f}, g2{-0.3f, 0.2f, 0.7f, 1.0f};
  auto run = [&](auto& opt, std::vector<float>& w) {
    std::vector<float> g = g1;
    const std::vector<train::parameter> ps{{w.data(), g.data(), 4, "p"}};
    opt.step(ps);
    g = g2;
    opt.step(ps);
  };
  SECTION("SGD momentum, dampening, weight decay, Nesterov") {
    for (bool nesterov : {false, true}) {
      const float lr = 0.1f, mu = 0.9f, wd = 0.01f, damp = nesterov ? 0.0f : 0.2f;
      train::sgd opt({lr, mu, damp, wd, nesterov});
      std::vector<float> w = w0;
      run(opt, w);
      for (std::size_t i = 0; i < 4; ++i) {
        double wr = w0[i], buf = 0.0;
        for (int t = 0; t < 2; ++t) {
          double g = (t == 0 ? g1[i] : g2[i]) + wd * wr;
          buf = t == 0 ? g : mu * buf + (1 - damp) * g;
          wr -= lr * (nesterov ? g + mu * buf : buf);
        }
        CHECK(w[i] == Approx(wr).epsilon(1e-5).margin(1e-6));
      }
    }
    // Plain SGD: w - lr g.
    train::sgd plain({0.5f});
    std::vector<float> w = w0;
    std::vector<float> g = g1;
    plain.step({{w.data(), g.data(), 4, "p"}});
    for (std::size_t i = 0; i < 4; ++i) CHECK(w[i] == w0[i] - 0.5f * g1[i]);
  }
  SECTION("Adam with bias correction and L2 weight decay") {
    const float lr = 0.01f, b1 = 0.8f, b2 = 0.95f, eps = 1e-6f, wd = 0.1f;
    train::adam opt({lr, b1, b2, eps, wd});
    std::vector<float> w = w0;
    run(opt, w);
    CHECK(opt.steps() == 2);
    for (std::size_t i = 0; i < 4; ++i) {
      double wr = w0[i], m = 0.0, v = 0.0;
      for (int t = 1; t <= 2; ++t) {
        const double g = (t == 1 ? g1[i] : g2[i]) + wd * wr;
        m = b1 * m + (1 - b1) * g;
        v = b2 * v + (1 - b2) * g * g;
        const double mh = m / (1 - std::pow(b1, t)), vh = v / (1 - std::pow(b2, t));
        wr -= lr * mh / (std::sqrt(vh) + eps);
      }
      CHECK(w[i] == Approx(wr).epsilon(1e-5));
    }
    // The first Adam step moves every weight with a non-zero gradient by about lr.
    train::adam a1({0.01f});
    std::vector<float> w1 = w0, gg = g1;
    a1.step({{w1.data(), gg.data(), 4, "p"}});
    for (std::size_t i = 0; i < 4; ++i) CHECK(std::abs(w1[i] - w0[i]) == Approx(0.01).epsilon(1e-3));
  }
  SECTION("a parameter's lr_scale multiplies the learning rate: 1 changes nothing, 0.5 halves it, 0 freezes") {
    // Three copies of w0 in one list with lr_scale 1, 0.5 and 0, against optimizers at lr and lr / 2.
    auto check = [&](auto make) {
      auto opt = make(0.1f), ref = make(0.1f), half = make(0.05f);
      std::vector<float> wa = w0, wb = w0, wc = w0, ra = w0, rb = w0, g = g1;
      const std::vector<train::parameter> ps{{wa.data(), g.data(), 4, "a"},
                                             {wb.data(), g.data(), 4, "b", 0.5f},
                                             {wc.data(), g.data(), 4, "c", 0.0f}};
      for (int t = 0; t < 3; ++t) {
        g = t % 2 ? g2 : g1;
        opt.step(ps);
        ref.step({{ra.data(), g.data(), 4, "a"}});
        half.step({{rb.data(), g.data(), 4, "b"}});
      }
      for (std::size_t i = 0; i < 4; ++i) {
        CHECK(qlib_test::same_bits(wa[i], ra[i]));
        CHECK(qlib_test::same_bits(wb[i], rb[i]));
        CHECK(wc[i] == w0[i]);
      }
      std::vector<float> w = w0;
      auto bad = make(0.1f);
      QLIB_REQUIRE_ERROR(bad.step({{w.data(), g.data(), 4, "p", -1.0f}}), errc::invalid_argument);
      QLIB_REQUIRE_ERROR(bad.step({{w.data(), g.data(), 4, "p", std::numeric_limits<float>::infinity()}}),
                         errc::invalid_argument);
    };
    check([](float lr) { return train::sgd({lr, 0.9f}); });
    check([](float lr) { return train::adam({lr}); });
  }
  SECTION("bad options and changed parameter lists are refused") {
    QLIB_REQUIRE_ERROR(train::sgd({-0.1f}), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(train::sgd({0.1f, 0.0f, 0.0f, 0.0f, true}), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(train::adam({0.1f, 1.0f}), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(train::adam({std::numeric_limits<float>::quiet_NaN()}), errc::invalid_argument);
    train::adam opt;
    std::vector<float> w = w0, g = g1;
    opt.step({{w.data(), g.data(), 4, "p"}});
    QLIB_REQUIRE_ERROR(opt.step({{w.data(), g.data(), 3, "p"}}), errc::shape_mismatch);
  }
}

TEST_CASE("cosine schedule: warm-up, PyTorch's closed form, floor", "[train][schedule]") {
  const train::cosine_schedule s{0.1f, 100, 0.001f, 10};
  CHECK(s(0) == Approx(0.01));
  CHECK(s(9) == Approx(0.1));
  CHECK(s(10) == Approx(0.1));
  CHECK(s(55) == Approx(0.001 + 0.099 * 0.5));
  CHECK(s(100) == Approx(0.001));
  CHECK(s(1000) == Approx(0.001));
  for (index_t t = 11; t < 100; ++t) CHECK(s(t) < s(t - 1));
  QLIB_REQUIRE_ERROR(train::cosine_schedule({0.1f, 10, 0.0f, 10})(0), errc::invalid_argument);
}

TEST_CASE("training is deterministic: the same seed gives bit-identical weights", "[train][determinism]") {
  tensor<float, 4> x = rand_tensor({40, 8, 8, 2});
  std::vector<std::int32_t> y(40);
  for (auto& v : y) v = rand_int(0, 4);
  auto run = [&](std::uint64_t seed) {
    nn::sequential m = small_cnn(seed);
    train::adam opt({0.01f});
    train::epoch_options eo;
    eo.batch_size = 16;
    eo.seed = seed;
    for (index_t e = 0; e < 2; ++e) {
      eo.epoch = e;
      train::train_epoch(m, x.cview(), train::view_of(y), opt, eo);
    }
    return m;
  };
  const nn::sequential a = run(9), b = run(9), c = run(10);
  bool same = true, differ = false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (auto* ca = std::get_if<nn::conv2d>(&a[i])) {
      const auto& cb = std::get<nn::conv2d>(b[i]);
      const auto& cc = std::get<nn::conv2d>(c[i]);
      for (index_t k = 0; k < ca->weight.size(); ++k) {
        same = same && qlib_test::same_bits(ca->weight.data()[k], cb.weight.data()[k]);
        differ = differ || ca->weight.data()[k] != cc.weight.data()[k];
      }
    }
    if (auto* ba = std::get_if<nn::batch_norm2d>(&a[i])) {
      const auto& bb = std::get<nn::batch_norm2d>(b[i]);
      for (index_t k = 0; k < ba->channels(); ++k)
        same = same && qlib_test::same_bits(ba->running_var(k), bb.running_var(k)) &&
               qlib_test::same_bits(ba->weight(k), bb.weight(k));
    }
  }
  CHECK(same);
  CHECK(differ);
}

namespace {
// Every trainable value of a and b (weights, biases, BN affine) has the same bits.
bool same_parameters(nn::sequential& a, nn::sequential& b) {
  const train::gradients ga = train::make_gradients(a), gb = train::make_gradients(b);
  const std::vector<train::parameter> pa = train::parameters(a, ga), pb = train::parameters(b, gb);
  if (pa.size() != pb.size()) return false;
  for (std::size_t k = 0; k < pa.size(); ++k)
    for (index_t i = 0; i < pa[k].size; ++i)
      if (pa[k].size != pb[k].size || !qlib_test::same_bits(pa[k].value[i], pb[k].value[i])) return false;
  return true;
}
}  // namespace

TEST_CASE("augmentation: flip and shift of an image, reproducible draws; off leaves training as it was",
          "[train][augment]") {
  SECTION("flip_shift on a hand-made image") {
    // 3x4 pixels, 2 channels: channel 0 holds 10 h + w + 1, channel 1 the same + 100.
    auto image = [] {
      tensor<float, 3> t(extents<3>{3, 4, 2});
      for (index_t h = 0; h < 3; ++h)
        for (index_t w = 0; w < 4; ++w)
          for (index_t c = 0; c < 2; ++c) t(h, w, c) = static_cast<float>(10 * h + w + 1 + 100 * c);
      return t;
    };
    auto expect = [](const tensor<float, 3>& t, const std::vector<float>& ch0) {
      for (index_t h = 0; h < 3; ++h)
        for (index_t w = 0; w < 4; ++w) {
          const float v = ch0[static_cast<std::size_t>(h * 4 + w)];
          INFO("pixel " << h << ", " << w);
          CHECK(t(h, w, 0) == v);
          CHECK(t(h, w, 1) == (v == 0.0f ? 0.0f : v + 100.0f));
        }
    };
    tensor<float, 3> t = image();
    train::flip_shift(t.view(), false, 0, 0);
    expect(t, {1, 2, 3, 4, 11, 12, 13, 14, 21, 22, 23, 24});
    t = image();
    train::flip_shift(t.view(), true, 0, 0);
    expect(t, {4, 3, 2, 1, 14, 13, 12, 11, 24, 23, 22, 21});
    t = image();
    train::flip_shift(t.view(), false, 1, -2);  // down 1, left 2
    expect(t, {0, 0, 0, 0, 3, 4, 0, 0, 13, 14, 0, 0});
    t = image();
    train::flip_shift(t.view(), true, -1, 1);  // mirrored, then up 1, right 1
    expect(t, {0, 14, 13, 12, 0, 24, 23, 22, 0, 0, 0, 0});
    t = image();
    train::flip_shift(t.view(), false, 0, 4);  // moved out entirely
    expect(t, std::vector<float>(12, 0.0f));
  }
  SECTION("augment_batch draws flip, dy, dx per sample; the same seed gives the same batch") {
    const tensor<float, 4> x = rand_tensor({6, 5, 5, 1});
    const train::augmentation a{true, 2};
    auto augmented = [&](std::uint64_t seed) {
      tensor<float, 4> b(x);
      train::rng g(seed);
      train::augment_batch(b.view(), a, g);
      return b;
    };
    auto same = [](const tensor<float, 4>& p, const tensor<float, 4>& q) {
      for (index_t i = 0; i < p.size(); ++i)
        if (!qlib_test::same_bits(p.data()[i], q.data()[i])) return false;
      return true;
    };
    // By hand: the documented draws, sample by sample.
    tensor<float, 4> manual(x);
    train::rng g(5);
    int flips = 0, shifted = 0;
    for (index_t s = 0; s < 6; ++s) {
      const bool flip = g.below(2) == 1;
      const auto dy = static_cast<index_t>(g.below(5)) - 2, dx = static_cast<index_t>(g.below(5)) - 2;
      flips += flip ? 1 : 0;
      shifted += dy != 0 || dx != 0 ? 1 : 0;
      train::flip_shift(tensor_view<float, 3>(manual.data() + s * 25, {5, 5, 1}), flip, dy, dx);
    }
    CHECK(flips > 0);
    CHECK(shifted > 0);
    CHECK(same(augmented(5), manual));
    CHECK(same(augmented(5), augmented(5)));
    CHECK_FALSE(same(augmented(5), augmented(6)));
    CHECK_FALSE(same(augmented(5), x));
    // Off: nothing changes and nothing is drawn.
    tensor<float, 4> b(x);
    train::rng g0(5);
    train::augment_batch(b.view(), {}, g0);
    CHECK(same(b, x));
    CHECK(g0.next_u64() == train::rng(5).next_u64());
    train::rng g1(5);
    QLIB_REQUIRE_ERROR(train::augment_batch(b.view(), {false, -1}, g1), errc::invalid_argument);
  }
  SECTION("the epoch loop augments batch s of epoch e with augmentation_rng(seed, e, s)") {
    const tensor<float, 4> x = rand_tensor({10, 6, 6, 1});
    const std::vector<std::int32_t> y{0, 1, 2, 0, 1, 2, 0, 1, 2, 0};
    train::sgd opt;
    train::epoch_options eo;
    eo.batch_size = 4;
    eo.seed = 7;
    eo.epoch = 3;
    eo.augment = {true, 1};
    std::vector<tensor<float, 4>> seen;
    train::detail::run_epoch(x.cview(), train::view_of(y), opt, eo, {}, "test",
                             [&](const tensor<float, 4>& xb, const std::vector<std::int32_t>&,
                                 const std::vector<index_t>&, std::size_t, std::size_t) {
                               seen.push_back(xb);
                               return train::step_result{0.0f, 0, xb.shape(0)};
                             });
    REQUIRE(seen.size() == 3u);
    train::rng order_rng(7, 0x5eed000000000000ull + 3);
    const std::vector<index_t> order = train::shuffled_indices(10, order_rng);
    for (index_t s = 0; s < 3; ++s) {
      tensor<float, 4> xb;
      std::vector<std::int32_t> yb;
      train::detail::gather_batch(x.cview(), train::view_of(y), order, static_cast<std::size_t>(4 * s),
                                  std::min<std::size_t>(10, static_cast<std::size_t>(4 * s + 4)), xb, yb);
      train::rng g = train::augmentation_rng(7, 3, s);
      train::augment_batch(xb.view(), eo.augment, g);
      REQUIRE(xb.shape() == seen[static_cast<std::size_t>(s)].shape());
      for (index_t i = 0; i < xb.size(); ++i)
        CHECK(qlib_test::same_bits(xb.data()[i], seen[static_cast<std::size_t>(s)].data()[i]));
    }
    eo.augment.shift = -1;
    nn::sequential m{nn::flatten{}, nn::linear(36, 3)};
    QLIB_REQUIRE_ERROR(train::train_epoch(m, x.cview(), train::view_of(y), opt, eo), errc::invalid_argument);
  }
  SECTION("training: off gives the loop without augmentation bit for bit; on is reproducible per seed") {
    const tensor<float, 4> x = rand_tensor({40, 8, 8, 2});
    std::vector<std::int32_t> y(40);
    for (auto& v : y) v = rand_int(0, 4);
    auto run = [&](std::uint64_t seed, train::augmentation a) {
      nn::sequential m = small_cnn(3);
      train::adam opt({0.01f});
      train::epoch_options eo;
      eo.batch_size = 16;
      eo.seed = seed;
      eo.augment = a;
      for (index_t e = 0; e < 2; ++e) {
        eo.epoch = e;
        train::train_epoch(m, x.cview(), train::view_of(y), opt, eo);
      }
      return m;
    };
    // The loop as it was before augmentation existed: shuffle, gather, train_step.
    nn::sequential ref = small_cnn(3);
    train::adam opt({0.01f});
    train::workspace ws;
    for (index_t e = 0; e < 2; ++e) {
      train::rng g(4, 0x5eed000000000000ull + static_cast<std::uint64_t>(e));
      const std::vector<index_t> order = train::shuffled_indices(40, g);
      for (std::size_t b = 0; b < 40; b += 16) {
        tensor<float, 4> xb;
        std::vector<std::int32_t> yb;
        train::detail::gather_batch(x.cview(), train::view_of(y), order, b, std::min<std::size_t>(40, b + 16), xb, yb);
        train::train_step(ref, xb.cview(), train::view_of(yb), opt, ws);
      }
    }
    nn::sequential off = run(4, {});
    CHECK(same_parameters(off, ref));
    nn::sequential on1 = run(4, {true, 1}), on2 = run(4, {true, 1}), on3 = run(5, {true, 1}), off5 = run(5, {});
    CHECK(same_parameters(on1, on2));
    CHECK_FALSE(same_parameters(on1, off));
    CHECK_FALSE(same_parameters(on1, on3));
    CHECK_FALSE(same_parameters(on3, off5));
  }
}

TEST_CASE("a small CNN learns a separable problem; progress is reported every step", "[train][learn]") {
  // Class k in {0, 1, 2}: a bright 3x3 blob in a region chosen by k, on noise.
  const index_t n = 96;
  tensor<float, 4> x({n, 8, 8, 1});
  std::vector<std::int32_t> y(static_cast<std::size_t>(n));
  train::rng g(3);
  for (index_t i = 0; i < n; ++i) {
    const std::int32_t k = static_cast<std::int32_t>(i % 3);
    y[static_cast<std::size_t>(i)] = k;
    for (index_t h = 0; h < 8; ++h)
      for (index_t w = 0; w < 8; ++w) x(i, h, w, 0) = g.uniform(-0.3f, 0.3f);
    const index_t r0 = k == 2 ? 5 : 0, c0 = k == 1 ? 5 : 0;
    const index_t dr = static_cast<index_t>(g.below(2)), dc = static_cast<index_t>(g.below(2));
    for (index_t h = 0; h < 3; ++h)
      for (index_t w = 0; w < 3; ++w) x(i, std::min<index_t>(7, r0 + h + dr), std::min<index_t>(7, c0 + w + dc), 0) += 1.0f;
  }
  nn::sequential m{nn::conv2d(1, 4, nn::conv2d_options::square(3)), nn::batch_norm2d(4), nn::relu{},
                   nn::max_pool2d::square(2), nn::flatten{}, nn::linear(36, 3)};
  train::init_parameters(m, 1);
  const train::evaluation before = train::evaluate(m, x.cview(), train::view_of(y));
  train::adam opt({0.02f});
  std::vector<train::progress> seen;
  train::epoch_options eo;
  eo.batch_size = 16;
  eo.learning_rate = train::cosine_schedule{0.02f, 8 * 6, 0.002f, 0};
  for (index_t e = 0; e < 8; ++e) {
    eo.epoch = e;
    train::train_epoch(m, x.cview(), train::view_of(y), opt, eo, [&](const train::progress& p) { seen.push_back(p); });
  }
  const train::evaluation after = train::evaluate(m, x.cview(), train::view_of(y), 40);
  INFO("loss " << before.mean_loss << " -> " << after.mean_loss << ", accuracy " << before.accuracy << " -> "
               << after.accuracy);
  CHECK(after.mean_loss < 0.2 * before.mean_loss);
  CHECK(after.accuracy >= 0.95);
  CHECK(opt.lr() == Approx(train::cosine_schedule{0.02f, 48, 0.002f, 0}(47)));
  REQUIRE(seen.size() == 8u * 6u);
  for (std::size_t i = 0; i < seen.size(); ++i) {
    CHECK(seen[i].epoch == static_cast<index_t>(i / 6));
    CHECK(seen[i].step == static_cast<index_t>(i % 6));
    CHECK(seen[i].steps == 6);
    CHECK(seen[i].samples == static_cast<index_t>(16 * (i % 6 + 1)));
    CHECK(std::isfinite(seen[i].loss));
  }
  CHECK(seen.back().accuracy > seen.front().accuracy);
  // A last short batch is kept unless drop_last.
  eo.batch_size = 40;
  eo.learning_rate = nullptr;
  seen.clear();
  const auto r = train::train_epoch(m, x.cview(), train::view_of(y), opt, eo,
                                    [&](const train::progress& p) { seen.push_back(p); });
  CHECK(r.steps == 3);
  CHECK(r.samples == n);
  eo.drop_last = true;
  CHECK(train::train_epoch(m, x.cview(), train::view_of(y), opt, eo).samples == 80);
}

TEST_CASE("trainer errors: labels, shapes, batch size", "[train][errors]") {
  nn::sequential m{nn::conv2d(1, 2, nn::conv2d_options::square(3)), nn::flatten{}, nn::linear(2 * 4 * 4, 3)};
  train::init_parameters(m, 0);
  const tensor<float, 4> x = rand_tensor({4, 6, 6, 1});
  const std::vector<std::int32_t> ok{0, 1, 2, 0}, bad{0, 1, 3, 0}, short_labels{0, 1};
  train::sgd opt({0.1f});
  QLIB_REQUIRE_ERROR(train::train_step(m, x.cview(), train::view_of(bad), opt), errc::out_of_range);
  QLIB_REQUIRE_ERROR(train::train_step(m, x.cview(), train::view_of(short_labels), opt), errc::shape_mismatch);
  const tensor<float, 4> wrong = rand_tensor({4, 7, 7, 1});
  QLIB_REQUIRE_ERROR(train::train_step(m, wrong.cview(), train::view_of(ok), opt), errc::shape_mismatch);
  train::epoch_options eo;
  eo.batch_size = 0;
  QLIB_REQUIRE_ERROR(train::train_epoch(m, x.cview(), train::view_of(ok), opt, eo), errc::invalid_argument);
  // Backward pieces check the gradient shapes they are given.
  const auto& conv = std::get<nn::conv2d>(m[0]);
  tensor<float, 1> dw(extents<1>{conv.weight.size()}), db(extents<1>{conv.bias.size()}), dw_short(extents<1>{3});
  const tensor<float, 4> dy_wrong({4, 3, 3, 2}), dy({4, 4, 4, 2});
  QLIB_REQUIRE_ERROR(train::conv2d_backward(conv, x.cview(), dy_wrong.cview(), dw.view(), db.view()),
                     errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(train::conv2d_backward(conv, x.cview(), dy.cview(), dw_short.view(), db.view()),
                     errc::shape_mismatch);
  train::forward_cache cache;
  (void)train::forward_train(m, x.cview(), cache);
  train::gradients g = train::make_gradients(m);
  QLIB_REQUIRE_ERROR(train::backward(m, cache, dy.cview(), g), errc::shape_mismatch);
  // A valid step lowers the loss on this batch (SGD, small lr).
  const float l0 = train::train_step(m, x.cview(), train::view_of(ok), opt).loss;
  float l1 = l0;
  for (int i = 0; i < 5; ++i) l1 = train::train_step(m, x.cview(), train::view_of(ok), opt).loss;
  CHECK(l1 < l0);
}

// Timing of one training step of the Fashion-MNIST CNN at batch 64 (run with
// `test_train "[.bench]"`; not part of the default run).
TEST_CASE("benchmark: Fashion-MNIST CNN training step, batch 64", "[.bench]") {
  nn::sequential m{nn::conv2d(1, 16, nn::conv2d_options::square(3)),
                   nn::batch_norm2d(16),
                   nn::relu{},
                   nn::max_pool2d::square(2),
                   nn::conv2d(16, 32, nn::conv2d_options::square(3)),
                   nn::batch_norm2d(32),
                   nn::relu{},
                   nn::max_pool2d::square(2),
                   nn::flatten{},
                   nn::linear(800, 128),
                   nn::relu{},
                   nn::linear(128, 10)};
  train::init_parameters(m, 0);
  const tensor<float, 4> x = rand_tensor({64, 28, 28, 1}, 0.0f, 1.0f);
  std::vector<std::int32_t> y(64);
  for (auto& v : y) v = rand_int(0, 9);
  train::adam opt;
  train::workspace ws;
  train::train_step(m, x.cview(), train::view_of(y), opt, ws);
  const int iters = 10;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) train::train_step(m, x.cview(), train::view_of(y), opt, ws);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / iters;
  std::printf("train_step batch 64: %.2f ms (%.1f s per 60k-image epoch)\n", ms, ms * 60000.0 / 64.0 / 1000.0);
  // Where the time goes: forward alone, and each layer's backward.
  train::forward_cache cache;
  const auto t1 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) (void)train::forward_train(m, x.cview(), cache);
  std::printf("  forward_train: %.2f ms\n",
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count() / iters);
  CHECK(ms > 0.0);
}

// Padding of a whole window or more (PyTorch's semantics): the windows entirely in the
// padding give the bias, and their gradient reaches only db. (At the end of the file: the
// tests above draw from the shared generator and keep the values they drew before.)
TEST_CASE("conv2d backward with padding of a whole window or more", "[train][conv2d]") {
  CHECK(train_test_conv_backward_case("3x3 stride 2 pad 4", 3, 4, nn::conv2d_options::square(3, 2, 4), true));
  CHECK(train_test_conv_backward_case("1x1 pad (2, 1), no bias", 3, 2, {1, 1, 1, 1, 2, 1, 1, 1, 1}, false));
  CHECK(train_test_conv_backward_case("groups 2, 2x3 stride (1, 2) pad (3, 4)", 4, 2, {2, 3, 1, 2, 3, 4, 1, 1, 2},
                                      true));
  CHECK(train_test_conv_backward_case("depthwise 3x3 dilation (2, 1) pad (5, 3)", 3, 3, {3, 3, 1, 1, 5, 3, 2, 1, 3},
                                      true));
}
