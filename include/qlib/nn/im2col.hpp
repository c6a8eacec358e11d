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
namespace detail {
// memcpy of a short run without a library call: two overlapping fixed-size copies, which
// compilers inline as plain loads and stores (runs here are a few to a few hundred bytes).
inline void copy_bytes(void* dst, const void* src, std::size_t n) noexcept {
  auto* d = static_cast<unsigned char*>(dst);
  const auto* s = static_cast<const unsigned char*>(src);
  if (n >= 64) {
    std::memcpy(d, s, n);
  } else if (n >= 32) {
    std::memcpy(d, s, 32);
    std::memcpy(d + n - 32, s + n - 32, 32);
  } else if (n >= 16) {
    std::memcpy(d, s, 16);
    std::memcpy(d + n - 16, s + n - 16, 16);
  } else if (n >= 8) {
    std::memcpy(d, s, 8);
    std::memcpy(d + n - 8, s + n - 8, 8);
  } else if (n >= 4) {
    std::memcpy(d, s, 4);
    std::memcpy(d + n - 4, s + n - 4, 4);
  } else if (n > 0) {
    d[0] = s[0];
    d[n / 2] = s[n / 2];
    d[n - 1] = s[n - 1];
  }
}
}  // namespace detail

template <class T>
void im2col(tensor_view<const T, 4> x, const conv_geometry& g, index_t group, T pad_value, index_t pixel_begin,
            index_t pixel_end, tensor_view<T, 2> out) {
  QLIB_ASSERT(x.stride(3) == 1 && out.stride(1) == 1);
  QLIB_ASSERT(pixel_end - pixel_begin == out.shape(0) && out.shape(1) >= g.patch_size());
  const index_t cg = g.in_c_per_group(), c0 = group * cg;
  const auto& o = g.opt;
  // With unit horizontal dilation and all channels in one group, the taps of one kernel
  // row are one contiguous run of kernel_w * C input values: one copy per kernel row.
  const bool runs = o.dilation_w == 1 && cg == g.in_c && x.stride(2) == g.in_c;
  const index_t run = o.kernel_w * cg;
  index_t n = pixel_begin / (g.out_h * g.out_w), oh = pixel_begin / g.out_w % g.out_h, ow = pixel_begin % g.out_w;
  for (index_t p = pixel_begin; p < pixel_end; ++p) {
    T* row = out.data() + (p - pixel_begin) * out.stride(0);
    const index_t iw0 = ow * o.stride_w - o.pad_w;
    const bool w_inside = iw0 >= 0 && iw0 + (o.kernel_w - 1) * o.dilation_w < g.in_w;
    for (index_t kh = 0; kh < o.kernel_h; ++kh, row += run) {
      const index_t ih = oh * o.stride_h - o.pad_h + kh * o.dilation_h;
      if (ih < 0 || ih >= g.in_h) {
        std::fill_n(row, run, pad_value);
        continue;
      }
      const T* src_row = x.data() + n * x.stride(0) + ih * x.stride(1) + c0;
      if (runs && w_inside) {
        detail::copy_bytes(row, src_row + iw0 * x.stride(2), sizeof(T) * static_cast<std::size_t>(run));
        continue;
      }
      for (index_t kw = 0; kw < o.kernel_w; ++kw) {
        const index_t iw = iw0 + kw * o.dilation_w;
        T* dst = row + kw * cg;
        if (iw >= 0 && iw < g.in_w) detail::copy_bytes(dst, src_row + iw * x.stride(2), sizeof(T) * static_cast<std::size_t>(cg));
        else std::fill_n(dst, cg, pad_value);
      }
    }
    if (++ow == g.out_w) {
      ow = 0;
      if (++oh == g.out_h) {
        oh = 0;
        ++n;
      }
    }
  }
}

}  // namespace nn
}  // namespace qlib
