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

  // The state limit: group g offers sizes {0, 2^g} with costs {0, -2^g}, so every subset
  // is on the frontier and it doubles each group (2^12 states after 12 groups).
  std::vector<std::vector<std::int64_t>> dbl_size;
  std::vector<std::vector<double>> dbl_cost;
  for (int g = 0; g < 12; ++g) {
    dbl_size.push_back({0, std::int64_t{1} << g});
    dbl_cost.push_back({0.0, -static_cast<double>(1 << g)});
  }
  const nn::knapsack_solution all = nn::solve_multiple_choice_knapsack(dbl_size, dbl_cost, 4095);
  CHECK(all.size == 4095);
  CHECK(all.cost == -4095.0);
  CHECK(nn::solve_multiple_choice_knapsack(dbl_size, dbl_cost, 4095, 16384).size == 4095);
  // Kept 2^g - 1 + 2^(g-1) ... : the check before group 11 needs 4095 + 2 * 2 * 2048 = 12287.
  CHECK(nn::solve_multiple_choice_knapsack(dbl_size, dbl_cost, 4095, 12287).size == 4095);
  QLIB_REQUIRE_ERROR(nn::solve_multiple_choice_knapsack(dbl_size, dbl_cost, 4095, 12286), errc::overflow);
  QLIB_REQUIRE_ERROR(nn::solve_multiple_choice_knapsack(dbl_size, dbl_cost, 4095, 1000), errc::overflow);
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
    CHECK(p8.bits_per_layer() == std::vector<int>{8, 8, 8});
    const nn::bit_width_plan p2 = nn::choose_bit_widths(r, nn::size_budget::average_bits(2.0));
    CHECK(p2.bits_per_layer() == std::vector<int>{2, 2, 2});
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

namespace {
// An int8 layer's weight codes dequantized (codes minus zero point, times scale).
tensor<float, 2> bws_dequantized(const nn::quantized_weights& w) {
  tensor<float, 2> d(w.values.shape());
  dequantize(w.values.cview(), d.view(), w.params);
  return d;
}
}  // namespace

TEST_CASE("the plan's int8 model: per-layer codes in range, exactly the search's weights", "[bit_width_search]") {
  rng().seed(11);
  const nn::sequential m = bws_model();
  const tensor<float, 4> x = bws_batch(24);
  struct wcase {
    affine_scheme<std::int8_t> scheme;
    bool per_channel;
  };
  for (const wcase v : {wcase{schemes::s8_symmetric, true}, wcase{schemes::s8_symmetric, false},
                        wcase{schemes::s8_symmetric_full, true}, wcase{schemes::s8_symmetric_full, false}}) {
    INFO((v.scheme.range == int_range::full ? "full range" : "restricted range")
         << (v.per_channel ? ", per channel" : ", per tensor"));
    nn::bit_width_search_options so;
    so.weight_scheme = v.scheme;
    so.per_channel_weights = v.per_channel;
    const nn::sensitivity_report r = nn::measure_sensitivity(m, x.cview(), so);
    CHECK(r.layers[0].scales == (v.per_channel ? 4 : 1));
    nn::bit_width_plan plan = nn::choose_bit_widths(r, nn::size_budget::average_bits(4.0));
    CHECK(plan.per_channel_weights == v.per_channel);
    CHECK(plan.weight_scheme.range == v.scheme.range);
    plan.layers[0].bits = 3, plan.layers[1].bits = 5, plan.layers[2].bits = 2;  // every layer different
    const nn::sequential fq = nn::apply_bit_widths(m, plan);
    std::vector<std::size_t> weighted;  // the conv2d / linear layers of the folded model
    for (std::size_t i = 0; i < fq.size(); ++i)
      if (nn::has_weight_matrix(fq[i])) weighted.push_back(i);
    REQUIRE(weighted.size() == 3);

    // Options that differ from the plan's are refused; matching ones build its int8 model.
    nn::static_quantization_options base;
    base.weight_scheme = v.scheme;
    base.per_channel_weights = !v.per_channel;
    QLIB_REQUIRE_ERROR(plan.quantization_options(base), errc::invalid_argument);
    base.per_channel_weights = v.per_channel;
    base.weight_scheme.range = v.scheme.range == int_range::full ? int_range::restricted : int_range::full;
    QLIB_REQUIRE_ERROR(plan.quantization_options(base), errc::invalid_argument);
    base.weight_scheme = v.scheme;
    const nn::static_quantization_options qo = plan.quantization_options(base);
    CHECK(qo.weight_bits == std::vector<int>{3, 5, 2});
    nn::static_quantizer<minmax_observer> q(m, qo, minmax_observer(granularity::per_tensor()));
    q.observe(x.cview());
    const nn::quantized_sequential int8 = q.convert();
    std::size_t k = 0;
    for (const nn::qlayer& l : int8.layers) {
      const nn::quantized_weights* w = nullptr;
      if (auto* c = std::get_if<nn::qconv2d>(&l)) w = &c->w;
      if (auto* f = std::get_if<nn::qlinear>(&l)) w = &f->w;
      if (!w) continue;
      REQUIRE(k < 3);
      const int bits = plan.layers[k].bits;
      INFO("layer " << k << " at " << bits << " bits");
      const int qmax = (1 << (bits - 1)) - 1, qmin = v.scheme.range == int_range::full ? -qmax - 1 : -qmax;
      CHECK(w->params.qmin == qmin);
      CHECK(w->params.qmax == qmax);
      CHECK(w->params.size() == (v.per_channel ? w->out_channels() : 1));
      int lo = 0, hi = 0;
      for (std::int8_t c : w->values) lo = std::min<int>(lo, c), hi = std::max<int>(hi, c);
      CHECK(lo >= qmin);
      CHECK(hi <= qmax);
      CHECK((lo <= -qmax || hi == qmax));  // the range is used: amax maps to an end code
      // The int8 codes dequantized == the search's fake-quantized float weights, bit for bit.
      const tensor<float, 2> d = bws_dequantized(*w);
      const tensor_view<const float, 2> fw = nn::weight_matrix(fq[weighted[k]]);
      REQUIRE(fw.shape() == d.shape());
      bool same = true;
      for (index_t o = 0; o < d.shape(0); ++o)
        for (index_t j = 0; j < d.shape(1); ++j) same = same && same_bits(d(o, j), fw(o, j));
      CHECK(same);
      ++k;
    }
    CHECK(k == 3);
    CHECK(int8.forward(x.cview()).shape() == extents<4>{24, 1, 1, 5});
  }

  // weight_bits all 8 == the default conversion, bit for bit.
  nn::static_quantization_options opt8;
  opt8.weight_bits = {8, 8, 8};
  nn::static_quantizer<minmax_observer> q8(m, opt8, minmax_observer(granularity::per_tensor())),
      qd(m, {}, minmax_observer(granularity::per_tensor()));
  q8.observe(x.cview()), qd.observe(x.cview());
  const tensor<float, 4> y8 = q8.convert().forward(x.cview()), yd = qd.convert().forward(x.cview());
  CHECK(std::equal(y8.begin(), y8.end(), yd.begin(), [](float a, float b) { return same_bits(a, b); }));
}

TEST_CASE("plan evaluation: the joint metric and accuracies against independent computations", "[bit_width_search]") {
  rng().seed(13);
  const nn::sequential m = bws_model();
  const tensor<float, 4> x = bws_batch(40);
  const nn::sensitivity_report r = nn::measure_sensitivity(m, x.cview());
  nn::bit_width_plan plan = nn::uniform_bit_widths(r, 4);
  plan.layers[0].bits = 2, plan.layers[2].bits = 3;
  // Labels: the float model's own argmax for half the samples, random for the rest, so the
  // accuracies are neither 0 nor 1 by construction.
  const nn::sequential folded = nn::fold_batch_norms(m);
  const tensor<float, 4> ref = folded.forward(x.cview()), out = nn::apply_bit_widths(m, plan).forward(x.cview());
  auto argmax = [](const tensor<float, 4>& y, index_t i) {
    index_t best = 0;
    for (index_t j = 1; j < y.shape(3); ++j)
      if (y(i, 0, 0, j) > y(i, 0, 0, best)) best = j;
    return best;
  };
  std::vector<std::int32_t> labels(40);
  for (index_t i = 0; i < 40; ++i)
    labels[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i % 2 == 0 ? argmax(ref, i) : rand_int(0, 4));
  index_t right_q = 0, right_f = 0;
  for (index_t i = 0; i < 40; ++i) {
    right_q += argmax(out, i) == labels[static_cast<std::size_t>(i)];
    right_f += argmax(ref, i) == labels[static_cast<std::size_t>(i)];
  }
  const tensor_view<const std::int32_t, 1> lv(labels.data(), {40});
  const nn::plan_evaluator ev(m, x.cview(), lv);
  const nn::plan_evaluation e = ev(plan);
  CHECK(e.accuracy == static_cast<double>(right_q) / 40.0);
  CHECK(e.float_accuracy == static_cast<double>(right_f) / 40.0);
  CHECK(ev.float_accuracy() == e.float_accuracy);
  CHECK(e.measured == nn::output_distance(ref.cview(), out.cview(), plan.metric));
  CHECK(e.measured > 0.0);
  const nn::plan_evaluation once = nn::evaluate_bit_widths(m, plan, x.cview(), lv);
  CHECK(once.measured == e.measured);
  CHECK(once.accuracy == e.accuracy);
  CHECK(nn::evaluate_bit_widths(m, plan, x.cview()).accuracy == -1.0);
  CHECK(nn::plan_evaluator(m, x.cview()).float_accuracy() == -1.0);
  // Uniform 8 bits barely moves the outputs, the mixed plan more.
  CHECK(ev(nn::uniform_bit_widths(r, 8)).measured < e.measured);
  // Labels outside the model's classes are refused, not counted as wrong.
  labels[3] = 5;
  QLIB_REQUIRE_ERROR(nn::plan_evaluator(m, x.cview(), lv), errc::out_of_range);
  labels[3] = -1;
  QLIB_REQUIRE_ERROR(nn::evaluate_bit_widths(m, plan, x.cview(), lv), errc::out_of_range);

  // A single-layer plan's joint measure is its own sensitivity.
  nn::sequential one_m{nn::flatten{}, nn::linear(64, 5)};
  for (float& v : std::get<nn::linear>(one_m[1]).weight) v = rand_float(-0.2f, 0.2f);
  const nn::sensitivity_report r1 = nn::measure_sensitivity(one_m, x.cview());
  const nn::bit_width_plan p1 = nn::uniform_bit_widths(r1, 3);
  CHECK(nn::evaluate_bit_widths(one_m, p1, x.cview()).measured == p1.predicted);
}

TEST_CASE("sensitivities from cached layer inputs equal direct one-layer-quantized forwards", "[bit_width_search]") {
  rng().seed(17);
  // conv + BN + ReLU6 + pool, conv + ReLU, flatten, linear: the inputs of the second conv and
  // of the linear come from the cache, the ReLU6/ReLU fused after each conv.
  nn::sequential m{nn::conv2d(2, 4, nn::conv2d_options::square(3)), nn::batch_norm2d(4), nn::relu6{},
                   nn::max_pool2d::square(2), nn::conv2d(4, 3, nn::conv2d_options::square(2)), nn::relu{},
                   nn::flatten{}, nn::linear(27, 6)};
  for (std::size_t i : {std::size_t{0}, std::size_t{4}}) {
    auto& c = std::get<nn::conv2d>(m[i]);
    for (float& v : c.weight) v = rand_float(-0.7f, 0.7f);
    for (float& v : c.bias) v = rand_float(-0.2f, 0.2f);
  }
  auto& bn = std::get<nn::batch_norm2d>(m[1]);
  for (index_t c = 0; c < 4; ++c) {
    bn.weight(c) = rand_float(0.5f, 2.0f), bn.bias(c) = rand_float(-0.3f, 0.3f);
    bn.running_mean(c) = rand_float(-0.3f, 0.3f), bn.running_var(c) = rand_float(0.3f, 2.0f);
  }
  for (float& v : std::get<nn::linear>(m[7]).weight) v = rand_float(-0.5f, 0.5f);
  const tensor<float, 4> x = rand_tensor({6, 10, 10, 2}, -1.0f, 2.0f);

  for (const bool per_channel : {true, false})
    for (const nn::sensitivity_metric metric : {nn::sensitivity_metric::kl_divergence, nn::sensitivity_metric::logit_mse}) {
      INFO((per_channel ? "per channel " : "per tensor ") << nn::metric_name(metric));
      nn::bit_width_search_options opt;
      opt.per_channel_weights = per_channel;
      opt.metric = metric;
      opt.weight_scheme = schemes::s8_symmetric_full;
      opt.candidate_bits = {2, 3, 5, 8};
      const nn::sensitivity_report r = nn::measure_sensitivity(m, x.cview(), opt);
      std::vector<std::size_t> origin;
      const nn::sequential folded = nn::fold_batch_norms(m, &origin);
      CHECK(origin == std::vector<std::size_t>{0, 2, 3, 4, 5, 6, 7});
      const tensor<float, 4> ref = folded.forward(x.cview());
      std::size_t k = 0;
      for (std::size_t i = 0; i < folded.size(); ++i) {
        if (!nn::has_weight_matrix(folded[i])) continue;
        REQUIRE(k < r.layers.size());
        CHECK(r.layers[k].layer == origin[i]);
        for (std::size_t c = 0; c < r.bits.size(); ++c) {
          INFO("layer " << origin[i] << " at " << r.bits[c] << " bits");
          nn::sequential direct = folded;  // only layer i quantized, the whole model run from x
          const tensor_view<const float, 2> w = nn::weight_matrix(folded[i]);
          affine_scheme<std::int8_t> sc = schemes::s8_symmetric_full;
          sc.bits = r.bits[c];
          const quant_params p =
              choose_params(w, sc, per_channel ? granularity::per_channel(0) : granularity::per_tensor());
          fake_quantize(w, nn::weight_matrix(direct[i]), p);
          const double expect = nn::output_distance(ref.cview(), direct.forward(x.cview()).cview(), metric);
          CHECK(r.layers[k].sensitivity[c] == expect);
        }
        ++k;
      }
      CHECK(k == 3);
      CHECK(k == r.layers.size());
    }
}

TEST_CASE("size budgets: huge averages and totals, negative totals", "[bit_width_search]") {
  rng().seed(5);
  const nn::sequential m = bws_model();
  const tensor<float, 4> x = bws_batch(8);
  const nn::sensitivity_report r = nn::measure_sensitivity(m, x.cview());
  const std::int64_t all8 = nn::uniform_bit_widths(r, 8).size_bits;
  const std::int64_t most = std::numeric_limits<std::int64_t>::max();
  // An average above the largest candidate is that candidate: all 8 bits, not an overflow.
  for (double avg : {8.0, 9.5, 1e15, 1e300, std::numeric_limits<double>::max()}) {
    INFO("average " << avg);
    CHECK(nn::size_budget::average_bits(avg).resolve(r) == all8);
    CHECK(nn::choose_bit_widths(r, nn::size_budget::average_bits(avg)).bits_per_layer() == std::vector<int>{8, 8, 8});
  }
  // Total budgets keep all 64 bits: INT64_MAX means no limit, 2^53 + 1 is not rounded.
  CHECK(nn::size_budget::total_bits(most).resolve(r) == most);
  CHECK(nn::size_budget::total_bits((std::int64_t{1} << 53) + 1).resolve(r) == (std::int64_t{1} << 53) + 1);
  const nn::bit_width_plan p = nn::choose_bit_widths(r, nn::size_budget::total_bits(most));
  CHECK(p.bits_per_layer() == std::vector<int>{8, 8, 8});
  CHECK(p.budget_bits == most);
  CHECK(nn::choose_bit_widths(r, nn::size_budget::total_bits(all8)).bits_per_layer() == std::vector<int>{8, 8, 8});
  QLIB_REQUIRE_ERROR(nn::size_budget::total_bits(-1).resolve(r), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::size_budget::average_bits(-0.5).resolve(r), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(nn::size_budget::average_bits(std::numeric_limits<double>::infinity()).resolve(r),
                     errc::invalid_argument);
  // The largest reports accepted: 2^16 layers of 2^40 weights and scales, 64-bit scales.
  nn::sensitivity_report big = r;
  big.scale_bits = 64;
  for (nn::layer_sensitivity& l : big.layers) l.weights = index_t{1} << 40, l.scales = index_t{1} << 40;
  big.layers.resize(std::size_t{1} << 16, big.layers[0]);
  const std::int64_t per_layer = (std::int64_t{8} << 40) + (std::int64_t{64} << 40);
  CHECK(nn::size_budget::average_bits(1e300).resolve(big) == per_layer << 16);
  CHECK(nn::uniform_bit_widths(big, 8).size_bits == per_layer << 16);
  big.layers[7].weights += 1;
  QLIB_REQUIRE_ERROR(nn::size_budget::average_bits(8.0).resolve(big), errc::invalid_argument);
  big.layers[7].weights -= 1;
  big.layers.push_back(big.layers[0]);
  QLIB_REQUIRE_ERROR(nn::uniform_bit_widths(big, 8), errc::invalid_argument);
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
  p.layers[1].weights += 1;  // layer count and indices right, weight count wrong
  QLIB_REQUIRE_ERROR(nn::apply_bit_widths(m, p), errc::shape_mismatch);
  p.layers[1].weights -= 1;
  p.layers[1].layer = 6;
  QLIB_REQUIRE_ERROR(nn::apply_bit_widths(m, p), errc::shape_mismatch);
  p.layers[1].layer = 5;
  p.layers[1].bits = 9;
  QLIB_REQUIRE_ERROR(nn::apply_bit_widths(m, p), errc::invalid_argument);
  p.layers[1].bits = 4;
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
#if QLIB_EXCEPTIONS
  try {
    nn::static_quantizer<minmax_observer> q(m, so, minmax_observer(granularity::per_tensor()));
    (void)q;
    FAIL("a 9-bit weight width was accepted");
  } catch (const qlib::error& e) {
    CHECK(std::string(e.what()).find("nn::static_quantizer: weight_bits[1]") != std::string::npos);
  }
#endif
}
