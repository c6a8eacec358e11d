// im2col for NHWC activations: each output pixel's receptive field as one contiguous row.
#pragma once

#include <algorithm>
#include <cstring>

#include "qlib/core/tensor_view.hpp"
#include "qlib/nn/conv_geometry.hpp"

namespace qlib {
namespace nn {
namespace detail {
// Rows of im2col per block: about 256 KiB of patches, so a block stays in L2 for the GEMM.
inline index_t im2col_block_rows(index_t patch, std::size_t elem) {
  return std::max<index_t>(64, static_cast<index_t>(256 * 1024 / (elem * static_cast<std::size_t>(patch))));
}

}  // namespace detail

// Rows [pixel_begin, pixel_end) of the im2col matrix of group `group`: row p - pixel_begin
// holds, for output pixel p = (n * out_h + oh) * out_w + ow, the input values
// x[n][ih][iw][group * Cg + c] in (kh, kw, c) order - the order of OHWI weights, so a
// convolution is this matrix times the weights of the group. Taps outside the input
// read `pad_value` (0 for float; the zero point for quantized activations, so padding
// is the real value 0). `out` has pixel_end - pixel_begin rows of at least patch_size()
// elements (any row stride).
template <class T>
void im2col(tensor_view<const T, 4> x, const conv_geometry& g, index_t group, T pad_value, index_t pixel_begin,
            index_t pixel_end, tensor_view<T, 2> out) {
  QLIB_ASSERT(x.stride(3) == 1 && out.stride(1) == 1);
  QLIB_ASSERT(pixel_end - pixel_begin == out.shape(0) && out.shape(1) >= g.patch_size());
  const index_t cg = g.in_c_per_group(), c0 = group * cg;
  const auto& o = g.opt;
  for (index_t p = pixel_begin; p < pixel_end; ++p) {
    const index_t n = p / (g.out_h * g.out_w), rem = p % (g.out_h * g.out_w);
    const index_t oh = rem / g.out_w, ow = rem % g.out_w;
    T* row = out.data() + (p - pixel_begin) * out.stride(0);
    for (index_t kh = 0; kh < o.kernel_h; ++kh) {
      const index_t ih = oh * o.stride_h - o.pad_h + kh * o.dilation_h;
      const bool row_inside = ih >= 0 && ih < g.in_h;
      for (index_t kw = 0; kw < o.kernel_w; ++kw, row += cg) {
        const index_t iw = ow * o.stride_w - o.pad_w + kw * o.dilation_w;
        if (row_inside && iw >= 0 && iw < g.in_w) {
          const T* src = x.data() + n * x.stride(0) + ih * x.stride(1) + iw * x.stride(2) + c0;
          if (cg == 1) *row = *src;
          else std::memcpy(row, src, sizeof(T) * static_cast<std::size_t>(cg));
        } else {
          std::fill_n(row, cg, pad_value);
        }
      }
    }
  }
}

}  // namespace nn
}  // namespace qlib
