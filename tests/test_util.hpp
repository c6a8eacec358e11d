// Shared test helpers: error assertions that work with and without exceptions, RNG.
#pragma once

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <limits>

#include "qlib/arch/isa.hpp"
#include "qlib/core/error.hpp"
#include "qlib/core/tensor.hpp"
#include "qlib/quant/granularity.hpp"

#if QLIB_EXCEPTIONS
// Requires that `expr` reports qlib error `code`.
#define QLIB_REQUIRE_ERROR(expr, expected_code)           \
  do {                                                    \
    bool qlib_caught_ = false;                            \
    try {                                                 \
      (void)(expr);                                       \
    } catch (const ::qlib::error& qlib_err_) {            \
      qlib_caught_ = true;                                \
      INFO("message: " << qlib_err_.what());              \
      CHECK(qlib_err_.code() == (expected_code));         \
    }                                                     \
    CHECK(qlib_caught_);                                  \
  } while (0)
#else
#include <sys/wait.h>
#include <unistd.h>
namespace qlib_test {
// In a -fno-exceptions build the handler runs in a forked child and exits with the code.
inline void exit_with_code(::qlib::errc code, const char*) { _exit(100 + static_cast<int>(code)); }
}  // namespace qlib_test
#define QLIB_REQUIRE_ERROR(expr, code)                                   \
  do {                                                                   \
    pid_t qlib_pid_ = fork();                                            \
    REQUIRE(qlib_pid_ >= 0);                                             \
    if (qlib_pid_ == 0) {                                                \
      ::qlib::set_error_handler(&qlib_test::exit_with_code);             \
      (void)(expr);                                                      \
      _exit(0);                                                          \
    }                                                                    \
    int qlib_status_ = 0;                                                \
    waitpid(qlib_pid_, &qlib_status_, 0);                                \
    REQUIRE(WIFEXITED(qlib_status_));                                    \
    CHECK(WEXITSTATUS(qlib_status_) == 100 + static_cast<int>(code));    \
  } while (0)
#endif

namespace qlib_test {
// Fixed-seed generator so failures reproduce; catch_main.cpp reseeds it from the name of
// each test case as the case (and each pass through its sections) starts.
inline std::mt19937_64& rng() {
  static std::mt19937_64 g(0x9e3779b97f4a7c15ull);
  return g;
}
inline int rand_int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng()); }
inline float rand_float(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(rng()); }

// Runs f(isa) once per ISA this CPU supports, with dispatch capped at that ISA, so a
// test sees every compiled path (on x86: portable, avx2, avx512...; on ARM: neon...).
template <class F>
void for_each_isa(F&& f) {
  using qlib::isa;
  for (isa i : {isa::portable, isa::avx2, isa::avx_vnni, isa::avx512, isa::avx512_vnni, isa::neon, isa::neon_dotprod}) {
    if (!qlib::isa_supported(i)) continue;
    qlib::set_isa_limit(i);
    INFO("isa " << qlib::isa_name(i));
    f(i);
  }
  qlib::clear_isa_limit();
}

// Bitwise float equality (tells -0 from +0 and compares NaN payloads).
inline bool same_bits(float a, float b) {
  std::uint32_t x, y;
  std::memcpy(&x, &a, 4);
  std::memcpy(&y, &b, 4);
  return x == y;
}

// Parses "a<sep>b<sep>c" into values (golden-vector files).
template <class T>
std::vector<T> parse_list(const std::string& s, char sep) {
  std::vector<T> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep))
    if (!item.empty()) {
      std::stringstream is(item);
      T v;
      is >> v;
      out.push_back(v);
    }
  return out;
}

inline const float qnan = std::numeric_limits<float>::quiet_NaN();

// A rank-4 tensor of uniform values in [lo, hi).
inline qlib::tensor<float, 4> rand_tensor(const qlib::extents<4>& s, float lo = -1.0f, float hi = 1.0f) {
  qlib::tensor<float, 4> t(s);
  for (float& v : t) v = rand_float(lo, hi);
  return t;
}

// Along one axis of a convolution (input size `in`, kernel k, stride s, padding p,
// dilation d), for each of the `out` output positions: true when its window holds no
// input tap, i.e. lies entirely in the padding (possible once p >= d (k - 1) + 1).
inline std::vector<bool> padding_only_windows(std::ptrdiff_t in, std::ptrdiff_t k, std::ptrdiff_t s, std::ptrdiff_t p,
                                              std::ptrdiff_t d, std::ptrdiff_t out) {
  std::vector<bool> r(static_cast<std::size_t>(out > 0 ? out : 0), true);
  for (std::ptrdiff_t o = 0; o < out; ++o)
    for (std::ptrdiff_t t = 0; t < k; ++t) {
      const std::ptrdiff_t i = o * s - p + t * d;
      if (i >= 0 && i < in) r[static_cast<std::size_t>(o)] = false;
    }
  return r;
}

// Per tensor, per channel or per group (size from group_size()) on a random axis of a
// rank-`rank` tensor, with equal odds.
template <class GroupSize>
qlib::granularity random_granularity(std::size_t rank, GroupSize&& group_size) {
  const int kind = rand_int(0, 2);
  if (kind == 0) return qlib::granularity::per_tensor();
  const auto axis = static_cast<std::size_t>(rand_int(0, static_cast<int>(rank) - 1));
  if (kind == 1) return qlib::granularity::per_channel(axis);
  return qlib::granularity::per_group(axis, group_size());
}
}  // namespace qlib_test
