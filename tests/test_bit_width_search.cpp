// Mixed-precision bit-width search: the exact knapsack against brute force, sensitivities on a small model, the
// plan's int8 model (static_quantizer weight_bits), budgets and bad input.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "qlib/nn.hpp"
#include "test_util.hpp"

using namespace qlib;
using namespace qlib_test;

namespace {

// The exhaustive answer: minimal cost summed in group order, then the smallest size.
struct bws_brute {
  bool feasible = false;
  double cost = 0.0;
  std::int64_t size = 0;
};
bws_brute bws_brute_force(const std::vector<std::vector<std::int64_t>>& size,
                          const std::vector<std::vector<double>>& cost, std::int64_t budget) {
  bws_brute best;
  std::vector<std::size_t> pick(size.size(), 0);
  for (;;) {
    std::int64_t s = 0;
    double c = 0.0;
    for (std::size_t g = 0; g < size.size(); ++g) s += size[g][pick[g]], c += cost[g][pick[g]];
    if (s <= budget && (!best.feasible || c < best.cost || (c == best.cost && s < best.size))) best = {true, c, s};
    std::size_t g = 0;
    while (g < size.size() && ++pick[g] == size[g].size()) pick[g++] = 0;
    if (g == size.size()) return best;
  }
}

// A tiny CNN with a batch norm to fold, random but fixed weights: 8x8x1 in, 5 logits out.
nn::sequential bws_model() {
  nn::sequential m{nn::conv2d(1, 4, nn::conv2d_options::square(3)), nn::batch_norm2d(4), nn::relu{},
                   nn::max_pool2d::square(2), nn::flatten{}, nn::linear(36, 16), nn::relu{}, nn::linear(16, 5)};
  auto fill = [](tensor<float, 1>& t, float lo, float hi) {
    for (float& v : t) v = rand_float(lo, hi);
  };
  auto& c = std::get<nn::conv2d>(m[0]);
  for (float& v : c.weight) v = rand_float(-0.6f, 0.6f);
  fill(c.bias, -0.1f, 0.1f);
  auto& bn = std::get<nn::batch_norm2d>(m[1]);
  fill(bn.weight, 0.5f, 1.5f), fill(bn.bias, -0.2f, 0.2f), fill(bn.running_mean, -0.2f, 0.2f);
  fill(bn.running_var, 0.5f, 2.0f);
  for (std::size_t i : {std::size_t{5}, std::size_t{7}}) {
    auto& f = std::get<nn::linear>(m[i]);
    const float r = 1.5f / std::sqrt(static_cast<float>(f.in_features()));
    for (float& v : f.weight) v = rand_float(-r, r);
    fill(f.bias, -0.1f, 0.1f);
  }
  return m;
}

tensor<float, 4> bws_batch(index_t n) { return rand_tensor({n, 8, 8, 1}, 0.0f, 1.0f); }

}  // namespace

TEST_CASE("multiple-choice knapsack equals brute force on random instances, ties included", "[bit_width_search]") {
  rng().seed(20261122);
  for (int seed = 0; seed < 400; ++seed) {
    INFO("instance " << seed);
    const int groups = rand_int(1, 5);
    const bool integer_costs = seed % 2 == 0;  // small integers: many exact ties
    std::vector<std::vector<std::int64_t>> size(static_cast<std::size_t>(groups));
    std::vector<std::vector<double>> cost(size.size());
    std::int64_t lo = 0, hi = 0;
    for (std::size_t g = 0; g < size.size(); ++g) {
      const int options = rand_int(1, 4);
      for (int j = 0; j < options; ++j) {
        size[g].push_back(rand_int(0, seed % 3 == 0 ? 3 : 20));
        cost[g].push_back(integer_costs ? rand_int(0, 3) : rand_float(0.0f, 1.0f) * 1e-3 + rand_float(-1.0f, 1.0f));
      }
      lo += *std::min_element(size[g].begin(), size[g].end());
      hi += *std::max_element(size[g].begin(), size[g].end());
    }
    const std::int64_t budget = rand_int(static_cast<int>(lo), static_cast<int>(hi) + 2);
    const bws_brute bf = bws_brute_force(size, cost, budget);
    REQUIRE(bf.feasible);
    const nn::knapsack_solution s = nn::solve_multiple_choice_knapsack(size, cost, budget);
    REQUIRE(s.choice.size() == size.size());
    std::int64_t sz = 0;
    double c = 0.0;
    for (std::size_t g = 0; g < size.size(); ++g) {
      REQUIRE(s.choice[g] < size[g].size());
      sz += size[g][s.choice[g]], c += cost[g][s.choice[g]];
    }
    CHECK(sz == s.size);
    CHECK(c == s.cost);
    CHECK(s.size <= budget);
    CHECK(s.cost == bf.cost);  // bit for bit: both sum in group order
    CHECK(s.size == bf.size);  // ties go to the smallest size
  }
}

TEST_CASE("multiple-choice knapsack: tight budgets, large sizes, bad input", "[bit_width_search]") {
  const std::vector<std::vector<std::int64_t>> size{{2, 4, 8}, {20, 40, 80}, {200, 400, 800}};
  const std::vector<std::vector<double>> cost{{3.0, 2.0, 1.0}, {30.0, 20.0, 10.0}, {0.3, 0.2, 0.1}};
  // Exactly the smallest model, exactly the largest, and on both sides of upgrades.
  CHECK(nn::solve_multiple_choice_knapsack(size, cost, 222).choice == std::vector<std::size_t>{0, 0, 0});
  CHECK(nn::solve_multiple_choice_knapsack(size, cost, 888).choice == std::vector<std::size_t>{2, 2, 2});
  CHECK(nn::solve_multiple_choice_knapsack(size, cost, 227).choice == std::vector<std::size_t>{1, 0, 0});
  CHECK(nn::solve_multiple_choice_knapsack(size, cost, 241).choice == std::vector<std::size_t>{2, 0, 0});
  CHECK(nn::solve_multiple_choice_knapsack(size, cost, 242).choice == std::vector<std::size_t>{0, 1, 0});
  CHECK(nn::solve_multiple_choice_knapsack(size, cost, 248).choice == std::vector<std::size_t>{2, 1, 0});
  // An upgrade worth nothing is not taken (tie -> smaller size).
  CHECK(nn::solve_multiple_choice_knapsack({{1, 5}}, {{1.0, 1.0}}, 10).size == 1);
  // Sizes of billions of bits: the frontier is sparse, not a table over the size axis.
  const std::int64_t big = std::int64_t{1} << 40;
  const nn::knapsack_solution s =
      nn::solve_multiple_choice_knapsack({{big, 2 * big}, {3, big + 7}}, {{1.0, 0.0}, {1.0, 0.5}}, 2 * big + 3);
  CHECK(s.choice == std::vector<std::size_t>{1, 0});

  QLIB_REQUIRE_ERROR(nn::solve_multiple_choice_knapsack(size, cost, 221), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::solve_multiple_choice_knapsack({}, {}, 10), errc::empty_tensor);
  QLIB_REQUIRE_ERROR(nn::solve_multiple_choice_knapsack({{1}, {}}, {{1.0}, {}}, 10), errc::empty_tensor);
  QLIB_REQUIRE_ERROR(nn::solve_multiple_choice_knapsack({{1, 2}}, {{1.0}}, 10), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(nn::solve_multiple_choice_knapsack({{1}}, {{1.0}, {2.0}}, 10), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(nn::solve_multiple_choice_knapsack({{-1}}, {{1.0}}, 10), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::solve_multiple_choice_knapsack({{1}}, {{std::nan("")}}, 10), errc::non_finite);
  const std::int64_t huge = std::numeric_limits<std::int64_t>::max() / 2;
  QLIB_REQUIRE_ERROR(nn::solve_multiple_choice_knapsack({{huge}, {huge}}, {{1.0}, {1.0}}, huge), errc::overflow);
}

TEST_CASE("sensitivities of a small CNN fall with the bit width; the plan fits its budget", "[bit_width_search]") {
  rng().seed(7);
  const nn::sequential m = bws_model();
  const tensor<float, 4> x = bws_batch(32);
  for (nn::sensitivity_metric metric : {nn::sensitivity_metric::kl_divergence, nn::sensitivity_metric::logit_mse}) {
    INFO(nn::metric_name(metric));
    nn::bit_width_search_options opt;
    opt.metric = metric;
    opt.candidate_bits = {8, 2, 4, 3, 6, 5, 4};  // sorted and deduplicated
    const nn::sensitivity_report r = nn::measure_sensitivity(m, x.cview(), opt);
    CHECK(r.bits == std::vector<int>{2, 3, 4, 5, 6, 8});
    REQUIRE(r.layers.size() == 3);
    CHECK(r.layers[0].layer == 0);  // the conv's index in the model as given (its BN folded)
    CHECK(r.layers[1].layer == 5);
    CHECK(r.layers[2].layer == 7);
    CHECK(r.layers[0].weights == 36);
    CHECK(r.layers[0].scales == 4);
    CHECK(r.layers[1].weights == 576);
    CHECK(r.total_weights() == 36 + 576 + 80);
    CHECK(r.size_bits(1, 2) == 576 * 4 + 16 * 32);
    for (const nn::layer_sensitivity& l : r.layers) {
      INFO("layer " << l.layer);
      const auto& s = l.sensitivity;  // 2 3 4 5 6 8
      CHECK(s[5] >= 0.0);
      CHECK(s[5] < s[2]);
      CHECK(s[2] < s[0]);
    }
    // Every layer at 8 bits when the budget allows it; the smallest model at the minimum.
    const nn::bit_width_plan p8 = nn::choose_bit_widths(r, nn::size_budget::average_bits(8.0));
    CHECK(p8.weight_bits() == std::vector<int>{8, 8, 8});
    const nn::bit_width_plan p2 = nn::choose_bit_widths(r, nn::size_budget::average_bits(2.0));
    CHECK(p2.weight_bits() == std::vector<int>{2, 2, 2});
    CHECK(p2.size_bits == p2.budget_bits);
    CHECK(p2.size_bits == nn::uniform_bit_widths(r, 2).size_bits);
    QLIB_REQUIRE_ERROR(nn::choose_bit_widths(r, nn::size_budget::total_bits(p2.size_bits - 1)), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(nn::choose_bit_widths(r, nn::size_budget::average_bits(1.99)), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(nn::choose_bit_widths(r, nn::size_budget::average_bits(std::nan(""))), errc::invalid_argument);
    // Every average budget: within it, no worse than uniform at that width, and the
    // exhaustive optimum over the report (6^3 plans).
    for (double avg : {2.5, 3.0, 4.0, 4.5, 5.0, 6.0, 7.0}) {
      INFO("average " << avg);
      const nn::bit_width_plan p = nn::choose_bit_widths(r, nn::size_budget::average_bits(avg));
      CHECK(p.size_bits <= p.budget_bits);
      CHECK(p.average_bits() <= avg);
      std::vector<std::vector<std::int64_t>> size(3);
      std::vector<std::vector<double>> cost(3);
      for (std::size_t i = 0; i < 3; ++i)
        for (std::size_t c = 0; c < r.bits.size(); ++c)
          size[i].push_back(r.size_bits(i, c)), cost[i].push_back(r.layers[i].sensitivity[c]);
      CHECK(p.predicted == bws_brute_force(size, cost, p.budget_bits).cost);
      const int ub = static_cast<int>(avg);
      if (ub == avg && ub != 7) CHECK(p.predicted <= nn::uniform_bit_widths(r, ub).predicted);
    }
  }
}

TEST_CASE("the plan's int8 model: per-layer codes in range, exactly the search's weights", "[bit_width_search]") {
  rng().seed(11);
  const nn::sequential m = bws_model();
  const tensor<float, 4> x = bws_batch(24);
  const nn::sensitivity_report r = nn::measure_sensitivity(m, x.cview());
  nn::bit_width_plan plan = nn::choose_bit_widths(r, nn::size_budget::average_bits(4.0));
  plan.layers[0].bits = 3, plan.layers[1].bits = 5, plan.layers[2].bits = 2;  // every layer different
  const nn::sequential fq = nn::apply_bit_widths(m, plan);

  nn::static_quantization_options opt;
  opt.weight_bits = plan.weight_bits();
  nn::static_quantizer<minmax_observer> q(m, opt, minmax_observer(granularity::per_tensor()));
  q.observe(x.cview());
  const nn::quantized_sequential int8 = q.convert();
  std::size_t k = 0;
  for (const nn::qlayer& l : int8.layers) {
    const nn::quantized_weights* w = nullptr;
    if (auto* c = std::get_if<nn::qconv2d>(&l)) w = &c->w;
    if (auto* f = std::get_if<nn::qlinear>(&l)) w = &f->w;
    if (!w) continue;
    const int bits = plan.layers[k].bits;
    INFO("layer " << k << " at " << bits << " bits");
    const int qmax = (1 << (bits - 1)) - 1;
    CHECK(w->params.qmin == -qmax);
    CHECK(w->params.qmax == qmax);
    int lo = 0, hi = 0;
    for (std::int8_t v : w->values) lo = std::min<int>(lo, v), hi = std::max<int>(hi, v);
    CHECK(lo >= -qmax);
    CHECK(hi <= qmax);
    CHECK((lo == -qmax || hi == qmax));  // the range is used: amax maps to an end code
    // codes * scale == the search's fake-quantized float weights, bit for bit
    const std::size_t folded_index[] = {0, 4, 6};  // conv, linear, linear once the batch norm is folded
    const nn::layer& fl = fq[folded_index[k]];
    const float* fw = std::holds_alternative<nn::conv2d>(fl) ? std::get<nn::conv2d>(fl).weight.data()
                                                              : std::get<nn::linear>(fl).weight.data();
    bool same = true;
    for (index_t o = 0; o < w->out_channels(); ++o)
      for (index_t j = 0; j < w->k(); ++j)
        same = same && same_bits(static_cast<float>(w->values(o, j)) * w->scale(o), fw[o * w->k() + j]);
    CHECK(same);
    ++k;
  }
  CHECK(k == 3);
  CHECK(int8.forward(x.cview()).shape() == extents<4>{24, 1, 1, 5});

  // weight_bits all 8 == the default conversion, bit for bit.
  nn::static_quantization_options opt8;
  opt8.weight_bits = {8, 8, 8};
  nn::static_quantizer<minmax_observer> q8(m, opt8, minmax_observer(granularity::per_tensor())),
      qd(m, {}, minmax_observer(granularity::per_tensor()));
  q8.observe(x.cview()), qd.observe(x.cview());
  const tensor<float, 4> y8 = q8.convert().forward(x.cview()), yd = qd.convert().forward(x.cview());
  CHECK(std::equal(y8.begin(), y8.end(), yd.begin(), [](float a, float b) { return same_bits(a, b); }));

  // Joint evaluation: uniform 8 bits barely moves the outputs, the mixed plan more.
  std::vector<std::int32_t> labels(24);
  for (auto& l : labels) l = rand_int(0, 4);
  const tensor_view<const std::int32_t, 1> lv(labels.data(), {24});
  const nn::plan_evaluation e8 = nn::evaluate_bit_widths(m, nn::uniform_bit_widths(r, 8), x.cview(), lv);
  const nn::plan_evaluation e = nn::evaluate_bit_widths(m, plan, x.cview(), lv);
  CHECK(e8.measured < e.measured);
  CHECK(e.accuracy >= 0.0);
  CHECK(e.float_accuracy == e8.float_accuracy);
  CHECK(nn::evaluate_bit_widths(m, plan, x.cview()).accuracy == -1.0);
  // A single-layer plan's joint measure is its own sensitivity.
  nn::sequential one_m{nn::flatten{}, nn::linear(64, 5)};
  for (float& v : std::get<nn::linear>(one_m[1]).weight) v = rand_float(-0.2f, 0.2f);
  const nn::sensitivity_report r1 = nn::measure_sensitivity(one_m, x.cview());
  const nn::bit_width_plan p1 = nn::uniform_bit_widths(r1, 3);
  CHECK(nn::evaluate_bit_widths(one_m, p1, x.cview()).measured == p1.predicted);
}

TEST_CASE("bit-width search refuses bad input", "[bit_width_search]") {
  rng().seed(3);
  const nn::sequential m = bws_model();
  const tensor<float, 4> x = bws_batch(4);
  nn::bit_width_search_options opt;
  opt.candidate_bits = {};
  QLIB_REQUIRE_ERROR(nn::measure_sensitivity(m, x.cview(), opt), errc::invalid_argument);
  opt.candidate_bits = {1, 4};
  QLIB_REQUIRE_ERROR(nn::measure_sensitivity(m, x.cview(), opt), errc::invalid_argument);
  opt.candidate_bits = {4, 9};
  QLIB_REQUIRE_ERROR(nn::measure_sensitivity(m, x.cview(), opt), errc::invalid_argument);
  tensor<float, 4> bad(x);
  bad(2, 3, 3, 0) = qnan;
  QLIB_REQUIRE_ERROR(nn::measure_sensitivity(m, bad.cview()), errc::non_finite);
  bad(2, 3, 3, 0) = std::numeric_limits<float>::infinity();
  QLIB_REQUIRE_ERROR(nn::measure_sensitivity(m, bad.cview()), errc::non_finite);
  QLIB_REQUIRE_ERROR(nn::measure_sensitivity(m, x.cview().slice(0, 0, 0)), errc::empty_tensor);
  QLIB_REQUIRE_ERROR(nn::measure_sensitivity(nn::sequential{nn::flatten{}}, x.cview()), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::measure_sensitivity(m, rand_tensor({2, 10, 10, 1}).cview()), errc::shape_mismatch);
  // A weight that overflows the float output: the metric is not finite.
  nn::sequential huge = m;
  for (index_t j = 0; j < 16; ++j) std::get<nn::linear>(huge[7]).weight(0, j) = 3e38f;
  QLIB_REQUIRE_ERROR(nn::measure_sensitivity(huge, x.cview()), errc::non_finite);
  nn::sequential nan_w = m;
  std::get<nn::linear>(nan_w[5]).weight(0, 0) = qnan;
  QLIB_REQUIRE_ERROR(nn::measure_sensitivity(nan_w, x.cview()), errc::non_finite);

  const nn::sensitivity_report r = nn::measure_sensitivity(m, x.cview());
  QLIB_REQUIRE_ERROR(nn::uniform_bit_widths(r, 7), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::choose_bit_widths(nn::sensitivity_report{}, nn::size_budget::average_bits(8)),
                     errc::empty_tensor);
  nn::bit_width_plan p = nn::uniform_bit_widths(r, 4);
  p.layers.pop_back();
  QLIB_REQUIRE_ERROR(nn::apply_bit_widths(m, p), errc::shape_mismatch);
  const std::vector<std::int32_t> three_labels{0, 1, 2};  // for 4 samples
  QLIB_REQUIRE_ERROR(nn::evaluate_bit_widths(m, nn::uniform_bit_widths(r, 4), x.cview(),
                                             tensor_view<const std::int32_t, 1>(three_labels.data(), {3})),
                     errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(nn::evaluate_bit_widths(m, nn::uniform_bit_widths(r, 4), bad.cview()), errc::non_finite);

  nn::static_quantization_options so;
  so.weight_bits = {8, 8};
  QLIB_REQUIRE_ERROR(nn::static_quantizer<minmax_observer>(m, so, minmax_observer(granularity::per_tensor())),
                     errc::shape_mismatch);
  so.weight_bits = {8, 1, 8};
  QLIB_REQUIRE_ERROR(nn::static_quantizer<minmax_observer>(m, so, minmax_observer(granularity::per_tensor())),
                     errc::invalid_argument);
  so.weight_bits = {8, 9, 8};
  QLIB_REQUIRE_ERROR(nn::static_quantizer<minmax_observer>(m, so, minmax_observer(granularity::per_tensor())),
                     errc::invalid_argument);
}
