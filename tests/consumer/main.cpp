// A consumer of qlib: every umbrella header, a tensor, a quantize round trip and a layer; exits non-zero on a wrong result.
#include <qlib/arch/isa.hpp>
#include <qlib/core/tensor.hpp>
#include <qlib/version.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include <qlib/gemm.hpp>
#include <qlib/nn.hpp>
#include <qlib/prune.hpp>
#include <qlib/quantize.hpp>
#include <qlib/train.hpp>

int main() {
  int failures = 0;
  auto expect = [&failures](bool ok, const char* what) {
    if (!ok) {
      std::fprintf(stderr, "qlib_consumer: FAILED: %s\n", what);
      ++failures;
    }
  };

  qlib::tensor<float, 2> t({3, 4}, 0.5f);
  t(2, 3) = 2.0f;
  float sum = 0.0f;
  for (float x : t) sum += x;
  expect(t.size() == 12, "tensor size");
  expect(sum == 7.5f, "tensor sum");
  expect(t.view().transpose(0, 1)(3, 2) == 2.0f, "transposed view");

#ifdef QLIB_CONSUMER_EXPECT_VERSION
  expect(std::strcmp(QLIB_VERSION_STRING, QLIB_CONSUMER_EXPECT_VERSION) == 0,
         "QLIB_VERSION_STRING matches the installed package version");
#endif

  // Quantize/dequantize round trip: every value comes back within half a step.
  // A float linear layer: y = x W^T + b.
  qlib::nn::linear fc(2, 1);
  fc.weight(0, 0) = 2.0f;
  fc.weight(0, 1) = -1.0f;
  fc.bias(0) = 0.5f;
  qlib::tensor<float, 4> x({1, 1, 1, 2});
  x(0, 0, 0, 0) = 3.0f;
  x(0, 0, 0, 1) = 1.0f;
  expect(fc.forward(x.cview())(0, 0, 0, 0) == 5.5f, "nn::linear forward");

  const auto q = qlib::quantize(t.cview(), qlib::schemes::s8_symmetric, qlib::granularity::per_tensor());
  const qlib::tensor<float, 2> back = q.dequantize();
  float worst = 0.0f;
  for (qlib::index_t i = 0; i < t.size(); ++i) worst = std::max(worst, std::fabs(t.data()[i] - back.data()[i]));
  expect(back.shape() == t.shape(), "dequantized shape");
  expect(worst <= q.params.scale[0] * 0.5f * (1 + 1e-5f), "s8 round trip within half a step");

  std::printf("qlib %s, active ISA: %s\n", QLIB_VERSION_STRING, qlib::isa_name(qlib::active_isa()));
  return failures == 0 ? 0 : 1;
}
