// Model files and friends: a PyTorch state_dict (tests/data/torch_model, from make_torch_model.py) loaded into
// the same nn::sequential gives PyTorch's outputs; float state_dict round trips in both layouts and refusals of
// a wrong architecture; int8 models through save_quantized / load_quantized (bit-identical outputs, malformed
// files refused, size vs float); dynamic_linear against an integer reference on every ISA; io::parse_idx.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

#include "qlib/io/idx.hpp"
#include "qlib/io/npy.hpp"
#include "qlib/nn/dynamic_linear.hpp"
#include "qlib/nn/quantized_io.hpp"
#include "qlib/nn/state_dict.hpp"
#include "qlib/nn/static_quantization.hpp"
#include "test_util.hpp"

using namespace qlib;
using namespace qlib_test;

namespace {

// ---------------------------------------------------------------------------------------------
// Helpers

std::string torch_path(const std::string& name) { return std::string(QLIB_TEST_DATA_DIR) + "/torch_model/" + name; }

// Index of the first element whose bits differ, or -1 (shapes must agree).
template <class T>
index_t first_bit_difference(const tensor<float, 4>& a, const T& b) {
  REQUIRE(a.shape() == b.shape());
  for (index_t i = 0; i < a.size(); ++i)
    if (!same_bits(a.data()[i], b.data()[i])) return i;
  return -1;
}

void fill(tensor<float, 4>& t, float lo, float hi) {
  for (float& v : t) v = rand_float(lo, hi);
}
void fill(tensor<float, 2>& t, float lo, float hi) {
  for (float& v : t) v = rand_float(lo, hi);
}
void fill(tensor<float, 1>& t, float lo, float hi) {
  for (float& v : t) v = rand_float(lo, hi);
}

// Random parameters for every layer (BN with non-trivial statistics), He-like weight ranges.
void randomize(nn::sequential& m) {
  for (nn::layer& l : m.layers) {
    if (auto* c = std::get_if<nn::conv2d>(&l)) {
      const float b = std::sqrt(6.0f / static_cast<float>(c->weight.size() / c->out_channels()));
      fill(c->weight, -b, b);
      fill(c->bias, -0.1f, 0.1f);
    } else if (auto* f = std::get_if<nn::linear>(&l)) {
      const float b = std::sqrt(6.0f / static_cast<float>(f->in_features()));
      fill(f->weight, -b, b);
      fill(f->bias, -0.1f, 0.1f);
    } else if (auto* n = std::get_if<nn::batch_norm2d>(&l)) {
      fill(n->weight, 0.5f, 1.5f);
      fill(n->bias, -0.3f, 0.3f);
      fill(n->running_mean, -0.3f, 0.3f);
      fill(n->running_var, 0.5f, 2.0f);
    }
  }
}

// The architecture of tests/data/make_torch_model.py, parameters zero.
nn::sequential torch_architecture(index_t fc_out = 16, index_t groups = 4) {
  return nn::sequential{nn::conv2d(3, 8, nn::conv2d_options::square(3, 1, 1)),
                        nn::batch_norm2d(8),
                        nn::relu{},
                        nn::max_pool2d::square(2),
                        nn::conv2d(8, 12, nn::conv2d_options::square(3, 2, 1, 1, groups)),
                        nn::relu{},
                        nn::avg_pool2d::square(2),
                        nn::flatten{},
                        nn::linear(12 * 2 * 3, fc_out),
                        nn::relu{},
                        nn::linear(fc_out, 5)};
}
constexpr index_t torch_h = 16, torch_w = 24;
nn::state_dict_options torch_options() {
  nn::state_dict_options o;
  o.layout = nn::weight_layout::pytorch;
  o.input_shape = {1, torch_h, torch_w, 3};
  return o;
}

// NCHW .npy -> NHWC tensor.
tensor<float, 4> read_nchw_as_nhwc(const std::string& path) {
  const npy_array a = read_npy(path);
  REQUIRE(a.shape.size() == 4);
  const index_t n = a.shape[0], c = a.shape[1], h = a.shape[2], w = a.shape[3];
  tensor<float, 4> x(extents<4>{n, h, w, c});
  for (index_t i = 0; i < n; ++i)
    for (index_t ch = 0; ch < c; ++ch)
      for (index_t y = 0; y < h; ++y)
        for (index_t xx = 0; xx < w; ++xx)
          x(i, y, xx, ch) = a.data[static_cast<std::size_t>(((i * c + ch) * h + y) * w + xx)];
  return x;
}

// A copy of file f as a writer, without the tensors in drop_tensors and the metadata keys in
// drop_meta (the caller then adds replacements).
io::safetensors_writer copy_file(const io::safetensors_file& f, const std::set<std::string>& drop_tensors = {},
                                 const std::set<std::string>& drop_meta = {}) {
  io::safetensors_writer w;
  for (const io::tensor_info& t : f.tensors()) {
    if (drop_tensors.count(t.name)) continue;
    const io::byte_span r = f.raw(t.name);
    w.add_raw(t.name, t.type, t.shape, r.data, r.size);
  }
  for (const auto& kv : f.metadata())
    if (!drop_meta.count(kv.first)) w.set_metadata(kv.first, kv.second);
  return w;
}
io::safetensors_file reparse(const io::safetensors_writer& w) { return io::safetensors_file::parse(w.to_bytes()); }

// f with tensor `name` replaced by t (malformed-file tests).
template <class T>
io::safetensors_writer copy_replacing(const io::safetensors_file& f, const std::string& name, const T& t) {
  io::safetensors_writer w = copy_file(f, {name});
  w.add(name, t);
  return w;
}

nn::quantized_sequential load_written(const io::safetensors_writer& w) { return nn::load_quantized(reparse(w)); }

tensor<float, 1> floats(std::initializer_list<float> v) {
  tensor<float, 1> t(extents<1>{static_cast<index_t>(v.size())});
  std::copy(v.begin(), v.end(), t.begin());
  return t;
}
template <class T>
tensor<T, 1> values_of(const io::safetensors_file& f, const std::string& name) {
  const std::vector<T> v = f.values<T>(name);
  tensor<T, 1> t(extents<1>{static_cast<index_t>(v.size())});
  std::copy(v.begin(), v.end(), t.begin());
  return t;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// A PyTorch model file

TEST_CASE("state_dict: a PyTorch nn.Sequential's file gives PyTorch's outputs", "[nn][io][state_dict]") {
  const io::safetensors_file f = io::safetensors_file::read(torch_path("model.safetensors"));
  CHECK(f.contains("1.num_batches_tracked"));  // written by the generator, ignored by the loader
  nn::sequential m = torch_architecture();
  nn::load_state_dict(m, f, torch_options());

  // Parameters land where they belong: conv OIHW -> OHWI, BN statistics as they are, and
  // the linear layer after the flatten has its (C, H, W) columns reordered to (H, W, C).
  const tensor<float, 4> w0 = f.get<float, 4>("0.weight");  // [8, 3, 3, 3] OIHW
  const auto& c0 = std::get<nn::conv2d>(m[0]);
  for (index_t o = 0; o < 8; ++o)
    for (index_t i = 0; i < 3; ++i)
      for (index_t kh = 0; kh < 3; ++kh)
        for (index_t kw = 0; kw < 3; ++kw) REQUIRE(same_bits(c0.weight(o, kh, kw, i), w0(o, i, kh, kw)));
  const tensor<float, 4> w4 = f.get<float, 4>("4.weight");  // [12, 2, 3, 3], groups 4
  const auto& c4 = std::get<nn::conv2d>(m[4]);
  REQUIRE(c4.weight.shape() == extents<4>{12, 3, 3, 2});
  for (index_t o = 0; o < 12; ++o)
    for (index_t i = 0; i < 2; ++i) REQUIRE(same_bits(c4.weight(o, 2, 1, i), w4(o, i, 2, 1)));
  const std::vector<float> rv = f.values<float>("1.running_var");
  const auto& bn = std::get<nn::batch_norm2d>(m[1]);
  for (index_t c = 0; c < 8; ++c) CHECK(same_bits(bn.running_var(c), rv[static_cast<std::size_t>(c)]));
  const tensor<float, 2> w8 = f.get<float, 2>("8.weight");  // [16, 72], columns (c, h, w) of a 12 x 2 x 3 map
  const auto& l8 = std::get<nn::linear>(m[8]);
  for (index_t r = 0; r < 16; ++r)
    for (index_t h = 0; h < 2; ++h)
      for (index_t w = 0; w < 3; ++w)
        for (index_t c = 0; c < 12; ++c) REQUIRE(same_bits(l8.weight(r, (h * 3 + w) * 12 + c), w8(r, (c * 2 + h) * 3 + w)));

  // Outputs: PyTorch sums in another order, so ~1e-5 relative (to the value plus the mean
  // magnitude, as test_nn_layers' golden cases).
  const tensor<float, 4> x = read_nchw_as_nhwc(torch_path("x.npy"));
  REQUIRE(x.shape() == extents<4>{2, torch_h, torch_w, 3});
  const npy_array y = read_npy(torch_path("y.npy"));
  REQUIRE(y.shape == std::vector<index_t>{2, 5});
  const tensor<float, 4> got = m.forward(x.cview());
  REQUIRE(got.shape() == extents<4>{2, 1, 1, 5});
  double mean_abs = 0.0;
  for (float v : y.data) mean_abs += std::fabs(v);
  mean_abs /= static_cast<double>(y.data.size());
  REQUIRE(mean_abs > 0.01);
  for (std::size_t i = 0; i < y.data.size(); ++i) {
    INFO("output " << i << ": qlib " << got.data()[i] << ", PyTorch " << y.data[i]);
    CHECK(std::fabs(static_cast<double>(got.data()[i]) - y.data[i]) <= 1e-5 * (std::fabs(y.data[i]) + mean_abs));
  }

  // Saving in PyTorch layout gives back PyTorch's tensors bit for bit (the inverse
  // permutation), without num_batches_tracked.
  const io::safetensors_file back = reparse(nn::save_state_dict(m, torch_options()));
  CHECK(back.size() + 1 == f.size());
  CHECK(back.metadata().at("qlib.layout") == "pytorch");
  for (const io::tensor_info& t : back.tensors()) {
    INFO(t.name);
    REQUIRE(f.contains(t.name));
    const io::tensor_info& o = f.at(t.name);
    CHECK(o.type == t.type);
    CHECK(o.shape == t.shape);
    const io::byte_span a = back.raw(t.name), b = f.raw(t.name);
    REQUIRE(a.size == b.size);
    CHECK(std::equal(a.data, a.data + a.size, b.data));
  }
}

TEST_CASE("state_dict: an input_shape that contradicts the linear layer after the flatten is refused",
          "[nn][io][state_dict][errors]") {
  const io::safetensors_file f = io::safetensors_file::read(torch_path("model.safetensors"));
  // 8 x 8 input: the flatten would see a 1 x 1 x 12 map, but the linear layer takes 72.
  nn::state_dict_options o = torch_options();
  o.input_shape = {1, 8, 8, 3};
  nn::sequential m = torch_architecture();
  QLIB_REQUIRE_ERROR(nn::load_state_dict(m, f, o), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(nn::save_state_dict(m, o), errc::shape_mismatch);
  // A 4 x 4 input: 2 x 2 x 12 = 48 features, not 72.
  o.input_shape = {1, 12, 12, 3};
  QLIB_REQUIRE_ERROR(nn::load_state_dict(m, f, o), errc::shape_mismatch);
  // Wrong channel count in the input shape.
  o.input_shape = {1, torch_h, torch_w, 4};
  QLIB_REQUIRE_ERROR(nn::load_state_dict(m, f, o), errc::shape_mismatch);
}

// ---------------------------------------------------------------------------------------------
// Float round trips

TEST_CASE("state_dict: round trips in both layouts give bit-identical outputs", "[nn][io][state_dict]") {
  nn::sequential m = torch_architecture();
  randomize(m);
  tensor<float, 4> x(extents<4>{3, torch_h, torch_w, 3});
  fill(x, -1.0f, 1.0f);
  const tensor<float, 4> want = m.forward(x.cview());

  for (nn::weight_layout layout : {nn::weight_layout::pytorch, nn::weight_layout::qlib}) {
    INFO((layout == nn::weight_layout::pytorch ? "pytorch layout" : "qlib layout"));
    nn::state_dict_options o = torch_options();
    o.layout = layout;
    if (layout == nn::weight_layout::qlib) o.input_shape = {0, 0, 0, 0};  // not needed
    const std::vector<std::uint8_t> bytes = nn::save_state_dict(m, o).to_bytes();
    const io::safetensors_file f = io::safetensors_file::parse(bytes);
    CHECK(f.size() == 12);  // 2 conv + 2 linear (weight, bias) + BN (4)
    CHECK(!f.contains("1.num_batches_tracked"));
    CHECK(f.metadata().at("format") == "pt");
    // The layouts differ where they should: conv OIHW vs OHWI.
    CHECK(f.at("4.weight").shape ==
          (layout == nn::weight_layout::pytorch ? std::vector<index_t>{12, 2, 3, 3} : std::vector<index_t>{12, 3, 3, 2}));

    nn::sequential back = torch_architecture();
    nn::load_state_dict(back, f, o);
    const index_t d = first_bit_difference(back.forward(x.cview()), want);
    INFO("first difference at " << d);
    CHECK(d == -1);
    // save -> load -> save: the same bytes.
    CHECK(nn::save_state_dict(back, o).to_bytes() == bytes);
    // A file in one layout read as the other is refused or changes the model (conv
    // weights of a square kernel with 3 channels have the same shape in both layouts,
    // the grouped conv's do not).
    nn::state_dict_options other = torch_options();
    other.layout = layout == nn::weight_layout::pytorch ? nn::weight_layout::qlib : nn::weight_layout::pytorch;
    nn::sequential wrong = torch_architecture();
    QLIB_REQUIRE_ERROR(nn::load_state_dict(wrong, f, other), errc::shape_mismatch);
  }

  // The pytorch-layout file differs from the qlib one exactly by the permutations: the
  // linear layer after the flatten has the same multiset of columns, in another order.
  const io::safetensors_file fp = reparse(nn::save_state_dict(m, torch_options()));
  nn::state_dict_options q;
  q.layout = nn::weight_layout::qlib;
  const io::safetensors_file fq = reparse(nn::save_state_dict(m, q));
  CHECK(fp.values<float>("8.weight") != fq.values<float>("8.weight"));
  CHECK(fp.values<float>("10.weight") == fq.values<float>("10.weight"));  // no flatten before it
  std::vector<float> a = fp.values<float>("8.weight"), b = fq.values<float>("8.weight");
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  CHECK(a == b);
}

TEST_CASE("state_dict: a model without a flatten needs no input_shape; with one it does", "[nn][io][state_dict]") {
  // Convolutions only, and linear layers only: PyTorch layout with default options.
  nn::sequential convs{nn::conv2d(3, 6, nn::conv2d_options::square(3, 1, 1)), nn::batch_norm2d(6), nn::relu6{},
                       nn::conv2d(6, 6, nn::conv2d_options::square(3, 1, 1, 1, 6)), nn::avg_pool2d::square(2),
                       nn::conv2d(6, 4, nn::conv2d_options{1, 3, 1, 1, 0, 1, 1, 1, 2}, false)};
  nn::sequential mlp{nn::linear(20, 12), nn::relu{}, nn::linear(12, 7, false)};
  for (nn::sequential* m : {&convs, &mlp}) {
    randomize(*m);
    const bool is_mlp = m == &mlp;
    tensor<float, 4> x(is_mlp ? extents<4>{4, 1, 1, 20} : extents<4>{2, 6, 8, 3});
    fill(x, -1.0f, 1.0f);
    const std::vector<std::uint8_t> bytes = nn::save_state_dict(*m).to_bytes();
    const io::safetensors_file f = io::safetensors_file::parse(bytes);
    nn::sequential back = is_mlp ? nn::sequential{nn::linear(20, 12), nn::relu{}, nn::linear(12, 7, false)}
                                 : nn::sequential{nn::conv2d(3, 6, nn::conv2d_options::square(3, 1, 1)),
                                                  nn::batch_norm2d(6),
                                                  nn::relu6{},
                                                  nn::conv2d(6, 6, nn::conv2d_options::square(3, 1, 1, 1, 6)),
                                                  nn::avg_pool2d::square(2),
                                                  nn::conv2d(6, 4, nn::conv2d_options{1, 3, 1, 1, 0, 1, 1, 1, 2}, false)};
    nn::load_state_dict(back, f);
    CHECK(first_bit_difference(back.forward(x.cview()), m->forward(x.cview())) == -1);
    CHECK(nn::save_state_dict(back).to_bytes() == bytes);
    if (!is_mlp) {  // bias-less conv: no "5.bias" in the file
      CHECK(f.contains("5.weight"));
      CHECK(!f.contains("5.bias"));
      CHECK(f.at("5.weight").shape == std::vector<index_t>{4, 3, 1, 3});  // OIHW, 3 = 6 / groups
    }
  }

  // With a flatten (even one of a 1 x 1 map) PyTorch layout needs the input shape, for
  // saving and loading; the qlib layout does not.
  nn::sequential m = torch_architecture();
  randomize(m);
  QLIB_REQUIRE_ERROR(nn::save_state_dict(m), errc::invalid_argument);
  const io::safetensors_file f = io::safetensors_file::read(torch_path("model.safetensors"));
  QLIB_REQUIRE_ERROR(nn::load_state_dict(m, f), errc::invalid_argument);
  nn::state_dict_options q;
  q.layout = nn::weight_layout::qlib;
  const io::safetensors_file fq = reparse(nn::save_state_dict(m, q));
  nn::sequential back = torch_architecture();
  nn::load_state_dict(back, fq, q);
  tensor<float, 4> x(extents<4>{1, torch_h, torch_w, 3});
  fill(x, -1.0f, 1.0f);
  CHECK(first_bit_difference(back.forward(x.cview()), m.forward(x.cview())) == -1);
}

TEST_CASE("state_dict: a file of another architecture is refused", "[nn][io][state_dict][errors]") {
  const io::safetensors_file f = io::safetensors_file::read(torch_path("model.safetensors"));
  const nn::state_dict_options o = torch_options();
  auto load = [&](const io::safetensors_file& file) {
    nn::sequential m = torch_architecture();
    nn::load_state_dict(m, file, o);
  };
  load(f);  // the original loads

  {  // an extra tensor: a layer the model does not have
    io::safetensors_writer w = copy_file(f);
    w.add("11.weight", floats({1.0f, 2.0f}));
    QLIB_REQUIRE_ERROR(load(reparse(w)), errc::invalid_argument);
  }
  {  // num_batches_tracked of a layer that is no batch norm is not ignored
    io::safetensors_writer w = copy_file(f);
    w.add_scalar("0.num_batches_tracked", std::int64_t{3});
    QLIB_REQUIRE_ERROR(load(reparse(w)), errc::invalid_argument);
  }
  {  // a typo'd name: extra and missing at once
    io::safetensors_writer w = copy_file(f, {"1.running_var"});
    w.add("1.running_variance", values_of<float>(f, "1.running_var"));
    QLIB_REQUIRE_ERROR(load(reparse(w)), errc::out_of_range);
  }
  for (const char* name : {"0.weight", "4.bias", "1.running_mean", "8.weight", "10.bias"}) {  // missing
    INFO("missing " << name);
    QLIB_REQUIRE_ERROR(load(reparse(copy_file(f, {name}))), errc::out_of_range);
  }
  {  // wrong shapes: a conv weight with another kernel, a linear with one column less, a bias too long
    io::safetensors_writer w = copy_file(f, {"0.weight"});
    w.add("0.weight", tensor<float, 4>(extents<4>{8, 3, 3, 2}));
    QLIB_REQUIRE_ERROR(load(reparse(w)), errc::shape_mismatch);
    io::safetensors_writer w2 = copy_file(f, {"8.weight"});
    w2.add("8.weight", tensor<float, 2>(extents<2>{16, 71}));
    QLIB_REQUIRE_ERROR(load(reparse(w2)), errc::shape_mismatch);
    io::safetensors_writer w3 = copy_file(f, {"10.bias"});
    w3.add("10.bias", tensor<float, 1>(extents<1>{6}));
    QLIB_REQUIRE_ERROR(load(reparse(w3)), errc::shape_mismatch);
    io::safetensors_writer w4 = copy_file(f, {"1.weight"});  // right count, wrong rank
    w4.add("1.weight", tensor<float, 2>(extents<2>{1, 8}));
    QLIB_REQUIRE_ERROR(load(reparse(w4)), errc::shape_mismatch);
  }
  {  // wrong dtypes: F64 and F16 for F32
    io::safetensors_writer w = copy_file(f, {"0.bias"});
    w.add("0.bias", tensor<double, 1>(extents<1>{8}));
    QLIB_REQUIRE_ERROR(load(reparse(w)), errc::invalid_argument);
    io::safetensors_writer w2 = copy_file(f, {"8.weight"});
    w2.add("8.weight", tensor<fp16, 2>(extents<2>{16, 72}));
    QLIB_REQUIRE_ERROR(load(reparse(w2)), errc::invalid_argument);
  }
  // Models that differ from the file: another width, other groups, no batch norm (the
  // names shift), a bias-less layer where the file has a bias.
  {
    nn::sequential m = torch_architecture(17);
    QLIB_REQUIRE_ERROR(nn::load_state_dict(m, f, o), errc::shape_mismatch);
    nn::sequential g = torch_architecture(16, 2);
    QLIB_REQUIRE_ERROR(nn::load_state_dict(g, f, o), errc::shape_mismatch);
    nn::sequential no_bn = torch_architecture();
    no_bn.layers.erase(no_bn.layers.begin() + 1);
    QLIB_REQUIRE_ERROR(nn::load_state_dict(no_bn, f, o), errc::out_of_range);  // no "3.weight"
    nn::sequential no_bias = torch_architecture();
    no_bias[10] = nn::linear(16, 5, false);
    QLIB_REQUIRE_ERROR(nn::load_state_dict(no_bias, f, o), errc::invalid_argument);  // "10.bias" unused
  }
}

// ---------------------------------------------------------------------------------------------
// int8 model files

namespace {

// conv+BN+ReLU6, maxpool, grouped conv+ReLU, avgpool (padded, count_include_pad false),
// depthwise conv (channel multiplier 2, stride 2)+ReLU, flatten, linear+ReLU6, linear.
nn::sequential make_qmodel(bool last_linear = true) {
  nn::avg_pool2d ap = nn::avg_pool2d::square(3, 1, 1);
  ap.count_include_pad = false;
  nn::sequential m{nn::conv2d(3, 8, nn::conv2d_options::square(3, 1, 1)),
                   nn::batch_norm2d(8),
                   nn::relu6{},
                   nn::max_pool2d::square(2),
                   nn::conv2d(8, 8, nn::conv2d_options::square(3, 1, 1, 1, 2)),
                   nn::relu{},
                   ap,
                   nn::conv2d(8, 16, nn::conv2d_options::square(3, 2, 1, 1, 8)),
                   nn::relu{}};
  if (last_linear) {
    m.layers.push_back(nn::flatten{});
    m.layers.push_back(nn::linear(2 * 2 * 16, 16));
    m.layers.push_back(nn::relu6{});
    m.layers.push_back(nn::linear(16, 6));
  } else {
    m.layers.push_back(nn::conv2d(16, 5, nn::conv2d_options::square(1)));  // ends in a conv: uint8 out
  }
  randomize(m);
  return m;
}

tensor<float, 4> qmodel_input(index_t n) {
  tensor<float, 4> x(extents<4>{n, 8, 8, 3});
  fill(x, -1.0f, 1.5f);
  return x;
}

nn::quantized_sequential quantize_model(const nn::sequential& m, const nn::static_quantization_options& opt,
                                        index_t batches, const std::function<tensor<float, 4>(index_t)>& input) {
  nn::static_quantizer<minmax_observer> sq(m, opt);
  for (index_t b = 0; b < batches; ++b) sq.observe(input(4).cview());
  return sq.convert();
}

nn::quantized_sequential load_bytes(const std::vector<std::uint8_t>& bytes) {
  return nn::load_quantized(io::safetensors_file::parse(bytes));
}

}  // namespace

TEST_CASE("quantized files: save -> load gives bit-identical outputs", "[nn][io][quantized]") {
  struct variant {
    const char* name;
    bool per_channel;
    affine_scheme<std::int8_t> weights;
    bool float_logits, last_linear;
  };
  for (const variant& v : {variant{"per-channel symmetric", true, schemes::s8_symmetric, true, true},
                           variant{"per-tensor symmetric", false, schemes::s8_symmetric, true, true},
                           variant{"per-channel affine int8 (weight zero points)", true, schemes::s8_asymmetric, true, true},
                           variant{"per-tensor, uint8 logits", false, schemes::s8_symmetric, false, true},
                           variant{"per-channel, ends in a conv", true, schemes::s8_symmetric, true, false}}) {
    INFO(v.name);
    const nn::sequential m = make_qmodel(v.last_linear);
    nn::static_quantization_options opt;
    opt.per_channel_weights = v.per_channel;
    opt.weight_scheme = v.weights;
    opt.float_logits = v.float_logits;
    const nn::quantized_sequential q = quantize_model(m, opt, 3, qmodel_input);
    const std::vector<std::uint8_t> bytes = nn::save_quantized(q).to_bytes();
    const io::safetensors_file f = io::safetensors_file::parse(bytes);
    CHECK(f.metadata().at("qlib.format") == "quantized_sequential/1");
    CHECK(f.metadata().at("qlib.layers") == std::to_string(q.layers.size()));
    CHECK(f.metadata().at("qlib.layer.0") == "qconv2d");
    CHECK(f.metadata().at("qlib.layer.1") == "max_pool2d");
    CHECK(f.metadata().at("qlib.layer.3") == "avg_pool2d");
    CHECK(f.at("0.weight").type == io::dtype::i8);
    CHECK(f.at("0.weight_scale").shape == std::vector<index_t>{v.per_channel ? 8 : 1});
    CHECK(f.at("4.weight").shape == std::vector<index_t>{16, 3, 3, 1});  // depthwise OHWI
    if (v.weights.sym == symmetry::asymmetric) {
      const std::vector<std::int32_t> z = f.values<std::int32_t>("0.weight_zero_point");
      CHECK(std::any_of(z.begin(), z.end(), [](std::int32_t zp) { return zp != 0; }));
    }

    const nn::quantized_sequential back = load_bytes(bytes);
    REQUIRE(back.layers.size() == q.layers.size());
    CHECK((back.input.scale == q.input.scale && back.input.zero_point == q.input.zero_point));
    for (std::size_t i = 0; i < q.layers.size(); ++i) {
      INFO("layer " << i);
      REQUIRE(back.layers[i].index() == q.layers[i].index());
      const nn::quantized_output* a = nullptr;
      const nn::quantized_output* b = nullptr;
      if (auto* c = std::get_if<nn::qconv2d>(&q.layers[i])) {
        const auto& d = std::get<nn::qconv2d>(back.layers[i]);
        CHECK(c->opt.describe() == d.opt.describe());
        CHECK(c->in_channels == d.in_channels);
        CHECK(c->w.bias == d.w.bias);
        a = &c->output;
        b = &d.output;
      } else if (auto* l = std::get_if<nn::qlinear>(&q.layers[i])) {
        const auto& d = std::get<nn::qlinear>(back.layers[i]);
        CHECK(l->float_output == d.float_output);
        CHECK(l->channel_scale == d.channel_scale);
        if (!l->float_output) {
          a = &l->output;
          b = &d.output;
        }
      } else if (auto* p = std::get_if<nn::avg_pool2d>(&q.layers[i])) {
        CHECK(p->count_include_pad == std::get<nn::avg_pool2d>(back.layers[i]).count_include_pad);
        CHECK(p->window.describe() == std::get<nn::avg_pool2d>(back.layers[i]).window.describe());
      }
      if (a) {  // recomputed multipliers are the same floats; the clamp (ReLU6) is kept
        CHECK(a->multiplier == b->multiplier);
        CHECK((a->qmin == b->qmin && a->qmax == b->qmax));
        CHECK((a->out.scale == b->out.scale && a->out.zero_point == b->out.zero_point));
      }
    }
    const tensor<float, 4> x = qmodel_input(5);
    {  // outputs that vary (a constant output would make the comparison below vacuous)
      const tensor<float, 4> y = q.forward(x.cview());
      std::set<float> distinct(y.begin(), y.end());
      CHECK(distinct.size() >= static_cast<std::size_t>(y.size() / 2));
    }
    for_each_isa([&](isa) {
      const tensor<float, 4> want = q.forward(x.cview());
      const index_t d = first_bit_difference(back.forward(x.cview()), want);
      INFO("first difference at " << d);
      CHECK(d == -1);
    });
    CHECK(nn::save_quantized(back).to_bytes() == bytes);  // save -> load -> save: same bytes
  }
}

TEST_CASE("quantized files: the int8 demo CNN's file is at most 0.27 x the float file", "[nn][io][quantized]") {
  // The Fashion-MNIST demo's architecture on 28 x 28 x 1 (800 = 5 * 5 * 32).
  nn::sequential m{nn::conv2d(1, 16, nn::conv2d_options::square(3)),
                   nn::batch_norm2d(16),
                   nn::relu{},
                   nn::max_pool2d::square(2),
                   nn::conv2d(16, 32, nn::conv2d_options::square(3)),
                   nn::batch_norm2d(32),
                   nn::relu{},
                   nn::max_pool2d::square(2),
                   nn::flatten{},
                   nn::linear(800, 128),
                   nn::relu{},
                   nn::linear(128, 10)};
  randomize(m);
  nn::state_dict_options so;
  so.input_shape = {1, 28, 28, 1};
  const std::size_t float_bytes = nn::save_state_dict(m, so).to_bytes().size();
  const std::size_t params = static_cast<std::size_t>(m.parameter_count()) + 2 * (16 + 32);  // + running stats
  CHECK(float_bytes >= 4 * params);
  auto images = [](index_t n) {
    tensor<float, 4> x(extents<4>{n, 28, 28, 1});
    fill(x, 0.0f, 1.0f);
    return x;
  };
  for (bool per_channel : {true, false}) {
    INFO("per_channel " << per_channel);
    nn::static_quantization_options opt;
    opt.per_channel_weights = per_channel;
    const nn::quantized_sequential q = quantize_model(m, opt, 1, images);
    const std::size_t int8_bytes = nn::save_quantized(q).to_bytes().size();
    INFO("float file " << float_bytes << " bytes, int8 file " << int8_bytes << " bytes, ratio "
                       << static_cast<double>(int8_bytes) / static_cast<double>(float_bytes));
    CHECK(static_cast<double>(int8_bytes) <= 0.27 * static_cast<double>(float_bytes));
    CHECK(int8_bytes >= static_cast<std::size_t>(q.parameter_bytes()));
  }
}

namespace {
// Zeroes 7 of every 10 weights of each conv and linear (what pruning leaves), in place.
void zero_most_weights(nn::sequential& m) {
  auto zero = [](tensor<float, 4>& w) {
    index_t i = 0;
    for (float& v : w) v = i++ % 10 < 7 ? 0.0f : v;
  };
  for (nn::layer& l : m.layers) {
    if (auto* c = std::get_if<nn::conv2d>(&l)) zero(c->weight);
    if (auto* f = std::get_if<nn::linear>(&l)) {
      tensor<float, 4> w(f->weight.cview().reshape(extents<4>{f->weight.shape(0), 1, 1, f->weight.shape(1)}));
      zero(w);
      std::copy(w.begin(), w.end(), f->weight.begin());
    }
  }
}

// The int8 codes of every qconv2d / qlinear, in layer order.
std::vector<std::vector<std::int8_t>> weight_codes(const nn::quantized_sequential& q) {
  std::vector<std::vector<std::int8_t>> out;
  for (const nn::qlayer& l : q.layers) {
    const nn::quantized_weights* w = nullptr;
    if (auto* c = std::get_if<nn::qconv2d>(&l)) w = &c->w;
    if (auto* f = std::get_if<nn::qlinear>(&l)) w = &f->w;
    if (w) out.emplace_back(w->values.begin(), w->values.end());
  }
  return out;
}

// `bytes` (a file of q) load back to q's codes and outputs, and save again to the same bytes.
void check_reloads_as(const std::vector<std::uint8_t>& bytes, const nn::quantized_sequential& q) {
  const nn::quantized_sequential back = load_bytes(bytes);
  CHECK(weight_codes(back) == weight_codes(q));
  const tensor<float, 4> x = qmodel_input(4);
  CHECK(first_bit_difference(back.forward(x.cview()), q.forward(x.cview())) == -1);
  CHECK(nn::save_quantized(back).to_bytes() == bytes);
}

// The saved file of a random 1x1 conv 3 -> 5 (15 weights, so a mask or a packed row ends
// in unused bits), with 7 of every 10 weights zeroed when `pruned`, quantized at
// `weight_bits` (empty: 8 bits): where the malformed-file tests start.
io::safetensors_file small_conv_file(bool pruned, std::vector<int> weight_bits) {
  nn::sequential m{nn::conv2d(3, 5, nn::conv2d_options::square(1)), nn::relu{}};
  randomize(m);
  if (pruned) zero_most_weights(m);
  nn::static_quantization_options opt;
  opt.weight_bits = std::move(weight_bits);
  return io::safetensors_file::parse(nn::save_quantized(quantize_model(m, opt, 2, qmodel_input)).to_bytes());
}

tensor<std::uint8_t, 1> u8_tensor(const std::vector<std::uint8_t>& v) {
  tensor<std::uint8_t, 1> t(extents<1>{static_cast<index_t>(v.size())});
  std::copy(v.begin(), v.end(), t.begin());
  return t;
}
}  // namespace

TEST_CASE("quantized files: pruned weights are stored sparse, and load back bit for bit", "[nn][io][quantized]") {
  nn::sequential pruned = make_qmodel();
  zero_most_weights(pruned);
  for (const auto& scheme : {schemes::s8_symmetric, schemes::s8_asymmetric}) {
    INFO("weights " << (scheme.sym == symmetry::symmetric ? "symmetric" : "affine (zero points)"));
    nn::static_quantization_options opt;
    opt.weight_scheme = scheme;
    const nn::quantized_sequential q = quantize_model(pruned, opt, 3, qmodel_input);
    const std::vector<std::uint8_t> dense = nn::save_quantized(q, {nn::weight_storage::dense}).to_bytes();
    const std::vector<std::uint8_t> sparse = nn::save_quantized(q).to_bytes();
    const io::safetensors_file fd = io::safetensors_file::parse(dense), fs = io::safetensors_file::parse(sparse);
    CHECK(fd.metadata().at("qlib.format") == "quantized_sequential/1");
    CHECK(fs.metadata().at("qlib.format") == "quantized_sequential/2");
    // Every weight tensor of the pruned model is sparse: mask (n/8) + the 30% kept codes.
    index_t dense_codes = 0, sparse_bytes = 0;
    for (const char* layer : {"0.", "2.", "4.", "6.", "7."}) {
      INFO("layer " << layer);
      CHECK_FALSE(fs.contains(std::string(layer) + "weight"));
      const index_t n = fd.at(std::string(layer) + "weight").numel();
      const index_t kept = fs.at(std::string(layer) + "weight_values").numel();
      CHECK(kept <= n - (7 * n) / 10);
      CHECK(fs.at(std::string(layer) + "weight_mask").numel() == (n + 7) / 8);
      dense_codes += n;
      sparse_bytes += kept + (n + 7) / 8;
    }
    INFO("dense file " << dense.size() << " bytes, sparse " << sparse.size());
    CHECK(static_cast<index_t>(dense.size() - sparse.size()) >= dense_codes - sparse_bytes - 1024);  // headers differ a little
    CHECK(sparse.size() < dense.size());
    // Both load to the same codes; the sparse file to the same outputs and bytes again.
    CHECK(weight_codes(load_bytes(dense)) == weight_codes(q));
    check_reloads_as(sparse, q);
  }
  SECTION("a dense model keeps format /1, byte for byte") {
    const nn::quantized_sequential q = quantize_model(make_qmodel(), {}, 3, qmodel_input);
    CHECK(nn::save_quantized(q).to_bytes() == nn::save_quantized(q, {nn::weight_storage::dense}).to_bytes());
  }
}

TEST_CASE("quantized models: linear layers pruned 2:4 run on the N:M kernel after convert and after load",
          "[nn][io][quantized][sparse]") {
  nn::sequential m = make_qmodel();
  for (nn::layer& l : m.layers)
    if (auto* fc = std::get_if<nn::linear>(&l))  // 2 of every 4 inputs of each output
      for (index_t o = 0; o < fc->out_features(); ++o)
        for (index_t i = 0; i < fc->in_features(); ++i)
          if (i % 4 == (o % 2) || i % 4 == 2 + (o % 2)) fc->weight(o, i) = 0.0f;
  const nn::quantized_sequential q = quantize_model(m, {}, 3, qmodel_input);
  const nn::quantized_sequential loaded = load_written(nn::save_quantized(q));
  index_t sparse_layers = 0;
  nn::quantized_sequential dense_path = q;  // the same model with the N:M forms dropped
  for (std::size_t i = 0; i < q.layers.size(); ++i)
    if (const auto* fc = std::get_if<nn::qlinear>(&q.layers[i])) {
      REQUIRE(fc->nm);
      CHECK(fc->nm->keep() == 2);
      REQUIRE(std::get<nn::qlinear>(loaded.layers[i]).nm);
      std::get<nn::qlinear>(dense_path.layers[i]).nm.reset();
      ++sparse_layers;
    }
  CHECK(sparse_layers == 2);
  const tensor<float, 4> x = qmodel_input(6);
  qlib_test::for_each_isa([&](isa) {
    const tensor<float, 4> want = dense_path.forward(x.cview());
    CHECK(first_bit_difference(q.forward(x.cview()), want) == -1);
    CHECK(first_bit_difference(loaded.forward(x.cview()), want) == -1);
  });
}

TEST_CASE("quantized files: weights narrower than 8 bits are stored packed, and load back bit for bit",
          "[nn][io][quantized]") {
  // make_qmodel's weighted layers 0, 2, 4, 6, 7 at 4, 2, 3, 8 and 6 bits: int4, int2,
  // int3 (or sparse), dense, int6.
  for (const auto& scheme : {schemes::s8_symmetric, schemes::s8_asymmetric}) {
    INFO("weights " << (scheme.sym == symmetry::symmetric ? "symmetric" : "affine (zero points)"));
    nn::static_quantization_options opt;
    opt.weight_scheme = scheme;
    opt.weight_bits = {4, 2, 3, 8, 6};
    const nn::quantized_sequential q = quantize_model(make_qmodel(), opt, 3, qmodel_input);
    const std::vector<std::uint8_t> dense = nn::save_quantized(q, {nn::weight_storage::dense}).to_bytes();
    const std::vector<std::uint8_t> packed = nn::save_quantized(q).to_bytes();
    const io::safetensors_file fd = io::safetensors_file::parse(dense), fp = io::safetensors_file::parse(packed);
    CHECK(fd.metadata().at("qlib.format") == "quantized_sequential/1");
    CHECK(fp.metadata().at("qlib.format") == "quantized_sequential/3");
    index_t saved = 0;
    const std::pair<const char*, int> layers[] = {{"0.", 4}, {"2.", 2}, {"4.", 3}, {"6.", 8}, {"7.", 6}};
    for (const auto& [layer, bits] : layers) {
      INFO("layer " << layer);
      const std::string l(layer);
      const std::vector<index_t> shape = fd.at(l + "weight").shape;
      const index_t out = shape[0], k = shape[1] * shape[2] * shape[3];
      if (bits == 8) {
        CHECK(fp.contains(l + "weight"));
        continue;
      }
      CHECK_FALSE(fp.contains(l + "weight"));
      const std::string name = l + "weight_int" + std::to_string(bits);
      const index_t packed_bytes = out * ((k * bits + 7) / 8);
      if (fp.contains(l + "weight_mask")) {
        // Narrow codes are often the zero point (3 bits: about a third here): sparse with
        // packed kept codes may be smaller still, and is chosen only then.
        CHECK_FALSE(fp.contains(name));
        index_t sparse_bytes = fp.at(l + "weight_mask").numel();
        for (int b = 2; b <= 7; ++b)
          if (fp.contains(l + "weight_values_int" + std::to_string(b)))
            sparse_bytes += fp.at(l + "weight_values_int" + std::to_string(b)).numel();
        CHECK(sparse_bytes < packed_bytes);
        saved += out * k - sparse_bytes;
        continue;
      }
      REQUIRE(fp.contains(name));
      CHECK(fp.at(name).shape == std::vector<index_t>({out, packed_bytes / out}));
      saved += out * k - packed_bytes;
    }
    INFO("dense file " << dense.size() << " bytes, packed " << packed.size());
    CHECK(static_cast<index_t>(dense.size() - packed.size()) >= saved - 1024);  // headers differ a little
    check_reloads_as(packed, q);
  }
  SECTION("the width follows the codes' range: the narrowest b with [-2^(b-1), 2^(b-1) - 1]") {
    const nn::quantized_sequential base = quantize_model(make_qmodel(), {}, 3, qmodel_input);
    struct range_case {
      int lo, hi;
      const char* stored;
    };
    for (const range_case rc :
         {range_case{-2, 1, "0.weight_int2"}, range_case{-2, 2, "0.weight_int3"}, range_case{-3, 1, "0.weight_int3"},
          range_case{-8, 7, "0.weight_int4"}, range_case{-9, 7, "0.weight_int5"}, range_case{-8, 8, "0.weight_int5"},
          range_case{-32, 31, "0.weight_int6"}, range_case{-64, 63, "0.weight_int7"}, range_case{-65, 0, "0.weight"},
          range_case{-1, 64, "0.weight"}}) {
      INFO("codes in [" << rc.lo << ", " << rc.hi << "]");
      nn::quantized_sequential q = base;
      tensor<std::int8_t, 2>& codes = std::get<nn::qconv2d>(q.layers[0]).w.values;
      index_t i = 0;
      for (auto& c : codes) c = static_cast<std::int8_t>(rc.lo + i++ % (rc.hi - rc.lo + 1));  // both ends occur
      const io::safetensors_file f = io::safetensors_file::parse(nn::save_quantized(q).to_bytes());
      CHECK(f.contains(rc.stored));
      CHECK(weight_codes(nn::load_quantized(f)) == weight_codes(q));
    }
  }
  SECTION("pruned 4-bit weights: sparse with the kept codes packed") {
    // 70% zeros: sparse is n / 8 bytes of mask + 0.3 n kept codes at 4 bits (0.275 n),
    // packed n / 2, so sparse wins, its kept codes packed (format /3).
    nn::sequential pruned = make_qmodel();
    zero_most_weights(pruned);
    nn::static_quantization_options opt;
    opt.weight_bits = {4, 4, 4, 4, 4};
    const nn::quantized_sequential q = quantize_model(pruned, opt, 3, qmodel_input);
    const std::vector<std::uint8_t> bytes = nn::save_quantized(q).to_bytes();
    const io::safetensors_file f = io::safetensors_file::parse(bytes);
    CHECK(f.metadata().at("qlib.format") == "quantized_sequential/3");
    for (const char* layer : {"0.", "2.", "4.", "6.", "7."}) {
      INFO("layer " << layer);
      const std::string l(layer);
      CHECK_FALSE(f.contains(l + "weight_int4"));
      CHECK_FALSE(f.contains(l + "weight_values"));
      REQUIRE(f.contains(l + "weight_values_int4"));
      index_t kept = 0;
      for (std::uint8_t b : f.values<std::uint8_t>(l + "weight_mask")) kept += __builtin_popcount(b);
      CHECK(f.at(l + "weight_values_int4").shape == std::vector<index_t>({(kept + 1) / 2}));
    }
    const nn::quantized_sequential back = nn::load_quantized(f);
    CHECK(weight_codes(back) == weight_codes(q));
    const tensor<float, 4> x = qmodel_input(4);
    CHECK(first_bit_difference(back.forward(x.cview()), q.forward(x.cview())) == -1);
    CHECK(nn::save_quantized(back).to_bytes() == bytes);
  }
}

TEST_CASE("quantized files: malformed packed weights are refused", "[nn][io][quantized][errors]") {
  // A 1x1 conv 3 -> 5 at 4 bits: 5 rows of 3 codes in 2 bytes each (4 padding bits),
  // and a linear at 2 bits.
  const io::safetensors_file f = small_conv_file(false, {4});
  REQUIRE(f.metadata().at("qlib.format") == "quantized_sequential/3");
  REQUIRE(f.at("0.weight_int4").shape == std::vector<index_t>({5, 2}));
  const auto load = load_written;
  (void)load(copy_file(f));
  auto replace = [&](const std::string& name, const auto& t) { return copy_replacing(f, name, t); };
  const std::vector<std::uint8_t> bytes = f.values<std::uint8_t>("0.weight_int4");
  auto u8 = [](std::vector<std::uint8_t> v, index_t rows) {
    tensor<std::uint8_t, 2> t(extents<2>{rows, static_cast<index_t>(v.size()) / rows});
    std::copy(v.begin(), v.end(), t.begin());
    return t;
  };
  // A padding nibble set (row 2's high nibble of its second byte).
  std::vector<std::uint8_t> padded = bytes;
  padded[5] = static_cast<std::uint8_t>(padded[5] | 0x10);
  QLIB_REQUIRE_ERROR(load(replace("0.weight_int4", u8(padded, 5))), errc::invalid_argument);
  // Wrong shape, wrong dtype.
  QLIB_REQUIRE_ERROR(load(replace("0.weight_int4", u8(std::vector<std::uint8_t>(bytes.begin(), bytes.end() - 2), 4))),
                     errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(load(replace("0.weight_int4", tensor<std::int8_t, 2>(extents<2>{5, 2}))), errc::invalid_argument);
  // The same bytes read as 2-bit codes (shape [5, 1] expected): refused, not misread;
  // two widths at once.
  {
    io::safetensors_writer w = copy_file(f, {"0.weight_int4"});
    w.add("0.weight_int2", u8(bytes, 5));
    QLIB_REQUIRE_ERROR(load(w), errc::shape_mismatch);
  }
  {
    io::safetensors_writer w = copy_file(f);
    w.add("0.weight_int5", u8(std::vector<std::uint8_t>(10, 0), 5));
    QLIB_REQUIRE_ERROR(load(w), errc::invalid_argument);
  }
  // A shape of 2^62 codes (with a packed tensor sized for the wrapped product): refused
  // before any size is computed from it.
  {
    auto i64 = [](std::vector<std::int64_t> v) {
      tensor<std::int64_t, 1> t(extents<1>{static_cast<index_t>(v.size())});
      std::copy(v.begin(), v.end(), t.begin());
      return t;
    };
    io::safetensors_writer w = copy_file(f, {"0.weight_shape", "0.weight_int4"});
    w.add("0.weight_shape", i64({1, std::int64_t{1} << 30, std::int64_t{1} << 30, 4}));
    w.add("0.weight_int4", tensor<std::uint8_t, 2>(extents<2>{1, 0}));
    QLIB_REQUIRE_ERROR(load(w), errc::invalid_argument);
  }
  // No shape; packed and dense at once; packed and sparse at once; packed in /2 and /1 files.
  QLIB_REQUIRE_ERROR(load(copy_file(f, {"0.weight_shape"})), errc::out_of_range);
  {
    io::safetensors_writer w = copy_file(f);
    w.add("0.weight", tensor<std::int8_t, 4>(extents<4>{5, 1, 1, 3}));
    QLIB_REQUIRE_ERROR(load(w), errc::invalid_argument);
  }
  {
    io::safetensors_writer w = copy_file(f);
    w.add("0.weight_mask", tensor<std::uint8_t, 1>(extents<1>{2}));
    QLIB_REQUIRE_ERROR(load(w), errc::invalid_argument);
  }
  for (const char* format : {"quantized_sequential/2", "quantized_sequential/1"}) {
    io::safetensors_writer w = copy_file(f);
    w.set_metadata("qlib.format", format);
    QLIB_REQUIRE_ERROR(load(w), errc::invalid_argument);
  }
  // An unknown format version is refused as such.
  {
    io::safetensors_writer w = copy_file(f);
    w.set_metadata("qlib.format", "quantized_sequential/4");
    QLIB_REQUIRE_ERROR(load(w), errc::unsupported);
  }
}

TEST_CASE("quantized files: malformed packed kept codes are refused", "[nn][io][quantized][errors]") {
  // The 1x1 conv 3 -> 5 of the sparse case, pruned, at 4 bits: mask + kept codes packed.
  const io::safetensors_file f = small_conv_file(true, {4});
  REQUIRE(f.metadata().at("qlib.format") == "quantized_sequential/3");
  REQUIRE(f.contains("0.weight_values_int4"));
  const std::vector<std::uint8_t> row = f.values<std::uint8_t>("0.weight_values_int4");
  index_t kept = 0;
  for (std::uint8_t b : f.values<std::uint8_t>("0.weight_mask")) kept += __builtin_popcount(b);
  REQUIRE(kept % 2 == 1);  // 5 of 15: the last byte has a padding nibble
  const auto load = load_written;
  (void)load(copy_file(f));
  auto replace = [&](const std::string& name, const auto& t) { return copy_replacing(f, name, t); };
  const auto u8 = u8_tensor;
  std::vector<std::uint8_t> padded = row;
  padded.back() = static_cast<std::uint8_t>(padded.back() | 0x80);
  QLIB_REQUIRE_ERROR(load(replace("0.weight_values_int4", u8(padded))), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(load(replace("0.weight_values_int4", u8(std::vector<std::uint8_t>(row.begin(), row.end() - 1)))),
                     errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(load(replace("0.weight_values_int4", tensor<std::int8_t, 1>(extents<1>{3}))),
                     errc::invalid_argument);
  // Kept codes twice (I8 and packed, or two widths); packed kept codes in a /2 file.
  for (const char* name : {"0.weight_values", "0.weight_values_int3"}) {
    INFO("also " << name);
    io::safetensors_writer w = copy_file(f);
    w.add(name, tensor<std::int8_t, 1>(extents<1>{kept}));
    QLIB_REQUIRE_ERROR(load(w), errc::invalid_argument);
  }
  {
    io::safetensors_writer w = copy_file(f);
    w.set_metadata("qlib.format", "quantized_sequential/2");
    QLIB_REQUIRE_ERROR(load(w), errc::invalid_argument);
  }
}

TEST_CASE("quantized files: malformed sparse weights are refused", "[nn][io][quantized][errors]") {
  // A 1x1 conv 3 -> 5: 15 weights, so the mask's last byte has 1 unused bit.
  const io::safetensors_file f = small_conv_file(true, {});
  REQUIRE(f.metadata().at("qlib.format") == "quantized_sequential/2");
  REQUIRE(f.at("0.weight_mask").numel() == 2);
  const auto load = load_written;
  (void)load(copy_file(f));
  auto replace = [&](const std::string& name, const auto& t) { return copy_replacing(f, name, t); };
  const std::vector<std::uint8_t> mask = f.values<std::uint8_t>("0.weight_mask");
  const std::vector<std::int8_t> kept = f.values<std::int8_t>("0.weight_values");
  const auto u8 = u8_tensor;
  auto i8 = [](std::vector<std::int8_t> v) {
    tensor<std::int8_t, 1> t(extents<1>{static_cast<index_t>(v.size())});
    std::copy(v.begin(), v.end(), t.begin());
    return t;
  };
  auto i64 = [](std::vector<std::int64_t> v) {
    tensor<std::int64_t, 1> t(extents<1>{static_cast<index_t>(v.size())});
    std::copy(v.begin(), v.end(), t.begin());
    return t;
  };
  // The 16th bit (past weight 15) set.
  QLIB_REQUIRE_ERROR(load(replace("0.weight_mask", u8({mask[0], static_cast<std::uint8_t>(mask[1] | 0x80)}))),
                     errc::invalid_argument);
  // One bit more or fewer than kept codes.
  std::vector<std::uint8_t> more = mask;
  for (int b = 0; b < 7; ++b)
    if (!((more[1] >> b) & 1)) {
      more[1] = static_cast<std::uint8_t>(more[1] | (1 << b));
      break;
    }
  QLIB_REQUIRE_ERROR(load(replace("0.weight_mask", u8(more))), errc::shape_mismatch);
  std::vector<std::int8_t> fewer(kept.begin(), kept.end() - 1);
  QLIB_REQUIRE_ERROR(load(replace("0.weight_values", i8(fewer))), errc::shape_mismatch);
  // Mask of the wrong length, wrong dtypes.
  QLIB_REQUIRE_ERROR(load(replace("0.weight_mask", u8({mask[0]}))), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(load(replace("0.weight_mask", i8({0, 0}))), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(load(replace("0.weight_values", u8(std::vector<std::uint8_t>(kept.size(), 1)))),
                     errc::invalid_argument);
  // Shapes that do not fit the layer, or are absurd.
  QLIB_REQUIRE_ERROR(load(replace("0.weight_shape", i64({5, 1, 1, 4}))), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(load(replace("0.weight_shape", i64({5, 1, 3}))), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(load(replace("0.weight_shape", i64({5, 1, 1, -3}))), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(load(replace("0.weight_shape", i64({5, 1, 1, std::int64_t{1} << 40}))), errc::invalid_argument);
  // Missing parts; dense and sparse at once; sparse in a format /1 file.
  for (const char* name : {"0.weight_mask", "0.weight_values", "0.weight_shape"}) {
    INFO("missing " << name);
    QLIB_REQUIRE_ERROR(load(copy_file(f, {name})), errc::out_of_range);
  }
  {
    io::safetensors_writer w = copy_file(f);
    w.add("0.weight", tensor<std::int8_t, 4>(extents<4>{5, 1, 1, 3}));
    QLIB_REQUIRE_ERROR(load(w), errc::invalid_argument);
  }
  {
    io::safetensors_writer w = copy_file(f);
    w.set_metadata("qlib.format", "quantized_sequential/1");
    QLIB_REQUIRE_ERROR(load(w), errc::invalid_argument);
  }
}

TEST_CASE("quantized files: malformed files are refused", "[nn][io][quantized][errors]") {
  const nn::sequential m = make_qmodel();
  nn::static_quantization_options opt;
  const nn::quantized_sequential q = quantize_model(m, opt, 2, qmodel_input);
  const io::safetensors_file f = io::safetensors_file::parse(nn::save_quantized(q).to_bytes());
  // Layers: 0 qconv2d, 1 max_pool2d, 2 qconv2d (groups 2), 3 avg_pool2d, 4 qconv2d (depthwise),
  // 5 flatten, 6 qlinear (ReLU6), 7 qlinear (float logits).
  REQUIRE(f.metadata().at("qlib.layers") == "8");
  REQUIRE(f.metadata().at("qlib.layer.6") == "qlinear");
  const auto load = load_written;
  (void)load(copy_file(f));  // an untouched copy loads

  auto with_meta = [&](const std::string& key, const std::string& value) {
    io::safetensors_writer w = copy_file(f);
    w.set_metadata(key, value);
    return w;
  };
  auto replace = [&](const std::string& name, const auto& t) { return copy_replacing(f, name, t); };
  auto i64 = [](std::initializer_list<std::int64_t> v) {
    tensor<std::int64_t, 1> t(extents<1>{static_cast<index_t>(v.size())});
    std::copy(v.begin(), v.end(), t.begin());
    return t;
  };

  SECTION("tensors a layer of that kind does not have") {
    // Weight tensors on pooling / flatten layers, a config on a linear layer: refused,
    // not ignored (they would also slip past the format version's checks).
    for (const char* name : {"5.weight_int3", "1.weight_mask", "1.weight", "5.config", "6.config", "3.bias"}) {
      INFO("extra tensor " << name);
      io::safetensors_writer w = copy_file(f);
      w.add(name, tensor<std::uint8_t, 1>(extents<1>{2}));
      QLIB_REQUIRE_ERROR(load(w), errc::invalid_argument);
    }
  }
  SECTION("layer kinds and metadata") {
    QLIB_REQUIRE_ERROR(load(with_meta("qlib.layer.1", "lstm")), errc::unsupported);
    QLIB_REQUIRE_ERROR(load(with_meta("qlib.layer.1", "")), errc::unsupported);
    QLIB_REQUIRE_ERROR(load(with_meta("qlib.format", "quantized_sequential/4")), errc::unsupported);
    for (const char* key : {"qlib.format", "qlib.layers", "qlib.layer.0", "qlib.layer.7"}) {
      INFO("missing metadata " << key);
      QLIB_REQUIRE_ERROR(load(copy_file(f, {}, {key})), errc::invalid_argument);
    }
    for (const char* count : {"", "-1", "8x", "1e3", "999999", " 8"}) {
      INFO("qlib.layers = '" << count << "'");
      QLIB_REQUIRE_ERROR(load(with_meta("qlib.layers", count)), errc::invalid_argument);
    }
    // More layers announced than described: layer 8 has no kind.
    QLIB_REQUIRE_ERROR(load(with_meta("qlib.layers", "9")), errc::invalid_argument);
    // A layer kind that does not fit the tensors: layer 1 (max pool) has no weight.
    QLIB_REQUIRE_ERROR(load(with_meta("qlib.layer.1", "qconv2d")), errc::out_of_range);
    QLIB_REQUIRE_ERROR(load(with_meta("qlib.layer.5", "max_pool2d")), errc::out_of_range);
    // Missing tensors.
    for (const char* name : {"input.qparams", "0.weight", "0.weight_scale", "2.weight_zero_point", "4.bias",
                             "6.output", "2.config", "3.config"}) {
      INFO("missing " << name);
      QLIB_REQUIRE_ERROR(load(copy_file(f, {name})), errc::out_of_range);
    }
  }

  SECTION("fewer layers announced than the file holds") {
    // Layers 6 and 7 (and their tensors) would be silently dropped: the loader should
    // refuse tensors it does not use, as load_state_dict does.
    QLIB_REQUIRE_ERROR(load(with_meta("qlib.layers", "6")), errc::invalid_argument);
    // A stray tensor with an otherwise complete file.
    io::safetensors_writer w = copy_file(f);
    w.add("8.weight", tensor<std::int8_t, 2>(extents<2>{2, 2}));
    QLIB_REQUIRE_ERROR(load(w), errc::invalid_argument);
  }

  SECTION("window configs") {
    // Wrong length, wrong rank, wrong dtype, negative and absurd entries.
    QLIB_REQUIRE_ERROR(load(replace("0.config", i64({3, 3, 1, 1, 1, 1, 1, 1, 1}))), errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(load(replace("0.config", i64({3, 3, 1, 1, 1, 1, 1, 1, 1, 3, 0}))), errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(load(replace("3.config", i64({}))), errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(load(replace("0.config", tensor<std::int64_t, 2>(extents<2>{2, 5}))), errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(load(replace("0.config", tensor<std::int32_t, 1>(extents<1>{10}))), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(load(replace("1.config", i64({2, 2, 2, 2, -1, 0, 1, 1, 1, 0}))), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(load(replace("1.config", i64({2, 2, 2, 2, 0, 0, 1, 1, 1, std::int64_t{1} << 40}))),
                       errc::invalid_argument);
    // The weight [8, 3, 3, 3] of layer 0 does not match another kernel, group count or input width.
    QLIB_REQUIRE_ERROR(load(replace("0.config", i64({5, 5, 1, 1, 2, 2, 1, 1, 1, 3}))), errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(load(replace("0.config", i64({3, 1, 1, 1, 1, 0, 1, 1, 1, 3}))), errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(load(replace("0.config", i64({3, 3, 1, 1, 1, 1, 1, 1, 1, 4}))), errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(load(replace("2.config", i64({3, 3, 1, 1, 1, 1, 1, 1, 4, 8}))), errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(load(replace("0.config", i64({3, 3, 1, 1, 1, 1, 1, 1, 0, 3}))), errc::invalid_argument);
  }

  SECTION("weights") {
    // Shape against the config and the other tensors; dtype.
    QLIB_REQUIRE_ERROR(load(replace("0.weight", tensor<std::int8_t, 4>(extents<4>{8, 3, 3, 2}))), errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(load(replace("0.weight", tensor<std::int8_t, 2>(extents<2>{8, 27}))), errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(load(replace("0.weight", tensor<std::int8_t, 4>(extents<4>{7, 3, 3, 3}))), errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(load(replace("0.weight", tensor<std::uint8_t, 4>(extents<4>{8, 3, 3, 3}))),
                       errc::invalid_argument);
    QLIB_REQUIRE_ERROR(load(replace("0.weight", tensor<float, 4>(extents<4>{8, 3, 3, 3}))), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(load(replace("6.weight", tensor<std::int8_t, 2>(extents<2>{16, 64}))), errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(load(replace("6.weight", tensor<std::int8_t, 4>(extents<4>{16, 2, 1, 32}))),
                       errc::shape_mismatch);
    // Bias of the wrong length or dtype; scale / zero point counts.
    QLIB_REQUIRE_ERROR(load(replace("0.bias", tensor<std::int32_t, 1>(extents<1>{7}))), errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(load(replace("0.bias", tensor<std::int64_t, 1>(extents<1>{8}))), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(load(replace("0.weight_scale", floats({0.01f, 0.02f, 0.03f}))), errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(load(replace("0.weight_zero_point", tensor<std::int32_t, 1>(extents<1>{1}))),
                       errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(load(replace("7.weight_scale", tensor<float, 1>(extents<1>{0}))), errc::shape_mismatch);
    // A weight zero point outside int8.
    tensor<std::int32_t, 1> zp = values_of<std::int32_t>(f, "0.weight_zero_point");
    zp(3) = 128;
    QLIB_REQUIRE_ERROR(load(replace("0.weight_zero_point", zp)), errc::invalid_argument);
  }

  SECTION("scales") {
    tensor<float, 1> ws = values_of<float>(f, "2.weight_scale");
    ws(1) = 0.0f;
    QLIB_REQUIRE_ERROR(load(replace("2.weight_scale", ws)), errc::invalid_argument);
    ws(1) = -0.01f;
    QLIB_REQUIRE_ERROR(load(replace("2.weight_scale", ws)), errc::invalid_argument);
    ws(1) = std::numeric_limits<float>::quiet_NaN();
    QLIB_REQUIRE_ERROR(load(replace("2.weight_scale", ws)), errc::non_finite);
    ws(1) = std::numeric_limits<float>::infinity();
    QLIB_REQUIRE_ERROR(load(replace("2.weight_scale", ws)), errc::non_finite);

    const tensor<float, 1> in = values_of<float>(f, "input.qparams");
    QLIB_REQUIRE_ERROR(load(replace("input.qparams", floats({0.0f, in(1)}))), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(load(replace("input.qparams", floats({std::nanf(""), in(1)}))), errc::non_finite);
    QLIB_REQUIRE_ERROR(load(replace("input.qparams", floats({in(0), 256.0f}))), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(load(replace("input.qparams", floats({in(0), in(1), 0.0f}))), errc::shape_mismatch);

    const tensor<float, 1> out = values_of<float>(f, "2.output");  // scale, zp, qmin, qmax, float_output
    auto output = [&](float s, float z, float lo, float hi, float fl) { return replace("2.output", floats({s, z, lo, hi, fl})); };
    QLIB_REQUIRE_ERROR(load(output(0.0f, out(1), out(2), out(3), 0.0f)), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(load(output(std::nanf(""), out(1), out(2), out(3), 0.0f)), errc::non_finite);
    QLIB_REQUIRE_ERROR(load(output(out(0), -1.0f, out(2), out(3), 0.0f)), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(load(output(out(0), out(1), out(2), out(3), 1.0f)), errc::unsupported);  // float conv output
    QLIB_REQUIRE_ERROR(load(replace("2.output", floats({out(0), out(1), out(2), out(3)}))), errc::shape_mismatch);
  }

  SECTION("clamps") {
    const tensor<float, 1> out = values_of<float>(f, "6.output");
    auto output = [&](float lo, float hi) { return replace("6.output", floats({out(0), out(1), lo, hi, 0.0f})); };
    QLIB_REQUIRE_ERROR(load(output(0.0f, 256.0f)), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(load(output(-1.0f, 255.0f)), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(load(output(200.0f, 100.0f)), errc::invalid_argument);
    // The requantize stage needs qmin <= zero point <= qmax: a clamp that excludes the
    // zero point must be refused when loading, not at the first forward().
    QLIB_REQUIRE_ERROR(load(output(3.0f, 255.0f)), errc::invalid_argument);
    (void)load(output(0.0f, 255.0f));  // the full range is fine
    // A narrower clamp (as ReLU6 gives when 6 is inside the output range) is kept and applied.
    REQUIRE(out(1) == 0.0f);  // ReLU6 output: zero point 0
    const nn::quantized_sequential narrow = load(output(0.0f, 100.0f));
    const auto& l6 = std::get<nn::qlinear>(narrow.layers[6]);
    CHECK((l6.output.qmin == 0 && l6.output.qmax == 100));
    nn::qactivation cur = narrow.quantize_input(qmodel_input(2).cview());
    for (std::size_t i = 0; i < 7; ++i) cur = narrow.forward_layer(narrow.layers[i], cur);
    for (std::uint8_t v : cur.values) CHECK(v <= 100);
    nn::qactivation orig = q.quantize_input(qmodel_input(2).cview());  // the clamp matters here
    for (std::size_t i = 0; i < 7; ++i) orig = q.forward_layer(q.layers[i], orig);
    CHECK(*std::max_element(orig.values.begin(), orig.values.end()) > 100);
  }
}

// ---------------------------------------------------------------------------------------------
// Dynamic quantization

namespace {

// The documented rules, written out: parameters from the range widened to include 0
// (asymmetric uint8 S = (hi - lo) / 255 and Z = -round(lo / S); symmetric int8 per row
// S = amax / 127, Z = 0), S computed in double and rounded to float once, zero width ->
// S = 1; q = clamp(round_half_even(x * (1/S)) + Z) with 1/S in float; int32 sums of
// (q - Z) * w; y = float(acc) * (S * weight_scale) + bias.
struct dynamic_expected {
  tensor<float, 4> y;
  std::vector<float> input_scale;  // per row
};
dynamic_expected dynamic_reference(const nn::dynamic_linear& d, const tensor<float, 4>& x) {
  const index_t n = x.shape(0), k = d.in_features(), m = d.out_features();
  dynamic_expected e{tensor<float, 4>(extents<4>{n, 1, 1, m}), std::vector<float>(static_cast<std::size_t>(n))};
  std::vector<float>& s = e.input_scale;
  std::vector<std::int32_t> z(static_cast<std::size_t>(n), 0);
  if (d.mode == nn::dynamic_granularity::per_tensor) {
    float lo = 0.0f, hi = 0.0f;
    for (float v : x) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    float scale = static_cast<float>((static_cast<double>(hi) - lo) / 255.0);
    if (hi == lo) scale = 1.0f;
    const float zf = std::nearbyint(static_cast<float>(static_cast<double>(lo) / scale));
    std::fill(s.begin(), s.end(), scale);
    std::fill(z.begin(), z.end(), static_cast<std::int32_t>(std::min(255.0f, std::max(0.0f, -zf))));
  } else {
    for (index_t r = 0; r < n; ++r) {
      float amax = 0.0f;
      for (index_t j = 0; j < k; ++j) amax = std::max(amax, std::fabs(x(r, 0, 0, j)));
      s[static_cast<std::size_t>(r)] = amax == 0.0f ? 1.0f : static_cast<float>(static_cast<double>(amax) / 127.0);
    }
  }
  const std::int32_t qmin = d.mode == nn::dynamic_granularity::per_tensor ? 0 : -127;
  const std::int32_t qmax = d.mode == nn::dynamic_granularity::per_tensor ? 255 : 127;
  for (index_t r = 0; r < n; ++r) {
    const float inv = 1.0f / s[static_cast<std::size_t>(r)];
    const std::int32_t zr = z[static_cast<std::size_t>(r)];
    std::vector<std::int32_t> q(static_cast<std::size_t>(k));
    for (index_t j = 0; j < k; ++j) {
      const float t = std::nearbyint(x(r, 0, 0, j) * inv);  // |t| <= 256 here: no overflow
      q[static_cast<std::size_t>(j)] = std::min(qmax, std::max(qmin, static_cast<std::int32_t>(t) + zr)) - zr;
    }
    for (index_t c = 0; c < m; ++c) {
      std::int32_t acc = 0;
      for (index_t j = 0; j < k; ++j) acc += q[static_cast<std::size_t>(j)] * std::int32_t{d.w.values(c, j)};
      const float scale = s[static_cast<std::size_t>(r)] * d.weight_scale[static_cast<std::size_t>(c)];
      // The product rounded to float, then the bias added: volatile keeps the compiler from
      // contracting the two into an FMA (one rounding) where the target has one.
      volatile float prod = static_cast<float>(acc) * scale;
      e.y(r, 0, 0, c) = d.bias.empty() ? prod : prod + d.bias[static_cast<std::size_t>(c)];
    }
  }
  return e;
}

// RMS of a - b over one row's outputs.
double rms(const tensor<float, 4>& a, const tensor<float, 4>& b, index_t row) {
  double s = 0.0;
  for (index_t c = 0; c < a.shape(3); ++c) {
    const double d = static_cast<double>(a(row, 0, 0, c)) - b(row, 0, 0, c);
    s += d * d;
  }
  return std::sqrt(s / static_cast<double>(a.shape(3)));
}

}  // namespace

TEST_CASE("dynamic_linear: equals the integer reference on every ISA and follows the float layer",
          "[nn][dynamic]") {
  for (const index_t k : {1, 37, 300}) {
    nn::linear l(k, 19);
    const float wb = std::sqrt(3.0f / static_cast<float>(k));
    fill(l.weight, -wb, wb);
    fill(l.bias, -0.5f, 0.5f);
    nn::linear no_bias(k, 19, false);
    no_bias.weight = l.weight;
    // Rows of different ranges (x0.05 .. x4), one all-zero row, one non-negative row.
    tensor<float, 4> x(extents<4>{7, 1, 1, k});
    for (index_t r = 0; r < 7; ++r) {
      const float g = r == 0 ? 0.05f : static_cast<float>(r) * 0.6f;
      for (index_t j = 0; j < k; ++j) x(r, 0, 0, j) = r == 3 ? 0.0f : rand_float(r == 5 ? 0.0f : -g, g);
    }
    tensor<float, 4> positive(extents<4>{3, 1, 1, k});
    fill(positive, 0.25f, 2.0f);
    const tensor<float, 4> zeros(extents<4>{2, 1, 1, k});

    for (auto mode : {nn::dynamic_granularity::per_tensor, nn::dynamic_granularity::per_row}) {
      for (bool per_channel : {true, false}) {
        for (const nn::linear* layer : {&l, &no_bias}) {
          INFO("k " << k << (mode == nn::dynamic_granularity::per_tensor ? ", per tensor" : ", per row")
                    << (per_channel ? ", per-channel weights" : ", per-tensor weights")
                    << (layer->has_bias() ? "" : ", no bias"));
          const nn::dynamic_linear d = nn::dynamic_linear::from(*layer, mode, per_channel);
          REQUIRE(d.in_features() == k);
          REQUIRE(d.out_features() == 19);
          // The weights: symmetric int8 on [-127, 127], amax / 127 per row (or for the whole
          // matrix), round half to even of w * (1/S).
          for (index_t o = 0; o < 19; ++o) {
            float amax = 0.0f;
            for (index_t i = per_channel ? o : 0; i < (per_channel ? o + 1 : 19); ++i)
              for (index_t j = 0; j < k; ++j) amax = std::max(amax, std::fabs(layer->weight(i, j)));
            const float ws = static_cast<float>(static_cast<double>(amax) / 127.0);
            REQUIRE(d.weight_scale[static_cast<std::size_t>(o)] == ws);
            for (index_t j = 0; j < k; ++j)
              REQUIRE(int{d.w.values(o, j)} == static_cast<int>(std::nearbyint(layer->weight(o, j) * (1.0f / ws))));
          }
          for (const tensor<float, 4>* in : std::initializer_list<const tensor<float, 4>*>{&x, &positive, &zeros}) {
            const dynamic_expected want = dynamic_reference(d, *in);
            for_each_isa([&](isa) {
              const index_t diff = first_bit_difference(d.forward(in->cview()), want.y);
              INFO("first difference at " << diff);
              CHECK(diff == -1);
            });
            for (int threads : {2, 3}) {
              gemm::gemm_options g;
              g.threads = threads;
              CHECK(first_bit_difference(d.forward(in->cview(), g), want.y) == -1);
            }
            // Close to the float layer: x = Sx (qx - Z) + ex and w = Sw qw + ew with |ex| <= Sx/2
            // and |ew| <= Sw/2, so |x w - Sx (qx - Z) Sw qw| <= |x| Sw/2 + Sx/2 |Sw qw| per term
            // (plus float rounding of both sides).
            const tensor<float, 4> got = d.forward(in->cview()), ref = layer->forward(in->cview());
            for (index_t r = 0; r < in->shape(0); ++r)
              for (index_t c = 0; c < 19; ++c) {
                const double sx = want.input_scale[static_cast<std::size_t>(r)];
                const double sw = d.weight_scale[static_cast<std::size_t>(c)];
                double bound = 0.0, mag = std::fabs(layer->has_bias() ? layer->bias(c) : 0.0f);
                for (index_t j = 0; j < k; ++j) {
                  const double xv = (*in)(r, 0, 0, j);
                  bound += std::fabs(xv) * sw / 2 + sx / 2 * std::fabs(sw * d.w.values(c, j));
                  mag += std::fabs(xv * layer->weight(c, j));
                }
                bound += 1e-5 * mag + 1e-6;
                const double err = std::fabs(static_cast<double>(got(r, 0, 0, c)) - ref(r, 0, 0, c));
                if (!(err <= bound)) {
                  INFO("row " << r << " col " << c << ": error " << err << " above the bound " << bound);
                  CHECK(err <= bound);
                }
              }
            // Zero rows give the bias exactly.
            if (in == &zeros)
              for (index_t c = 0; c < 19; ++c) CHECK(got(1, 0, 0, c) == (layer->has_bias() ? layer->bias(c) : 0.0f));
          }
        }
      }
    }
    // Per row is more accurate than per tensor on the small-range row (per tensor spends
    // its 256 levels on the largest row's range).
    if (k > 1) {
      const tensor<float, 4> ref = l.forward(x.cview());
      const double e_row = rms(nn::dynamic_linear::from(l, nn::dynamic_granularity::per_row).forward(x.cview()), ref, 0);
      const double e_tensor =
          rms(nn::dynamic_linear::from(l, nn::dynamic_granularity::per_tensor).forward(x.cview()), ref, 0);
      INFO("row 0 RMS error: per row " << e_row << ", per tensor " << e_tensor);
      CHECK(e_row < 0.5 * e_tensor);
    }
  }
}

TEST_CASE("dynamic_linear: non-finite inputs and wrong shapes are refused", "[nn][dynamic][errors]") {
  nn::linear l(16, 4);
  fill(l.weight, -0.5f, 0.5f);
  for (auto mode : {nn::dynamic_granularity::per_tensor, nn::dynamic_granularity::per_row}) {
    const nn::dynamic_linear d = nn::dynamic_linear::from(l, mode);
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()}) {
      INFO("value " << bad);
      tensor<float, 4> x(extents<4>{3, 1, 1, 16}, 0.5f);
      x(2, 0, 0, 7) = bad;
      QLIB_REQUIRE_ERROR(d.forward(x.cview()), errc::non_finite);
    }
    QLIB_REQUIRE_ERROR(d.forward(tensor<float, 4>(extents<4>{2, 1, 1, 15}).cview()), errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(d.forward(tensor<float, 4>(extents<4>{2, 2, 2, 4}).cview()), errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(d.forward(tensor<float, 4>(extents<4>{0, 1, 1, 16}).cview()), errc::shape_mismatch);
  }
  nn::linear bad_w(4, 2);
  bad_w.weight(1, 1) = std::numeric_limits<float>::infinity();
  QLIB_REQUIRE_ERROR(nn::dynamic_linear::from(bad_w), errc::non_finite);
}

// ---------------------------------------------------------------------------------------------
// IDX

namespace {

std::vector<std::uint8_t> idx_bytes(std::uint8_t type, const std::vector<std::uint32_t>& extents_be, std::size_t data,
                                    int rank = -1) {
  std::vector<std::uint8_t> b{0, 0, type, static_cast<std::uint8_t>(rank < 0 ? extents_be.size() : rank)};
  for (std::uint32_t e : extents_be) {
    b.push_back(static_cast<std::uint8_t>(e >> 24));
    b.push_back(static_cast<std::uint8_t>(e >> 16));
    b.push_back(static_cast<std::uint8_t>(e >> 8));
    b.push_back(static_cast<std::uint8_t>(e));
  }
  for (std::size_t i = 0; i < data; ++i) b.push_back(static_cast<std::uint8_t>(i * 7 + 3));
  return b;
}

}  // namespace

TEST_CASE("idx: valid files of rank 1 to 3 (and 8)", "[io][idx]") {
  {
    const io::idx_array a = io::parse_idx(idx_bytes(0x08, {5}, 5));
    CHECK(a.shape == std::vector<index_t>{5});
    CHECK(a.data == std::vector<std::uint8_t>{3, 10, 17, 24, 31});
  }
  {
    // Extents above 255 check the big-endian decoding: 0x0102 = 258 rows of 3.
    const io::idx_array a = io::parse_idx(idx_bytes(0x08, {258, 3}, 774));
    CHECK(a.shape == std::vector<index_t>{258, 3});
    REQUIRE(a.data.size() == 774);
    CHECK(a.data[773] == static_cast<std::uint8_t>(773 * 7 + 3));
  }
  {
    const io::idx_array a = io::parse_idx(idx_bytes(0x08, {2, 4, 3}, 24));
    CHECK(a.shape == std::vector<index_t>{2, 4, 3});
    CHECK(a.data.size() == 24);
    CHECK(a.data[5] == 38);
  }
  {
    const io::idx_array a = io::parse_idx(idx_bytes(0x08, {1, 2, 1, 1, 1, 1, 3, 1}, 6));
    CHECK(a.shape.size() == 8);
    CHECK(a.data.size() == 6);
  }
  {  // an empty array
    const io::idx_array a = io::parse_idx(idx_bytes(0x08, {0, 28, 28}, 0));
    CHECK(a.shape == std::vector<index_t>{0, 28, 28});
    CHECK(a.data.empty());
  }
  {  // read_idx from a file, and a missing file
    const std::string path = (std::filesystem::temp_directory_path() /
                              ("qlib_test_nn_io_" + std::to_string(static_cast<long>(getpid())) + ".idx"))
                                 .string();
    const std::vector<std::uint8_t> bytes = idx_bytes(0x08, {3, 2}, 6);
    {
      std::ofstream out(path, std::ios::binary);
      out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    }
    const io::idx_array a = io::read_idx(path);
    std::remove(path.c_str());
    CHECK(a.shape == std::vector<index_t>{3, 2});
    CHECK(a.data == std::vector<std::uint8_t>(bytes.end() - 6, bytes.end()));
    QLIB_REQUIRE_ERROR(io::read_idx(path), errc::io_error);
  }
}

TEST_CASE("idx: malformed files are refused", "[io][idx][errors]") {
  // Short files.
  QLIB_REQUIRE_ERROR(io::parse_idx({}), errc::io_error);
  QLIB_REQUIRE_ERROR(io::parse_idx({0, 0, 8}), errc::io_error);
  // Bad magic.
  std::vector<std::uint8_t> b = idx_bytes(0x08, {4}, 4);
  b[0] = 1;
  QLIB_REQUIRE_ERROR(io::parse_idx(b), errc::io_error);
  b[0] = 0;
  b[1] = 0x08;
  QLIB_REQUIRE_ERROR(io::parse_idx(b), errc::io_error);
  // Other element types (int8, int16, int32, float, double).
  for (std::uint8_t type : {0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00}) {
    INFO("type " << int{type});
    QLIB_REQUIRE_ERROR(io::parse_idx(idx_bytes(type, {4}, 4)), errc::unsupported);
  }
  // Rank 0 and 9.
  QLIB_REQUIRE_ERROR(io::parse_idx(idx_bytes(0x08, {}, 1)), errc::io_error);
  QLIB_REQUIRE_ERROR(io::parse_idx(idx_bytes(0x08, {1, 1, 1, 1, 1, 1, 1, 1, 1}, 1)), errc::io_error);
  QLIB_REQUIRE_ERROR(io::parse_idx(idx_bytes(0x08, {}, 0, 255)), errc::io_error);
  // Truncated header: rank 3 with two extents (and nothing or one byte after).
  QLIB_REQUIRE_ERROR(io::parse_idx(idx_bytes(0x08, {2, 2}, 0, 3)), errc::io_error);
  QLIB_REQUIRE_ERROR(io::parse_idx(idx_bytes(0x08, {2, 2}, 3, 3)), errc::io_error);
  // Data too short and too long.
  QLIB_REQUIRE_ERROR(io::parse_idx(idx_bytes(0x08, {3, 4}, 11)), errc::io_error);
  QLIB_REQUIRE_ERROR(io::parse_idx(idx_bytes(0x08, {3, 4}, 13)), errc::io_error);
  QLIB_REQUIRE_ERROR(io::parse_idx(idx_bytes(0x08, {3, 0}, 1)), errc::io_error);
  // Extents whose product overflows 64 bits: 769546 * 494770 * 48448661 = 2^64 + 4, so a
  // wrapping product would match the 4 data bytes; and 2^32 - 1 in every place.
  QLIB_REQUIRE_ERROR(io::parse_idx(idx_bytes(0x08, {769546u, 494770u, 48448661u}, 4)), errc::io_error);
  QLIB_REQUIRE_ERROR(io::parse_idx(idx_bytes(0x08, {48448661u, 769546u, 494770u}, 4)), errc::io_error);
  QLIB_REQUIRE_ERROR(io::parse_idx(idx_bytes(0x08, std::vector<std::uint32_t>(8, 0xFFFFFFFFu), 1)), errc::io_error);
  // 2^32 - 1 elements announced, a handful present.
  QLIB_REQUIRE_ERROR(io::parse_idx(idx_bytes(0x08, {0xFFFFFFFFu}, 16)), errc::io_error);
}

// Last in the file: on hosts where the loader converts these floats with undefined
// behaviour (UBSan stops the program there), every other test has run first.
TEST_CASE("quantized files: zero points and clamps stored as F32 must be integers in range",
          "[nn][io][quantized][errors]") {
  const nn::sequential m = make_qmodel();
  const nn::quantized_sequential q = quantize_model(m, nn::static_quantization_options{}, 2, qmodel_input);
  const io::safetensors_file f = io::safetensors_file::parse(nn::save_quantized(q).to_bytes());
  REQUIRE(f.metadata().at("qlib.layer.6") == "qlinear");
  auto load_with = [&](const std::string& name, const tensor<float, 1>& t) {
    io::safetensors_writer w = copy_file(f, {name});
    w.add(name, t);
    return nn::load_quantized(reparse(w));
  };
  const tensor<float, 1> in = values_of<float>(f, "input.qparams");
  const tensor<float, 1> out = values_of<float>(f, "6.output");  // scale, zero point, qmin, qmax, float_output
  // A fraction has no integer value: 12.5 must not silently become 12.
  QLIB_REQUIRE_ERROR(load_with("input.qparams", floats({in(0), 12.5f})), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(load_with("6.output", floats({out(0), out(1), out(2), 100.5f, 0.0f})), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(load_with("6.output", floats({out(0), out(1), 0.5f, out(3), 0.0f})), errc::invalid_argument);
  // NaN and values beyond int32: converting them to int32 is undefined behaviour (x86
  // gives INT_MIN, which the range checks then refuse; AArch64 gives 0 for NaN, which they
  // accept).
  const float nan = std::numeric_limits<float>::quiet_NaN();
  QLIB_REQUIRE_ERROR(load_with("6.output", floats({out(0), out(1), 0.0f, 1e10f, 0.0f})), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(load_with("6.output", floats({out(0), out(1), -1e10f, 255.0f, 0.0f})), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(load_with("input.qparams", floats({in(0), nan})), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(load_with("input.qparams", floats({in(0), 3e9f})), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(load_with("6.output", floats({out(0), nan, out(2), out(3), 0.0f})), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(load_with("6.output", floats({out(0), out(1), nan, out(3), 0.0f})), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(load_with("6.output", floats({out(0), out(1), out(2), nan, 0.0f})), errc::invalid_argument);
}
