// qlib's affine quantize against PyTorch 1.13 golden vectors (tests/data/gen_torch_golden.py).
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "qlib/quantize.hpp"
#include "test_util.hpp"

using namespace qlib;
using qlib_test::parse_list;

namespace {
struct golden_case {
  std::string gran, dtype;
  std::vector<index_t> shape;
  std::size_t axis = 0;
  std::vector<float> scales, x;
  std::vector<std::int32_t> zps, q;
};


std::string field(const std::string& line, const std::string& key) {
  const auto at = line.find(key + "=");
  REQUIRE(at != std::string::npos);
  const auto start = at + key.size() + 1;
  return line.substr(start, line.find(' ', start) - start);
}

std::vector<golden_case> load_cases() {
  std::ifstream in(std::string(QLIB_TEST_DATA_DIR) + "/torch_affine_golden.txt");
  REQUIRE(in.good());
  std::vector<golden_case> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("case ", 0) != 0) continue;
    golden_case c;
    std::stringstream head(line);
    std::string word;
    head >> word >> c.gran >> c.dtype;
    c.shape = parse_list<index_t>(field(line, "shape"), ',');
    c.axis = static_cast<std::size_t>(std::stoi(field(line, "axis")));
    c.scales = parse_list<float>(field(line, "scales"), ',');
    c.zps = parse_list<std::int32_t>(field(line, "zps"), ',');
    std::getline(in, line);
    REQUIRE(line.rfind("x ", 0) == 0);
    c.x = parse_list<float>(line.substr(2), ' ');
    std::getline(in, line);
    REQUIRE(line.rfind("q ", 0) == 0);
    c.q = parse_list<std::int32_t>(line.substr(2), ' ');
    REQUIRE(c.x.size() == c.q.size());
    cases.push_back(c);
  }
  return cases;
}

// Runs one golden case through qlib at storage type Q, viewed as a rank-R tensor.
template <class Q, std::size_t R>
void check_case(const golden_case& c) {
  extents<R> shape;
  for (std::size_t a = 0; a < R; ++a) shape[a] = c.shape[a];
  const granularity g = c.gran == "per_tensor" ? granularity::per_tensor() : granularity::per_channel(c.axis);
  const std::int32_t qmin = std::is_signed<Q>::value ? -128 : 0, qmax = std::is_signed<Q>::value ? 127 : 255;
  const quant_params p(g, qmin, qmax, c.scales, c.zps);
  tensor_view<const float, R> x(c.x.data(), shape);
  tensor<Q, R> q(shape);
  quantize(x, q.view(), p);
  int mismatches = 0;
  for (std::size_t i = 0; i < c.q.size(); ++i) {
    if (q.data()[i] != c.q[i] && mismatches++ < 5)
      FAIL_CHECK("element " << i << ": x=" << c.x[i] << " qlib=" << int(q.data()[i]) << " torch=" << c.q[i]);
  }
  CHECK(mismatches == 0);
}

template <class Q>
void check_rank(const golden_case& c) {
  switch (c.shape.size()) {
    case 1: return check_case<Q, 1>(c);
    case 2: return check_case<Q, 2>(c);
    case 3: return check_case<Q, 3>(c);
    case 4: return check_case<Q, 4>(c);
    default: FAIL("unexpected rank");
  }
}
}  // namespace

TEST_CASE("quantize matches PyTorch quantize_per_tensor and quantize_per_channel", "[affine][golden]") {
  const auto cases = load_cases();
  REQUIRE(cases.size() >= 10);
  const isa isas[] = {isa::portable, isa::avx2, isa::avx512, isa::neon};
  for (isa i : isas) {
    if (!isa_supported(i)) continue;
    set_isa_limit(i);
    for (std::size_t k = 0; k < cases.size(); ++k) {
      INFO("isa " << isa_name(i) << ", case " << k << " (" << cases[k].gran << " " << cases[k].dtype << ")");
      if (cases[k].dtype == "quint8") check_rank<std::uint8_t>(cases[k]);
      else check_rank<std::int8_t>(cases[k]);
    }
  }
  clear_isa_limit();
}
