// int8 GEMM: every ISA path bit-exact against gemm::reference on the standard case list and
// thousands of random cases (tails, strides, zero points, pipelines, threads, K at the overflow bound).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gemm_test_util.hpp"
#include "qlib/quantize.hpp"

using namespace qlib;
using namespace gemm_test;

namespace {

// A user-defined stage with no ISA implementation: runs through the portable fallback.
struct mix_stage {
  using input_type = std::int32_t;
  using output_type = std::int32_t;
  std::int32_t eval(std::int32_t x, index_t row, index_t col) const noexcept {
    return (x >> 3) ^ static_cast<std::int32_t>(row * 7 + col);
  }
  void validate(index_t, index_t) const noexcept {}
};
// The same for a type change (int32 -> int8) and a float output.
struct low_bits_stage {
  using input_type = std::int32_t;
  using output_type = std::int8_t;
  std::int8_t eval(std::int32_t x, index_t, index_t) const noexcept { return static_cast<std::int8_t>(x & 0x7f); }
  void validate(index_t, index_t) const noexcept {}
};
struct quarter_stage {
  using input_type = std::int32_t;
  using output_type = float;
  float eval(std::int32_t x, index_t, index_t) const noexcept { return static_cast<float>(x) * 0.25f; }
  void validate(index_t, index_t) const noexcept {}
};

// Runs tasks on the calling thread in reverse order: a pluggable executor that creates
// no thread and shows that order does not matter.
struct reverse_executor final : parallel_executor {
  int concurrency() const noexcept override { return 1; }
  void parallel_for(index_t count, task_ref task) override {
    for (index_t i = count; i-- > 0;) task(i);
  }
};

struct case_spec {
  index_t m = 1, n = 1, k = 1;
  index_t a_pad = 0, c_pad = 0;
  bool signed_a = false;
  std::int32_t a_zero_point = 0;
  bool per_channel = false;
  bool weight_zero_points = false;
  bool b_transposed = false;  // B given as the transpose of an N x K tensor
  int value_mode = 0;         // 0 uniform, 1 extremes only, 2 7-bit weights (AVX2's vpmaddubsw kernel)
  int threads = 1;
  int executor = 0;  // 0 default pool, 1 serial_executor, 2 reverse_executor
  int pipeline = 0;

  std::string describe() const {
    return "M " + std::to_string(m) + " N " + std::to_string(n) + " K " + std::to_string(k) + " a_pad " +
           std::to_string(a_pad) + " c_pad " + std::to_string(c_pad) + (signed_a ? " s8" : " u8") + " za " +
           std::to_string(a_zero_point) + (per_channel ? " per_channel" : " per_tensor") +
           (weight_zero_points ? " zb!=0" : " zb=0") + (b_transposed ? " B^T" : "") + " values " +
           std::to_string(value_mode) + " threads " + std::to_string(threads) + "/" + std::to_string(executor) +
           " pipeline " + std::to_string(pipeline);
  }
};

template <class T>
T random_operand(int mode) {
  if (mode == 1 || (mode == 2 && rand_int(0, 1) == 0))
    return rand_int(0, 1) ? std::numeric_limits<T>::min() : std::numeric_limits<T>::max();
  return random_value<T>();
}
// A weight in [-64, 63], the ends often: the largest pair sums vpmaddubsw sees.
std::int8_t random_7bit_weight() {
  if (rand_int(0, 2) == 0) return static_cast<std::int8_t>(rand_int(0, 1) ? -64 : 63);
  return static_cast<std::int8_t>(rand_int(-64, 63));
}

template <class Act>
struct operands {
  strided_matrix<Act> a;
  tensor<std::int8_t, 2> b_storage;
  tensor_view<const std::int8_t, 2> b;
  quant_params weight_params;
  gemm::packed_weights packed;

  explicit operands(const case_spec& cs) : a(cs.m, cs.k, cs.k + cs.a_pad, Act{0x5a}) {
    for (index_t r = 0; r < cs.m; ++r)
      for (index_t c = 0; c < cs.k; ++c) a.at(r, c) = random_operand<Act>(cs.value_mode);
    if (cs.b_transposed) {
      b_storage = tensor<std::int8_t, 2>({cs.n, cs.k});
      b = tensor_view<const std::int8_t, 2>(b_storage.view()).transpose(0, 1);
    } else {
      b_storage = tensor<std::int8_t, 2>({cs.k, cs.n});
      b = b_storage.cview();
    }
    for (auto& v : b_storage) v = cs.value_mode == 2 ? random_7bit_weight() : random_operand<std::int8_t>(cs.value_mode);
    const index_t params = cs.per_channel ? cs.n : 1;
    std::vector<float> scales(static_cast<std::size_t>(params));
    std::vector<std::int32_t> zps(scales.size(), 0);
    for (std::size_t i = 0; i < scales.size(); ++i) {
      scales[i] = std::ldexp(1.0f, rand_int(-12, -4)) * (1.0f + static_cast<float>(rand_int(0, 100)) / 128.0f);
      if (cs.weight_zero_points) zps[i] = rand_int(-128, 127);
    }
    weight_params = quant_params(cs.per_channel ? granularity::per_channel(1) : granularity::per_tensor(), -128, 127,
                                 scales, zps);
    packed = gemm::pack(b, weight_params);
    if (cs.value_mode == 2) REQUIRE(packed.fits_7_bits());
  }
};

// Per-column arrays and scalars the pipelines point into; they outlive the calls.
struct stage_params {
  std::vector<std::int32_t> bias, multiplier, shift;
  std::vector<float> float_multiplier, channel_scale;
  quantized_multiplier tensor_multiplier;
  float tensor_float_multiplier = 1.0f;
  std::int32_t out_zp = 0;

  stage_params(index_t n, index_t k) {
    // Multipliers that map typical accumulators (sigma ~ sqrt(K) * 74 * 74) to about
    // +-150, so the int8 clamps are hit; a few large ones exercise left shifts.
    const double typical = std::sqrt(static_cast<double>(k)) * 74.0 * 74.0;
    auto real = [&] {
      if (rand_int(0, 15) == 0) return std::ldexp(1.0, rand_int(-1, 6));
      return 150.0 / typical * std::ldexp(1.0, rand_int(-2, 2)) * (1.0 + rand_int(0, 999) / 1000.0);
    };
    tensor_multiplier = quantize_multiplier(real());
    tensor_float_multiplier = static_cast<float>(real());
    out_zp = rand_int(-20, 20);
    for (index_t j = 0; j < n; ++j) {
      bias.push_back(rand_int(-(1 << 20), 1 << 20));
      const quantized_multiplier q = quantize_multiplier(real());
      multiplier.push_back(q.multiplier);
      shift.push_back(q.shift);
      float_multiplier.push_back(static_cast<float>(real()));
      channel_scale.push_back(std::ldexp(1.0f, rand_int(-10, -4)) * (1.0f + static_cast<float>(rand_int(0, 63)) / 64.0f));
    }
  }
};

// Reference once, then every supported ISA by static dispatch (gemm(tag, ...)), and one
// random ISA again through run-time dispatch under set_isa_limit().
template <class Act, class Pipeline>
void check_pipeline(const case_spec& cs, const operands<Act>& ops, const Pipeline& pipeline) {
  using Out = gemm::pipeline_output_t<Pipeline>;
  tensor<Out, 2> want({cs.m, cs.n});
  gemm::reference::gemm(ops.a.cview(), cs.a_zero_point, ops.b, ops.weight_params, pipeline, want.view());

  static serial_executor serial;
  static reverse_executor reverse;
  gemm::gemm_options opt;
  opt.threads = cs.threads;
  opt.executor = cs.executor == 1 ? static_cast<parallel_executor*>(&serial)
                                  : cs.executor == 2 ? static_cast<parallel_executor*>(&reverse) : nullptr;
  const Out sentinel = sentinel_value<Out>();
  const std::vector<isa> isas = supported_isas();
  for (isa i : isas) {
    INFO("isa " << isa_name(i) << " kernel " << gemm::kernel_name(i, ops.packed));
    strided_matrix<Out> c(cs.m, cs.n, cs.n + cs.c_pad, sentinel);
    dispatch_isa(i, [&](auto tag) {
      gemm::gemm(tag, ops.a.cview(), gemm::activation_params{cs.a_zero_point}, ops.packed, pipeline, c.view(), opt);
    });
    const std::string diff = compare(c, want, sentinel);
    INFO(diff);
    REQUIRE(diff.empty());
  }
#if QLIB_HAS_X86_KERNELS
  // The AVX-VNNI kernel's code, EVEX-encoded, with the epilogue an AVX-VNNI CPU runs
  // (AVX2's): the only way to execute it on a CPU without AVX-VNNI.
  if (isa_supported(isa::avx512_vnni)) {
    strided_matrix<Out> c(cs.m, cs.n, cs.n + cs.c_pad, sentinel);
    gemm::detail::validate_gemm(ops.a.cview(), gemm::activation_params{cs.a_zero_point}, ops.packed, pipeline,
                                c.view(), opt);
    gemm::detail::run_gemm_with<kernels::avx_vnni_evex_gemm_kernel>(arch::avx2{}, ops.a.cview(), cs.a_zero_point,
                                                                      ops.packed, pipeline, c.view(), opt);
    const std::string diff = compare(c, want, sentinel);
    INFO("avx_vnni kernel (EVEX twin): " << diff);
    REQUIRE(diff.empty());
  }
#endif
  const isa pick = isas[static_cast<std::size_t>(rand_int(0, static_cast<int>(isas.size()) - 1))];
  set_isa_limit(pick);
  strided_matrix<Out> c(cs.m, cs.n, cs.n + cs.c_pad, sentinel);
  gemm::gemm(ops.a.cview(), gemm::activation_params{cs.a_zero_point}, ops.packed, pipeline, c.view(), opt);
  clear_isa_limit();
  const std::string diff = compare(c, want, sentinel);
  INFO("run-time dispatch capped at " << isa_name(pick) << ": " << diff);
  REQUIRE(diff.empty());
}

constexpr int pipeline_count = 12;

template <class Act>
void run_case(const case_spec& cs) {
  INFO(cs.describe());
  const operands<Act> ops(cs);
  const stage_params sp(cs.n, cs.k);
  const index_t n = cs.n;
  using fpr = fixed_point_rounding;
  const gemm::bias_add bias{sp.bias.data(), n};
  switch (cs.pipeline) {
    case 0: return check_pipeline(cs, ops, std::tuple<>{});
    case 1:
      return check_pipeline(
          cs, ops,
          gemm::make_pipeline(bias,
                              gemm::requantize_fixed_point<fpr::double_rounding>{sp.tensor_multiplier.multiplier,
                                                                                 sp.tensor_multiplier.shift, sp.out_zp},
                              gemm::clamp{-100, 90}, gemm::saturating_cast<std::int8_t>{}));
    case 2:
      return check_pipeline(cs, ops,
                            gemm::make_pipeline(gemm::requantize_fixed_point_per_channel<fpr::single_rounding>{
                                                    sp.multiplier.data(), sp.shift.data(), n, sp.out_zp + 128},
                                                gemm::saturating_cast<std::uint8_t>{}));
    case 3:
      return check_pipeline(cs, ops,
                            gemm::make_pipeline(bias,
                                                gemm::requantize_fixed_point_per_channel<fpr::double_rounding>{
                                                    sp.multiplier.data(), sp.shift.data(), n, sp.out_zp},
                                                gemm::relu(sp.out_zp), gemm::saturating_cast<std::int8_t>{}));
    case 4:
      return check_pipeline(
          cs, ops,
          gemm::make_pipeline(gemm::requantize_fixed_point<fpr::single_rounding>{sp.tensor_multiplier.multiplier,
                                                                                  sp.tensor_multiplier.shift, 0},
                              gemm::saturating_cast<std::int16_t>{}));
    case 5:
      return check_pipeline(cs, ops,
                            gemm::make_pipeline(gemm::requantize_float{sp.tensor_float_multiplier, sp.out_zp + 128, 0, 255},
                                                gemm::saturating_cast<std::uint8_t>{}));
    case 6:
      return check_pipeline(cs, ops,
                            gemm::make_pipeline(bias,
                                                gemm::requantize_float_per_channel{sp.float_multiplier.data(), n,
                                                                                   sp.out_zp, -128, 127},
                                                gemm::relu6(sp.out_zp, 0.05f), gemm::saturating_cast<std::int8_t>{}));
    case 7:
      return check_pipeline(cs, ops, gemm::make_pipeline(gemm::dequantize{0.001f}, gemm::relu6_float()));
    case 8:
      return check_pipeline(cs, ops,
                            gemm::make_pipeline(bias, gemm::dequantize_per_channel{0.02f, sp.channel_scale.data(), n},
                                                gemm::clamp_float{-3.0f, 2.5f}));
    case 9:
      return check_pipeline(cs, ops, gemm::make_pipeline(bias, mix_stage{}, gemm::saturating_cast<std::int8_t>{}));
    case 10: return check_pipeline(cs, ops, gemm::make_pipeline(bias, low_bits_stage{}));
    default: return check_pipeline(cs, ops, gemm::make_pipeline(quarter_stage{}, gemm::clamp_float{-1e3f, 1e3f}));
  }
}

void run_case(const case_spec& cs) {
  if (cs.signed_a) run_case<std::int8_t>(cs);
  else run_case<std::uint8_t>(cs);
}

// Random zero point of the activation type: often 0 (symmetric), else anywhere.
std::int32_t random_a_zero_point(bool signed_a) {
  if (rand_int(0, 2) == 0) return 0;
  return signed_a ? rand_int(-128, 127) : rand_int(0, 255);
}

index_t random_extent(int small_max, int large_max) {
  switch (rand_int(0, 5)) {
    case 0: return rand_int(1, 8);
    case 1: return rand_int(1, small_max);
    case 2: return 64 * rand_int(1, 3) + rand_int(-1, 1);  // around panel multiples
    default: return rand_int(1, large_max);
  }
}

}  // namespace

TEST_CASE("gemm: the standard case list on every ISA", "[gemm][isa]") {
  // M and N tails of every tile (6/4 rows, 64/16/8 columns), K below / at / above the
  // kernels' K step (4 bytes; 8 for the two-accumulator-set tiles), odd and prime strides.
  const index_t ms[] = {1, 2, 3, 5, 6, 7, 8, 13};
  const index_t ns[] = {1, 8, 17, 63, 64, 65, 129};
  const index_t ks[] = {1, 3, 4, 5, 8, 9, 67};
  const index_t pads[] = {0, 1, 7, 13};
  int count = 0;
  for (index_t m : ms)
    for (index_t n : ns)
      for (index_t k : ks) {
        case_spec cs;
        cs.m = m;
        cs.n = n;
        cs.k = k;
        cs.a_pad = pads[count % 4];
        cs.c_pad = pads[(count / 4) % 4];
        cs.signed_a = count % 2 == 1;
        cs.a_zero_point = (count / 2) % 3 == 0 ? 0 : (cs.signed_a ? -7 : 131);
        cs.per_channel = (count / 3) % 2 == 1;
        cs.weight_zero_points = (count / 5) % 3 == 0;
        cs.pipeline = count % pipeline_count;
        cs.value_mode = (count / 7) % 3 == 0 ? 2 : 0;
        run_case(cs);
        ++count;
      }
}

TEST_CASE("gemm: narrow panels (N <= 48 and the tails of wider N) on every ISA", "[gemm][isa][narrow]") {
  // AVX-512 VNNI runs a panel with <= 16, 32 or 48 real columns as 12 x 16, 12 x 32 or
  // 8 x 48 tiles (heights 6, 3, 2, 1 or 4, 2, 1 when M is smaller), the last partial tile
  // overlapping the one before it. These shapes put N on both sides of each width, M
  // and the per-thread row counts on both sides of the tile heights, and K through
  // every tail of the 4-byte groups, with int32 C and requantizing pipelines.
  const index_t ns[] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14,
                        15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 80, 96};
  const index_t ks[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 144, 145};
  const index_t ms[] = {1, 2, 3, 4, 5, 7, 8, 9, 11, 12, 13, 16, 17, 23, 24, 25, 29, 36, 37};
  const int pipelines[] = {0, 3, 0, 2, 0, 1, 0, 5};  // int32 C every other case
  SECTION("N x K, M cycling through the tile heights, threads 1..4") {
    int count = 0;
    for (index_t n : ns)
      for (index_t k : ks) {
        case_spec cs;
        cs.m = ms[count % 19];
        cs.n = n;
        cs.k = k;
        cs.a_pad = count % 5 == 0 ? 3 : 0;
        cs.c_pad = count % 7 == 0 ? 5 : 0;
        cs.signed_a = count % 2 == 1;
        cs.a_zero_point = (count / 2) % 3 == 0 ? 0 : (cs.signed_a ? -9 : 140);
        cs.per_channel = (count / 3) % 2 == 0;
        cs.weight_zero_points = count % 11 == 0;
        cs.threads = 1 + count % 4;
        cs.pipeline = pipelines[count % 8];
        run_case(cs);
        ++count;
      }
  }
  SECTION("every M from 1 to 37 at N = 16 and one of 32, 48, 80") {
    const index_t wider[] = {32, 48, 80};
    for (index_t m = 1; m <= 37; ++m)
      for (index_t n : {index_t{16}, wider[m % 3]}) {
        case_spec cs;
        cs.m = m;
        cs.n = n;
        cs.k = m % 2 ? 9 : 145;
        cs.signed_a = (m + n / 16) % 2 == 0;
        cs.a_zero_point = m % 3 == 0 ? 0 : (cs.signed_a ? 5 : 77);
        cs.per_channel = true;
        cs.weight_zero_points = m % 5 == 0;
        cs.threads = 1 + static_cast<int>(m % 4);
        cs.pipeline = m % 4 == 0 ? 0 : (m % 4 == 1 ? 3 : 2);
        run_case(cs);
      }
  }
  SECTION("row blocks: M past one block of rows, a short last block") {
    // K = 1500: blocks at the floor of row_block_rows (144 rows), the slab past L2.
    REQUIRE(gemm::detail::row_block_rows(1500) == gemm::detail::min_row_block);
    for (index_t k : {9, 145, 500, 1500})
      for (index_t n : {16, 33}) {
        case_spec cs;
        cs.m = 509;
        cs.n = n;
        cs.k = k;
        cs.signed_a = k == 145;
        cs.a_zero_point = 3;
        cs.per_channel = true;
        cs.weight_zero_points = n == 33;
        cs.threads = k == 500 ? 3 : 1;
        cs.pipeline = n == 16 ? 0 : 3;
        run_case(cs);
      }
  }
}

TEST_CASE("gemm: random shapes, strides, zero points, pipelines and threads on every ISA", "[gemm][isa][random]") {
  const int cases = 400 * QLIB_GEMM_TEST_SCALE;
  for (int t = 0; t < cases; ++t) {
    case_spec cs;
    cs.m = random_extent(20, 150);
    cs.n = random_extent(40, 200);
    cs.k = random_extent(16, 300);
    cs.a_pad = rand_int(0, 3) == 0 ? 0 : rand_int(1, 40);
    cs.c_pad = rand_int(0, 3) == 0 ? 0 : rand_int(1, 40);
    cs.signed_a = rand_int(0, 1) == 1;
    cs.a_zero_point = random_a_zero_point(cs.signed_a);
    cs.per_channel = rand_int(0, 1) == 1;
    cs.weight_zero_points = rand_int(0, 3) == 0;
    cs.b_transposed = rand_int(0, 2) == 0;
    cs.value_mode = rand_int(0, 7) == 0 ? 1 : rand_int(0, 3) == 0 ? 2 : 0;
    cs.threads = rand_int(0, 3) == 0 ? rand_int(2, 4) : 1;
    cs.executor = rand_int(0, 2);
    cs.pipeline = rand_int(0, pipeline_count - 1);
    run_case(cs);
  }
}

TEST_CASE("gemm: threads 1..4 and every executor give the serial bits", "[gemm][threads]") {
  // 12 x 12 runs with the reference each: 41 s under ASan at -O0, so a third there.
  const int cases = QLIB_GEMM_TEST_SCALE > 1 ? 12 : 4;
  for (int t = 0; t < cases; ++t) {
    case_spec cs;
    cs.m = t % 3 == 0 ? 1 : rand_int(1, 300);
    cs.n = rand_int(1, 400);
    cs.k = rand_int(1, 200);
    cs.signed_a = t % 2 == 0;
    cs.a_zero_point = random_a_zero_point(cs.signed_a);
    cs.per_channel = t % 4 < 2;
    cs.weight_zero_points = t % 3 == 1;
    cs.pipeline = t % pipeline_count;
    for (int threads = 1; threads <= 4; ++threads)
      for (int ex = 0; ex < 3; ++ex) {
        cs.threads = threads;
        cs.executor = ex;
        run_case(cs);
      }
  }
  SECTION("a user thread_pool, sleeping or spinning between calls") {
    for (int spin_us : {0, 50}) {
      thread_pool pool(3, spin_us);
      REQUIRE(pool.concurrency() == 3);
      std::vector<int> hits(100, 0);
      auto task = [&](index_t i) { hits[static_cast<std::size_t>(i)] += 1; };
      for (int rep = 0; rep < 50; ++rep) pool.parallel_for(100, task);
      pool.parallel_for(0, task);
      pool.parallel_for(1, task);
      REQUIRE(hits[0] == 51);
      for (std::size_t i = 1; i < hits.size(); ++i) REQUIRE(hits[i] == 50);
      // A GEMM on it gives the serial bits.
      case_spec cs;
      cs.m = 40;
      cs.n = 300;
      cs.k = 70;
      cs.threads = 3;
      cs.executor = 0;
      operands<std::uint8_t> ops(cs);
      tensor<std::int32_t, 2> serial({cs.m, cs.n}), parallel({cs.m, cs.n});
      gemm::gemm(ops.a.cview(), {5}, ops.packed, serial.view());
      gemm::gemm_options opt;
      opt.threads = 3;
      opt.executor = &pool;
      gemm::gemm(ops.a.cview(), {5}, ops.packed, parallel.view(), opt);
      REQUIRE(std::memcmp(serial.data(), parallel.data(), sizeof(std::int32_t) * static_cast<std::size_t>(serial.size())) == 0);
    }
  }
}

namespace {
// K at the int32 bound: every |a - za| and |b - zb| at its maximum, same sign, so
// C = K * 255 * 128 (uint8 A) or K * 128 * 128 (int8 A): exactly representable at the
// bound, refused one step past it.
template <class Act>
void check_overflow_bound(index_t k_max, Act a_value, std::int64_t per_k) {
  const index_t m = 2, n = 3;
  for (index_t k : {k_max, k_max + 1}) {
    INFO("K = " << k);
    tensor<Act, 2> a({m, k}, a_value);
    // Row 1 alternates extremes, so partial sums swing without a fixed sign.
    for (index_t kk = 0; kk < k; ++kk)
      a(1, kk) = kk % 2 ? std::numeric_limits<Act>::max() : std::numeric_limits<Act>::min();
    tensor<std::int8_t, 2> b({k, n}, std::int8_t{-128});
    const auto w = gemm::pack(b.cview());
    REQUIRE(gemm::accumulator_bound<Act>(0, w) == per_k * k);
    for (isa i : supported_isas()) {
      INFO("isa " << isa_name(i));
      tensor<std::int32_t, 2> c({m, n});
      if (k == k_max) {
        dispatch_isa(i, [&](auto tag) { gemm::gemm(tag, a.cview(), {0}, w, std::tuple<>{}, c.view()); });
        tensor<std::int32_t, 2> want({m, n});
        gemm::reference::gemm(a.cview(), 0, b.cview(), quant_params(granularity::per_tensor(), -128, 127, {1.0f}, {0}),
                              std::tuple<>{}, want.view());
        REQUIRE(std::abs(static_cast<std::int64_t>(want(0, 0))) == per_k * k);
        for (index_t x = 0; x < m * n; ++x) REQUIRE(c.data()[x] == want.data()[x]);
      } else {
        QLIB_REQUIRE_ERROR(dispatch_isa(i, [&](auto tag) { gemm::gemm(tag, a.cview(), {0}, w, std::tuple<>{}, c.view()); }),
                           errc::overflow);
      }
    }
  }
}
}  // namespace

TEST_CASE("gemm: K at the int32 overflow bound is exact, one past it is refused", "[gemm][overflow]") {
  SECTION("uint8 activations: K = 65,793") { check_overflow_bound<std::uint8_t>(65793, 255, 255 * 128); }
  SECTION("int8 activations: K = 131,071") { check_overflow_bound<std::int8_t>(131071, -128, 128 * 128); }
  SECTION("the bound follows the weights, so ordinary weights allow longer K") {
    // |b| <= 3: the bound is 255 * 3 * K, so K = 200,000 (past 65,793) is accepted and exact.
    const index_t m = 3, n = 70, k = 200000;
    tensor<std::uint8_t, 2> a({m, k});
    tensor<std::int8_t, 2> b({k, n});
    for (auto& v : a) v = static_cast<std::uint8_t>(rand_int(0, 255));
    for (auto& v : b) v = static_cast<std::int8_t>(rand_int(-3, 3));
    const auto w = gemm::pack(b.cview());
    tensor<std::int32_t, 2> want({m, n});
    gemm::reference::gemm(a.cview(), 0, b.cview(), quant_params(granularity::per_tensor(), -128, 127, {1.0f}, {0}),
                          std::tuple<>{}, want.view());
    for (isa i : supported_isas()) {
      INFO("isa " << isa_name(i));
      tensor<std::int32_t, 2> c({m, n});
      dispatch_isa(i, [&](auto tag) { gemm::gemm(tag, a.cview(), {0}, w, std::tuple<>{}, c.view()); });
      for (index_t x = 0; x < m * n; ++x) REQUIRE(c.data()[x] == want.data()[x]);
    }
    // A zero point widens |a - za| and the bound with it.
    REQUIRE(gemm::accumulator_bound<std::uint8_t>(0, w) <= 255 * 3 * k);
  }
  SECTION("a bias that could push the accumulator past int32 is refused") {
    tensor<std::uint8_t, 2> a({1, 65793}, 255);
    tensor<std::int8_t, 2> b({65793, 1}, std::int8_t{-128});
    const auto w = gemm::pack(b.cview());
    const std::int32_t small[] = {127}, large[] = {-129};
    tensor<std::int32_t, 2> c({1, 1});
    gemm::gemm(a.cview(), {0}, w, gemm::make_pipeline(gemm::bias_add{small, 1}), c.view());
    REQUIRE(c(0, 0) == -2147483520 + 127);
    QLIB_REQUIRE_ERROR(gemm::gemm(a.cview(), {0}, w, gemm::make_pipeline(gemm::bias_add{large, 1}), c.view()),
                       errc::overflow);
  }
}

TEST_CASE("gemm: packing layout, column sums and padding", "[gemm][pack]") {
  const index_t k = 11, n = 70;
  tensor<std::int8_t, 2> b({k, n});
  for (auto& v : b) v = random_value<std::int8_t>();
  std::vector<std::int32_t> zps(static_cast<std::size_t>(n));
  for (auto& z : zps) z = rand_int(-5, 5);
  const quant_params p(granularity::per_channel(1), -128, 127, std::vector<float>(zps.size(), 0.5f), zps);
  const auto w = gemm::pack(b.cview(), p);
  REQUIRE(w.k() == k);
  REQUIRE(w.n() == n);
  REQUIRE(w.k_padded() == 12);
  REQUIRE(w.panel_count() == 2);
  REQUIRE(w.byte_size() == 2 * 12 * 64);
  REQUIRE(reinterpret_cast<std::uintptr_t>(w.panel(1)) % 64 == 0);
  REQUIRE(w.per_channel());
  REQUIRE(w.has_zero_points());
  std::int64_t max_abs = 0;
  for (index_t j = 0; j < 128; ++j) {
    std::int32_t sum = 0;
    std::int64_t abs_sum = 0;
    for (index_t kk = 0; kk < 12; ++kk) {
      const std::int8_t got = w.data()[gemm::packed_offset(kk, j, 12)];
      const std::int8_t want = kk < k && j < n ? b(kk, j) : 0;  // zero padding
      REQUIRE(got == want);
      if (kk < k && j < n) {
        sum += want;
        abs_sum += std::abs(want - zps[static_cast<std::size_t>(j)]);
      }
    }
    if (j < n) {
      REQUIRE(w.column_sums()[static_cast<std::size_t>(j)] == sum);
      REQUIRE(w.zero_point(j) == zps[static_cast<std::size_t>(j)]);
      REQUIRE(w.scale(j) == 0.5f);
    }
    max_abs = std::max(max_abs, abs_sum);
  }
  REQUIRE(w.max_abs_column_sum() == max_abs);
}

TEST_CASE("gemm: row tiles keep enough accumulators", "[gemm][tiles]") {
  auto tiles = [](index_t m, index_t mr) {
    std::vector<index_t> out;
    index_t next = 0;
    kernels::for_each_row_tile(m, mr, [&](index_t r0, index_t rows) {
      REQUIRE(r0 == next);
      REQUIRE(rows >= 1);
      REQUIRE(rows <= mr);
      next += rows;
      out.push_back(rows);
    });
    REQUIRE(next == m);
    return out;
  };
  REQUIRE(tiles(8, 6) == std::vector<index_t>{4, 4});
  REQUIRE(tiles(7, 6) == std::vector<index_t>{4, 3});
  REQUIRE(tiles(12, 6) == std::vector<index_t>{6, 6});
  REQUIRE(tiles(128, 6).size() == 22);
  REQUIRE(tiles(1, 6) == std::vector<index_t>{1});
  for (index_t m = 1; m < 100; ++m) {
    tiles(m, 6);
    tiles(m, 4);
  }
}

TEST_CASE("gemm: kernel names spell the contract", "[gemm]") {
  REQUIRE(std::string(gemm::kernel_name(isa::portable)) == "portable_x8s8_4x64c4");
#if QLIB_ARCH_X86_64
  REQUIRE(std::string(gemm::kernel_name(isa::avx512_vnni)) == "avx512vnni_x8s8_6x64c4");
  REQUIRE(std::string(gemm::kernel_name(isa::avx_vnni)) == "avxvnni_x8s8_6x16c4");
  REQUIRE(std::string(kernels::avx_vnni_evex_gemm_kernel::name) == "avxvnni_x8s8_6x16c4_evex");
  REQUIRE(std::string(gemm::kernel_name(isa::avx512)) == "avx2_x8s8_4x8c4_madd16");  // no VNNI: AVX2's kernel
  // 7-bit weights take vpmaddubsw on the ISAs that run the AVX2 kernel, and only there.
  tensor<std::int8_t, 2> b({5, 3});
  for (auto& v : b) v = 63;
  b(4, 2) = -64;
  const gemm::packed_weights w7 = gemm::pack(b.cview());
  CHECK(w7.fits_7_bits());
  CHECK(std::string(gemm::kernel_name(isa::avx2, w7)) == "avx2_x8s7_4x16c4_maddubs");
  CHECK(std::string(gemm::kernel_name(isa::avx512, w7)) == "avx2_x8s7_4x16c4_maddubs");
  CHECK(std::string(gemm::kernel_name(isa::avx512_vnni, w7)) == "avx512vnni_x8s8_6x64c4");
  b(0, 0) = 64;
  CHECK_FALSE(gemm::pack(b.cview()).fits_7_bits());
  CHECK(std::string(gemm::kernel_name(isa::avx2, gemm::pack(b.cview()))) == "avx2_x8s8_4x8c4_madd16");
  b(0, 0) = -65;
  CHECK_FALSE(gemm::pack(b.cview()).fits_7_bits());
  // Weights quantized with schemes::s7_symmetric always fit.
  tensor<float, 2> wf({40, 24});
  for (auto& v : wf) v = qlib_test::rand_float(-3.0f, 3.0f);
  const auto q7 = quantize(wf.cview(), schemes::s7_symmetric, granularity::per_channel(1));
  CHECK(gemm::pack(q7.values.cview(), q7.params).fits_7_bits());
  CHECK(*std::min_element(q7.values.begin(), q7.values.end()) == -63);
#endif
#if QLIB_ARCH_AARCH64
  REQUIRE(std::string(gemm::kernel_name(isa::neon)) == "neon_x8s8_4x8c4_smull");
  REQUIRE(std::string(gemm::kernel_name(isa::neon_dotprod)) == "neondot_x8s8_4x16c4");
#endif
  if (QLIB_ARCH_X86_64 && !isa_supported(isa::avx_vnni) && !isa_supported(isa::avx512_vnni))
    WARN("this CPU has neither AVX-VNNI nor AVX-512 VNNI: the avx_vnni kernel is compiled but not run");
}
