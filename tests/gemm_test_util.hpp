// Shared helpers of the GEMM tests: ISA iteration, random operands, strided buffers, test-size scaling.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "qlib/gemm.hpp"
#include "test_util.hpp"

// Random-case counts are multiplied by this. Release builds run the full count; Debug
// and sanitizer builds (10-30x slower) a tenth, to stay within the time budget; the
// aarch64 preset (tests under qemu) sets 4.
#ifndef QLIB_GEMM_TEST_SCALE
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QLIB_GEMM_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define QLIB_GEMM_SANITIZED 1
#endif
#if defined(NDEBUG) && !defined(QLIB_GEMM_SANITIZED)
#define QLIB_GEMM_TEST_SCALE 10
#else
#define QLIB_GEMM_TEST_SCALE 1
#endif
#endif

namespace gemm_test {

using namespace qlib;
using qlib_test::rand_int;

// Every ISA level, whether or not this CPU has it (tests skip the unsupported ones;
// on this Zen 4 machine that is avx_vnni, which AVX-512 CPUs do not imply, and neon).
inline const isa all_isas[] = {isa::portable, isa::avx2,  isa::avx_vnni,    isa::avx512,
                               isa::avx512_vnni, isa::neon, isa::neon_dotprod};

inline std::vector<isa> supported_isas() {
  std::vector<isa> out;
  for (isa i : all_isas)
    if (isa_supported(i)) out.push_back(i);
  return out;
}

// A row-major matrix inside a larger buffer: row stride ld >= cols, and `guard` extra
// elements before and after, filled with a sentinel so stray writes are caught.
template <class T>
struct strided_matrix {
  static constexpr index_t guard = 64;
  index_t rows = 0, cols = 0, ld = 0;
  std::vector<T> buf;

  strided_matrix(index_t r, index_t c, index_t stride, T sentinel = T{})
      : rows(r), cols(c), ld(stride), buf(static_cast<std::size_t>(2 * guard + (r > 0 ? (r - 1) * stride + c : 0)),
                                          sentinel) {}
  T* data() { return buf.data() + guard; }
  const T* data() const { return buf.data() + guard; }
  tensor_view<T, 2> view() { return tensor_view<T, 2>(data(), {rows, cols}, {ld, 1}); }
  tensor_view<const T, 2> cview() const { return tensor_view<const T, 2>(data(), {rows, cols}, {ld, 1}); }
  T& at(index_t r, index_t c) { return data()[r * ld + c]; }
  const T& at(index_t r, index_t c) const { return data()[r * ld + c]; }
};

template <class T>
bool same_bits(const T& a, const T& b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

// Compares the M x N values of `got` with the dense reference and that every element
// outside them (row padding and guards) still holds the sentinel. Returns a message
// describing the first difference, or "" when equal.
template <class T>
std::string compare(const strided_matrix<T>& got, const tensor<T, 2>& want, T sentinel) {
  for (index_t r = 0; r < got.rows; ++r)
    for (index_t c = 0; c < got.cols; ++c)
      if (!same_bits(got.at(r, c), want(r, c)))
        return "C[" + std::to_string(r) + "][" + std::to_string(c) + "] = " + std::to_string(got.at(r, c)) +
               ", reference " + std::to_string(want(r, c));
  for (std::size_t i = 0; i < got.buf.size(); ++i) {
    const index_t off = static_cast<index_t>(i) - strided_matrix<T>::guard;
    const bool inside = off >= 0 && off / got.ld < got.rows && off % got.ld < got.cols;
    if (!inside && !same_bits(got.buf[i], sentinel))
      return "write outside C at buffer offset " + std::to_string(off);
  }
  return "";
}

template <class T>
T random_value() {
  return static_cast<T>(rand_int(std::numeric_limits<T>::min(), std::numeric_limits<T>::max()));
}

// Sentinel for output buffers: a value the pipelines rarely produce.
template <class T>
T sentinel_value() {
  if constexpr (std::is_same<T, float>::value) return -12345.5f;
  else return static_cast<T>(std::numeric_limits<T>::max() - 3);
}

}  // namespace gemm_test
