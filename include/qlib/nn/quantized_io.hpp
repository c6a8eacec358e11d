// Saving and loading an int8 nn::quantized_sequential as a self-describing safetensors file.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "qlib/io/safetensors.hpp"
#include "qlib/nn/quantized_sequential.hpp"
#include "qlib/nn/weight_code_storage.hpp"

// File layout (all names documented here; loading checks each dtype and shape):
//   metadata "qlib.format" = "quantized_sequential/1", "/2" when some weight tensor is
//            stored sparse, "/3" when some is stored packed (below; a reader of /3
//            reads /1 and /2), "qlib.layers" = number of layers,
//            "qlib.layer.<i>" = qconv2d | qlinear | max_pool2d | avg_pool2d | flatten
//   "input.qparams"          F32 [2]  input scale, zero point (uint8 activations)
//   qconv2d / qlinear <i>:
//   "<i>.weight"             I8  [out, kh, kw, in/groups] (OHWI) or [out, 1, 1, in]
//   or, sparse (format /2; what pruned weights are saved as when it is smaller):
//   "<i>.weight_shape"       I64 [4]  the dense shape above
//   "<i>.weight_mask"        U8  [ceil(n / 8)]  bit j % 8 of byte j / 8 is set where code j
//                                (row-major, n codes) differs from its channel's zero point;
//                                the unused high bits of the last byte are 0
//   "<i>.weight_values"      I8  [popcount(mask)]  those codes, in order; the others are
//                                their channel's zero point (a pruned weight's code); or,
//                                format /3, "<i>.weight_values_int<b>" U8
//                                [ceil(popcount(mask) * b / 8)]: the same codes as one
//                                packed row b bits wide (b in 2..7, layout as below)
//   or, packed (format /3; codes narrower than 8 bits, e.g. a bit-width search's plan):
//   "<i>.weight_shape"       I64 [4]  the dense shape above
//   "<i>.weight_int<b>"      U8  [out, ceil(k * b / 8)], b in 2..7, every code in
//                                [-2^(b-1), 2^(b-1) - 1]: row o holds output channel o's k
//                                codes (k = the product of the other three extents) in
//                                core/packed_bits.hpp's layout (two's complement, code j
//                                at bits [j b, j b + b) of the row, the unused bits of a
//                                row's last byte 0; for b = 2, 4 core/packed_int.hpp's)
//   "<i>.weight_scale"       F32 [out] (per channel) or [1] (per tensor)
//   "<i>.weight_zero_point"  I32 same size as weight_scale
//   "<i>.bias"               I32 [out]  (scale = input scale * weight scale)
//   "<i>.output"             F32 [5]  output scale, zero point, qmin, qmax, float_output
//   "<i>.config"             I64 [10] kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
//                                     dilation_h, dilation_w, groups, in_channels
//   (also for pooling: <i>.config with groups = 1 and in_channels = count_include_pad)
// The requantization multipliers are recomputed on load by the same formula, and the
// GEMM panels re-packed, so a loaded model gives bit-identical outputs.
namespace qlib {
namespace nn {

// How save_quantized stores int8 weights.
enum class weight_storage {
  dense,      // every code (format quantized_sequential/1, what older qlib reads)
  automatic,  // per weight tensor the fewest bytes of: every code, sparse (mask + kept
              // codes), or the codes packed at the narrowest width that holds them (ties:
              // dense before either, packed before sparse); kept codes are packed too
              // when they fit fewer than 8 bits
};
struct quantized_save_options {
  weight_storage weights = weight_storage::automatic;
};

namespace detail {
inline tensor<std::int64_t, 1> window_config(const conv2d_options& o, index_t last) {
  tensor<std::int64_t, 1> t(extents<1>{10});
  const index_t v[10] = {o.kernel_h, o.kernel_w, o.stride_h, o.stride_w, o.pad_h,
                         o.pad_w,    o.dilation_h, o.dilation_w, o.groups, last};
  for (int i = 0; i < 10; ++i) t(i) = v[i];
  return t;
}
// A whole number stored as F32 (zero points, clamps), checked before the conversion.
inline std::int32_t float_to_int32(float v, const std::string& what) {
  QLIB_CHECK(std::isfinite(v) && v == std::floor(v) && v >= -2147483648.0f && v < 2147483648.0f,
             errc::invalid_argument, "quantized model: " + what + " = " + std::to_string(v) + " is not an int32");
  return static_cast<std::int32_t>(v);
}

inline conv2d_options read_window(const io::safetensors_file& f, const std::string& name, index_t& last) {
  const tensor<std::int64_t, 1> t = f.get<std::int64_t, 1>(name);
  QLIB_CHECK(t.shape(0) == 10, errc::shape_mismatch, "quantized model: " + name + " must have 10 entries");
  for (index_t i = 0; i < 10; ++i)
    QLIB_CHECK(t(i) >= 0 && t(i) <= (index_t{1} << 30), errc::invalid_argument,
               "quantized model: " + name + " has an out-of-range entry");
  // kernel, stride, dilation and groups are at least 1 (padding may be 0).
  for (index_t i : {0, 1, 2, 3, 6, 7, 8})
    QLIB_CHECK(t(i) >= 1, errc::invalid_argument, "quantized model: " + name + " has a zero kernel, stride, dilation or groups");
  last = t(9);
  return {t(0), t(1), t(2), t(3), t(4), t(5), t(6), t(7), t(8)};
}

// Writes layer p's weights; returns the format version their codes need (1 dense, 2
// sparse, 3 packed).
inline int save_weights(io::safetensors_writer& wr, const std::string& p, const quantized_weights& w,
                        const tensor_view<const std::int8_t, 4>& shaped, const quantized_save_options& opt) {
  const int version = write_weight_codes(wr, p, w, shaped, opt.weights == weight_storage::automatic);
  wr.add(p + "weight_scale", tensor<float, 1>(tensor_view<const float, 1>(w.params.scale.data(), {w.params.size()})));
  wr.add(p + "weight_zero_point",
         tensor<std::int32_t, 1>(tensor_view<const std::int32_t, 1>(w.params.zero_point.data(), {w.params.size()})));
  wr.add(p + "bias", tensor<std::int32_t, 1>(tensor_view<const std::int32_t, 1>(w.bias.data(), {w.out_channels()})));
  return version;
}


inline quantized_weights load_weights(const io::safetensors_file& f, const std::string& p, code_layout layout,
                                      index_t out, index_t k, index_t groups) {
  quantized_weights w;
  const std::vector<float> s = f.values<float>(p + "weight_scale");
  const std::vector<std::int32_t> z = f.values<std::int32_t>(p + "weight_zero_point");
  QLIB_CHECK(s.size() == z.size() && (s.size() == 1 || static_cast<index_t>(s.size()) == out), errc::shape_mismatch,
             "quantized model: " + p + "weight_scale / weight_zero_point sizes");
  const std::vector<std::int8_t> v = weight_codes(f, p, layout, out, k, z);
  QLIB_CHECK(static_cast<index_t>(v.size()) == out * k, errc::shape_mismatch,
             "quantized model: " + p + "weight has " + std::to_string(v.size()) + " codes, not " +
                 std::to_string(out) + " x " + std::to_string(k));
  w.values = tensor<std::int8_t, 2>(extents<2>{out, k});
  std::copy(v.begin(), v.end(), w.values.data());
  w.params = quant_params(s.size() == 1 ? granularity::per_tensor() : granularity::per_channel(0), -128, 127, s, z);
  w.params.validate();
  w.bias = f.values<std::int32_t>(p + "bias");
  QLIB_CHECK(static_cast<index_t>(w.bias.size()) == out, errc::shape_mismatch, "quantized model: " + p + "bias size");
  w.pack_groups(groups);
  return w;
}
}  // namespace detail

// The model as a safetensors file (see the layout above); by default pruned weights are
// stored sparse and codes narrower than 8 bits packed where that is smaller
// (weight_storage::dense for format /1 only). The format version is the lowest that
// holds what was written.
inline io::safetensors_writer save_quantized(const quantized_sequential& m, const quantized_save_options& opt = {}) {
  io::safetensors_writer wr;
  int version = 1;
  wr.set_metadata("qlib.layers", std::to_string(m.layers.size()));
  tensor<float, 1> in(extents<1>{2});
  in(0) = m.input.scale;
  in(1) = static_cast<float>(m.input.zero_point);
  wr.add("input.qparams", in);
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const std::string p = std::to_string(i) + ".";
    auto output = [&](const quantized_output& o, bool float_out) {
      tensor<float, 1> t(extents<1>{5});
      t(0) = o.out.scale;
      t(1) = static_cast<float>(o.out.zero_point);
      t(2) = static_cast<float>(o.qmin);
      t(3) = static_cast<float>(o.qmax);
      t(4) = float_out ? 1.0f : 0.0f;
      wr.add(p + "output", t);
    };
    std::visit(
        [&](const auto& v) {
          using L = std::decay_t<decltype(v)>;
          if constexpr (std::is_same<L, qconv2d>::value) {
            wr.set_metadata("qlib.layer." + std::to_string(i), "qconv2d");
            const index_t o = v.out_channels();
            version = std::max(version, detail::save_weights(wr, p, v.w,
                                                             tensor_view<const std::int8_t, 4>(
                                                                 v.w.values.data(), {o, v.opt.kernel_h, v.opt.kernel_w,
                                                                                     v.in_channels / v.opt.groups}),
                                                             opt));
            output(v.output, false);
            wr.add(p + "config", detail::window_config(v.opt, v.in_channels));
          } else if constexpr (std::is_same<L, qlinear>::value) {
            wr.set_metadata("qlib.layer." + std::to_string(i), "qlinear");
            version = std::max(
                version, detail::save_weights(
                             wr, p, v.w,
                             tensor_view<const std::int8_t, 4>(v.w.values.data(), {v.out_features(), 1, 1, v.in_features()}),
                             opt));
            output(v.output, v.float_output);
          } else if constexpr (std::is_same<L, max_pool2d>::value) {
            wr.set_metadata("qlib.layer." + std::to_string(i), "max_pool2d");
            wr.add(p + "config", detail::window_config(v.window, 0));
          } else if constexpr (std::is_same<L, avg_pool2d>::value) {
            wr.set_metadata("qlib.layer." + std::to_string(i), "avg_pool2d");
            wr.add(p + "config", detail::window_config(v.window, v.count_include_pad ? 1 : 0));
          } else {
            wr.set_metadata("qlib.layer." + std::to_string(i), "flatten");
          }
        },
        m.layers[i]);
  }
  wr.set_metadata("qlib.format", "quantized_sequential/" + std::to_string(version));
  return wr;
}

inline quantized_sequential load_quantized(const io::safetensors_file& f) {
  const auto& md = f.metadata();
  auto meta = [&](const std::string& k) -> const std::string& {
    const auto it = md.find(k);
    QLIB_CHECK(it != md.end(), errc::invalid_argument, "quantized model: metadata \"" + k + "\" missing");
    return it->second;
  };
  const std::string& format = meta("qlib.format");
  QLIB_CHECK(format == "quantized_sequential/1" || format == "quantized_sequential/2" ||
                 format == "quantized_sequential/3",
             errc::unsupported, "quantized model: unknown format \"" + format + "\"");
  const int version = format.back() - '0';
  const std::string& count_s = meta("qlib.layers");
  QLIB_CHECK(!count_s.empty() && count_s.size() < 6 && count_s.find_first_not_of("0123456789") == std::string::npos,
             errc::invalid_argument, "quantized model: bad qlib.layers");
  const std::size_t count = std::stoul(count_s);
  quantized_sequential m;
  std::vector<std::string> used{"input.qparams"};
  const std::vector<float> in = f.values<float>("input.qparams");
  QLIB_CHECK(in.size() == 2, errc::shape_mismatch, "quantized model: input.qparams must have 2 entries");
  m.input = {in[0], detail::float_to_int32(in[1], "input zero point")};
  quant_params::per_tensor(schemes::u8_asymmetric, m.input.scale, m.input.zero_point).validate();
  activation_qparams cur = m.input;
  for (std::size_t i = 0; i < count; ++i) {
    const std::string p = std::to_string(i) + ".";
    const std::string& kind = meta("qlib.layer." + std::to_string(i));
    // The tensors this kind of layer may have (any other is refused below: a weight
    // tensor on a pooling layer would also slip past the format version's checks).
    if (kind == "qconv2d" || kind == "qlinear") {
      for (const char* t : {"weight", "weight_shape", "weight_mask", "weight_values", "weight_scale",
                            "weight_zero_point", "bias", "output"})
        used.push_back(p + t);
      for (int b = 2; b <= 7; ++b) {
        used.push_back(detail::packed_weight_name(p, b));
        used.push_back(detail::packed_values_name(p, b));
      }
    }
    if (kind == "qconv2d" || kind == "max_pool2d" || kind == "avg_pool2d") used.push_back(p + "config");
    auto read_output = [&](quantized_output& o, bool& float_out) {
      const std::vector<float> t = f.values<float>(p + "output");
      QLIB_CHECK(t.size() == 5, errc::shape_mismatch, "quantized model: " + p + "output must have 5 entries");
      o.out = {t[0], detail::float_to_int32(t[1], p + "output zero point")};
      o.qmin = detail::float_to_int32(t[2], p + "output qmin");
      o.qmax = detail::float_to_int32(t[3], p + "output qmax");
      QLIB_CHECK(t[4] == 0.0f || t[4] == 1.0f, errc::invalid_argument, "quantized model: " + p + "output flag not 0/1");
      float_out = t[4] != 0.0f;
      QLIB_CHECK(0 <= o.qmin && o.qmin <= o.qmax && o.qmax <= 255, errc::invalid_argument,
                 "quantized model: " + p + "output clamp outside [0, 255]");
      if (!float_out) {
        quant_params::per_tensor(schemes::u8_asymmetric, o.out.scale, o.out.zero_point).validate();
        QLIB_CHECK(o.qmin <= o.out.zero_point && o.out.zero_point <= o.qmax, errc::invalid_argument,
                   "quantized model: " + p + "output clamp excludes the zero point");
      }
    };
    if (kind == "qconv2d") {
      qconv2d c;
      c.opt = detail::read_window(f, p + "config", c.in_channels);
      const detail::code_layout layout = detail::stored_code_layout(f, p, version);
      const std::vector<index_t> shape = detail::weight_shape(f, p, layout);
      QLIB_CHECK(shape.size() == 4 && c.opt.groups > 0 && c.in_channels % c.opt.groups == 0, errc::shape_mismatch,
                 "quantized model: " + p + "weight must be [out, kh, kw, in/groups]");
      QLIB_CHECK(shape[1] == c.opt.kernel_h && shape[2] == c.opt.kernel_w && shape[3] == c.in_channels / c.opt.groups,
                 errc::shape_mismatch, "quantized model: " + p + "weight does not match its config");
      c.in = cur;
      c.w = detail::load_weights(f, p, layout, shape[0], shape[1] * shape[2] * shape[3], c.opt.groups);
      bool float_out = false;
      read_output(c.output, float_out);
      QLIB_CHECK(!float_out, errc::unsupported, "quantized model: qconv2d with float output");
      const quantized_output o = c.output;
      c.output = make_quantized_output(c.w, c.in, o.out, -1.0f);
      c.output.qmin = o.qmin;
      c.output.qmax = o.qmax;
      cur = c.output.out;
      c.prepare();
      m.layers.emplace_back(std::move(c));
    } else if (kind == "qlinear") {
      qlinear l;
      const detail::code_layout layout = detail::stored_code_layout(f, p, version);
      const std::vector<index_t> shape = detail::weight_shape(f, p, layout);
      QLIB_CHECK(shape.size() == 4 && shape[1] == 1 && shape[2] == 1, errc::shape_mismatch,
                 "quantized model: " + p + "weight must be [out, 1, 1, in]");
      l.in = cur;
      l.w = detail::load_weights(f, p, layout, shape[0], shape[3], 1);
      quantized_output o;
      read_output(o, l.float_output);
      if (l.float_output) {
        for (index_t c = 0; c < l.w.out_channels(); ++c) l.channel_scale.push_back(l.w.scale(c));
      } else {
        l.output = make_quantized_output(l.w, l.in, o.out, -1.0f);
        l.output.qmin = o.qmin;
        l.output.qmax = o.qmax;
        cur = l.output.out;
      }
      l.prepare();
      m.layers.emplace_back(std::move(l));
    } else if (kind == "max_pool2d" || kind == "avg_pool2d") {
      index_t last = 0;
      const conv2d_options w = detail::read_window(f, p + "config", last);
      if (kind == "max_pool2d") m.layers.emplace_back(max_pool2d{w});
      else m.layers.emplace_back(avg_pool2d{w, last != 0});
    } else {
      QLIB_CHECK(kind == "flatten", errc::unsupported, "quantized model: unknown layer kind \"" + kind + "\"");
      m.layers.emplace_back(flatten{});
    }
  }
  // Every tensor must belong to a layer read above (a wrong layer count fails loudly).
  for (const std::string& n : f.names())
    QLIB_CHECK(std::find(used.begin(), used.end(), n) != used.end(), errc::invalid_argument,
               "quantized model: tensor \"" + n + "\" belongs to no layer (qlib.layers = " + count_s + ")");
  return m;
}

}  // namespace nn
}  // namespace qlib
