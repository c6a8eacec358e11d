// Saving and loading a float nn::sequential's parameters as safetensors, in qlib's or PyTorch's layout.
#pragma once

#include <string>
#include <variant>
#include <vector>

#include "qlib/io/safetensors.hpp"
#include "qlib/nn/sequential.hpp"

// The architecture is C++ (an nn::sequential built in code, mirroring the PyTorch
// nn.Sequential); the file holds its parameters under PyTorch's state_dict names:
//   "<i>.weight", "<i>.bias"                    conv2d (i = index in the sequential), linear
//   "<i>.weight", "<i>.bias", "<i>.running_mean", "<i>.running_var"   batch_norm2d
// ("<i>.num_batches_tracked", which PyTorch also writes, is ignored on load and not
// written.) Two layouts:
//  - weight_layout::pytorch: conv weights OIHW, and a linear layer that follows a flatten
//    of an [H, W, C] activation with H*W > 1 has its input columns in PyTorch's (C, H, W)
//    order. Files exported from PyTorch (torch.save of a state_dict converted with the
//    safetensors writer, or tests/data/make_safetensors.py's writer) load directly; the
//    flatten permutation needs the model's input shape.
//  - weight_layout::qlib: conv weights OHWI and linear columns in NHWC order, exactly the
//    in-memory tensors (no input shape needed).
// Loading checks that every parameter exists with the right dtype (F32) and shape, and
// refuses tensors the model does not use (a wrong architecture fails loudly).
namespace qlib {
namespace nn {

enum class weight_layout { pytorch, qlib };

struct state_dict_options {
  weight_layout layout = weight_layout::pytorch;
  extents<4> input_shape{0, 0, 0, 0};  // [1, H, W, C]: needed for PyTorch layout after a flatten
};

namespace detail {
// For each layer, the [H, W, C] its input has when that is known (flatten's input).
inline std::vector<extents<4>> layer_input_shapes(const sequential& m, const extents<4>& in) {
  std::vector<extents<4>> shapes;
  extents<4> cur = in;
  for (const layer& l : m.layers) {
    shapes.push_back(cur);
    cur = output_shape(l, cur);
  }
  return shapes;
}

// PyTorch column (c, h, w) -> qlib column (h, w, c) of a linear layer after flatten.
inline index_t pytorch_flatten_column(index_t q, index_t h, index_t w, index_t c) {
  const index_t ch = q % c, pixel = q / c;  // q = (y * w + x) * c + ch
  return ch * (h * w) + pixel;
}

// The spatial shape feeding linear layer i through a flatten, or {0,0,0} if none.
inline std::array<index_t, 3> flatten_source(const sequential& m, std::size_t i, const state_dict_options& o) {
  if (i == 0 || !std::holds_alternative<flatten>(m[i - 1]) || !std::holds_alternative<linear>(m[i]) ||
      o.layout != weight_layout::pytorch)
    return {0, 0, 0};
  QLIB_CHECK(o.input_shape[1] > 0, errc::invalid_argument,
             "nn state_dict: PyTorch layout with a flatten before layer " + std::to_string(i) +
                 " needs state_dict_options::input_shape to order the linear layer's columns");
  extents<4> in = o.input_shape;
  in[0] = 1;
  const extents<4> s = layer_input_shapes(m, in)[i - 1];
  if (s[1] * s[2] == 1) return {0, 0, 0};
  return {s[1], s[2], s[3]};
}

inline std::string param_name(std::size_t i, const char* what) { return std::to_string(i) + "." + what; }

inline void load_param(const io::safetensors_file& f, const std::string& name, float* dst, const extents<4>& want,
                       std::size_t rank) {
  const io::tensor_info& t = f.at(name);
  QLIB_CHECK(t.type == io::dtype::f32, errc::invalid_argument,
             "nn state_dict: " + name + " has dtype " + io::dtype_name(t.type) + ", expected F32");
  bool same = t.shape.size() == rank;
  for (std::size_t a = 0; same && a < rank; ++a) same = t.shape[a] == want[a];
  std::string ws = "[";
  for (std::size_t a = 0; a < rank; ++a) ws += (a ? "," : "") + std::to_string(want[a]);
  QLIB_CHECK(same, errc::shape_mismatch,
             "nn state_dict: " + name + " has shape " + io::detail::shape_string(t.shape) + ", the model needs " + ws + "]");
  const std::vector<float> v = f.values<float>(name);
  std::copy(v.begin(), v.end(), dst);
}
}  // namespace detail

// Loads parameters into a model whose architecture matches the file.
inline void load_state_dict(sequential& m, const io::safetensors_file& f, const state_dict_options& o = {}) {
  std::vector<std::string> used;
  for (std::size_t i = 0; i < m.size(); ++i) {
    auto name = [&](const char* w) {
      used.push_back(detail::param_name(i, w));
      return used.back();
    };
    if (auto* c = std::get_if<conv2d>(&m[i])) {
      const extents<4> s = c->weight.shape();  // OHWI
      if (o.layout == weight_layout::pytorch) {
        tensor<float, 4> oihw(extents<4>{s[0], s[3], s[1], s[2]});
        detail::load_param(f, name("weight"), oihw.data(), oihw.shape(), 4);
        c->weight = oihw_to_ohwi(oihw.cview());
      } else {
        detail::load_param(f, name("weight"), c->weight.data(), s, 4);
      }
      if (c->has_bias()) detail::load_param(f, name("bias"), c->bias.data(), {c->out_channels(), 0, 0, 0}, 1);
    } else if (auto* l = std::get_if<linear>(&m[i])) {
      const auto src = detail::flatten_source(m, i, o);
      tensor<float, 2> w(l->weight.shape());
      detail::load_param(f, name("weight"), w.data(), {w.shape(0), w.shape(1), 0, 0}, 2);
      if (src[0] > 0) {
        QLIB_CHECK(src[0] * src[1] * src[2] == l->in_features(), errc::shape_mismatch,
                   "nn state_dict: the flatten before layer " + std::to_string(i) + " does not give its inputs");
        for (index_t r = 0; r < w.shape(0); ++r)
          for (index_t q = 0; q < w.shape(1); ++q)
            l->weight(r, q) = w(r, detail::pytorch_flatten_column(q, src[0], src[1], src[2]));
      } else {
        l->weight = std::move(w);
      }
      if (l->has_bias()) detail::load_param(f, name("bias"), l->bias.data(), {l->out_features(), 0, 0, 0}, 1);
    } else if (auto* b = std::get_if<batch_norm2d>(&m[i])) {
      const extents<4> c{b->channels(), 0, 0, 0};
      detail::load_param(f, name("weight"), b->weight.data(), c, 1);
      detail::load_param(f, name("bias"), b->bias.data(), c, 1);
      detail::load_param(f, name("running_mean"), b->running_mean.data(), c, 1);
      detail::load_param(f, name("running_var"), b->running_var.data(), c, 1);
      const std::string nbt = detail::param_name(i, "num_batches_tracked");
      if (f.contains(nbt)) used.push_back(nbt);
    }
  }
  for (const std::string& n : f.names())
    QLIB_CHECK(std::find(used.begin(), used.end(), n) != used.end(), errc::invalid_argument,
               "nn state_dict: the file has a tensor \"" + n + "\" the model does not use (architecture mismatch?)");
}

// The model's parameters as a safetensors writer (add metadata, then write()).
inline io::safetensors_writer save_state_dict(const sequential& m, const state_dict_options& o = {}) {
  io::safetensors_writer wr;
  for (std::size_t i = 0; i < m.size(); ++i) {
    if (auto* c = std::get_if<conv2d>(&m[i])) {
      if (o.layout == weight_layout::pytorch)
        wr.add(detail::param_name(i, "weight"), tensor<float, 4>(c->weight.cview().transpose(2, 3).transpose(1, 2)));
      else
        wr.add(detail::param_name(i, "weight"), c->weight);
      if (c->has_bias()) wr.add(detail::param_name(i, "bias"), c->bias);
    } else if (auto* l = std::get_if<linear>(&m[i])) {
      const auto src = detail::flatten_source(m, i, o);
      if (src[0] > 0) {
        tensor<float, 2> w(l->weight.shape());
        for (index_t r = 0; r < w.shape(0); ++r)
          for (index_t q = 0; q < w.shape(1); ++q)
            w(r, detail::pytorch_flatten_column(q, src[0], src[1], src[2])) = l->weight(r, q);
        wr.add(detail::param_name(i, "weight"), w);
      } else {
        wr.add(detail::param_name(i, "weight"), l->weight);
      }
      if (l->has_bias()) wr.add(detail::param_name(i, "bias"), l->bias);
    } else if (auto* b = std::get_if<batch_norm2d>(&m[i])) {
      wr.add(detail::param_name(i, "weight"), b->weight);
      wr.add(detail::param_name(i, "bias"), b->bias);
      wr.add(detail::param_name(i, "running_mean"), b->running_mean);
      wr.add(detail::param_name(i, "running_var"), b->running_var);
    }
  }
  wr.set_metadata("format", "pt");
  wr.set_metadata("qlib.layout", o.layout == weight_layout::pytorch ? "pytorch" : "qlib");
  return wr;
}

}  // namespace nn
}  // namespace qlib
