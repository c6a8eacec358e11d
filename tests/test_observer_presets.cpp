// Compatibility presets against golden vectors: PyTorch 1.13 observers (run for real) and the
// ONNX Runtime and TFLite parameter rules (tests/data/gen_observer_golden.py).
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "qlib/quant/observers.hpp"
#include "qlib/quantize.hpp"
#include "test_util.hpp"

using namespace qlib;
using qlib_test::parse_list;
namespace pt = qlib::presets::pytorch;
namespace ort = qlib::presets::onnxruntime;
namespace tfl = qlib::presets::tflite;

namespace {

struct golden_case {
  std::string framework, observer;
  std::map<std::string, std::string> kv;
  std::vector<index_t> shape;
  std::vector<std::vector<float>> batches;
  bool expect_error = false;
  std::vector<float> scales;
  std::vector<std::int32_t> zps;

  const std::string& at(const std::string& k) const {
    const auto it = kv.find(k);
    REQUIRE(it != kv.end());
    return it->second;
  }
  int integer(const std::string& k) const { return std::stoi(at(k)); }
};


std::vector<golden_case> load_cases() {
  std::ifstream in(std::string(QLIB_TEST_DATA_DIR) + "/observer_golden.txt");
  REQUIRE(in.good());
  std::vector<golden_case> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("case ", 0) != 0) continue;
    golden_case c;
    std::stringstream head(line);
    std::string word;
    head >> word >> c.framework >> c.observer;
    while (head >> word) {
      const auto eq = word.find('=');
      c.kv[word.substr(0, eq)] = word.substr(eq + 1);
    }
    c.shape = parse_list<index_t>(c.at("shape"), ',');
    const int nb = c.integer("batches");
    for (int b = 0; b < nb; ++b) {
      std::getline(in, line);
      REQUIRE(line.rfind("x ", 0) == 0);
      c.batches.push_back(parse_list<float>(line.substr(2), ' '));
    }
    std::getline(in, line);
    REQUIRE(line.rfind("scale ", 0) == 0);
    if (line == "scale error unsupported") {
      c.expect_error = true;
      std::getline(in, line);
    } else {
      c.scales = parse_list<float>(line.substr(6), ',');
      std::getline(in, line);
      REQUIRE(line.rfind("zp ", 0) == 0);
      c.zps = parse_list<std::int32_t>(line.substr(3), ',');
      REQUIRE(c.scales.size() == c.zps.size());
    }
    cases.push_back(c);
  }
  return cases;
}

// Feeds the case's batches, viewed with its shape, to an observer.
template <std::size_t R, class O>
void feed(const golden_case& c, O& obs) {
  extents<R> shape;
  for (std::size_t a = 0; a < R; ++a) shape[a] = c.shape[a];
  for (const auto& b : c.batches) obs.observe(tensor_view<const float, R>(b.data(), shape));
}
template <class O>
void feed_any(const golden_case& c, O& obs) {
  switch (c.shape.size()) {
    case 1: return feed<1>(c, obs);
    case 2: return feed<2>(c, obs);
    case 3: return feed<3>(c, obs);
    case 4: return feed<4>(c, obs);
    default: FAIL("unexpected rank");
  }
}

void check_params(const golden_case& c, const quant_params& p) {
  REQUIRE(p.scale.size() == c.scales.size());
  int bad = 0;
  for (std::size_t k = 0; k < c.scales.size(); ++k) {
    std::uint32_t a, b;
    std::memcpy(&a, &p.scale[k], 4);
    std::memcpy(&b, &c.scales[k], 4);
    if ((a != b || p.zero_point[k] != c.zps[k]) && bad++ < 4)
      FAIL_CHECK("param " << k << ": qlib scale " << p.scale[k] << " zp " << p.zero_point[k] << ", golden scale "
                          << c.scales[k] << " zp " << c.zps[k]);
  }
  CHECK(bad == 0);
}

pt::observer_config torch_config(const golden_case& c) {
  pt::observer_config cfg;
  cfg.type = c.at("dtype") == "qint8" ? pt::dtype::qint8 : pt::dtype::quint8;
  const std::string& qs = c.at("qscheme");
  cfg.scheme = qs == "per_tensor_affine"      ? pt::qscheme::per_tensor_affine
               : qs == "per_tensor_symmetric" ? pt::qscheme::per_tensor_symmetric
               : qs == "per_channel_affine"   ? pt::qscheme::per_channel_affine
                                              : pt::qscheme::per_channel_symmetric;
  cfg.reduce_range = c.integer("reduce_range") != 0;
  cfg.custom_range = c.integer("custom") != 0;
  cfg.quant_min = c.integer("quant_min");
  cfg.quant_max = c.integer("quant_max");
  cfg.ch_axis = static_cast<std::size_t>(c.integer("ch_axis"));
  cfg.averaging_constant = std::stof(c.at("averaging"));
  return cfg;
}

template <class O>
void run_torch(const golden_case& c, const pt::observer_config& cfg) {
  if (c.expect_error) {
    QLIB_REQUIRE_ERROR(O(cfg), errc::unsupported);
    return;
  }
  O obs(cfg);
  feed_any(c, obs);
  const quant_params p = obs.calculate_qparams();
  CHECK(p.qmin == c.integer("qmin"));
  CHECK(p.qmax == c.integer("qmax"));
  check_params(c, p);
}

void run_case(const golden_case& c) {
  if (c.framework == "torch") {
    const pt::observer_config cfg = torch_config(c);
    if (c.observer == "minmax") return run_torch<pt::min_max_observer>(c, cfg);
    if (c.observer == "per_channel_minmax") return run_torch<pt::per_channel_min_max_observer>(c, cfg);
    if (c.observer == "moving_average_minmax") return run_torch<pt::moving_average_min_max_observer>(c, cfg);
    if (c.observer == "moving_average_per_channel_minmax")
      return run_torch<pt::moving_average_per_channel_min_max_observer>(c, cfg);
    FAIL("unknown torch observer " << c.observer);
  }
  const int axis = c.integer("axis");
  const granularity g = axis < 0 ? granularity::per_tensor() : granularity::per_channel(static_cast<std::size_t>(axis));
  if (c.framework == "ort") {
    const std::string& t = c.at("qtype");
    const ort::qtype qt = t == "uint8" ? ort::qtype::uint8
                          : t == "int8" ? ort::qtype::int8
                          : t == "uint16" ? ort::qtype::uint16
                                          : ort::qtype::int16;
    ort::minmax_calibrater cal(c.integer("calib_symmetric") != 0, g);
    feed_any(c, cal);
    return check_params(c, cal.params(qt, c.integer("symmetric") != 0, c.integer("reduce_range") != 0));
  }
  if (c.framework == "tflite") {
    tfl::minmax_calibrator cal(g);
    feed_any(c, cal);
    return check_params(c, c.observer == "weight" ? cal.weight_params() : cal.activation_params());
  }
  FAIL("unknown framework " << c.framework);
}

}  // namespace

TEST_CASE("presets reproduce PyTorch, ONNX Runtime and TFLite parameters exactly", "[observers][presets][golden]") {
  const auto cases = load_cases();
  REQUIRE(cases.size() >= 100);
  std::map<std::string, int> per_framework;
  const isa isas[] = {isa::portable, isa::avx2, isa::avx512, isa::neon};
  for (isa i : isas) {
    if (!isa_supported(i)) continue;
    set_isa_limit(i);
    for (std::size_t k = 0; k < cases.size(); ++k) {
      const golden_case& c = cases[k];
      INFO("isa " << isa_name(i) << ", case " << k << ": " << c.framework << " " << c.observer);
      run_case(c);
      ++per_framework[c.framework];
    }
  }
  clear_isa_limit();
  CHECK(per_framework["torch"] > 0);
  CHECK(per_framework["ort"] > 0);
  CHECK(per_framework["tflite"] > 0);
}

TEST_CASE("PyTorch preset details", "[observers][presets]") {
  SECTION("symmetric qint8 uses amax / 127.5 and the float32 eps floor") {
    const auto p = pt::calculate_qparams({-2.55f}, {1.0f}, {pt::dtype::qint8, pt::qscheme::per_tensor_symmetric},
                                         granularity::per_tensor());
    CHECK(p.scale[0] == 2.55f / 127.5f);
    CHECK(p.zero_point[0] == 0);
    CHECK(p.qmin == -128);
    const auto z = pt::calculate_qparams({0.0f}, {0.0f}, {}, granularity::per_tensor());
    CHECK(z.scale[0] == FLT_EPSILON);
    CHECK(z.zero_point[0] == 0);
  }
  SECTION("reduce_range halves the range") {
    pt::observer_config c;
    c.reduce_range = true;
    CHECK(c.quant_range() == std::make_pair(0, 127));
    c.type = pt::dtype::qint8;
    CHECK(c.quant_range() == std::make_pair(-64, 63));
    c.custom_range = true;
    c.quant_min = -7;
    c.quant_max = 7;
    CHECK(c.quant_range() == std::make_pair(-4, 3));
  }
  SECTION("refusals") {
    pt::observer_config c;
    c.scheme = pt::qscheme::per_channel_affine;
    QLIB_REQUIRE_ERROR(pt::min_max_observer{c}, errc::invalid_argument);
    QLIB_REQUIRE_ERROR(pt::per_channel_min_max_observer{pt::observer_config{}}, errc::invalid_argument);
    pt::min_max_observer fresh;
    QLIB_REQUIRE_ERROR(fresh.calculate_qparams(), errc::empty_tensor);
    pt::observer_config bad;
    bad.custom_range = true;
    bad.quant_min = 1;
    bad.quant_max = 10;
    QLIB_REQUIRE_ERROR(pt::min_max_observer{bad}, errc::invalid_argument);
    bad.eps = 0.0f;
    QLIB_REQUIRE_ERROR(pt::min_max_observer{bad}, errc::invalid_argument);
  }
  SECTION("NaN is skipped (PyTorch would return NaN ranges)") {
    pt::min_max_observer obs;
    std::vector<float> x = {1.0f, std::numeric_limits<float>::quiet_NaN(), -2.0f};
    obs.observe(make_view(x.data(), 3));
    CHECK(obs.counts().nan == 1);
    CHECK(obs.calculate_qparams().scale[0] == 3.0f / 255.0f);
  }
}

TEST_CASE("ONNX Runtime and TFLite preset details", "[observers][presets]") {
  CHECK(ort::quant_range(ort::qtype::int8, false, true).qmin == -127);
  CHECK(ort::quant_range(ort::qtype::int8, true, true).qmax == 64);
  const auto w = ort::compute_scale_zp(-0.5f, 1.27f, ort::quant_range(ort::qtype::int8, false, true), true);
  CHECK(w.scale == static_cast<float>(2.54 / 254.0));  // amax / 127
  CHECK(w.zero_point == 0);
  const auto zero = ort::compute_scale_zp(0.0f, 0.0f, {0, 255}, false);
  CHECK(zero.scale == 1.0f);
  CHECK(zero.zero_point == 0);
  // TFLite weights: amax / 127 with zero point 0; activations: int8 with a nudged zero point.
  const auto tw = tfl::weight_params({-0.5f, -3.0f}, {1.27f, 1.0f}, granularity::per_channel(0));
  CHECK(tw.scale[0] == 1.27f / 127.0f);
  CHECK(tw.scale[1] == 3.0f / 127.0f);
  CHECK(tw.qmin == -127);
  const auto ta = tfl::asymmetric_params(-1.0f, 3.0f);
  CHECK(ta.scale == 4.0f / 255.0f);
  CHECK(ta.zero_point == -64);  // -128 + 63.75 = -64.25 -> -64
  CHECK(tfl::asymmetric_params(0.0f, 0.0f).scale == 1.0f);
}
