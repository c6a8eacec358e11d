// nn::conv2d in training: a forward that keeps its im2col matrix, and the backward dW = im2col(x)^T dY, dB = sums of dY, dX = col2im(dY W).
#pragma once

#include <algorithm>

#include "qlib/nn/conv2d.hpp"
#include "qlib/train/buffers.hpp"
#include "qlib/train/col2im.hpp"

namespace qlib {
namespace train {

// Largest im2col matrix a training forward keeps for its backward (floats, 256 MiB);
// beyond it the backward rebuilds the rows block by block.
inline constexpr index_t conv_cols_cache_limit = index_t(64) << 20;

// y = conv(x) with the layer's bias, as nn::conv2d::forward. When the whole im2col
// matrix fits conv_cols_cache_limit it is left in `cols` ([groups * pixels, patch]: group
// g's rows first) for conv2d_backward; otherwise `cols` is emptied. y and cols keep
// their storage between calls of the same shape.
inline void conv2d_forward_train(const nn::conv2d& conv, tensor_view<const float, 4> x, tensor<float, 2>& cols,
                                 tensor<float, 4>& y) {
  const nn::conv_geometry g = conv.geometry(x.shape());
  if (g.opt.groups * g.output_pixels() * g.patch_size() > conv_cols_cache_limit) {
    cols = tensor<float, 2>();
    y = conv.forward(x);
    return;
  }
  const detail::dense_input xd(x);
  const index_t patch = g.patch_size(), cog = g.out_c_per_group(), pixels = g.output_pixels();
  detail::ensure_shape(cols, {conv.opt.groups * pixels, patch});
  detail::ensure_shape(y, {g.batch, g.out_h, g.out_w, g.out_c});
  for (index_t grp = 0; grp < conv.opt.groups; ++grp) {
    const tensor_view<float, 2> a = cols.view().slice(0, grp * pixels, (grp + 1) * pixels);
    nn::im2col<float>(xd.view, g, grp, 0.0f, 0, pixels, a);
    // B (patch x cog) = the group's OHWI rows, transposed.
    const tensor_view<const float, 2> b(conv.weight.data() + grp * cog * patch, {patch, cog}, {1, patch});
    nn::matmul(a, b, tensor_view<float, 2>(y.data() + grp * cog, {pixels, cog}, {g.out_c, 1}),
               {conv.has_bias() ? conv.bias.data() + grp * cog : nullptr});
  }
}

// Gradients of y = conv(x) (before any activation) given dL/dy. Writes dL/dW into dw
// (OHWI order, conv.weight.size() floats) and dL/db into db (conv.bias.size() floats;
// empty when the layer has no bias); writes dL/dx into dx when need_dx (the first layer
// skips it). Every stride, padding, dilation and group count, depthwise included. `cols`
// is the im2col matrix conv2d_forward_train left for this x, or empty: then the rows are
// rebuilt block by block. Per group: dW_g = A^T dY_g and dX += col2im(dY_g W_g), two
// nn::matmul calls on big blocks.
inline void conv2d_backward(const nn::conv2d& conv, tensor_view<const float, 4> x, const tensor<float, 2>& cols,
                            tensor_view<const float, 4> dy, tensor_view<float, 1> dw, tensor_view<float, 1> db,
                            tensor<float, 4>& dx, bool need_dx = true) {
  const char* who = "train::conv2d_backward";
  const nn::conv_geometry g = conv.geometry(x.shape());
  detail::check_output_grad(dy.shape(), {g.batch, g.out_h, g.out_w, g.out_c}, who);
  detail::check_param_grad(dw, conv.weight.size(), who, "weight");
  detail::check_param_grad(db, conv.bias.size(), who, "bias");
  const index_t patch = g.patch_size(), cog = g.out_c_per_group(), pixels = g.output_pixels(), oc = g.out_c;
  const bool cached = !cols.empty();
  QLIB_CHECK(!cached || (cols.shape() == extents<2>{conv.opt.groups * pixels, patch}), errc::shape_mismatch,
             std::string(who) + ": the cached im2col matrix " + qlib::detail::extents_string(cols.shape()) +
                 " does not belong to this input");
  const detail::dense_input xd(x), dyd(dy);
  const float* dyp = dyd.view.data();

  const index_t block = std::min(pixels, nn::detail::im2col_block_rows(patch, sizeof(float)));
  tensor<float, 2> rebuilt, dcols;
  if (!cached) rebuilt = tensor<float, 2>(extents<2>{block, patch});
  if (need_dx) {
    dcols = tensor<float, 2>(extents<2>{block, patch});
    detail::ensure_shape(dx, x.shape());
    std::fill_n(dx.data(), dx.size(), 0.0f);
  }
  for (index_t grp = 0; grp < conv.opt.groups; ++grp) {
    const tensor_view<float, 2> dwg(dw.data() + grp * cog * patch, {cog, patch});
    const tensor_view<const float, 2> wg(conv.weight.data() + grp * cog * patch, {cog, patch});
    const tensor_view<const float, 2> dy_all(dyp + grp * cog, {pixels, cog}, {oc, 1});
    if (cached) {
      // dW_g [cog, patch] = dY_g^T [cog, pixels] x A [pixels, patch]: one product.
      const tensor_view<const float, 2> a = cols.cview().slice(0, grp * pixels, (grp + 1) * pixels);
      nn::matmul(dy_all.transpose(0, 1), a, dwg);
    }
    for (index_t p0 = 0; p0 < pixels; p0 += block) {
      const index_t rows = std::min(block, pixels - p0);
      const tensor_view<const float, 2> dyg = dy_all.slice(0, p0, p0 + rows);
      if (!cached) {
        const tensor_view<float, 2> a = rebuilt.view().slice(0, 0, rows);
        nn::im2col<float>(xd.view, g, grp, 0.0f, p0, p0 + rows, a);
        // Accumulated block after block, in pixel order.
        nn::matmul(dyg.transpose(0, 1), a, dwg, {}, /*accumulate=*/p0 > 0);
      }
      if (need_dx) {
        // dA [rows, patch] = dY_g [rows, cog] x W_g [cog, patch], scattered back onto dX.
        const tensor_view<float, 2> da = dcols.view().slice(0, 0, rows);
        nn::matmul(dyg, wg, da);
        col2im_add(da, g, grp, p0, p0 + rows, dx.view());
      }
    }
  }
  if (db.shape(0) > 0) {
    float* dbp = db.data();
    std::fill_n(dbp, oc, 0.0f);
    for (index_t p = 0; p < pixels; ++p)
      for (index_t c = 0; c < oc; ++c) dbp[c] += dyp[p * oc + c];
  }
}

// The same without a cached im2col matrix; returns dL/dx (empty when !need_dx).
inline tensor<float, 4> conv2d_backward(const nn::conv2d& conv, tensor_view<const float, 4> x,
                                        tensor_view<const float, 4> dy, tensor_view<float, 1> dw,
                                        tensor_view<float, 1> db, bool need_dx = true) {
  tensor<float, 4> dx;
  conv2d_backward(conv, x, tensor<float, 2>(), dy, dw, db, dx, need_dx);
  return dx;
}

}  // namespace train
}  // namespace qlib
