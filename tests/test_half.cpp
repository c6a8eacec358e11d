// Tests for fp16/bf16: scalar reference vs independent references, every ISA kernel, API.
#include "qlib/core/half.hpp"
#include "qlib/core/half_convert.hpp"
#include "test_util.hpp"

#include <algorithm>
#include <cfenv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

using namespace qlib;

namespace {

std::uint32_t fbits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float bitsf(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ---- Independent references (floating-point arithmetic, not bit tricks) -------------

// fp16 pattern -> double from its fields via ldexp; NaN is reported separately.
double fp16_value(std::uint16_t h) {
  const int e = (h >> 10) & 31;
  const int m = h & 1023;
  const double s = (h & 0x8000) ? -1.0 : 1.0;
  if (e == 31) return m ? std::numeric_limits<double>::quiet_NaN() : s * HUGE_VAL;
  if (e == 0) return s * std::ldexp(static_cast<double>(m), -24);
  return s * std::ldexp(static_cast<double>(1024 + m), e - 25);
}

double bf16_value(std::uint16_t b) {
  const int e = (b >> 7) & 255;
  const int m = b & 127;
  const double s = (b & 0x8000) ? -1.0 : 1.0;
  if (e == 255) return m ? std::numeric_limits<double>::quiet_NaN() : s * HUGE_VAL;
  if (e == 0) return s * std::ldexp(static_cast<double>(m), -133);
  return s * std::ldexp(static_cast<double>(128 + m), e - 134);
}

// A format for the nearest-value reference: the values of every positive finite pattern
// (patterns are ordered like values), plus the pattern of +Inf standing at the value the
// next binade would start at (IEEE rounding with an unbounded exponent).
struct nearest_table {
  std::vector<double> value;  // value[bits] for bits in [0, inf_bits]
  std::uint16_t inf_bits;
};

nearest_table make_table(double (*value_of)(std::uint16_t), std::uint16_t inf_bits, double inf_at) {
  nearest_table t;
  t.inf_bits = inf_bits;
  for (unsigned b = 0; b < inf_bits; ++b) t.value.push_back(value_of(static_cast<std::uint16_t>(b)));
  t.value.push_back(inf_at);
  return t;
}

const nearest_table& fp16_table() {
  static const nearest_table t = make_table(&fp16_value, 0x7C00, 65536.0);
  return t;
}
const nearest_table& bf16_table() {
  static const nearest_table t = make_table(&bf16_value, 0x7F80, std::ldexp(1.0, 128));
  return t;
}

// Rounds a non-NaN float to the nearest table entry in double arithmetic (the
// differences are exact), ties to the even pattern.
std::uint16_t nearest_ref(const nearest_table& t, float x) {
  const std::uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(static_cast<double>(x));
  if (a >= t.value.back()) return static_cast<std::uint16_t>(sign | t.inf_bits);
  const auto it = std::upper_bound(t.value.begin(), t.value.end(), a);
  const std::size_t lo = static_cast<std::size_t>(it - t.value.begin()) - 1;
  const double dlo = a - t.value[lo];
  const double dhi = t.value[lo + 1] - a;
  std::size_t pick = lo;
  if (dhi < dlo || (dhi == dlo && (lo & 1))) pick = lo + 1;
  return static_cast<std::uint16_t>(sign | pick);
}

// NaN rule written from the format's side: sign kept, the result's mantissa field holds
// the quiet bit and the float payload's top bits.
std::uint16_t fp16_nan_ref(std::uint32_t u) {
  const std::uint32_t payload = u & 0x7FFFFF;
  return static_cast<std::uint16_t>(((u >> 31) << 15) | (31u << 10) | 512u | (payload >> 13));
}
std::uint16_t bf16_nan_ref(std::uint32_t u) {
  const std::uint32_t payload = u & 0x7FFFFF;
  return static_cast<std::uint16_t>(((u >> 31) << 15) | (255u << 7) | 64u | (payload >> 16));
}

std::uint16_t fp16_expected(float x) {
  return std::isnan(x) ? fp16_nan_ref(fbits(x)) : nearest_ref(fp16_table(), x);
}
std::uint16_t bf16_expected(float x) {
  return std::isnan(x) ? bf16_nan_ref(fbits(x)) : nearest_ref(bf16_table(), x);
}

// Boundary inputs, as float bit patterns.
std::vector<std::uint32_t> boundary_patterns() {
  std::vector<std::uint32_t> v = {
      0x00000000, 0x80000000,                          // signed zeros
      0x7F800000, 0xFF800000,                          // infinities
      0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001,  // NaNs: quiet, tiny signalling
      0x7FBFFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 0x7F802000,  // payload bits at the cut
      0x7F801FFF, 0x7F810000, 0x7F80FFFF, 0xFFA00000,
      0x00000001, 0x80000001, 0x007FFFFF, 0x807FFFFF,  // float subnormals
      0x00800000, 0x00008000, 0x00018000, 0x00008001,  // smallest normal, bf16 ties
      0x00007FFF, 0x007F8000, 0x007FC000,
      0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F8000, 0x7F7F7FFF,  // FLT_MAX, bf16 overflow tie
      0x7F7F8001, 0x7F7EFFFF, 0x7F7E8000,
      0x3F800000, 0x3F808000, 0x3F818000, 0x3F808001, 0x3F807FFF,  // bf16 ties near 1
      0xBF808000, 0xBF818000,
      0x3F801000, 0x3F803000, 0x3F801001, 0x3F800FFF,  // fp16 ties near 1
      0xBF801000, 0xBF803000,
      0x477FE000, 0x477FEFFF, 0x477FF000, 0x477FF001,  // 65504, below/at/above 65520
      0xC77FE000, 0xC77FF000, 0x47800000, 0x477FE001,  // 65536
      0x45001000, 0x45003000,                          // 2049, 2051 (fp16 ties)
      0x33800000, 0xB3800000, 0x33000000, 0xB3000000,  // 2^-24, 2^-25
      0x33000001, 0x32FFFFFF, 0x33400000, 0x33C00000,  // 1.5 * 2^-24, tie 1.5 -> 2
      0x34200000, 0x34300000,                          // 5 * 2^-25 ... ties among subnormals
      0x387FC000, 0x387FE000, 0x387FDFFF, 0x387FE001,  // around the largest subnormal
      0x38800000, 0x38000000, 0x387FFFFF, 0x38801000,  // 2^-14, 2^-15, just below 2^-14
      0x3F7FFFFF, 0x4B7FFFFF, 0x4B800000, 0x3EAAAAAB,  // odd mantissas
  };
  // Neighbours of every fp16 and bf16 rounding boundary near a few binades.
  for (std::uint32_t base : {0x3F800000u, 0x33800000u, 0x38800000u, 0x477FE000u, 0x00010000u}) {
    for (std::uint32_t d = 0; d < 0x4000; d += 0x7FF) {
      v.push_back(base + d);
      v.push_back((base + d) | 0x80000000u);
    }
  }
  return v;
}

std::vector<float> boundary_floats() {
  std::vector<float> f;
  for (std::uint32_t u : boundary_patterns()) f.push_back(bitsf(u));
  return f;
}

// Every 4099th float bit pattern (4099 is odd and prime, so all mantissa and exponent
// residues are hit): about a million inputs.
std::vector<float> strided_sweep() {
  std::vector<float> f;
  f.reserve((1ull << 32) / 4099 + 1);
  for (std::uint64_t u = 0; u < (1ull << 32); u += 4099) f.push_back(bitsf(static_cast<std::uint32_t>(u)));
  return f;
}

// Random inputs biased towards the interesting classes.
float special_float() {
  switch (qlib_test::rand_int(0, 9)) {
    case 0: return bitsf(static_cast<std::uint32_t>(qlib_test::rng()()));  // any pattern
    case 1: {  // NaN with a random payload and sign
      std::uint32_t u = static_cast<std::uint32_t>(qlib_test::rng()());
      u = (u & 0x807FFFFFu) | 0x7F800000u;
      return bitsf((u & 0x7FFFFF) ? u : (u | 1u));
    }
    case 2: return qlib_test::rand_int(0, 1) ? HUGE_VALF : -HUGE_VALF;
    case 3: return bitsf(static_cast<std::uint32_t>(qlib_test::rng()()) & 0x807FFFFFu);  // float subnormal
    case 4: return qlib_test::rand_float(-6.1e-5f, 6.1e-5f);   // fp16 subnormal range
    case 5: return qlib_test::rand_float(-70000.f, 70000.f);  // around fp16 overflow
    case 6: {  // fp16 tie: representable fp16 plus half an ulp
      const float h = fp16_bits_to_float(static_cast<std::uint16_t>(qlib_test::rand_int(0, 0x7BFE)));
      const float h2 = fp16_bits_to_float(static_cast<std::uint16_t>(float_to_fp16_bits(h) + 1));
      return (h + h2) * 0.5f;
    }
    case 7: {  // bf16 tie
      const std::uint32_t u = static_cast<std::uint32_t>(qlib_test::rng()()) & 0xFFFF0000u;
      return bitsf(u | 0x8000u);
    }
    default: return qlib_test::rand_float(-4.f, 4.f);
  }
}

// Runs f(tag, name) for every ISA tag whose kernels this CPU can run.
template <class F>
int for_each_isa(F&& f) {
  int count = 0;
  f(arch::portable{}, "portable"), ++count;
  if (isa_supported(isa::avx2) && cpu().f16c) f(arch::avx2{}, "avx2"), ++count;
  if (isa_supported(isa::avx512) && cpu().f16c) f(arch::avx512{}, "avx512"), ++count;
  if (isa_supported(isa::neon)) f(arch::neon{}, "neon"), ++count;
  return count;
}

template <class T>
std::vector<std::uint16_t> bits_of(const std::vector<T>& v) {
  std::vector<std::uint16_t> b;
  for (const T& x : v) b.push_back(x.bits());
  return b;
}

std::vector<std::uint32_t> bits_of(const std::vector<float>& v) {
  std::vector<std::uint32_t> b;
  for (float x : v) b.push_back(fbits(x));
  return b;
}

// Runs the four kernels of one ISA on `in` (floats) and `h` (16-bit patterns) and
// compares every output bit for bit with the scalar reference.
template <class Tag>
void check_kernels_on(Tag tag, const std::vector<float>& in, const std::vector<std::uint16_t>& h) {
  const index_t n = static_cast<index_t>(in.size());
  std::vector<fp16> f16(in.size());
  std::vector<bf16> b16(in.size());
  kernels::convert_f32_to_f16(tag, in.data(), f16.data(), n);
  kernels::convert_f32_to_bf16(tag, in.data(), b16.data(), n);
  std::size_t bad16 = 0, badb = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (f16[i].bits() != float_to_fp16_bits(in[i]) && bad16++ < 5)
      FAIL_CHECK("fp16 of " << std::hex << fbits(in[i]) << ": got " << f16[i].bits() << " want "
                            << float_to_fp16_bits(in[i]));
    if (b16[i].bits() != float_to_bf16_bits(in[i]) && badb++ < 5)
      FAIL_CHECK("bf16 of " << std::hex << fbits(in[i]) << ": got " << b16[i].bits() << " want "
                            << float_to_bf16_bits(in[i]));
  }
  CHECK(bad16 == 0);
  CHECK(badb == 0);

  const index_t m = static_cast<index_t>(h.size());
  std::vector<fp16> hf(h.size());
  std::vector<bf16> hb(h.size());
  for (std::size_t i = 0; i < h.size(); ++i) {
    hf[i] = fp16::from_bits(h[i]);
    hb[i] = bf16::from_bits(h[i]);
  }
  std::vector<float> of(h.size()), ob(h.size());
  kernels::convert_f16_to_f32(tag, hf.data(), of.data(), m);
  kernels::convert_bf16_to_f32(tag, hb.data(), ob.data(), m);
  std::size_t bad = 0;
  for (std::size_t i = 0; i < h.size(); ++i) {
    if (fbits(of[i]) != fbits(fp16_bits_to_float(h[i])) && bad++ < 5)
      FAIL_CHECK("float of fp16 " << std::hex << h[i] << ": got " << fbits(of[i]));
    if (fbits(ob[i]) != fbits(bf16_bits_to_float(h[i])) && bad++ < 5)
      FAIL_CHECK("float of bf16 " << std::hex << h[i] << ": got " << fbits(ob[i]));
  }
  CHECK(bad == 0);
}

std::vector<std::uint16_t> all_16bit_patterns() {
  std::vector<std::uint16_t> h(65536);
  for (unsigned i = 0; i < 65536; ++i) h[i] = static_cast<std::uint16_t>(i);
  return h;
}

}  // namespace

// ---- Types ------------------------------------------------------------------------

TEST_CASE("fp16 and bf16 are 16-bit trivially copyable bit holders", "[half]") {
  STATIC_REQUIRE(sizeof(fp16) == 2);
  STATIC_REQUIRE(sizeof(bf16) == 2);
  STATIC_REQUIRE(std::is_trivially_copyable<fp16>::value);
  STATIC_REQUIRE(std::is_trivially_copyable<bf16>::value);
  STATIC_REQUIRE(!std::is_convertible<float, fp16>::value);  // explicit only
  STATIC_REQUIRE(!std::is_convertible<fp16, float>::value);
  STATIC_REQUIRE(!std::is_convertible<float, bf16>::value);
  STATIC_REQUIRE(!std::is_convertible<bf16, float>::value);
  STATIC_REQUIRE(std::is_constructible<fp16, float>::value);
  STATIC_REQUIRE(fp16::from_bits(0x3C00).bits() == 0x3C00);
  STATIC_REQUIRE(bf16::from_bits(0x3F80).bits() == 0x3F80);

  CHECK(fp16(1.0f).bits() == 0x3C00);
  CHECK(fp16(-2.0f).bits() == 0xC000);
  CHECK(fp16(65504.0f).bits() == 0x7BFF);
  CHECK(fp16(65520.0f).bits() == 0x7C00);
  CHECK(fp16(5.9604644775390625e-8f).bits() == 0x0001);  // 2^-24
  CHECK(fp16(-0.0f).bits() == 0x8000);
  CHECK(static_cast<float>(fp16::from_bits(0x3555)) == 0.333251953125f);
  CHECK(bf16(1.0f).bits() == 0x3F80);
  CHECK(bf16(3.14159265f).bits() == 0x4049);
  CHECK(static_cast<float>(bf16::from_bits(0xC049)) == -3.140625f);
  CHECK(to_float(to_fp16(0.5f)) == 0.5f);
  CHECK(to_float(to_bf16(-0.25f)) == -0.25f);
  CHECK(std::isnan(static_cast<float>(fp16(std::nanf("")))));
  CHECK(std::isnan(static_cast<float>(bf16(std::nanf("")))));
}

// ---- Scalar reference vs independent references -------------------------------------

TEST_CASE("every fp16 pattern converts to float exactly", "[half][fp16]") {
  for (unsigned i = 0; i < 65536; ++i) {
    const std::uint16_t h = static_cast<std::uint16_t>(i);
    const float f = fp16_bits_to_float(h);
    const double want = fp16_value(h);
    INFO("fp16 bits " << std::hex << i);
    REQUIRE(std::signbit(f) == ((h & 0x8000) != 0));
    if (std::isnan(want)) {
      REQUIRE(std::isnan(f));
      // Quiet bit set, the 10 payload bits at the top of the float mantissa, rest zero.
      REQUIRE(((fbits(f) >> 13) & 0x3FF) == ((h & 0x3FFu) | 0x200u));
      REQUIRE((fbits(f) & 0x1FFF) == 0);
      REQUIRE(float_to_fp16_bits(f) == (h | 0x200));  // back: quiet version of itself
    } else {
      REQUIRE(static_cast<double>(f) == want);
      REQUIRE(float_to_fp16_bits(f) == h);  // exact round trip
    }
  }
}

TEST_CASE("every bf16 pattern converts to float exactly", "[half][bf16]") {
  for (unsigned i = 0; i < 65536; ++i) {
    const std::uint16_t b = static_cast<std::uint16_t>(i);
    const float f = bf16_bits_to_float(b);
    const double want = bf16_value(b);
    INFO("bf16 bits " << std::hex << i);
    REQUIRE(std::signbit(f) == ((b & 0x8000) != 0));
    if (std::isnan(want)) {
      REQUIRE(std::isnan(f));
      REQUIRE(fbits(f) == static_cast<std::uint32_t>(b) * 65536u);  // payload kept whole
      REQUIRE(float_to_bf16_bits(f) == (b | 0x40));
    } else {
      REQUIRE(static_cast<double>(f) == want);
      REQUIRE(float_to_bf16_bits(f) == b);
    }
  }
}

TEST_CASE("float to fp16/bf16 matches nearest-value rounding on boundary cases", "[half]") {
  for (float x : boundary_floats()) {
    INFO("float bits " << std::hex << fbits(x));
    CHECK(float_to_fp16_bits(x) == fp16_expected(x));
    CHECK(float_to_bf16_bits(x) == bf16_expected(x));
  }
  // A few golden values, spelled out.
  CHECK(float_to_fp16_bits(bitsf(0x3F801000)) == 0x3C00);  // 1 + 2^-11: tie -> even 1
  CHECK(float_to_fp16_bits(bitsf(0x3F803000)) == 0x3C02);  // 1 + 3*2^-11: tie -> even
  CHECK(float_to_fp16_bits(bitsf(0x3F801001)) == 0x3C01);  // just above the tie
  CHECK(float_to_fp16_bits(bitsf(0x477FEFFF)) == 0x7BFF);  // just below 65520
  CHECK(float_to_fp16_bits(bitsf(0x477FF000)) == 0x7C00);  // 65520 -> Inf
  CHECK(float_to_fp16_bits(bitsf(0xC77FF000)) == 0xFC00);
  CHECK(float_to_fp16_bits(bitsf(0x33000000)) == 0x0000);  // 2^-25: tie -> 0
  CHECK(float_to_fp16_bits(bitsf(0x33000001)) == 0x0001);
  CHECK(float_to_fp16_bits(bitsf(0x33C00000)) == 0x0002);  // 1.5 * 2^-24: tie -> 2
  CHECK(float_to_fp16_bits(bitsf(0x387FE000)) == 0x0400);  // largest subnormal + half: tie -> 2^-14
  CHECK(float_to_fp16_bits(bitsf(0x80000001)) == 0x8000);
  CHECK(float_to_fp16_bits(bitsf(0x7F800001)) == 0x7E00);  // sNaN stays NaN, not Inf
  CHECK(float_to_fp16_bits(bitsf(0xFFC00000)) == 0xFE00);
  CHECK(float_to_bf16_bits(bitsf(0x3F808000)) == 0x3F80);  // tie -> even
  CHECK(float_to_bf16_bits(bitsf(0x3F818000)) == 0x3F82);
  CHECK(float_to_bf16_bits(bitsf(0x7F7F8000)) == 0x7F80);  // overflow tie -> Inf
  CHECK(float_to_bf16_bits(bitsf(0x7F7F7FFF)) == 0x7F7F);
  CHECK(float_to_bf16_bits(bitsf(0x00008001)) == 0x0001);  // subnormal, not flushed
  CHECK(float_to_bf16_bits(bitsf(0x00018000)) == 0x0002);
  CHECK(float_to_bf16_bits(bitsf(0x007FFFFF)) == 0x0080);  // rounds up to the smallest normal
  CHECK(float_to_bf16_bits(bitsf(0x7F800001)) == 0x7FC0);  // sNaN stays NaN, not Inf
  CHECK(float_to_bf16_bits(bitsf(0xFF800001)) == 0xFFC0);
}

TEST_CASE("float to fp16/bf16 matches nearest-value rounding on a sweep of 2^32/4099 patterns",
          "[half]") {
  const std::vector<float> in = strided_sweep();
  std::size_t bad16 = 0, badb = 0;
  for (float x : in) {
    const std::uint16_t h = float_to_fp16_bits(x), he = fp16_expected(x);
    const std::uint16_t b = float_to_bf16_bits(x), be = bf16_expected(x);
    if (h != he && bad16++ < 5)
      FAIL_CHECK("fp16 of " << std::hex << fbits(x) << ": got " << h << " want " << he);
    if (b != be && badb++ < 5)
      FAIL_CHECK("bf16 of " << std::hex << fbits(x) << ": got " << b << " want " << be);
  }
  CHECK(bad16 == 0);
  CHECK(badb == 0);
  CHECK(in.size() > 1000000);
}

// ---- Every ISA kernel vs the scalar reference --------------------------------------

TEST_CASE("every ISA kernel matches the reference on all 16-bit patterns, boundaries and a sweep",
          "[half][isa]") {
  const std::vector<std::uint16_t> all = all_16bit_patterns();
  std::vector<float> in = boundary_floats();
  const std::vector<float> sweep = strided_sweep();
  in.insert(in.end(), sweep.begin(), sweep.end());
  for (unsigned i = 0; i < 65536; ++i) {  // floats that are exactly fp16 / bf16 values
    in.push_back(fp16_bits_to_float(static_cast<std::uint16_t>(i)));
    in.push_back(bf16_bits_to_float(static_cast<std::uint16_t>(i)));
  }
  const int n = for_each_isa([&](auto tag, const char* name) {
    INFO("isa " << name);
    check_kernels_on(tag, in, all);
  });
  CHECK(n >= 1);
}

TEST_CASE("every ISA kernel matches the reference for every length 0..300 and alignment",
          "[half][isa]") {
  for_each_isa([&](auto tag, const char* name) {
    for (int len = 0; len <= 300; ++len) {
      for (int offset = 0; offset < 16; ++offset) {  // every alignment of a float pointer
        INFO("isa " << name << " length " << len << " offset " << offset);
        // Exactly sized inputs (so ASan sees over-reads), guarded outputs.
        std::vector<float> in(static_cast<std::size_t>(len + offset));
        std::vector<std::uint16_t> h(static_cast<std::size_t>(len + offset));
        for (auto& x : in) x = special_float();
        for (auto& x : h) x = static_cast<std::uint16_t>(qlib_test::rng()());
        const float* src = in.data() + offset;
        constexpr int guard = 40;
        std::vector<fp16> f16(static_cast<std::size_t>(len + offset + guard), fp16::from_bits(0xA5A5));
        std::vector<bf16> b16(static_cast<std::size_t>(len + offset + guard), bf16::from_bits(0x5A5A));
        std::vector<float> of(static_cast<std::size_t>(len + offset + guard), -7.0f);
        std::vector<float> ob(static_cast<std::size_t>(len + offset + guard), -7.0f);
        std::vector<fp16> hf(h.size());
        std::vector<bf16> hb(h.size());
        for (std::size_t i = 0; i < h.size(); ++i) {
          hf[i] = fp16::from_bits(h[i]);
          hb[i] = bf16::from_bits(h[i]);
        }
        kernels::convert_f32_to_f16(tag, src, f16.data() + offset, len);
        kernels::convert_f32_to_bf16(tag, src, b16.data() + offset, len);
        kernels::convert_f16_to_f32(tag, hf.data() + offset, of.data() + offset, len);
        kernels::convert_bf16_to_f32(tag, hb.data() + offset, ob.data() + offset, len);
        bool ok = true;
        for (int i = 0; i < len + offset + guard; ++i) {
          const bool inside = i >= offset && i < offset + len;
          const std::size_t k = static_cast<std::size_t>(i);
          const std::uint16_t w16 = inside ? float_to_fp16_bits(in[k]) : 0xA5A5;
          const std::uint16_t wb = inside ? float_to_bf16_bits(in[k]) : 0x5A5A;
          const std::uint32_t wf = inside ? fbits(fp16_bits_to_float(h[k])) : fbits(-7.0f);
          const std::uint32_t wbf = inside ? fbits(bf16_bits_to_float(h[k])) : fbits(-7.0f);
          ok = ok && f16[k].bits() == w16 && b16[k].bits() == wb && fbits(of[k]) == wf &&
               fbits(ob[k]) == wbf;
        }
        REQUIRE(ok);
      }
    }
  });
}

#if QLIB_ARCH_X86_64 && (defined(__GNUC__) || defined(__clang__))
namespace {
// MXCSR control bits: DAZ (6), FTZ (15), rounding control (13-14).
struct mxcsr_scope {
  unsigned saved = __builtin_ia32_stmxcsr();
  explicit mxcsr_scope(unsigned set_bits) { __builtin_ia32_ldmxcsr(saved | set_bits); }
  ~mxcsr_scope() { __builtin_ia32_ldmxcsr(saved); }
};
}  // namespace
#endif
#if QLIB_ARCH_AARCH64 && (defined(__GNUC__) || defined(__clang__))
namespace {
// FPCR control bits: AHP (26), DN (25), FZ (24), FZ16 (19).
struct fpcr_scope {
  std::uint64_t saved = read();
  explicit fpcr_scope(std::uint64_t set_bits) { write(saved | set_bits); }
  ~fpcr_scope() { write(saved); }
  static std::uint64_t read() {
    std::uint64_t v;
    __asm__ volatile("mrs %0, fpcr" : "=r"(v) : : "memory");
    return v;
  }
  static void write(std::uint64_t v) { __asm__ volatile("msr fpcr, %0" : : "r"(v) : "memory"); }
};
}  // namespace
#endif

TEST_CASE("kernels ignore the FP environment (rounding mode, DAZ/FTZ)", "[half][isa]") {
  const std::vector<std::uint16_t> all = all_16bit_patterns();
  std::vector<float> in = boundary_floats();
  for (int i = 0; i < 20000; ++i) in.push_back(special_float());
  for (int mode : {FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO}) {
    INFO("rounding mode " << mode);
    const int old = std::fegetround();
    REQUIRE(std::fesetround(mode) == 0);
    for_each_isa([&](auto tag, const char* name) {
      INFO("isa " << name);
#if QLIB_ARCH_X86_64 && (defined(__GNUC__) || defined(__clang__))
      mxcsr_scope daz_ftz((1u << 6) | (1u << 15));
#endif
#if QLIB_ARCH_AARCH64 && (defined(__GNUC__) || defined(__clang__))
      fpcr_scope ahp_dn_fz((1ull << 26) | (1ull << 25) | (1ull << 24) | (1ull << 19));
#endif
      check_kernels_on(tag, in, all);
    });
    std::fesetround(old);
  }
}

// ---- Public API: dispatch, views, errors --------------------------------------------

TEST_CASE("bulk API dispatches to every ISA with identical results", "[half][api]") {
  std::vector<float> in(1037);
  for (auto& x : in) x = special_float();
  std::vector<fp16> want16(in.size());
  std::vector<bf16> wantb(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    want16[i] = fp16(in[i]);
    wantb[i] = bf16(in[i]);
  }
  for (isa i : {isa::portable, isa::avx2, isa::avx512, isa::avx512_vnni, isa::neon}) {
    if (!isa_supported(i)) continue;
    INFO("isa limit " << isa_name(i));
    set_isa_limit(i);
    std::vector<fp16> f16(in.size());
    std::vector<bf16> b16(in.size());
    std::vector<float> back16(in.size()), backb(in.size());
    float_to_fp16(in.data(), f16.data(), static_cast<index_t>(in.size()));
    float_to_bf16(make_view(in.data(), static_cast<index_t>(in.size())),
                  make_view(b16.data(), static_cast<index_t>(b16.size())));
    fp16_to_float(f16.data(), back16.data(), static_cast<index_t>(in.size()));
    bf16_to_float(make_view(b16.data(), static_cast<index_t>(b16.size())),
                  make_view(backb.data(), static_cast<index_t>(backb.size())));
    CHECK(bits_of(f16) == bits_of(want16));
    CHECK(bits_of(b16) == bits_of(wantb));
    std::vector<float> want_back16(in.size()), want_backb(in.size());
    for (std::size_t k = 0; k < in.size(); ++k) {
      want_back16[k] = static_cast<float>(want16[k]);
      want_backb[k] = static_cast<float>(wantb[k]);
    }
    CHECK(bits_of(back16) == bits_of(want_back16));
    CHECK(bits_of(backb) == bits_of(want_backb));
  }
  clear_isa_limit();
}

TEST_CASE("bulk API handles strided and reversed views", "[half][api]") {
  std::vector<float> in(60);
  for (auto& x : in) x = special_float();
  // Every third float, into every second fp16 slot.
  tensor_view<const float, 1> src(in.data(), {20}, {3});
  std::vector<fp16> out16(40, fp16::from_bits(0x1234));
  float_to_fp16(src, tensor_view<fp16, 1>(out16.data(), {20}, {2}));
  for (int i = 0; i < 40; ++i)
    CHECK(out16[static_cast<std::size_t>(i)].bits() ==
          (i % 2 ? 0x1234 : float_to_fp16_bits(in[static_cast<std::size_t>(3 * (i / 2))])));
  // Reversed (negative stride) bf16 source.
  std::vector<bf16> b(10);
  for (int i = 0; i < 10; ++i) b[static_cast<std::size_t>(i)] = bf16(static_cast<float>(i));
  std::vector<float> back(10);
  bf16_to_float(tensor_view<const bf16, 1>(b.data() + 9, {10}, {-1}), make_view(back.data(), 10));
  for (int i = 0; i < 10; ++i) CHECK(back[static_cast<std::size_t>(i)] == static_cast<float>(9 - i));
  // Strided fp16 source into a dense float destination.
  std::vector<float> f(20, 0.f);
  fp16_to_float(tensor_view<const fp16, 1>(out16.data(), {20}, {2}), make_view(f.data(), 20));
  for (int i = 0; i < 20; ++i)
    CHECK(fbits(f[static_cast<std::size_t>(i)]) ==
          fbits(fp16_bits_to_float(out16[static_cast<std::size_t>(2 * i)].bits())));
  // Empty views and zero counts are no-ops, null pointers allowed for n == 0.
  float_to_bf16(tensor_view<const float, 1>(), tensor_view<bf16, 1>());
  float_to_fp16(static_cast<const float*>(nullptr), static_cast<fp16*>(nullptr), 0);
  bf16_to_float(static_cast<const bf16*>(nullptr), static_cast<float*>(nullptr), 0);
}

TEST_CASE("bulk API validates its arguments", "[half][api][errors]") {
  std::vector<float> f(8, 1.0f);
  std::vector<fp16> h(8);
  std::vector<bf16> b(8);
  // Size mismatch.
  QLIB_REQUIRE_ERROR(float_to_fp16(make_view(f.data(), 8), make_view(h.data(), 7)), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(fp16_to_float(make_view(h.data(), 8), make_view(f.data(), 4)), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(float_to_bf16(make_view(f.data(), 3), make_view(b.data(), 8)), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(bf16_to_float(make_view(b.data(), 0), make_view(f.data(), 1)), errc::shape_mismatch);
  // Null pointers with n > 0, negative counts.
  QLIB_REQUIRE_ERROR(float_to_fp16(nullptr, h.data(), 8), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(float_to_fp16(f.data(), nullptr, 1), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(fp16_to_float(nullptr, f.data(), 2), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(float_to_bf16(f.data(), nullptr, 8), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(bf16_to_float(b.data(), nullptr, 8), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(bf16_to_float(b.data(), f.data(), -1), errc::invalid_argument);
  // Overlapping src and dst (in-place conversion is refused).
  QLIB_REQUIRE_ERROR(float_to_bf16(f.data(), reinterpret_cast<bf16*>(f.data()), 8), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(fp16_to_float(reinterpret_cast<fp16*>(f.data() + 2), f.data(), 4),
                     errc::invalid_argument);
  QLIB_REQUIRE_ERROR(float_to_fp16(make_view(f.data(), 4), make_view(reinterpret_cast<fp16*>(f.data() + 3), 4)),
                     errc::invalid_argument);
  // Adjacent but disjoint ranges are fine.
  alignas(16) unsigned char buf[24] = {};
  float* fs = reinterpret_cast<float*>(buf);
  fp16* hs = reinterpret_cast<fp16*>(buf + 16);
  for (int i = 0; i < 4; ++i) fs[i] = static_cast<float>(i + 1);
  float_to_fp16(fs, hs, 4);
  CHECK(hs[0].bits() == 0x3C00);
  CHECK(hs[3].bits() == 0x4400);
}
