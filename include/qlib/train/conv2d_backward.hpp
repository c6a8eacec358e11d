// Backward pass of nn::conv2d: dW = im2col(x)^T dY, dB = column sums of dY, dX = col2im(dY W), per group.
#pragma once

#include <algorithm>
#include <cstring>

#include "qlib/core/tensor.hpp"
#include "qlib/nn/conv2d.hpp"
#include "qlib/train/col2im.hpp"

namespace qlib {
namespace train {

namespace detail {
// dy as a dense tensor view (copying only when it is strided).
struct dense_input {
  tensor<float, 4> copy;
  tensor_view<const float, 4> view;
  explicit dense_input(tensor_view<const float, 4> v) : view(v) {
    if (!v.is_contiguous()) {
      copy = tensor<float, 4>(v);
      view = copy.cview();
    }
  }
};

// A dense copy of a view: one memcpy when it is contiguous (tensor's own copy walks
// every index).
inline tensor<float, 4> dense_copy(tensor_view<const float, 4> v) {
  if (!v.is_contiguous()) return tensor<float, 4>(v);
  tensor<float, 4> t(v.shape());
  if (t.size() > 0) std::memcpy(t.data(), v.data(), sizeof(float) * static_cast<std::size_t>(t.size()));
  return t;
}

inline void check_output_grad(const extents<4>& dy, const extents<4>& expected, const char* who) {
  QLIB_CHECK(dy == expected, errc::shape_mismatch,
             std::string(who) + ": output gradient " + qlib::detail::extents_string(dy) + ", the layer's output is " +
                 qlib::detail::extents_string(expected));
}
inline void check_param_grad(index_t got, index_t expected, const char* who, const char* what) {
  QLIB_CHECK(got == expected, errc::shape_mismatch,
             std::string(who) + ": " + what + " gradient has " + std::to_string(got) + " elements, expected " +
                 std::to_string(expected));
}
}  // namespace detail

// Gradients of y = conv(x) (before any activation) given dL/dy. Writes dL/dW into dw
// (OHWI order, conv.weight.size() floats) and dL/db into db (conv.bias.size() floats;
// empty when the layer has no bias); returns dL/dx, or an empty tensor when need_dx is
// false (the first layer). Every stride, padding, dilation and group count, depthwise
// included: for each group and block of output pixels, the block's im2col rows A give
// dW_g += A^T dY_g and dX += col2im(dY_g W_g), two nn::matmul calls on big blocks.
inline tensor<float, 4> conv2d_backward(const nn::conv2d& conv, tensor_view<const float, 4> x,
                                        tensor_view<const float, 4> dy, tensor_view<float, 1> dw,
                                        tensor_view<float, 1> db, bool need_dx = true) {
  const char* who = "train::conv2d_backward";
  const nn::conv_geometry g = conv.geometry(x.shape());
  QLIB_CHECK(x.stride(3) == 1, errc::invalid_argument, std::string(who) + ": input channels must be contiguous");
  detail::check_output_grad(dy.shape(), {g.batch, g.out_h, g.out_w, g.out_c}, who);
  detail::check_param_grad(dw.shape(0), conv.weight.size(), who, "weight");
  detail::check_param_grad(db.shape(0), conv.bias.size(), who, "bias");
  QLIB_CHECK(dw.stride(0) == 1 && db.stride(0) == 1, errc::invalid_argument,
             std::string(who) + ": parameter gradients must be contiguous");
  const detail::dense_input dyd(dy);
  const float* dyp = dyd.view.data();

  const index_t patch = g.patch_size(), cog = g.out_c_per_group(), pixels = g.output_pixels(), oc = g.out_c;
  const index_t block = std::min(pixels, nn::detail::im2col_block_rows(patch, sizeof(float)));
  tensor<float, 2> cols(extents<2>{block, patch}), dcols, part(extents<2>{cog, patch});
  if (need_dx) dcols = tensor<float, 2>(extents<2>{block, patch});
  tensor<float, 4> dx = need_dx ? tensor<float, 4>(x.shape()) : tensor<float, 4>();
  std::fill_n(dw.data(), dw.shape(0), 0.0f);

  for (index_t grp = 0; grp < conv.opt.groups; ++grp) {
    float* dwg = dw.data() + grp * cog * patch;
    const tensor_view<const float, 2> wg(conv.weight.data() + grp * cog * patch, {cog, patch});
    for (index_t p0 = 0; p0 < pixels; p0 += block) {
      const index_t rows = std::min(block, pixels - p0);
      const tensor_view<float, 2> a = cols.view().slice(0, 0, rows);
      nn::im2col<float>(x, g, grp, 0.0f, p0, p0 + rows, a);
      const tensor_view<const float, 2> dyg(dyp + p0 * oc + grp * cog, {rows, cog}, {oc, 1});
      // dW_g [cog, patch] += dY_g^T [cog, rows] x A [rows, patch]; one block's product then
      // the add, so the order of the sums is fixed.
      nn::matmul(dyg.transpose(0, 1), a, part.view());
      for (index_t i = 0, n = cog * patch; i < n; ++i) dwg[i] += part.data()[i];
      if (need_dx) {
        // dA [rows, patch] = dY_g [rows, cog] x W_g [cog, patch], scattered back onto dX.
        const tensor_view<float, 2> da = dcols.view().slice(0, 0, rows);
        nn::matmul(dyg, wg, da);
        col2im_add(da, g, grp, p0, p0 + rows, dx.view());
      }
    }
  }
  if (db.shape(0) > 0) {
    std::fill_n(db.data(), oc, 0.0f);
    for (index_t p = 0; p < pixels; ++p)
      for (index_t c = 0; c < oc; ++c) db.data()[c] += dyp[p * oc + c];
  }
  return dx;
}

}  // namespace train
}  // namespace qlib
