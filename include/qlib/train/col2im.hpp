// col2im for NHWC activations: the adjoint of nn::im2col, scatter-adding patch rows back onto the input.
#pragma once

#include "qlib/core/tensor_view.hpp"
#include "qlib/nn/conv_geometry.hpp"

namespace qlib {
namespace train {

// Adds row p - pixel_begin of `cols` (the im2col layout of group `group`: (kh, kw, c)
// order, nn/im2col.hpp) onto the input positions it was read from: dx[n][ih][iw][group *
// Cg + c] += cols(p - pixel_begin, (kh * kernel_w + kw) * Cg + c). Taps in the padding
// are dropped. dx is NHWC with contiguous channels. Rows are visited in pixel order, so
// the sums are in a fixed order.
inline void col2im_add(tensor_view<const float, 2> cols, const nn::conv_geometry& g, index_t group,
                       index_t pixel_begin, index_t pixel_end, tensor_view<float, 4> dx) {
  QLIB_ASSERT(dx.stride(3) == 1 && cols.stride(1) == 1);
  QLIB_ASSERT(pixel_end - pixel_begin == cols.shape(0) && cols.shape(1) >= g.patch_size());
  const index_t cg = g.in_c_per_group(), c0 = group * cg;
  const auto& o = g.opt;
  for (index_t p = pixel_begin; p < pixel_end; ++p) {
    const index_t n = p / (g.out_h * g.out_w), rem = p % (g.out_h * g.out_w);
    const index_t oh = rem / g.out_w, ow = rem % g.out_w;
    const float* row = cols.data() + (p - pixel_begin) * cols.stride(0);
    for (index_t kh = 0; kh < o.kernel_h; ++kh) {
      const index_t ih = oh * o.stride_h - o.pad_h + kh * o.dilation_h;
      const bool row_inside = ih >= 0 && ih < g.in_h;
      for (index_t kw = 0; kw < o.kernel_w; ++kw, row += cg) {
        const index_t iw = ow * o.stride_w - o.pad_w + kw * o.dilation_w;
        if (!row_inside || iw < 0 || iw >= g.in_w) continue;
        float* dst = dx.data() + n * dx.stride(0) + ih * dx.stride(1) + iw * dx.stride(2) + c0;
        for (index_t c = 0; c < cg; ++c) dst[c] += row[c];
      }
    }
  }
}

}  // namespace train
}  // namespace qlib
