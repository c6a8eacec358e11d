// prune::shrink_output_channels: shrink then run equals mask then run (float and static int8, bit for bit), sizes, refusals.
#include <qlib/nn/static_quantization.hpp>
#include <qlib/prune/shrink.hpp>

#include <algorithm>
#include <map>
#include <set>
#include <vector>

#include "test_util.hpp"

using namespace qlib;
using qlib_test::rand_float;
using qlib_test::same_bits;

namespace {

template <std::size_t R>
void fill(tensor<float, R>& t, float lo, float hi) {
  for (float& v : t) v = rand_float(lo, hi);
}

// Random parameters for every layer; batch norms get non-trivial statistics.
void shrink_test_randomize(nn::sequential& m) {
  for (nn::layer& l : m.layers) {
    if (auto* c = std::get_if<nn::conv2d>(&l)) {
      fill(c->weight, -0.5f, 0.5f);
      fill(c->bias, -0.2f, 0.3f);
    } else if (auto* f = std::get_if<nn::linear>(&l)) {
      fill(f->weight, -0.5f, 0.5f);
      fill(f->bias, -0.2f, 0.3f);
    } else if (auto* b = std::get_if<nn::batch_norm2d>(&l)) {
      fill(b->weight, 0.5f, 1.5f);
      fill(b->bias, -0.3f, 0.3f);
      fill(b->running_mean, -0.3f, 0.3f);
      fill(b->running_var, 0.5f, 2.0f);
    }
  }
}

tensor<float, 4> random_input(const extents<4>& s) {
  tensor<float, 4> x(s);
  fill(x, -1.0f, 1.0f);
  return x;
}

// Channels of [0, n) not in keep.
std::vector<index_t> removed_of(const std::vector<index_t>& keep, index_t n) {
  std::vector<index_t> r;
  for (index_t c = 0; c < n; ++c)
    if (!std::binary_search(keep.begin(), keep.end(), c)) r.push_back(c);
  return r;
}

// The mask, written directly on the layers (independent of shrink's dependency walk).
void zero_output_channels(nn::layer& l, const std::vector<index_t>& channels) {
  if (auto* c = std::get_if<nn::conv2d>(&l)) {
    const index_t per = c->weight.size() / c->out_channels();
    for (index_t o : channels) {
      std::fill_n(c->weight.data() + o * per, per, 0.0f);
      if (c->has_bias()) c->bias(o) = 0.0f;
    }
  } else {
    auto& f = std::get<nn::linear>(l);
    for (index_t o : channels) {
      for (index_t i = 0; i < f.in_features(); ++i) f.weight(o, i) = 0.0f;
      if (f.has_bias()) f.bias(o) = 0.0f;
    }
  }
}
void zero_bn_channels(nn::layer& l, const std::vector<index_t>& channels) {
  auto& b = std::get<nn::batch_norm2d>(l);
  for (index_t c : channels) b.weight(c) = b.bias(c) = 0.0f;
}
// The consumer's inputs (needed for int8 equality only: per-channel weight scales see them).
void zero_conv_inputs(nn::layer& l, const std::vector<index_t>& channels) {
  auto& c = std::get<nn::conv2d>(l);
  const index_t rows = c.weight.size() / c.weight.shape(3);
  for (index_t r = 0; r < rows; ++r)
    for (index_t i : channels) c.weight.data()[r * c.weight.shape(3) + i] = 0.0f;
}
void zero_linear_columns(nn::layer& l, const std::vector<index_t>& columns) {
  auto& f = std::get<nn::linear>(l);
  for (index_t o = 0; o < f.out_features(); ++o)
    for (index_t i : columns) f.weight(o, i) = 0.0f;
}

// The shrunk batch norm holds the original's parameters of the kept channels, in order.
void check_bn_kept(const nn::layer& shrunk, const nn::layer& original, const std::vector<index_t>& keep) {
  const auto& bn = std::get<nn::batch_norm2d>(shrunk);
  const auto& obn = std::get<nn::batch_norm2d>(original);
  REQUIRE(bn.channels() == static_cast<index_t>(keep.size()));
  for (index_t j = 0; j < bn.channels(); ++j) {
    const index_t o = keep[static_cast<std::size_t>(j)];
    CHECK(bn.weight(j) == obn.weight(o));
    CHECK(bn.bias(j) == obn.bias(o));
    CHECK(bn.running_mean(j) == obn.running_mean(o));
    CHECK(bn.running_var(j) == obn.running_var(o));
  }
}

void require_same_bits(const tensor<float, 4>& a, const tensor<float, 4>& b) {
  REQUIRE(a.shape() == b.shape());
  index_t differ = 0;
  for (index_t i = 0; i < a.size(); ++i) differ += !same_bits(a.data()[i], b.data()[i]);
  CHECK(differ == 0);
}

// Float: on every ISA the shrunk model's output equals the masked model's bit for bit.
void check_float(const nn::sequential& shrunk, const nn::sequential& masked, const extents<4>& shape) {
  const tensor<float, 4> x = random_input(shape);
  qlib_test::for_each_isa([&](isa) { require_same_bits(shrunk.forward(x.cview()), masked.forward(x.cview())); });
}

// Static int8 (min/max calibration on the same batches): bit for bit, per-channel and
// per-tensor weights, on every ISA.
void check_int8(const nn::sequential& shrunk, const nn::sequential& masked, const extents<4>& shape) {
  std::vector<tensor<float, 4>> calibration;
  for (int b = 0; b < 3; ++b) calibration.push_back(random_input(shape));
  const tensor<float, 4> x = random_input(shape);
  for (bool per_channel : {true, false}) {
    INFO("per-channel weights " << per_channel);
    nn::static_quantization_options opt;
    opt.per_channel_weights = per_channel;
    nn::static_quantizer<minmax_observer> qs(shrunk, opt), qm(masked, opt);
    for (const auto& b : calibration) {
      qs.observe(b.cview());
      qm.observe(b.cview());
    }
    const nn::quantized_sequential s = qs.convert(), m = qm.convert();
    CHECK(s.parameter_bytes() < m.parameter_bytes());
    qlib_test::for_each_isa([&](isa) { require_same_bits(s.forward(x.cview()), m.forward(x.cview())); });
  }
}

index_t conv_params(index_t in, index_t out, index_t k, bool bias = true) { return out * k * k * in + (bias ? out : 0); }
index_t linear_params(index_t in, index_t out) { return out * in + out; }

nn::conv2d conv(index_t in, index_t out, index_t k, index_t pad = 0, index_t groups = 1, bool bias = true) {
  return nn::conv2d(in, out, nn::conv2d_options::square(k, 1, pad, 1, groups), bias);
}

}  // namespace

TEST_CASE("shrink conv -> conv equals the masked model", "[shrink]") {
  nn::sequential m{conv(3, 8, 3, 1), nn::relu{}, conv(8, 6, 3, 0, 1, false), nn::relu{}, nn::flatten{},
                   nn::linear(4 * 4 * 6, 4)};
  shrink_test_randomize(m);
  const extents<4> shape{2, 6, 6, 3};
  const std::vector<index_t> keep{0, 2, 3, 5, 7}, removed = removed_of(keep, 8);

  nn::sequential shrunk = m, masked = m, masked_all = m;
  prune::shrink_output_channels(shrunk, 0, keep, shape);
  zero_output_channels(masked[0], removed);
  zero_output_channels(masked_all[0], removed);
  zero_conv_inputs(masked_all[2], removed);

  const auto& c0 = std::get<nn::conv2d>(shrunk[0]);
  const auto& c2 = std::get<nn::conv2d>(shrunk[2]);
  CHECK(c0.weight.shape() == extents<4>{5, 3, 3, 3});
  CHECK(c0.bias.shape(0) == 5);
  CHECK(c2.weight.shape() == extents<4>{6, 3, 3, 5});
  CHECK(!c2.has_bias());
  // Kept channel j is the original channel keep[j], in the producer and in the consumer.
  const auto& o0 = std::get<nn::conv2d>(m[0]);
  const auto& o2 = std::get<nn::conv2d>(m[2]);
  for (index_t j = 0; j < 5; ++j) {
    CHECK(c0.bias(j) == o0.bias(keep[j]));
    CHECK(c0.weight(j, 1, 2, 0) == o0.weight(keep[j], 1, 2, 0));
    CHECK(c2.weight(4, 2, 1, j) == o2.weight(4, 2, 1, keep[j]));
  }
  CHECK(shrunk.parameter_count() ==
        m.parameter_count() - (conv_params(3, 8, 3) - conv_params(3, 5, 3)) -
            (conv_params(8, 6, 3, false) - conv_params(5, 6, 3, false)));
  CHECK(shrunk.output_shape(shape) == m.output_shape(shape));

  check_float(shrunk, masked, shape);
  check_int8(shrunk, masked_all, shape);
}

TEST_CASE("shrink conv -> BN -> ReLU -> pool -> conv equals the masked model", "[shrink]") {
  nn::sequential m{conv(3, 8, 3, 1),  nn::batch_norm2d(8), nn::relu{},    nn::max_pool2d::square(2),
                   conv(8, 5, 3, 1),  nn::relu{},          nn::avg_pool2d::square(2), nn::flatten{},
                   nn::linear(2 * 2 * 5, 3)};
  shrink_test_randomize(m);
  const extents<4> shape{2, 8, 8, 3};
  const std::vector<index_t> keep{1, 2, 6}, removed = removed_of(keep, 8);

  nn::sequential shrunk = m, masked = m, masked_all = m;
  prune::shrink_output_channels(shrunk, 0, keep, shape);
  for (nn::sequential* s : {&masked, &masked_all}) {
    zero_output_channels((*s)[0], removed);
    zero_bn_channels((*s)[1], removed);
  }
  zero_conv_inputs(masked_all[4], removed);

  check_bn_kept(shrunk[1], m[1], keep);
  CHECK(std::get<nn::conv2d>(shrunk[4]).in_channels() == 3);
  CHECK(shrunk.parameter_count() == m.parameter_count() - 5 * (conv_params(3, 1, 3) + 2) -
                                        (conv_params(8, 5, 3) - conv_params(3, 5, 3)));

  check_float(shrunk, masked, shape);
  check_int8(shrunk, masked_all, shape);
}

TEST_CASE("shrink conv -> linear across a flatten: each channel owns H*W columns", "[shrink]") {
  // conv 8x8 -> 6x6x6, pool -> 3x3x6, flatten -> 54 features in (h, w, c) order.
  nn::sequential m{conv(3, 6, 3), nn::relu{}, nn::max_pool2d::square(2), nn::flatten{}, nn::linear(54, 10),
                   nn::relu{},    nn::linear(10, 4)};
  shrink_test_randomize(m);
  const extents<4> shape{3, 8, 8, 3};
  const std::vector<index_t> keep{1, 4, 5}, removed = removed_of(keep, 6);

  nn::sequential shrunk = m, masked = m, masked_all = m;
  prune::shrink_output_channels(shrunk, 0, keep, shape);
  zero_output_channels(masked[0], removed);
  zero_output_channels(masked_all[0], removed);
  // Flattened feature (h * 3 + w) * 6 + c belongs to channel c.
  std::vector<index_t> removed_columns;
  for (index_t f = 0; f < 54; ++f)
    if (std::binary_search(removed.begin(), removed.end(), f % 6)) removed_columns.push_back(f);
  zero_linear_columns(masked_all[4], removed_columns);

  const auto& fc = std::get<nn::linear>(shrunk[4]);
  const auto& ofc = std::get<nn::linear>(m[4]);
  REQUIRE(fc.in_features() == 27);
  CHECK(fc.out_features() == 10);
  for (index_t o = 0; o < 10; ++o)
    for (index_t p = 0; p < 9; ++p)
      for (index_t j = 0; j < 3; ++j) CHECK(fc.weight(o, p * 3 + j) == ofc.weight(o, p * 6 + keep[j]));
  CHECK(shrunk.parameter_count() == m.parameter_count() - 3 * (conv_params(3, 1, 3) + 10 * 9));

  // The float check also tests the column selection on its own: the masked model keeps
  // every column of the linear layer (its removed features are zero activations).
  check_float(shrunk, masked, shape);
  check_int8(shrunk, masked_all, shape);
}

TEST_CASE("shrink linear -> linear, several layers at once", "[shrink]") {
  nn::sequential m{nn::flatten{},        nn::linear(12, 10), nn::relu{}, nn::linear(10, 8), nn::relu6{},
                   nn::linear(8, 7),     nn::linear(7, 3)};
  shrink_test_randomize(m);
  const extents<4> shape{4, 2, 2, 3};
  const std::map<std::size_t, prune::channel_keep_list> keeps{{1, {0, 1, 4, 8, 9}}, {3, {2, 3, 7}}, {5, {6}}};

  nn::sequential shrunk = m, masked = m, masked_all = m;
  prune::shrink_output_channels(shrunk, keeps, shape);
  const index_t outs[] = {10, 8, 7};
  std::size_t e = 0;
  for (const auto& [layer, keep] : keeps) {
    const std::vector<index_t> removed = removed_of(keep, outs[e++]);
    zero_output_channels(masked[layer], removed);
    zero_output_channels(masked_all[layer], removed);
    zero_linear_columns(masked_all[layer == 5 ? 6 : layer + 2], removed);
  }

  CHECK(std::get<nn::linear>(shrunk[1]).weight.shape() == extents<2>{5, 12});
  CHECK(std::get<nn::linear>(shrunk[3]).weight.shape() == extents<2>{3, 5});
  CHECK(std::get<nn::linear>(shrunk[5]).weight.shape() == extents<2>{1, 3});
  CHECK(std::get<nn::linear>(shrunk[6]).weight.shape() == extents<2>{3, 1});
  CHECK(shrunk.parameter_count() ==
        linear_params(12, 5) + linear_params(5, 3) + linear_params(3, 1) + linear_params(1, 3));
  // Both linear -> linear without an activation between (5 -> 6) and through ReLU6.
  CHECK(std::get<nn::linear>(shrunk[6]).weight(2, 0) == std::get<nn::linear>(m[6]).weight(2, 6));

  // One entry at a time, in either order, gives the same model: the lists number the
  // original channels and touch disjoint axes.
  nn::sequential one_by_one = m;
  for (std::size_t layer : {std::size_t{1}, std::size_t{5}, std::size_t{3}}) prune::shrink_output_channels(one_by_one, layer, keeps.at(layer), shape);
  const tensor<float, 4> x = random_input(shape);
  require_same_bits(one_by_one.forward(x.cview()), shrunk.forward(x.cview()));

  check_float(shrunk, masked, shape);
  check_int8(shrunk, masked_all, shape);
}

TEST_CASE("shrink linear -> BN -> ReLU -> linear: the BN loses the same channels", "[shrink]") {
  nn::sequential m{nn::flatten{}, nn::linear(12, 9), nn::batch_norm2d(9), nn::relu{}, nn::linear(9, 4)};
  shrink_test_randomize(m);
  const extents<4> shape{3, 2, 2, 3};
  const std::vector<index_t> keep{0, 3, 4, 8}, removed = removed_of(keep, 9);

  nn::sequential shrunk = m, masked = m, masked_all = m;
  prune::shrink_output_channels(shrunk, 1, keep, shape);
  for (nn::sequential* s : {&masked, &masked_all}) {
    zero_output_channels((*s)[1], removed);
    zero_bn_channels((*s)[2], removed);
  }
  zero_linear_columns(masked_all[4], removed);

  check_bn_kept(shrunk[2], m[2], keep);
  CHECK(std::get<nn::linear>(shrunk[1]).weight.shape() == extents<2>{4, 12});
  CHECK(std::get<nn::linear>(shrunk[4]).weight.shape() == extents<2>{4, 4});
  CHECK(std::get<nn::linear>(shrunk[4]).weight(1, 2) == std::get<nn::linear>(m[4]).weight(1, 4));

  check_float(shrunk, masked, shape);
  check_int8(shrunk, masked_all, shape);
}

TEST_CASE("shrink through a depthwise conv: it loses the same channels", "[shrink]") {
  // conv 3 -> 4, depthwise with multiplier 2 (4 -> 8, groups 4), conv 8 -> 5.
  nn::sequential m{conv(3, 4, 3, 1), nn::relu{}, conv(4, 8, 3, 1, 4), nn::relu{}, conv(8, 5, 1), nn::flatten{},
                   nn::linear(5 * 5 * 5, 2)};
  shrink_test_randomize(m);
  const extents<4> shape{2, 5, 5, 3};
  const std::vector<index_t> keep{0, 3}, removed = removed_of(keep, 4);
  const std::vector<index_t> dw_keep{0, 1, 6, 7}, dw_removed = removed_of(dw_keep, 8);

  nn::sequential shrunk = m, masked = m, masked_all = m;
  prune::shrink_output_channels(shrunk, 0, keep, shape);
  for (nn::sequential* s : {&masked, &masked_all}) {
    zero_output_channels((*s)[0], removed);
    zero_output_channels((*s)[2], dw_removed);  // the bias of the derived channels
  }
  zero_conv_inputs(masked_all[4], dw_removed);

  const auto& dw = std::get<nn::conv2d>(shrunk[2]);
  CHECK(dw.opt.groups == 2);
  CHECK(dw.weight.shape() == extents<4>{4, 3, 3, 1});
  for (index_t j = 0; j < 4; ++j) CHECK(dw.weight(j, 0, 1, 0) == std::get<nn::conv2d>(m[2]).weight(dw_keep[j], 0, 1, 0));
  CHECK(std::get<nn::conv2d>(shrunk[4]).in_channels() == 4);

  check_float(shrunk, masked, shape);
  check_int8(shrunk, masked_all, shape);

  // A single kept channel leaves a depthwise layer with groups 1 (one input channel).
  nn::sequential single = m;
  prune::shrink_output_channels(single, 0, {2}, shape);
  CHECK(std::get<nn::conv2d>(single[2]).opt.groups == 1);
  CHECK(single.output_shape(shape) == m.output_shape(shape));
}

TEST_CASE("shrink keeping every channel changes nothing", "[shrink]") {
  nn::sequential m{conv(2, 4, 3), nn::batch_norm2d(4), nn::relu{}, conv(4, 3, 1)};
  shrink_test_randomize(m);
  const extents<4> shape{1, 5, 5, 2};
  nn::sequential s = m;
  prune::shrink_output_channels(s, 0, {0, 1, 2, 3}, shape);
  const tensor<float, 4> x = random_input(shape);
  require_same_bits(s.forward(x.cview()), m.forward(x.cview()));
  CHECK(s.parameter_count() == m.parameter_count());
}

TEST_CASE("shrink refusals", "[shrink]") {
  const nn::sequential base{conv(3, 4, 3, 1),    nn::relu{},           conv(4, 6, 3, 1, 2), nn::relu{},
                            conv(6, 6, 3, 1, 6), conv(6, 4, 3, 1),     nn::flatten{},       nn::linear(64, 5),
                            nn::relu{},          nn::linear(5, 3)};
  const extents<4> shape{1, 4, 4, 3};
  nn::sequential m = base;
  shrink_test_randomize(m);
  const nn::sequential original = m;
  auto unchanged = [&] {
    CHECK(m.parameter_count() == original.parameter_count());
    CHECK(std::get<nn::conv2d>(m[0]).weight.shape() == std::get<nn::conv2d>(original[0]).weight.shape());
  };

  // Keep lists: empty (every channel removed), out of range, unsorted, duplicated.
  QLIB_REQUIRE_ERROR(prune::shrink_output_channels(m, 7, {}, shape), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::shrink_output_channels(m, 7, {0, 5}, shape), errc::out_of_range);
  QLIB_REQUIRE_ERROR(prune::shrink_output_channels(m, 7, {-1, 2}, shape), errc::out_of_range);
  QLIB_REQUIRE_ERROR(prune::shrink_output_channels(m, 7, {2, 1}, shape), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::shrink_output_channels(m, 7, {1, 1, 2}, shape), errc::invalid_argument);
  // Layers: out of the model, without output channels, grouped or depthwise producers.
  QLIB_REQUIRE_ERROR(prune::shrink_output_channels(m, 10, {0}, shape), errc::out_of_range);
  QLIB_REQUIRE_ERROR(prune::shrink_output_channels(m, 1, {0}, shape), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::shrink_output_channels(m, 6, {0}, shape), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(prune::shrink_output_channels(m, 2, {0, 1}, shape), errc::unsupported);
  QLIB_REQUIRE_ERROR(prune::shrink_output_channels(m, 4, {0, 1}, shape), errc::unsupported);
  // Consumer: a grouped (not depthwise) conv.
  QLIB_REQUIRE_ERROR(prune::shrink_output_channels(m, 0, {0, 1}, shape), errc::unsupported);
  // The logits (last layer), and channels that reach the output through ReLU only.
  QLIB_REQUIRE_ERROR(prune::shrink_output_channels(m, 9, {0, 1}, shape), errc::unsupported);
  nn::sequential tail{conv(3, 4, 3), nn::relu{}, nn::max_pool2d::square(2)};
  QLIB_REQUIRE_ERROR(prune::shrink_output_channels(tail, 0, {0, 1}, extents<4>{1, 4, 4, 3}), errc::unsupported);
  // An input shape the model does not accept.
  QLIB_REQUIRE_ERROR(prune::shrink_output_channels(m, 7, {0}, extents<4>{1, 4, 4, 2}), errc::shape_mismatch);
  unchanged();

  // Many at once: one bad entry refuses the whole call before any layer changes.
  const std::map<std::size_t, prune::channel_keep_list> bad{{5, {0, 2}}, {7, {0, 9}}};
  QLIB_REQUIRE_ERROR(prune::shrink_output_channels(m, bad, shape), errc::out_of_range);
  const std::map<std::size_t, prune::channel_keep_list> bad_last{{5, {0, 2}}, {9, {0}}};
  QLIB_REQUIRE_ERROR(prune::shrink_output_channels(m, bad_last, shape), errc::unsupported);
  unchanged();
  CHECK(std::get<nn::conv2d>(m[5]).out_channels() == 4);
  // The valid part alone works.
  prune::shrink_output_channels(m, {{5, {0, 2}}, {7, {1, 3, 4}}}, shape);
  CHECK(std::get<nn::conv2d>(m[5]).out_channels() == 2);
  CHECK(std::get<nn::linear>(m[7]).in_features() == 32);
  CHECK(std::get<nn::linear>(m[9]).in_features() == 3);
}
