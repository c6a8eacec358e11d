// Tests for quantization-aware training: STE mask on boundary values, LSQ gradients, observers, conversion agreement, learning, errors.
#include "qlib/nn.hpp"
#include "qlib/nn/quantized_reference.hpp"
#include "qlib/train.hpp"
#include "qlib/train/qat.hpp"
#include "qlib/train/qat_convert.hpp"
#include "test_util.hpp"

#include <cfenv>
#include <cmath>
#include <vector>

using namespace qlib;
using qlib_test::rand_float;
using qlib_test::rand_int;

namespace {

using qlib_test::rand_tensor;

// The STE definition written independently: the code in double with the C library's
// ties-to-even rounding, inside [qmin, qmax] inclusive.
bool ref_pass(float x, float scale, std::int32_t zp, std::int32_t qmin, std::int32_t qmax) {
  if (!std::isfinite(x)) return false;
  const double code = std::nearbyint(static_cast<double>(x) / scale) + zp;  // FE_TONEAREST: ties to even
  return code >= qmin && code <= qmax;
}
float ref_fake(float x, float scale, std::int32_t zp, std::int32_t qmin, std::int32_t qmax) {
  if (std::isnan(x)) return 0.0f;
  double code = std::nearbyint(static_cast<double>(x) / scale) + zp;
  code = std::min<double>(qmax, std::max<double>(qmin, code));
  return static_cast<float>((code - zp) * scale);
}

// conv-bn-relu-pool-conv-relu-pool-flatten-linear-relu-linear on [N, 12, 12, 2], random
// parameters and batch-norm statistics.
nn::sequential random_cnn(std::uint64_t seed, bool relu6 = false, bool avg = false) {
  nn::sequential m{nn::conv2d(2, 4, nn::conv2d_options::square(3, 1, 1)),
                   nn::batch_norm2d(4),
                   nn::relu{},
                   nn::max_pool2d::square(2),
                   nn::conv2d(4, 6, nn::conv2d_options::square(3)),
                   nn::relu{},
                   nn::max_pool2d::square(2),
                   nn::flatten{},
                   nn::linear(24, 10),
                   nn::relu{},
                   nn::linear(10, 5)};
  if (relu6) m[5] = nn::relu6{};
  if (avg) m[6] = nn::avg_pool2d::square(2);
  train::init_parameters(m, seed);
  auto& bn = std::get<nn::batch_norm2d>(m[1]);
  for (index_t c = 0; c < 4; ++c) {
    bn.weight(c) = rand_float(0.5f, 1.5f);
    bn.bias(c) = rand_float(-0.2f, 0.2f);
    bn.running_mean(c) = rand_float(-0.2f, 0.2f);
    bn.running_var(c) = rand_float(0.5f, 2.0f);
  }
  return m;
}

// A separable 3-class problem on [n, 12, 12, 2]: a bright blob whose place is the class.
void blob_problem(index_t n, tensor<float, 4>& x, std::vector<std::int32_t>& y, std::uint64_t seed) {
  x = tensor<float, 4>({n, 12, 12, 2});
  y.assign(static_cast<std::size_t>(n), 0);
  train::rng g(seed);
  for (index_t i = 0; i < n; ++i) {
    const std::int32_t k = static_cast<std::int32_t>(i % 3);
    y[static_cast<std::size_t>(i)] = k;
    for (index_t j = 0; j < 12 * 12 * 2; ++j) (&x(i, 0, 0, 0))[j] = g.uniform(-0.3f, 0.3f);
    const index_t r0 = k == 2 ? 7 : 1, c0 = k == 1 ? 7 : 1;
    for (index_t h = 0; h < 4; ++h)
      for (index_t w = 0; w < 4; ++w) x(i, r0 + h, c0 + w, static_cast<index_t>(k % 2)) += 1.0f;
  }
}

double dot_loss(const tensor_view<const float, 4>& y, const tensor<float, 4>& r) {
  double s = 0.0;
  for (index_t i = 0; i < r.size(); ++i) s += static_cast<double>(y.data()[i]) * r.data()[i];
  return s;
}

}  // namespace

TEST_CASE("STE mask and fake-quant forward on exact half steps and at qmin/qmax", "[qat][ste]") {
  REQUIRE(std::fegetround() == FE_TONEAREST);
  struct sc {
    std::int32_t qmin, qmax, zp;
  };
  // s8 restricted, s8 full, u8 zp 0, u8 zp 3, 4-bit signed restricted, 2-bit unsigned.
  const sc cases[] = {{-127, 127, 0}, {-128, 127, 0}, {0, 255, 0}, {0, 255, 3}, {-7, 7, 0}, {0, 3, 1}};
  const float scale = 0.5f;  // a power of two: x / scale and x * (1 / scale) are exact, so half steps are exact
  for (const sc& c : cases) {
    const quant_params p(granularity::per_tensor(), c.qmin, c.qmax, {scale}, {c.zp});
    std::vector<float> xs;
    for (std::int32_t end : {c.qmin, c.qmax})
      for (float off : {-1.5f, -1.0f, -0.5f, -0.25f, 0.0f, 0.25f, 0.5f, 1.0f, 1.5f})
        xs.push_back((static_cast<float>(end - c.zp) + off) * scale);
    xs.push_back(0.25f);  // a tie at 0.5 steps
    xs.push_back(0.75f);  // a tie at 1.5 steps
    xs.push_back(NAN);
    xs.push_back(INFINITY);
    xs.push_back(-INFINITY);
    const index_t n = static_cast<index_t>(xs.size());
    tensor<float, 2> y({1, n});
    train::fake_quant_forward(train::fq_view(xs.data(), {1, n}), y.view(), p);
    std::vector<float> dy(xs.size()), dx(xs.size());
    for (std::size_t i = 0; i < xs.size(); ++i) dy[i] = 1.0f + static_cast<float>(i);
    train::fake_quant_backward(train::fq_view(xs.data(), {1, n}), p, dy.data(), dx.data());
    for (std::size_t i = 0; i < xs.size(); ++i) {
      INFO("range [" << c.qmin << ", " << c.qmax << "] zp " << c.zp << " x " << xs[i]);
      if (std::isfinite(xs[i])) CHECK(y(0, static_cast<index_t>(i)) == ref_fake(xs[i], scale, c.zp, c.qmin, c.qmax));
      CHECK(dx[i] == (ref_pass(xs[i], scale, c.zp, c.qmin, c.qmax) ? dy[i] : 0.0f));
      CHECK(train::ste_pass(xs[i], 1.0f / scale, c.zp, c.qmin, c.qmax) == ref_pass(xs[i], scale, c.zp, c.qmin, c.qmax));
    }
  }
  // The documented cases, spelled out: a half step beyond an end passes iff the end
  // (relative to the zero point) is even.
  CHECK(train::ste_pass(63.5f, 2.0f, 0, -127, 127));     // 127: on qmax
  CHECK(!train::ste_pass(63.75f, 2.0f, 0, -127, 127));   // 127.5 -> 128
  CHECK(!train::ste_pass(-63.75f, 2.0f, 0, -127, 127));  // -127.5 -> -128
  CHECK(train::ste_pass(-64.25f, 2.0f, 0, -128, 127));   // -128.5 -> -128
  CHECK(train::ste_pass(-0.25f, 2.0f, 0, 0, 255));       // -0.5 -> 0
  CHECK(!train::ste_pass(127.75f, 2.0f, 0, 0, 255));     // 255.5 -> 256
  CHECK(!train::ste_pass(-0.75f, 2.0f, 0, 0, 255));      // -1.5 -> -2
  // Per channel: each row its own scale.
  const quant_params pc(granularity::per_channel(0), -7, 7, {0.5f, 0.25f}, {0, 0});
  const float xs2[] = {3.5f, 3.75f, 1.75f, 1.875f};  // row 0: 7, 7.5; row 1: 7, 7.5
  const float dy2[] = {1.0f, 1.0f, 1.0f, 1.0f};
  float dx2[4];
  train::fake_quant_backward(train::fq_view(xs2, {2, 2}), pc, dy2, dx2);
  CHECK(dx2[0] == 1.0f);
  CHECK(dx2[1] == 0.0f);  // 7.5 -> 8 (8 is even): cut
  CHECK(dx2[2] == 1.0f);
  CHECK(dx2[3] == 0.0f);
}

TEST_CASE("LSQ gradients: formulas on boundary values, finite differences where differentiable", "[qat][lsq]") {
  for (int bits : {2, 3, 4, 8}) {
    for (bool sym : {true, false}) {
      INFO("bits " << bits << (sym ? " symmetric" : " asymmetric"));
      const std::int32_t qmin = sym ? -(1 << (bits - 1)) + 1 : 0, qmax = sym ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
      const index_t rows = 3, inner = 40;
      std::vector<float> scales = {0.05f, 0.1f, 0.02f};
      std::vector<std::int32_t> zps = {sym ? 0 : qmax / 3, sym ? 0 : 0, sym ? 0 : qmax};
      const quant_params p(granularity::per_channel(0), qmin, qmax, scales, zps);
      std::vector<float> x(static_cast<std::size_t>(rows * inner)), dy(x.size()), dx(x.size());
      for (index_t c = 0; c < rows; ++c)
        for (index_t j = 0; j < inner; ++j) {
          const std::size_t i = static_cast<std::size_t>(c * inner + j);
          // Codes from below qmin to above qmax, with exact half steps mixed in.
          const float code = j % 4 == 0 ? static_cast<float>(rand_int(qmin - 2, qmax + 2)) + 0.5f
                                         : rand_float(static_cast<float>(qmin - 3), static_cast<float>(qmax + 3));
          x[i] = (code - static_cast<float>(zps[static_cast<std::size_t>(c)])) * scales[static_cast<std::size_t>(c)];
          dy[i] = rand_float(-1.0f, 1.0f);
        }
      std::vector<float> ds(3, 0.0f), dz(3, 0.0f);
      const float g = train::lsq_grad_scale(inner, qmax);
      CHECK(g == Approx(1.0 / std::sqrt(static_cast<double>(inner) * qmax)));
      train::lsq_backward(train::fq_view(x.data(), {rows, inner}), p, dy.data(), dx.data(), g, ds.data(), dz.data());
      for (index_t c = 0; c < rows; ++c) {
        const float s = scales[static_cast<std::size_t>(c)];
        const std::int32_t z = zps[static_cast<std::size_t>(c)];
        double rs = 0.0, rz = 0.0;
        for (index_t j = 0; j < inner; ++j) {
          const std::size_t i = static_cast<std::size_t>(c * inner + j);
          const double v = static_cast<double>(x[i] * (1.0f / s));
          const double code = std::nearbyint(v) + z;
          if (code < qmin) {
            rs += dy[i] * static_cast<double>(qmin - z);
            rz -= dy[i] * static_cast<double>(s);
            CHECK(dx[i] == 0.0f);
          } else if (code > qmax) {
            rs += dy[i] * static_cast<double>(qmax - z);
            rz -= dy[i] * static_cast<double>(s);
            CHECK(dx[i] == 0.0f);
          } else {
            rs += dy[i] * (std::nearbyint(v) - v);
            CHECK(dx[i] == dy[i]);
          }
        }
        CHECK(ds[static_cast<std::size_t>(c)] == Approx(rs * g).margin(1e-6));
        CHECK(dz[static_cast<std::size_t>(c)] == Approx(rz * g).margin(1e-6));
      }
      // Saturated region: y = (qmax - z) s or (qmin - z) s is linear in s and in z, so
      // the LSQ gradient is the true derivative there.
      const quant_params pt(granularity::per_tensor(), qmin, qmax, {0.01f}, {sym ? 0 : 1});
      std::vector<float> xsat(50);
      for (float& v : xsat) v = (rand_int(0, 1) ? 1.0f : -1.0f) * rand_float(2.0f * static_cast<float>(qmax), 4.0f * qmax);
      std::vector<float> c(xsat.size()), dxs(xsat.size());
      for (float& v : c) v = rand_float(-1.0f, 1.0f);
      float gs = 0.0f, gz = 0.0f;
      train::lsq_backward(train::fq_view(xsat.data(), {1, 50}), pt, c.data(), dxs.data(), 1.0f, &gs, &gz);
      auto loss = [&](float s, std::int32_t z) {
        tensor<float, 2> y({1, 50});
        const quant_params q(granularity::per_tensor(), qmin, qmax, {s}, {z});
        train::fake_quant_forward(train::fq_view(xsat.data(), {1, 50}), y.view(), q);
        double l = 0.0;
        for (index_t i = 0; i < 50; ++i) l += static_cast<double>(y(0, i)) * c[static_cast<std::size_t>(i)];
        return l;
      };
      const float h = 1e-3f;
      CHECK(gs == Approx((loss(0.01f + h, pt.zero_point[0]) - loss(0.01f - h, pt.zero_point[0])) / (2.0 * h)).epsilon(1e-3));
      if (!sym) {
        CHECK(gz == Approx((loss(0.01f, 2) - loss(0.01f, 0)) / 2.0).epsilon(1e-4));
      }
    }
  }
  QLIB_REQUIRE_ERROR(train::lsq_grad_scale(0, 127), errc::invalid_argument);
}

TEST_CASE("LSQ through a model: scale gradients match finite differences of the loss where it is smooth",
          "[qat][lsq]") {
  // Every weight of layer 4 saturates (tiny learned scale), the other quantizers are off:
  // the loss is then a smooth function of that layer's per-channel scales.
  nn::sequential m = random_cnn(11);
  train::qat_options o;
  o.lsq_weights = true;
  o.lsq_activations = true;
  train::qat_model q(m, o);
  const tensor<float, 4> x = rand_tensor({3, 12, 12, 2});
  train::qat_cache c;
  q.forward_train(x.cview(), c);  // initializes the LSQ parameters from the observers
  for (auto& a : q.activation_quantizers()) a.set_enabled(false);
  const std::size_t conv2 = 1;  // second weight quantizer: layer 3 of the folded model
  for (std::size_t k = 0; k < q.weight_quantizers().size(); ++k)
    if (k != conv2) q.weight_quantizers()[k].set_enabled(false);
  // Weights at least 1 from zero: with scales below 2e-3 every one is clamped (to
  // +/-127 s, the layer's output is of the size of its bias, so float noise stays small).
  for (float& w : std::get<nn::conv2d>(q.model()[3]).weight) w = w < 0.0f ? std::min(w, -1.0f) : std::max(w, 1.0f);
  std::vector<float>& sc = q.weight_quantizers()[conv2].learned_scale();
  REQUIRE(sc.size() == 6u);
  for (float& v : sc) v = rand_float(1e-3f, 2e-3f);
  const tensor<float, 4> r = rand_tensor({3, 1, 1, 5});
  train::gradients g = q.make_gradients();
  q.forward_train(x.cview(), c);
  q.backward(c, r.cview(), g);
  const std::vector<float> ds = q.weight_quantizers()[conv2].scale_grad();
  const index_t k = 3 * 3 * 4;
  const float gscale = train::lsq_grad_scale(k, 127);
  for (std::size_t o2 = 0; o2 < sc.size(); ++o2) {
    const float s0 = sc[o2], h = s0 * 1e-2f;
    sc[o2] = s0 + h;
    const double lp = dot_loss(q.forward_train(x.cview(), c), r);
    sc[o2] = s0 - h;
    const double lm = dot_loss(q.forward_train(x.cview(), c), r);
    sc[o2] = s0;
    INFO("channel " << o2);
    CHECK(ds[o2] / gscale == Approx((lp - lm) / (2.0 * h)).epsilon(2e-3).margin(1e-2));
  }
  // The parameter list has the LSQ scales after the model's tensors.
  const auto params = q.parameters(g);
  CHECK(params.size() == train::parameters(q.model(), g).size() + 4 + 4 + 4);  // 4 weight scales, 4 act scales and zero points
  bool found = false;
  for (const auto& p : params)
    if (p.name == "3.weight_fake_quant.scale") found = p.value == sc.data() && p.size == 6;
  CHECK(found);
}

TEST_CASE("observers update during training, follow their definition, and freeze", "[qat][observer]") {
  nn::sequential m = random_cnn(3);
  train::qat_model q(m);
  moving_average_minmax_observer ref(granularity::per_tensor(), 0.01f);
  train::qat_cache c;
  std::vector<tensor<float, 4>> batches;
  for (int b = 0; b < 3; ++b) batches.push_back(rand_tensor({4, 12, 12, 2}, -1.0f - b, 1.0f + 2 * b));
  for (const auto& b : batches) {
    q.forward_train(b.cview(), c);
    ref.observe(b.cview());
    const quant_params want = ref.params(schemes::u8_asymmetric);
    const quant_params& got = q.activation_quantizers()[0].params();
    CHECK(got.scale == want.scale);
    CHECK(got.zero_point == want.zero_point);
  }
  // Weights ("current"): the min/max of the weights of this step, per channel.
  const auto& conv = std::get<nn::conv2d>(q.model()[0]);
  const quant_params wp = choose_params(tensor_view<const float, 2>(conv.weight.data(), {4, 18}), schemes::s8_symmetric,
                                        granularity::per_channel(0));
  CHECK(q.weight_quantizers()[0].params().scale == wp.scale);
  // Frozen: a batch with a much wider range changes nothing.
  const quant_params before = q.activation_quantizers()[0].params();
  const quant_params before1 = q.activation_quantizers()[1].params();
  q.freeze_observers();
  const tensor<float, 4> wide = rand_tensor({4, 12, 12, 2}, -20.0f, 20.0f);
  q.forward_train(wide.cview(), c);
  CHECK(q.activation_quantizers()[0].params().scale == before.scale);
  CHECK(q.activation_quantizers()[1].params().scale == before1.scale);
  CHECK(!q.activation_quantizers()[0].observer_enabled());
  q.activation_quantizers()[0].unfreeze();
  q.forward_train(wide.cview(), c);
  CHECK(q.activation_quantizers()[0].params().scale[0] > before.scale[0]);

  // Histogram observers: the same parameters as a histogram_observer fed the same batches.
  train::qat_options ho;
  ho.activation_observer = train::qat_observer::histogram;
  train::qat_model qh(m, ho);
  histogram_observer href;
  for (const auto& b : batches) {
    qh.forward_train(b.cview(), c);
    href.observe(b.cview());
  }
  CHECK(qh.activation_quantizers()[0].params().scale == href.params(schemes::u8_asymmetric).scale);
}

TEST_CASE("conversion: the integer model equals the fake-quant model up to 1 code at rounding boundaries",
          "[qat][convert]") {
  struct variant {
    bool relu6, avg, lsq;
    affine_scheme<std::int8_t> w;
    bool per_channel;
  };
  const variant vs[] = {{false, false, false, schemes::s8_symmetric, true},
                        {true, true, false, schemes::s8_symmetric, false},
                        {false, false, true, schemes::s4_symmetric, true},
                        {false, true, true, schemes::s8_symmetric_full, true}};
  index_t samples = 0, agree = 0, codes = 0, diffs = 0;
  std::uint64_t seed = 100;
  for (const variant& v : vs) {
    for (int net = 0; net < 2; ++net) {
      INFO("variant relu6 " << v.relu6 << " avg " << v.avg << " lsq " << v.lsq << " bits " << v.w.bits << " net "
                            << net);
      nn::sequential m = random_cnn(++seed, v.relu6, v.avg);
      train::qat_options o;
      o.weight_scheme = v.w;
      o.per_channel_weights = v.per_channel;
      o.lsq_weights = o.lsq_activations = v.lsq;
      train::qat_model q(m, o);
      // A few SGD steps on random labels move weights, observers and LSQ parameters.
      train::sgd opt({1e-3f});
      train::qat_workspace ws;
      for (int s = 0; s < 3; ++s) {
        const tensor<float, 4> xb = rand_tensor({8, 12, 12, 2}, -1.0f, 1.5f);
        std::vector<std::int32_t> yb(8);
        for (auto& l : yb) l = rand_int(0, 4);
        train::train_step(q, xb.cview(), train::view_of(yb), opt, ws);
      }
      const nn::quantized_sequential qm = train::convert(q);
      REQUIRE(qm.layers.size() == q.steps().size());
      const tensor<float, 4> x = rand_tensor({16, 12, 12, 2}, -1.0f, 1.5f);

      // Step by step from the same input codes.
      nn::qactivation cur = qm.quantize_input(x.cview());
      for (std::size_t si = 0; si < q.steps().size(); ++si) {
        const train::qat_step& st = q.steps()[si];
        tensor<float, 4> deq(cur.values.shape());
        dequantize(cur.values.cview(), deq.view(),
                   quant_params::per_tensor(schemes::u8_asymmetric, cur.scale, cur.zero_point));
        const tensor<float, 4> fake = q.forward_steps(deq.cview(), si, si + 1);
        if (const auto* fc = std::get_if<nn::qlinear>(&qm.layers[si]); fc && fc->float_output) {
          const tensor<float, 4> logits = fc->forward_float(cur);
          float amax = 0.0f;
          for (float f : fake) amax = std::max(amax, std::fabs(f));
          for (index_t i = 0; i < logits.size(); ++i)
            CHECK(std::fabs(logits.data()[i] - fake.data()[i]) <= 1e-5f * std::max(1.0f, amax));
          continue;
        }
        const nn::qactivation next = qm.forward_layer(qm.layers[si], cur);
        REQUIRE(next.values.shape() == fake.shape());
        const float inv = 1.0f / next.scale;
        // The pre-quantization value of the fake model, for the differing codes.
        tensor<float, 4> pre;
        if (st.weight_q >= 0) {
          pre = nn::sequential::forward_layer(q.quantized_layer(si), deq.cview(), st.relu_hi < 0 ? -INFINITY : 0.0f,
                                              st.relu_hi > 0 ? st.relu_hi : INFINITY);
        }
        for (index_t i = 0; i < fake.size(); ++i) {
          const std::int32_t fq = static_cast<std::int32_t>(round_half_even(fake.data()[i] * inv)) + next.zero_point;
          const std::int32_t iq = next.values.data()[i];
          ++codes;
          if (fq == iq) continue;
          ++diffs;
          CHECK(std::abs(fq - iq) == 1);
          if (st.weight_q >= 0) {
            // Only where the value is a hair from a half step (or ReLU6's top).
            const float v = pre.data()[i] * inv;
            const bool near_half = std::fabs(v - std::floor(v) - 0.5f) < 1e-3f;
            const bool near_top = st.relu_hi > 0 && std::fabs(st.relu_hi * inv - v) < 1e-3f;
            CHECK((near_half || near_top));
          } else {
            CHECK(st.requantize);  // avg pooling ties
          }
        }
        cur = next;
      }
      // End to end: the same predictions except where a 1-code difference decides a near tie.
      const tensor<float, 4> li = qm.forward(x.cview()), lf = q.forward(x.cview());
      for (index_t n = 0; n < x.shape(0); ++n) {
        index_t ai = 0, af = 0;
        for (index_t k = 1; k < 5; ++k) {
          if (li(n, 0, 0, k) > li(n, 0, 0, ai)) ai = k;
          if (lf(n, 0, 0, k) > lf(n, 0, 0, af)) af = k;
        }
        ++samples;
        agree += ai == af ? 1 : 0;
      }
      // The reference integer model agrees with the fast one bit for bit.
      const tensor<float, 4> lr = nn::reference::forward(qm, x.cview());
      for (index_t i = 0; i < li.size(); ++i) CHECK(qlib_test::same_bits(li.data()[i], lr.data()[i]));
    }
  }
  INFO("codes " << codes << ", differing " << diffs << "; samples " << samples << ", same prediction " << agree);
  CHECK(diffs * 200 <= codes);  // rare: only at rounding boundaries
  CHECK(agree * 100 >= samples * 95);
}

TEST_CASE("conversion: linear layers pruned 2:4 get their N:M form (qlinear::prepare)", "[qat][convert][sparse]") {
  nn::sequential m = random_cnn(7);
  for (nn::layer& l : m.layers)
    if (auto* fc = std::get_if<nn::linear>(&l))
      for (index_t o = 0; o < fc->out_features(); ++o)
        for (index_t i = 0; i < fc->in_features(); ++i)
          if (i % 4 >= 2) fc->weight(o, i) = 0.0f;
  train::qat_model q(m);
  train::sgd opt({1e-12f});  // one step for the observers; the zeros stay far below half a code
  train::qat_workspace ws;
  const tensor<float, 4> xb = rand_tensor({8, 12, 12, 2}, -1.0f, 1.5f);
  std::vector<std::int32_t> yb(8);
  for (auto& l : yb) l = rand_int(0, 4);
  train::train_step(q, xb.cview(), train::view_of(yb), opt, ws);
  const nn::quantized_sequential qm = train::convert(q);
  index_t sparse = 0;
  for (const nn::qlayer& l : qm.layers)
    if (const auto* fc = std::get_if<nn::qlinear>(&l)) {
      REQUIRE(fc->nm);
      CHECK(fc->nm->keep() == 2);
      ++sparse;
    }
  CHECK(sparse == 2);
}

TEST_CASE("QAT training steps reduce the loss (STE, LSQ, 4-bit weights, BN trained then folded)", "[qat][learn]") {
  tensor<float, 4> x;
  std::vector<std::int32_t> y;
  blob_problem(96, x, y, 5);
  nn::sequential m{nn::conv2d(2, 4, nn::conv2d_options::square(3, 1, 1)),
                   nn::batch_norm2d(4),
                   nn::relu{},
                   nn::max_pool2d::square(4),
                   nn::flatten{},
                   nn::linear(36, 3)};
  train::init_parameters(m, 2);
  struct cfg {
    bool lsq, fold;
    affine_scheme<std::int8_t> w;
  };
  for (const cfg& cf : {cfg{false, true, schemes::s8_symmetric}, cfg{true, true, schemes::s4_symmetric},
                        cfg{false, false, schemes::s4_symmetric}}) {
    INFO("lsq " << cf.lsq << " fold " << cf.fold << " bits " << cf.w.bits);
    train::qat_options o;
    o.lsq_weights = o.lsq_activations = cf.lsq;
    o.fold_batch_norm = cf.fold;
    o.weight_scheme = cf.w;
    train::qat_model q(m, o);
    CHECK(q.has_batch_norm() == !cf.fold);
    train::sgd opt({0.05f, 0.9f});
    train::epoch_options eo;
    eo.batch_size = 16;
    std::vector<double> losses;
    for (index_t e = 0; e < 6; ++e) {
      eo.epoch = e;
      losses.push_back(train::train_epoch(q, x.cview(), train::view_of(y), opt, eo).mean_loss);
    }
    if (!cf.fold) {
      QLIB_REQUIRE_ERROR(train::convert(q), errc::unsupported);
      q.freeze_bn();
      CHECK(!q.has_batch_norm());
      train::sgd opt2({0.01f, 0.9f});  // the parameter list changed
      train::train_epoch(q, x.cview(), train::view_of(y), opt2, eo);
    }
    INFO("loss " << losses.front() << " -> " << losses.back());
    CHECK(losses.back() < 0.5 * losses.front());
    const train::evaluation ev = train::evaluate(q, x.cview(), train::view_of(y));
    CHECK(ev.accuracy >= 0.9);
    // The converted model predicts as the fake-quant model did.
    const nn::quantized_sequential qm = train::convert(q);
    const tensor<float, 4> li = qm.forward(x.cview());
    index_t correct = 0;
    for (index_t n = 0; n < x.shape(0); ++n) {
      index_t a = 0;
      for (index_t k = 1; k < 3; ++k)
        if (li(n, 0, 0, k) > li(n, 0, 0, a)) a = k;
      correct += a == y[static_cast<std::size_t>(n)] ? 1 : 0;
    }
    CHECK(std::abs(static_cast<double>(correct) / 96.0 - ev.accuracy) <= 0.03);
  }
}

TEST_CASE("LSQ parameters have their own learning rate (qat_options::lsq_lr_scale)", "[qat][lsq]") {
  tensor<float, 4> x;
  std::vector<std::int32_t> y;
  blob_problem(32, x, y, 3);
  const nn::sequential m = random_cnn(4);
  train::qat_options o;
  o.lsq_weights = o.lsq_activations = true;
  o.weight_scheme = schemes::s4_symmetric;
  o.lsq_lr_scale = 0.25f;
  train::qat_model q(m, o);
  train::qat_workspace ws;
  train::adam opt;
  train::train_step(q, x.cview(), train::view_of(y), opt, ws);  // the LSQ parameters exist after a batch
  int lsq = 0;
  for (const train::parameter& p : q.parameters(ws.grads)) {
    const bool is_lsq = p.name.find(".scale") != std::string::npos || p.name.find(".zero_point") != std::string::npos;
    INFO(p.name);
    CHECK(p.lr_scale == (is_lsq ? 0.25f : 1.0f));
    lsq += is_lsq ? 1 : 0;
  }
  CHECK(lsq == 4 + 4 + 4);  // 4 weight scales; 4 activation points, each scale and zero point
  // lr_scale 0: the learned values stay where the first batch put them while the weights
  // train; lr_scale 1 (the default) moves them.
  for (const float lr_scale : {0.0f, 1.0f}) {
    o.lsq_lr_scale = lr_scale;
    train::qat_model t(m, o);
    train::qat_workspace tws;
    train::adam topt({0.01f});
    train::train_step(t, x.cview(), train::view_of(y), topt, tws);
    const std::vector<float> act = t.activation_quantizers()[1].learned_scale();
    const std::vector<float> zp = t.activation_quantizers()[1].learned_zero_point();
    const std::vector<float> w = t.weight_quantizers()[0].learned_scale();
    const float weight = std::get<nn::conv2d>(t.model()[0]).weight.data()[0];
    for (int i = 0; i < 4; ++i) train::train_step(t, x.cview(), train::view_of(y), topt, tws);
    INFO("lr_scale " << lr_scale);
    CHECK((t.activation_quantizers()[1].learned_scale() == act) == (lr_scale == 0.0f));
    CHECK((t.weight_quantizers()[0].learned_scale() == w) == (lr_scale == 0.0f));
    if (lr_scale == 0.0f) CHECK(t.activation_quantizers()[1].learned_zero_point() == zp);
    CHECK(std::get<nn::conv2d>(t.model()[0]).weight.data()[0] != weight);
  }
}

TEST_CASE("QAT errors", "[qat][errors]") {
  nn::sequential m = random_cnn(7);
  train::qat_model q(m);
  QLIB_REQUIRE_ERROR(train::convert(q), errc::empty_tensor);  // no batch observed
  QLIB_REQUIRE_ERROR(q.forward(rand_tensor({1, 12, 12, 2}).cview()), errc::empty_tensor);
  QLIB_REQUIRE_ERROR(q.forward_steps(rand_tensor({1, 12, 12, 2}).cview(), 2, 1), errc::out_of_range);
  train::qat_cache c;
  QLIB_REQUIRE_ERROR(q.forward_train(rand_tensor({1, 12, 12, 3}).cview(), c), errc::shape_mismatch);
  // A ReLU with no conv/linear before it has no int8 form.
  QLIB_REQUIRE_ERROR(train::qat_model(nn::sequential{nn::relu{}, nn::flatten{}}), errc::unsupported);
  // Bad bit widths.
  train::qat_options o;
  o.weight_scheme.bits = 1;
  QLIB_REQUIRE_ERROR(train::qat_model(m, o), errc::invalid_argument);
  // Backward with a cache from another model, and mismatched gradients.
  train::gradients g = q.make_gradients();
  QLIB_REQUIRE_ERROR(q.backward(c, rand_tensor({1, 1, 1, 5}).cview(), g), errc::shape_mismatch);
  // A non-finite learned scale.
  train::qat_options lo;
  lo.lsq_activations = true;
  train::qat_model ql(m, lo);
  const tensor<float, 4> x = rand_tensor({2, 12, 12, 2});
  ql.forward_train(x.cview(), c);
  ql.activation_quantizers()[1].learned_scale()[0] = NAN;
  QLIB_REQUIRE_ERROR(ql.forward_train(x.cview(), c), errc::non_finite);
  // The integer model reads 8-bit input codes.
  train::qat_options a4;
  a4.activation_scheme = affine_scheme<std::uint8_t>{symmetry::asymmetric, 4, int_range::full};
  train::qat_model q4(m, a4);
  q4.forward_train(x.cview(), c);
  QLIB_REQUIRE_ERROR(train::convert(q4), errc::unsupported);
  // Disabled quantizers cannot be converted.
  q.forward_train(x.cview(), c);
  q.weight_quantizers()[0].set_enabled(false);
  QLIB_REQUIRE_ERROR(train::convert(q), errc::unsupported);
  // fake_quant shapes.
  const quant_params p(granularity::per_channel(0), -127, 127, {1.0f, 1.0f}, {0, 0});
  tensor<float, 2> a({3, 4}), b({3, 4});
  QLIB_REQUIRE_ERROR(train::fake_quant_forward(a.cview(), b.view(), p), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(train::fake_quant_forward(a.cview(), tensor<float, 2>({3, 5}).view(),
                                               quant_params::per_tensor(schemes::s8_symmetric, 1.0f, 0)),
                     errc::shape_mismatch);
}
