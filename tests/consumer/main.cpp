// A consumer of qlib: a tensor and a quantize/dequantize round trip; exits non-zero on a wrong result.
#include <qlib/arch/isa.hpp>
#include <qlib/core/tensor.hpp>
#include <qlib/version.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include <qlib/quantize.hpp>

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
  const auto q = qlib::quantize(t.cview(), qlib::schemes::s8_symmetric, qlib::granularity::per_tensor());
  const qlib::tensor<float, 2> back = q.dequantize();
  float worst = 0.0f;
  for (qlib::index_t i = 0; i < t.size(); ++i) worst = std::max(worst, std::fabs(t.data()[i] - back.data()[i]));
  expect(back.shape() == t.shape(), "dequantized shape");
  expect(worst <= q.params.scale[0] * 0.5f * (1 + 1e-5f), "s8 round trip within half a step");

  std::printf("qlib %s, active ISA: %s\n", QLIB_VERSION_STRING, qlib::isa_name(qlib::active_isa()));
  return failures == 0 ? 0 : 1;
}
