// Max and average pooling over NHWC activations, for float and quantized (uint8/int8) values.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>
#include <limits>
#include <type_traits>

#include "qlib/core/tensor.hpp"
#include "qlib/nn/conv_geometry.hpp"

namespace qlib {
namespace nn {

// Max pooling; padded taps are ignored (as PyTorch's -inf padding). On quantized values
// the output keeps the input's scale and zero point: max commutes with a monotonic map.
struct max_pool2d {
  conv2d_options window;
  static max_pool2d square(index_t kernel, index_t stride = 0, index_t pad = 0) {
    return {conv2d_options::square(kernel, stride ? stride : kernel, pad)};
  }
};

// Average pooling; count_include_pad as PyTorch (padded taps count as 0 in the divisor
// when true). On quantized values the output keeps the input's scale and zero point;
// the integer mean (sum of (q - zp)) / count + zp is rounded half to even.
struct avg_pool2d {
  conv2d_options window;
  bool count_include_pad = true;
  static avg_pool2d square(index_t kernel, index_t stride = 0, index_t pad = 0) {
    return {conv2d_options::square(kernel, stride ? stride : kernel, pad), true};
  }
};

namespace detail {
// s / d rounded half to even, in integers (d > 0): no dependence on the FP rounding mode.
inline std::int64_t div_round_half_even(std::int64_t s, std::int64_t d) noexcept {
  std::int64_t q = s / d, r = s % d;
  if (r < 0) {  // floor division
    --q;
    r += d;
  }
  if (2 * r > d || (2 * r == d && (q & 1))) ++q;
  return q;
}
inline conv_geometry pool_geometry(const extents<4>& in, const conv2d_options& w, const char* who) {
  QLIB_CHECK(w.groups == 1, errc::invalid_argument, std::string(who) + ": pooling windows have groups = 1");
  const conv_geometry g = make_conv_geometry(in, in[3] > 0 ? in[3] : 1, w, who);
  // Every window must hold at least one input value: with padding of a whole window or
  // more (which make_conv_geometry accepts for convolutions), or with dilation, a window
  // can fall entirely into the padding, where its max and its average are undefined.
  auto all_windows_hit = [](index_t out, index_t in_size, index_t k, index_t s, index_t pad, index_t d) {
    for (index_t o = 0; o < out; ++o) {
      bool hit = false;
      for (index_t t = 0; t < k && !hit; ++t) {
        const index_t i = o * s - pad + t * d;
        hit = i >= 0 && i < in_size;
      }
      if (!hit) return false;
    }
    return true;
  };
  QLIB_CHECK(all_windows_hit(g.out_h, g.in_h, w.kernel_h, w.stride_h, w.pad_h, w.dilation_h) &&
                 all_windows_hit(g.out_w, g.in_w, w.kernel_w, w.stride_w, w.pad_w, w.dilation_w),
             errc::invalid_argument,
             std::string(who) + ": a window (" + w.describe() + ") covers only padding of input " +
                 qlib::detail::extents_string(in) + "; every pooling window needs an input value");
  return g;
}
}  // namespace detail

inline extents<4> output_shape(const max_pool2d& p, const extents<4>& in) {
  const conv_geometry g = detail::pool_geometry(in, p.window, "nn::max_pool2d");
  return {g.batch, g.out_h, g.out_w, g.in_c};
}
inline extents<4> output_shape(const avg_pool2d& p, const extents<4>& in) {
  const conv_geometry g = detail::pool_geometry(in, p.window, "nn::avg_pool2d");
  return {g.batch, g.out_h, g.out_w, g.in_c};
}

namespace detail {
// out = max(out, v) element-wise; NaN wins (v > m || v != v), as in PyTorch. A select
// on restrict pointers, so that the loop vectorizes.
// Blocks of 16 with a fixed trip count: g++ 12 vectorizes those at -O2 (its "very cheap"
// cost model skips loops that would need a scalar epilogue).
template <class T>
inline void max_into(T* __restrict out, const T* __restrict v, index_t n) noexcept {
  auto one = [](T a, T m) { return ((a > m) | (a != a)) ? a : m; };  // `|`: no data-dependent branch
  index_t c = 0;
  for (; c + 16 <= n; c += 16)
    for (int j = 0; j < 16; ++j) out[c + j] = one(v[c + j], out[c + j]);
  for (; c < n; ++c) out[c] = one(v[c], out[c]);
}
// out = max(a, b, c, d) element-wise (NaN wins as in max_into): blocks of 16, then a tail.
template <class T>
inline void max4_into(T* __restrict out, const T* a, const T* b, const T* c, const T* d, index_t n) noexcept {
  auto one = [](T v, T m) { return ((v > m) | (v != v)) ? v : m; };
  index_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) out[i + j] = one(d[i + j], one(c[i + j], one(b[i + j], a[i + j])));
  for (; i < n; ++i) out[i] = one(d[i], one(c[i], one(b[i], a[i])));
}
// out = v (no call to memmove for a few bytes).
template <class T>
inline void copy_into(T* __restrict out, const T* __restrict v, index_t n) noexcept {
  index_t c = 0;
  for (; c + 16 <= n; c += 16)
    for (int j = 0; j < 16; ++j) out[c + j] = v[c + j];
  for (; c < n; ++c) out[c] = v[c];
}
}  // namespace detail

// Max pooling of float, uint8 or int8 NHWC values. A NaN in a window gives NaN.
template <class T>
tensor<T, 4> pool(const max_pool2d& p, tensor_view<const T, 4> x) {
  const conv_geometry g = detail::pool_geometry(x.shape(), p.window, "nn::max_pool2d");
  QLIB_CHECK(x.stride(3) == 1, errc::invalid_argument, "nn::max_pool2d: channels must be contiguous");
  const auto& o = g.opt;
  const index_t c = g.in_c;
  tensor<T, 4> y(extents<4>{g.batch, g.out_h, g.out_w, c});
  T* out = y.data();
  if (o.kernel_h == 2 && o.kernel_w == 2 && o.stride_h == 2 && o.stride_w == 2 && o.pad_h == 0 && o.pad_w == 0 &&
      x.stride(2) == c) {  // the usual 2x2/2 pooling: two input rows per output row
    for (index_t n = 0; n < g.batch; ++n)
      for (index_t oh = 0; oh < g.out_h; ++oh) {
        const T* r0 = x.data() + n * x.stride(0) + 2 * oh * x.stride(1);
        const T* r1 = r0 + x.stride(1);
        for (index_t ow = 0; ow < g.out_w; ++ow, out += c, r0 += 2 * c, r1 += 2 * c)
          detail::max4_into(out, r0, r0 + c, r1, r1 + c, c);
      }
    return y;
  }
  if (o.pad_h == 0 && o.pad_w == 0 && x.stride(2) == c) {  // every tap inside: no bounds tests
    for (index_t n = 0; n < g.batch; ++n)
      for (index_t oh = 0; oh < g.out_h; ++oh)
        for (index_t ow = 0; ow < g.out_w; ++ow, out += c) {
          const T* corner = x.data() + n * x.stride(0) + oh * o.stride_h * x.stride(1) + ow * o.stride_w * c;
          detail::copy_into(out, corner, c);
          for (index_t kh = 0; kh < o.kernel_h; ++kh)
            for (index_t kw = kh == 0 ? 1 : 0; kw < o.kernel_w; ++kw)
              detail::max_into(out, corner + kh * o.dilation_h * x.stride(1) + kw * o.dilation_w * c, c);
        }
    return y;
  }
  for (index_t n = 0; n < g.batch; ++n)
    for (index_t oh = 0; oh < g.out_h; ++oh)
      for (index_t ow = 0; ow < g.out_w; ++ow, out += c) {
        bool first = true;
        for (index_t kh = 0; kh < o.kernel_h; ++kh) {
          const index_t ih = oh * o.stride_h - o.pad_h + kh * o.dilation_h;
          if (ih < 0 || ih >= g.in_h) continue;
          const T* xrow = x.data() + n * x.stride(0) + ih * x.stride(1);
          for (index_t kw = 0; kw < o.kernel_w; ++kw) {
            const index_t iw = ow * o.stride_w - o.pad_w + kw * o.dilation_w;
            if (iw < 0 || iw >= g.in_w) continue;
            const T* px = xrow + iw * x.stride(2);
            if (first) std::copy_n(px, c, out);
            else detail::max_into(out, px, c);
            first = false;
          }
        }
      }
  return y;
}

// Average pooling of float NHWC values, or of quantized ones with their zero point.
template <class T>
tensor<T, 4> pool(const avg_pool2d& p, tensor_view<const T, 4> x, std::int32_t zero_point = 0) {
  const conv_geometry g = detail::pool_geometry(x.shape(), p.window, "nn::avg_pool2d");
  QLIB_CHECK(x.stride(3) == 1, errc::invalid_argument, "nn::avg_pool2d: channels must be contiguous");
  constexpr bool is_float = std::is_floating_point<T>::value;
  const auto& o = g.opt;
  tensor<T, 4> y(extents<4>{g.batch, g.out_h, g.out_w, g.in_c});
  using acc_t = std::conditional_t<is_float, float, std::int64_t>;
  std::vector<acc_t> acc(static_cast<std::size_t>(g.in_c));
  for (index_t n = 0; n < g.batch; ++n)
    for (index_t oh = 0; oh < g.out_h; ++oh)
      for (index_t ow = 0; ow < g.out_w; ++ow) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        index_t inside = 0, counted = 0;
        for (index_t kh = 0; kh < o.kernel_h; ++kh) {
          const index_t ih = oh * o.stride_h - o.pad_h + kh * o.dilation_h;
          for (index_t kw = 0; kw < o.kernel_w; ++kw) {
            const index_t iw = ow * o.stride_w - o.pad_w + kw * o.dilation_w;
            // PyTorch's divisor counts the padded taps but not those past the padding.
            if (ih >= -o.pad_h && ih < g.in_h + o.pad_h && iw >= -o.pad_w && iw < g.in_w + o.pad_w) ++counted;
            if (ih < 0 || ih >= g.in_h || iw < 0 || iw >= g.in_w) continue;
            ++inside;
            const T* px = &x(n, ih, iw, 0);
            for (index_t c = 0; c < g.in_c; ++c) acc[static_cast<std::size_t>(c)] += acc_t(px[c]) - acc_t(zero_point);
          }
        }
        const index_t count = p.count_include_pad ? counted : inside;
        T* out = &y(n, oh, ow, 0);
        for (index_t c = 0; c < g.in_c; ++c) {
          const acc_t s = acc[static_cast<std::size_t>(c)];
          if constexpr (is_float) {
            out[c] = s / static_cast<float>(count);
          } else {
            const std::int64_t q = detail::div_round_half_even(s, count) + zero_point;
            const std::int64_t lo = std::numeric_limits<T>::min(), hi = std::numeric_limits<T>::max();
            out[c] = static_cast<T>(q < lo ? lo : (q > hi ? hi : q));
          }
        }
      }
  return y;
}

}  // namespace nn
}  // namespace qlib
