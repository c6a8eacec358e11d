// conv2d_options and conv_geometry: the shape arithmetic of a 2-D convolution or pooling window, validated once.
#pragma once

#include <string>

#include "qlib/core/tensor_view.hpp"

namespace qlib {
namespace nn {

// A 2-D window over NHWC activations: kernel, stride, zero padding (top/bottom = pad_h,
// left/right = pad_w, as PyTorch's padding=(ph, pw)), dilation and groups. Pooling uses
// the same struct with groups = 1.
struct conv2d_options {
  index_t kernel_h = 1, kernel_w = 1;
  index_t stride_h = 1, stride_w = 1;
  index_t pad_h = 0, pad_w = 0;
  index_t dilation_h = 1, dilation_w = 1;
  index_t groups = 1;

  // A square window with the same stride, padding and dilation on both axes.
  static conv2d_options square(index_t kernel, index_t stride = 1, index_t pad = 0, index_t dilation = 1,
                               index_t groups = 1) {
    return {kernel, kernel, stride, stride, pad, pad, dilation, dilation, groups};
  }
  std::string describe() const {
    auto s = [](index_t v) { return std::to_string(v); };
    return "kernel " + s(kernel_h) + "x" + s(kernel_w) + " stride " + s(stride_h) + "x" + s(stride_w) + " pad " +
           s(pad_h) + "x" + s(pad_w) + " dilation " + s(dilation_h) + "x" + s(dilation_w) + " groups " + s(groups);
  }
};

// Input/output spatial sizes of one window application, checked.
struct conv_geometry {
  index_t batch = 0, in_h = 0, in_w = 0, in_c = 0;
  index_t out_h = 0, out_w = 0, out_c = 0;
  conv2d_options opt;

  index_t in_c_per_group() const noexcept { return in_c / opt.groups; }
  index_t out_c_per_group() const noexcept { return out_c / opt.groups; }
  // Length of one im2col row for one group: kernel_h * kernel_w * in_c / groups.
  index_t patch_size() const noexcept { return opt.kernel_h * opt.kernel_w * in_c_per_group(); }
  index_t output_pixels() const noexcept { return batch * out_h * out_w; }
  bool is_depthwise() const noexcept { return opt.groups > 1 && opt.groups == in_c; }
};

namespace detail {
// floor((in + 2 pad - dilation (k - 1) - 1) / stride) + 1, or 0 when the window does not fit.
inline index_t window_output_size(index_t in, index_t k, index_t stride, index_t pad, index_t dilation) {
  const index_t span = dilation * (k - 1) + 1;
  const index_t room = in + 2 * pad - span;
  return room < 0 ? 0 : room / stride + 1;
}
}  // namespace detail

// The geometry of a window `opt` over an NHWC input of `in_shape` producing out_c
// channels; refuses non-positive sizes, negative padding, parameters above 4096, groups
// that do not divide both channel counts, and windows larger than the padded input.
// Padding of a whole (dilated) window or more is accepted, as PyTorch's Conv2d does: the
// windows that lie entirely in the padding read no input (a convolution gives its bias
// there). Pooling, where such a window has no value, refuses it in pool_geometry.
inline conv_geometry make_conv_geometry(const extents<4>& in_shape, index_t out_c, const conv2d_options& opt,
                                        const char* who) {
  const std::string w(who);
  QLIB_CHECK(opt.kernel_h > 0 && opt.kernel_w > 0 && opt.stride_h > 0 && opt.stride_w > 0 && opt.dilation_h > 0 &&
                 opt.dilation_w > 0 && opt.groups > 0 && opt.pad_h >= 0 && opt.pad_w >= 0,
             errc::invalid_argument, w + ": kernel, stride, dilation and groups must be > 0 and padding >= 0, got " +
                                         opt.describe());
  QLIB_CHECK(opt.kernel_h <= 4096 && opt.kernel_w <= 4096 && opt.dilation_h <= 4096 && opt.dilation_w <= 4096 &&
                 opt.stride_h <= 4096 && opt.stride_w <= 4096 && opt.pad_h <= 4096 && opt.pad_w <= 4096,
             errc::invalid_argument, w + ": window parameters above 4096 are refused, got " + opt.describe());
  conv_geometry g;
  g.batch = in_shape[0];
  g.in_h = in_shape[1];
  g.in_w = in_shape[2];
  g.in_c = in_shape[3];
  g.out_c = out_c;
  g.opt = opt;
  QLIB_CHECK(g.batch > 0 && g.in_h > 0 && g.in_w > 0 && g.in_c > 0 && out_c > 0, errc::empty_tensor,
             w + ": needs a non-empty NHWC input and output channels, got input " +
                 qlib::detail::extents_string(in_shape) + " -> " + std::to_string(out_c) + " channels");
  QLIB_CHECK(g.in_c % opt.groups == 0 && out_c % opt.groups == 0, errc::invalid_argument,
             w + ": groups = " + std::to_string(opt.groups) + " must divide input channels " +
                 std::to_string(g.in_c) + " and output channels " + std::to_string(out_c));
  g.out_h = detail::window_output_size(g.in_h, opt.kernel_h, opt.stride_h, opt.pad_h, opt.dilation_h);
  g.out_w = detail::window_output_size(g.in_w, opt.kernel_w, opt.stride_w, opt.pad_w, opt.dilation_w);
  QLIB_CHECK(g.out_h > 0 && g.out_w > 0, errc::shape_mismatch,
             w + ": the window (" + opt.describe() + ") does not fit the input " +
                 qlib::detail::extents_string(in_shape));
  return g;
}

}  // namespace nn
}  // namespace qlib
