// GEMM output stages: fixed-point golden vectors, and every stage's ISA path against its scalar
// eval() on crafted accumulators (ties, extremes, every shift), including the portable fallback,
// tails next to inaccessible pages, and that gemm() on NEON runs the NEON epilogue.
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#if defined(__unix__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#include "gemm_test_util.hpp"

using namespace qlib;
using namespace gemm_test;

namespace {

constexpr std::int32_t int_min = std::numeric_limits<std::int32_t>::min();
constexpr std::int32_t int_max = std::numeric_limits<std::int32_t>::max();

// Runs `pipeline` on a rows x cols tile of accumulators through every supported ISA's
// store_tile and compares with eval_pipeline() element by element.
template <class Pipeline>
void check_on_every_isa(const Pipeline& pipeline, const std::vector<std::int32_t>& acc, index_t rows, index_t cols,
                        index_t row0 = 0, index_t col0 = 0) {
  using Out = gemm::pipeline_output_t<Pipeline>;
  REQUIRE(acc.size() == static_cast<std::size_t>(rows * cols));
  std::vector<Out> want(acc.size());
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c)
      want[static_cast<std::size_t>(r * cols + c)] =
          gemm::eval_pipeline(pipeline, acc[static_cast<std::size_t>(r * cols + c)], row0 + r, col0 + c);
  for (isa i : supported_isas()) {
    std::vector<Out> got(acc.size(), sentinel_value<Out>());
    dispatch_isa(i, [&](auto tag) {
      kernels::store_tile(tag, pipeline, acc.data(), cols, rows, cols, got.data(), cols, row0, col0);
    });
    for (std::size_t x = 0; x < acc.size(); ++x) {
      if (!same_bits(got[x], want[x])) {
        FAIL_CHECK("isa " << isa_name(i) << ": accumulator " << acc[x] << " at column " << col0 + static_cast<index_t>(x) % cols
                          << " gives " << +got[x] << ", eval() gives " << +want[x]);
        return;
      }
    }
  }
}

// Accumulators: the extremes, small values, random ones of every magnitude.
std::vector<std::int32_t> crafted_accumulators(std::size_t count) {
  const std::int32_t special[] = {0, 1, -1, 2, -2, 3, -3, 5, -5, int_max, int_min, int_min + 1, int_max - 1,
                                  1 << 30, -(1 << 30), (1 << 30) - 1, 65536, -65535, 127, -128, 255, 256};
  std::vector<std::int32_t> v;
  for (std::int32_t s : special) v.push_back(s);
  while (v.size() < count) {
    const int bits = rand_int(0, 31);
    const std::int64_t mag = bits == 0 ? 0 : rand_int(0, (1 << (bits < 30 ? bits : 30)) - 1);
    const std::int64_t x = rand_int(0, 1) ? mag : -mag - rand_int(0, 1);
    v.push_back(static_cast<std::int32_t>(x));
  }
  v.resize(count);
  return v;
}

}  // namespace

TEST_CASE("fixed point: gemmlowp and TFLite golden vectors", "[gemm][fixed_point]") {
  // SaturatingRoundingDoublingHighMul: round(a * b / 2^31), ties toward +inf.
  CHECK(saturating_rounding_doubling_high_mul(1 << 30, 1 << 30) == 1 << 29);
  CHECK(saturating_rounding_doubling_high_mul(1, 1 << 30) == 1);    // 0.5 -> 1
  CHECK(saturating_rounding_doubling_high_mul(-1, 1 << 30) == 0);   // -0.5 -> 0
  CHECK(saturating_rounding_doubling_high_mul(3, 1 << 30) == 2);    // 1.5 -> 2
  CHECK(saturating_rounding_doubling_high_mul(-3, 1 << 30) == -1);  // -1.5 -> -1
  CHECK(saturating_rounding_doubling_high_mul(int_min, int_min) == int_max);
  CHECK(saturating_rounding_doubling_high_mul(int_min, int_max) == -int_max);
  // RoundingDivideByPOT: ties away from zero.
  CHECK(rounding_divide_by_pot(5, 1) == 3);
  CHECK(rounding_divide_by_pot(-5, 1) == -3);
  CHECK(rounding_divide_by_pot(6, 2) == 2);
  CHECK(rounding_divide_by_pot(-6, 2) == -2);
  CHECK(rounding_divide_by_pot(-2, 2) == -1);
  CHECK(rounding_divide_by_pot(7, 2) == 2);
  CHECK(rounding_divide_by_pot(-7, 2) == -2);
  CHECK(rounding_divide_by_pot(123, 0) == 123);
  CHECK(rounding_divide_by_pot(int_min, 31) == -1);
  CHECK(rounding_divide_by_pot(int_max, 31) == 1);
  // The two TFLite flavours differ exactly where double rounding rounds twice:
  // 5 * 2^-2 = 1.25: double rounding 1.25 -> (2.5 -> 3) / 2 = 1.5 -> 2; single -> 1.
  const auto dbl = fixed_point_rounding::double_rounding, sgl = fixed_point_rounding::single_rounding;
  CHECK(multiply_by_quantized_multiplier(5, 1 << 30, -1, dbl) == 2);
  CHECK(multiply_by_quantized_multiplier(5, 1 << 30, -1, sgl) == 1);
  CHECK(multiply_by_quantized_multiplier(-5, 1 << 30, -1, dbl) == -1);
  CHECK(multiply_by_quantized_multiplier(-5, 1 << 30, -1, sgl) == -1);
  CHECK(multiply_by_quantized_multiplier(-3, 1 << 30, -1, dbl) == -1);  // -0.75
  CHECK(multiply_by_quantized_multiplier(-3, 1 << 30, -1, sgl) == -1);
  CHECK(multiply_by_quantized_multiplier(-1, 1 << 30, -1, dbl) == 0);  // -0.25
  CHECK(multiply_by_quantized_multiplier(-1, 1 << 30, -1, sgl) == 0);
  CHECK(multiply_by_quantized_multiplier(6, 1 << 30, -1, sgl) == 2);   // 1.5: single rounding ties up
  CHECK(multiply_by_quantized_multiplier(-6, 1 << 30, -1, sgl) == -1);  // -1.5 -> -1
  CHECK(multiply_by_quantized_multiplier(-6, 1 << 30, -1, dbl) == -2);  // -1.5 -> -2 (away from zero)
  // Left shifts: 2^30 * 2^2 saturates to INT32_MAX before the multiply in double
  // rounding (TFLite overflows there); single rounding saturates the result.
  CHECK(multiply_by_quantized_multiplier(1 << 30, 1 << 30, 2, dbl) == 1 << 30);
  CHECK(multiply_by_quantized_multiplier(1 << 30, 1 << 30, 2, sgl) == int_max);
  CHECK(multiply_by_quantized_multiplier(-(1 << 30), 1 << 30, 2, sgl) == int_min);
  CHECK(multiply_by_quantized_multiplier(1000, 1 << 30, 1, dbl) == 1000);  // 0.5 * 2 = 1
  CHECK(multiply_by_quantized_multiplier(1000, 1 << 30, 1, sgl) == 1000);

  // quantize_multiplier: real = multiplier * 2^(shift - 31).
  auto qm = [](double r) { return quantize_multiplier(r); };
  CHECK(qm(0.5).multiplier == 1 << 30);
  CHECK(qm(0.5).shift == 0);
  CHECK(qm(0.25).shift == -1);
  CHECK(qm(1.0).multiplier == 1 << 30);
  CHECK(qm(1.0).shift == 1);
  CHECK(qm(0.75).multiplier == 3 << 29);
  CHECK(qm(1.0 / 3.0).multiplier == 1431655765);
  CHECK(qm(1.0 / 3.0).shift == -1);
  CHECK(qm(0.0).multiplier == 0);
  CHECK(qm(std::ldexp(1.0, -40)).multiplier == 0);  // below 2^-32: maps everything to 0
  CHECK(qm(std::nextafter(1.0, 0.0)).multiplier == 1 << 30);  // significand rounds up to 1.0
  CHECK(qm(std::nextafter(1.0, 0.0)).shift == 1);
  for (int t = 0; t < 1000; ++t) {
    const double r = std::ldexp(1.0 + rand_int(0, 1 << 20) / 1048576.0, rand_int(-31, 29));
    const quantized_multiplier q = qm(r);
    REQUIRE(q.multiplier >= 1 << 30);
    const double back = std::ldexp(static_cast<double>(q.multiplier), q.shift - 31);
    REQUIRE(std::fabs(back - r) <= std::ldexp(r, -31));
  }
}

TEST_CASE("stages: fixed-point requantize equals eval() for every shift, ties included", "[gemm][stages][isa]") {
  const index_t rows = 3, cols = 37;  // tails of 16 and 8 lanes
  const std::int32_t multipliers[] = {0, 1 << 30, (1 << 30) + 1, int_max, 1518500250, 1 << 29};
  for (int shift = min_fixed_point_shift; shift <= max_fixed_point_shift; ++shift) {
    for (std::int32_t m : multipliers) {
      INFO("multiplier " << m << " shift " << shift);
      const auto acc = crafted_accumulators(static_cast<std::size_t>(rows * cols));
      const std::int32_t zp = rand_int(0, 3) == 0 ? int_max - 5 : rand_int(-200, 200);  // also saturating zp adds
      check_on_every_isa(gemm::make_pipeline(gemm::requantize_fixed_point<fixed_point_rounding::double_rounding>{m, shift, zp}),
                         acc, rows, cols);
      check_on_every_isa(gemm::make_pipeline(gemm::requantize_fixed_point<fixed_point_rounding::single_rounding>{m, shift, zp}),
                         acc, rows, cols);
    }
  }
  // Per channel: every column its own (multiplier, shift).
  for (int t = 0; t < 50; ++t) {
    std::vector<std::int32_t> m(cols), s(cols);
    for (index_t j = 0; j < cols; ++j) {
      m[static_cast<std::size_t>(j)] = rand_int(0, 3) == 0 ? 1 << 30 : rand_int(1 << 30, int_max);
      s[static_cast<std::size_t>(j)] = rand_int(min_fixed_point_shift, max_fixed_point_shift);
    }
    const auto acc = crafted_accumulators(static_cast<std::size_t>(rows * cols));
    check_on_every_isa(gemm::make_pipeline(gemm::requantize_fixed_point_per_channel<fixed_point_rounding::double_rounding>{
                           m.data(), s.data(), cols, 3}),
                       acc, rows, cols);
    check_on_every_isa(gemm::make_pipeline(gemm::requantize_fixed_point_per_channel<fixed_point_rounding::single_rounding>{
                           m.data(), s.data(), cols, -3}),
                       acc, rows, cols);
  }
}

TEST_CASE("stages: float requantize, clamps, casts, dequantize equal eval()", "[gemm][stages][isa]") {
  for (index_t cols : {1, 2, 4, 6, 7, 8, 9, 15, 16, 17, 33, 64}) {  // tails of 4 (all three), 8 and 16 lanes
    INFO("cols " << cols);
    const index_t rows = 2;
    auto acc = crafted_accumulators(static_cast<std::size_t>(rows * cols));
    // Exact .5 ties after a multiply by 0.5: odd accumulators.
    for (std::size_t x = 0; x < acc.size(); x += 3) acc[x] = 2 * rand_int(-1000, 1000) + 1;
    std::vector<float> fm(static_cast<std::size_t>(cols)), scale(fm.size());
    std::vector<std::int32_t> bias(fm.size());
    for (std::size_t j = 0; j < fm.size(); ++j) {
      fm[j] = j % 2 ? 0.5f : std::ldexp(1.0f + static_cast<float>(rand_int(0, 255)) / 256.0f, rand_int(-20, 2));
      // Not powers of two: float(x) * (0.3 * scale) then differs from (float(x) * 0.3) * scale.
      scale[j] = std::ldexp(1.0f + static_cast<float>(rand_int(1, 255)) / 256.0f, rand_int(-12, 3));
      bias[j] = rand_int(-1000, 1000);
    }
    check_on_every_isa(gemm::make_pipeline(gemm::requantize_float{0.5f, 3, -128, 127}), acc, rows, cols);
    check_on_every_isa(gemm::make_pipeline(gemm::requantize_float{1.0f / 3.0f, -(1 << 23) + 1, -(1 << 23), 1 << 23}),
                       acc, rows, cols);
    check_on_every_isa(gemm::make_pipeline(gemm::requantize_float_per_channel{fm.data(), cols, 128, 0, 255},
                                           gemm::saturating_cast<std::uint8_t>{}),
                       acc, rows, cols);
    check_on_every_isa(gemm::make_pipeline(gemm::bias_add{bias.data(), cols}), std::vector<std::int32_t>(acc.size(), 7),
                       rows, cols);
    check_on_every_isa(gemm::make_pipeline(gemm::clamp{-5, 1000}), acc, rows, cols);
    check_on_every_isa(gemm::make_pipeline(gemm::saturating_cast<std::int8_t>{}), acc, rows, cols);
    check_on_every_isa(gemm::make_pipeline(gemm::saturating_cast<std::uint8_t>{}), acc, rows, cols);
    check_on_every_isa(gemm::make_pipeline(gemm::saturating_cast<std::int16_t>{}), acc, rows, cols);
    check_on_every_isa(gemm::make_pipeline(gemm::saturating_cast<std::uint16_t>{}), acc, rows, cols);
    check_on_every_isa(gemm::make_pipeline(gemm::dequantize{1.0f / 3.0f}), acc, rows, cols);
    check_on_every_isa(gemm::make_pipeline(gemm::dequantize_per_channel{0.3f, scale.data(), cols}), acc, rows, cols);
    // Huge scales overflow to +-inf, which the float clamp must then handle like eval().
    check_on_every_isa(gemm::make_pipeline(gemm::dequantize{FLT_MAX}, gemm::clamp_float{-1e30f, 1e30f}), acc, rows, cols);
    check_on_every_isa(gemm::make_pipeline(gemm::dequantize{1.0f}, gemm::relu6_float()), acc, rows, cols);
    check_on_every_isa(gemm::make_pipeline(gemm::dequantize{FLT_MAX}, gemm::relu_float()), acc, rows, cols);
    // Signed zeros at the bounds: eval() keeps the bound (x > lo ? x : lo gives lo = -0
    // for x = +0, v < hi ? v : hi gives hi = +0 for v = -0), which fmax/fmin would not.
    check_on_every_isa(gemm::make_pipeline(gemm::dequantize{0.5f}, gemm::clamp_float{-0.0f, 4.0f}), acc, rows, cols);
    check_on_every_isa(gemm::make_pipeline(gemm::dequantize{-0.5f}, gemm::clamp_float{-4.0f, 0.0f}), acc, rows, cols);
  }
}

TEST_CASE("stages: the weight zero-point correction equals eval()", "[gemm][stages][isa]") {
  const index_t rows = 5, cols = 40, row0 = 17, col0 = 64;
  std::vector<std::int32_t> row_sum(rows), zb(static_cast<std::size_t>(col0 + cols));
  for (auto& v : row_sum) v = rand_int(int_min, int_max);
  for (auto& v : zb) v = rand_int(-128, 127);
  const auto acc = crafted_accumulators(static_cast<std::size_t>(rows * cols));
  for (bool per_channel : {false, true}) {
    const gemm::weight_zero_point_correction z{row_sum.data(), row0, zb.data(), per_channel};
    check_on_every_isa(gemm::make_pipeline(z), acc, rows, cols, row0, col0);
  }
}

namespace {
// Stages with no ISA implementation: the fallback runs their eval() lane by lane.
struct xor_position {
  using input_type = std::int32_t;
  using output_type = std::int32_t;
  std::int32_t eval(std::int32_t x, index_t row, index_t col) const noexcept {
    return x ^ static_cast<std::int32_t>(row * 1000 + col);
  }
  void validate(index_t, index_t) const noexcept {}
};
struct sign_byte {
  using input_type = std::int32_t;
  using output_type = std::uint8_t;
  std::uint8_t eval(std::int32_t x, index_t, index_t) const noexcept { return x < 0 ? 0 : (x > 0 ? 2 : 1); }
  void validate(index_t, index_t) const noexcept {}
};
struct negate_float {
  using input_type = float;
  using output_type = float;
  float eval(float x, index_t, index_t) const noexcept { return -x; }
  void validate(index_t, index_t) const noexcept {}
};
// NaN in odd columns: clamp_float must turn it into lo, as eval() does.
struct nan_in_odd_columns {
  using input_type = float;
  using output_type = float;
  float eval(float x, index_t, index_t col) const noexcept {
    return col % 2 ? std::numeric_limits<float>::quiet_NaN() : x;
  }
  void validate(index_t, index_t) const noexcept {}
};
// Takes a narrow integer, so the saturating_cast before it is not the last stage and
// must clamp in registers itself.
template <class T>
struct widen_narrow {
  using input_type = T;
  using output_type = std::int32_t;
  std::int32_t eval(T x, index_t, index_t col) const noexcept {
    return static_cast<std::int32_t>(x) * 3 + static_cast<std::int32_t>(col);
  }
  void validate(index_t, index_t) const noexcept {}
};
}  // namespace

// Stages of yours with types the SIMD lanes do not carry: int64 and double in between.
struct to_int64_scaled {
  using input_type = std::int32_t;
  using output_type = std::int64_t;
  std::int64_t eval(std::int32_t x, index_t, index_t col) const noexcept {
    return static_cast<std::int64_t>(x) * (std::int64_t{1} << 20) + col;  // beyond int32 for most x
  }
  void validate(index_t, index_t) const noexcept {}
};
struct int64_high_bits {
  using input_type = std::int64_t;
  using output_type = std::int32_t;
  std::int32_t eval(std::int64_t x, index_t, index_t) const noexcept { return static_cast<std::int32_t>(x >> 21); }
  void validate(index_t, index_t) const noexcept {}
};
struct to_double_third {
  using input_type = std::int32_t;
  using output_type = double;
  double eval(std::int32_t x, index_t, index_t) const noexcept { return static_cast<double>(x) / 3.0; }
  void validate(index_t, index_t) const noexcept {}
};
struct double_to_float_fraction {
  using input_type = double;
  using output_type = float;
  float eval(double x, index_t, index_t) const noexcept { return static_cast<float>(x - static_cast<double>(static_cast<std::int64_t>(x))); }
  void validate(index_t, index_t) const noexcept {}
};

TEST_CASE("stages: int64 or double between stages is never truncated to a SIMD lane type", "[gemm][stages][fallback]") {
  const index_t rows = 2;
  for (index_t cols : {3, 16, 21}) {
    const auto acc = crafted_accumulators(static_cast<std::size_t>(rows * cols));
    check_on_every_isa(gemm::make_pipeline(to_int64_scaled{}, int64_high_bits{}), acc, rows, cols, 1, 5);
    // The fraction of x / 3 in double: a float lane would lose it for large x.
    check_on_every_isa(gemm::make_pipeline(to_double_third{}, double_to_float_fraction{}), acc, rows, cols);
  }
}

TEST_CASE("stages: a stage without an ISA implementation falls back to eval()", "[gemm][stages][fallback]") {
  const index_t rows = 3;
  for (index_t cols : {5, 16, 23}) {
    const auto acc = crafted_accumulators(static_cast<std::size_t>(rows * cols));
    check_on_every_isa(gemm::make_pipeline(gemm::clamp{-100000, 100000}, xor_position{}, gemm::clamp{-300, 300},
                                           gemm::saturating_cast<std::int16_t>{}),
                       acc, rows, cols, 2, 9);
    check_on_every_isa(gemm::make_pipeline(xor_position{}, sign_byte{}), acc, rows, cols, 1, 3);
    check_on_every_isa(gemm::make_pipeline(gemm::dequantize{0.5f}, negate_float{}, gemm::clamp_float{-7.0f, 1e9f}),
                       acc, rows, cols);
    check_on_every_isa(
        gemm::make_pipeline(gemm::dequantize{0.5f}, nan_in_odd_columns{}, gemm::clamp_float{-7.0f, 7.0f}), acc, rows,
        cols);
    // A saturating_cast in the middle of a pipeline (not merged into the store).
    check_on_every_isa(gemm::make_pipeline(gemm::saturating_cast<std::int8_t>{}, widen_narrow<std::int8_t>{}), acc,
                       rows, cols);
    check_on_every_isa(gemm::make_pipeline(gemm::saturating_cast<std::uint8_t>{}, widen_narrow<std::uint8_t>{},
                                           gemm::saturating_cast<std::int8_t>{}),
                       acc, rows, cols);
    check_on_every_isa(gemm::make_pipeline(gemm::saturating_cast<std::int16_t>{}, widen_narrow<std::int16_t>{}), acc,
                       rows, cols);
    check_on_every_isa(gemm::make_pipeline(gemm::saturating_cast<std::uint16_t>{}, widen_narrow<std::uint16_t>{}), acc,
                       rows, cols);
  }
}

TEST_CASE("stages: output bounds the overflow check follows", "[gemm][stages]") {
  const std::int32_t b[] = {5, -9};
  CHECK(gemm::bias_add{b, 2}.max_magnitude(100) == 109);
  CHECK(gemm::clamp{-3, 10}.max_magnitude(1000) == 10);
  CHECK(gemm::clamp{-3, 10}.max_magnitude(2) == 2);
  CHECK(gemm::clamp{}.max_magnitude(int_max) == int_max);
  CHECK(gemm::requantize_float{1.0f, 0, -300, 200}.max_magnitude(int_max) == 300);
  CHECK(gemm::relu6(3, 0.1f).hi == 63);
  CHECK(gemm::relu(-4).lo == -4);
}

#if defined(__unix__)
namespace {
// `count` elements ending exactly where an inaccessible page begins, so that reading or
// writing one element past the end faults (heap arrays would hide that outside ASan
// builds, and the sanitizer build has no NEON path).
template <class T>
class page_fenced_array {
 public:
  explicit page_fenced_array(std::size_t count) {
    const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    const std::size_t bytes = count * sizeof(T), data_pages = bytes / page + 1;
    size_ = (data_pages + 1) * page;
    void* base = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(base != MAP_FAILED);
    base_ = static_cast<unsigned char*>(base);
    REQUIRE(mprotect(base_ + data_pages * page, page, PROT_NONE) == 0);
    data_ = reinterpret_cast<T*>(base_ + data_pages * page - bytes);
  }
  page_fenced_array(const page_fenced_array&) = delete;
  page_fenced_array& operator=(const page_fenced_array&) = delete;
  ~page_fenced_array() { munmap(base_, size_); }
  T* data() const { return data_; }
  T& operator[](std::size_t i) const { return data_[i]; }

 private:
  unsigned char* base_ = nullptr;
  std::size_t size_ = 0;
  T* data_ = nullptr;
};

// check_on_every_isa() with the tile and C each ending at a fenced page (row strides =
// cols, so the last row's tail is the last thing before the fence).
template <class Pipeline>
void check_fenced_on_every_isa(const Pipeline& pipeline, const page_fenced_array<std::int32_t>& tile, index_t rows,
                               index_t cols) {
  using Out = gemm::pipeline_output_t<Pipeline>;
  const auto n = static_cast<std::size_t>(rows * cols);
  for (isa i : supported_isas()) {
    page_fenced_array<Out> got(n);
    dispatch_isa(i, [&](auto tag) {
      kernels::store_tile(tag, pipeline, tile.data(), cols, rows, cols, got.data(), cols, 0, 0);
    });
    for (std::size_t x = 0; x < n; ++x) {
      const auto col = static_cast<index_t>(x) % cols;
      const Out want = gemm::eval_pipeline(pipeline, tile[x], static_cast<index_t>(x) / cols, col);
      if (!same_bits(got[x], want)) {
        FAIL_CHECK("isa " << isa_name(i) << ": accumulator " << tile[x] << " at column " << col << " gives " << +got[x]
                          << ", eval() gives " << +want);
        return;
      }
    }
  }
}
}  // namespace

TEST_CASE("stages: tails read and write nothing past the tile, C or a per-channel array", "[gemm][stages][isa]") {
  using fpr = fixed_point_rounding;
  for (index_t cols = 1; cols <= 19; ++cols) {
    for (index_t rows : {1, 3}) {
      INFO("rows " << rows << " cols " << cols);
      const auto n = static_cast<std::size_t>(cols);
      const auto acc = crafted_accumulators(static_cast<std::size_t>(rows * cols));
      page_fenced_array<std::int32_t> tile(acc.size()), bias(n), multiplier(n), shift(n), zb(n);
      page_fenced_array<float> float_multiplier(n), scale(n);
      for (std::size_t x = 0; x < acc.size(); ++x) tile[x] = acc[x];
      for (std::size_t j = 0; j < n; ++j) {
        bias[j] = rand_int(-1000, 1000);
        multiplier[j] = rand_int(1 << 30, int_max);
        shift[j] = rand_int(-12, 3);
        zb[j] = rand_int(-128, 127);
        float_multiplier[j] = std::ldexp(1.0f + static_cast<float>(rand_int(0, 255)) / 256.0f, rand_int(-12, 0));
        scale[j] = std::ldexp(1.0f, rand_int(-12, 3));
      }
      const std::int32_t row_sum[3] = {rand_int(-5000, 5000), rand_int(-5000, 5000), rand_int(-5000, 5000)};
      const gemm::weight_zero_point_correction correction{row_sum, 0, zb.data(), true};
      const gemm::bias_add b{bias.data(), cols};
      check_fenced_on_every_isa(
          gemm::make_pipeline(correction, b,
                              gemm::requantize_fixed_point_per_channel<fpr::double_rounding>{multiplier.data(),
                                                                                            shift.data(), cols, -3},
                              gemm::saturating_cast<std::int8_t>{}),
          tile, rows, cols);
      check_fenced_on_every_isa(
          gemm::make_pipeline(gemm::requantize_fixed_point_per_channel<fpr::single_rounding>{multiplier.data(),
                                                                                            shift.data(), cols, 100},
                              gemm::saturating_cast<std::uint8_t>{}),
          tile, rows, cols);
      check_fenced_on_every_isa(
          gemm::make_pipeline(gemm::requantize_float_per_channel{float_multiplier.data(), cols, 7, -30000, 30000},
                              gemm::saturating_cast<std::int16_t>{}),
          tile, rows, cols);
      check_fenced_on_every_isa(gemm::make_pipeline(b, gemm::clamp{-10, 70000}, gemm::saturating_cast<std::uint16_t>{}),
                                tile, rows, cols);
      check_fenced_on_every_isa(gemm::make_pipeline(gemm::dequantize_per_channel{0.25f, scale.data(), cols},
                                                    gemm::clamp_float{-1e6f, 1e6f}),
                                tile, rows, cols);
      check_fenced_on_every_isa(gemm::make_pipeline(b), tile, rows, cols);
      check_fenced_on_every_isa(gemm::make_pipeline(b, xor_position{}, sign_byte{}), tile, rows, cols);
    }
  }
}
#endif  // __unix__

#if QLIB_HAS_ARM_KERNELS
// Every built-in stage has a NEON implementation; only stages you write fall back.
static_assert(kernels::neon_stages::vectorized<gemm::weight_zero_point_correction>);
static_assert(kernels::neon_stages::vectorized<gemm::bias_add>);
static_assert(kernels::neon_stages::vectorized<gemm::requantize_fixed_point<fixed_point_rounding::double_rounding>>);
static_assert(kernels::neon_stages::vectorized<gemm::requantize_fixed_point<fixed_point_rounding::single_rounding>>);
static_assert(
    kernels::neon_stages::vectorized<gemm::requantize_fixed_point_per_channel<fixed_point_rounding::double_rounding>>);
static_assert(
    kernels::neon_stages::vectorized<gemm::requantize_fixed_point_per_channel<fixed_point_rounding::single_rounding>>);
static_assert(kernels::neon_stages::vectorized<gemm::requantize_float>);
static_assert(kernels::neon_stages::vectorized<gemm::requantize_float_per_channel>);
static_assert(kernels::neon_stages::vectorized<gemm::clamp>);
static_assert(kernels::neon_stages::vectorized<gemm::clamp_float>);
static_assert(kernels::neon_stages::vectorized<gemm::saturating_cast<std::int8_t>>);
static_assert(kernels::neon_stages::vectorized<gemm::saturating_cast<std::uint8_t>>);
static_assert(kernels::neon_stages::vectorized<gemm::saturating_cast<std::int16_t>>);
static_assert(kernels::neon_stages::vectorized<gemm::saturating_cast<std::uint16_t>>);
static_assert(kernels::neon_stages::vectorized<gemm::dequantize>);
static_assert(kernels::neon_stages::vectorized<gemm::dequantize_per_channel>);
static_assert(!kernels::neon_stages::vectorized<xor_position>);

namespace {
// Logs which stage ran: the portable epilogue runs the whole pipeline on one element
// after the other (1 2 1 2 ...), the NEON one each stage on 4 lanes (1 1 1 1 2 2 2 2).
struct stage_call_log {
  using input_type = std::int32_t;
  using output_type = std::int32_t;
  std::vector<int>* log;
  int id;
  std::int32_t eval(std::int32_t x, index_t, index_t) const {
    log->push_back(id);
    return x;
  }
  void validate(index_t, index_t) const noexcept {}
};
}  // namespace

TEST_CASE("stages: gemm() on the NEON ISAs runs the NEON epilogue", "[gemm][stages][isa]") {
  tensor<std::uint8_t, 2> a({1, 4}, 3);
  tensor<std::int8_t, 2> b({4, 8}, std::int8_t{-2});
  const auto w = gemm::pack(b.cview());
  const std::vector<int> neon_order = {1, 1, 1, 1, 2, 2, 2, 2, 1, 1, 1, 1, 2, 2, 2, 2};
  auto run = [&](auto tag) {
    std::vector<int> log;
    tensor<std::int32_t, 2> c({1, 8});
    gemm::gemm(tag, a.cview(), {0}, w, gemm::make_pipeline(stage_call_log{&log, 1}, stage_call_log{&log, 2}), c.view());
    for (index_t j = 0; j < 8; ++j) REQUIRE(c(0, j) == -24);
    return log;
  };
  CHECK(run(arch::neon{}) == neon_order);
  if (isa_supported(isa::neon_dotprod)) CHECK(run(arch::neon_dotprod{}) == neon_order);
  else WARN("this CPU has no dot product: the neon_dotprod epilogue is not run");
  const std::vector<int> portable_order = {1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2};
  CHECK(run(arch::portable{}) == portable_order);
}
#endif  // QLIB_HAS_ARM_KERNELS
