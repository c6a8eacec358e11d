// Implicit-GEMM int8 convolution (AVX-512 VNNI): the GEMM reads the padded NHWC input in place, no im2col copy.
#pragma once

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "qlib/arch/isa.hpp"
#include "qlib/gemm/packed_weights.hpp"
#include "qlib/gemm/pipeline.hpp"
#include "qlib/gemm/validation.hpp"
#include "qlib/kernels/avx512/output_stages.hpp"
#include "qlib/kernels/avx512vnni/conv_panel.hpp"
#include "qlib/nn/conv_geometry.hpp"
#include "qlib/nn/quantized_weights.hpp"

// For a convolution with groups = 1 and unit horizontal dilation, the receptive field of
// an output pixel is kernel_h runs of kernel_w * C contiguous bytes of the (padded) NHWC
// input. The weights are re-packed with each run padded to a multiple of 4 bytes (zero
// weights), and the VNNI kernel (kernels/avx512vnni/conv_panel.hpp) reads the runs in
// place through one pointer per output pixel: no im2col matrix is written or read. The
// int32 sums are the same as im2col + GEMM, so the output is bit-identical to the
// reference; other ISAs use im2col + GEMM.
namespace qlib {
namespace nn {

struct implicit_conv_weights {
  gemm::packed_weights packed;  // K' = kernel_h * run_padded rows
  index_t run = 0;              // kernel_w * in_channels
  index_t run_padded = 0;       // run rounded up to 4
  bool empty() const noexcept { return packed.empty(); }
};

// The re-packed weights, or empty ones when the layer does not qualify (groups > 1,
// horizontal dilation, or weights with non-zero zero points, whose row sums the kernel
// does not form).
inline implicit_conv_weights pack_implicit_conv(const quantized_weights& w, const conv2d_options& o,
                                                index_t in_channels) {
  implicit_conv_weights iw;
  bool zero_points = false;
  for (std::int32_t z : w.params.zero_point) zero_points = zero_points || z != 0;
  if (o.groups != 1 || o.dilation_w != 1 || zero_points || w.out_channels() == 0) return iw;
  iw.run = o.kernel_w * in_channels;
  iw.run_padded = gemm::round_up(iw.run, gemm::k_group);
  QLIB_CHECK(w.k() == o.kernel_h * iw.run, errc::shape_mismatch, "pack_implicit_conv: weights do not match the window");
  const index_t oc = w.out_channels(), kp = o.kernel_h * iw.run_padded;
  tensor<std::int8_t, 2> b(extents<2>{kp, oc});  // zeros in the padding of each run
  for (index_t c = 0; c < oc; ++c)
    for (index_t kh = 0; kh < o.kernel_h; ++kh)
      for (index_t j = 0; j < iw.run; ++j) b(kh * iw.run_padded + j, c) = w.values(c, kh * iw.run + j);
  quant_params p = w.params;
  if (p.gran.type == granularity::kind::per_channel) p.gran = granularity::per_channel(1);
  iw.packed = gemm::pack(b.cview(), p);
  return iw;
}

// True if forward() may take the implicit path: weights packed for it, and the active ISA
// (run-time dispatch, capped by set_isa_limit / QLIB_ISA) is AVX-512 VNNI.
inline bool implicit_conv_available(const implicit_conv_weights& iw) {
#if QLIB_HAS_X86_KERNELS
  return !iw.empty() && active_isa() == isa::avx512_vnni;
#else
  (void)iw;
  return false;
#endif
}

namespace detail {
// True if the padded copy of the input that implicit_conv_forward builds, (in_h + 2 pad_h)
// x (in_w + 2 pad_w) x C bytes per image, is at most 4 times the input plus the im2col
// matrix it saves. Padding of whole windows with a large stride (accepted, as PyTorch
// does) could otherwise cost far more than the layer: pad 4096 and stride 4096 give a
// 3x3 output from an 8193 x 8193 x C buffer on a 1x1 input. Such layers take im2col +
// GEMM instead.
inline bool implicit_conv_buffer_bounded(const conv_geometry& g) {
  const index_t padded = (g.in_h + 2 * g.opt.pad_h) * (g.in_w + 2 * g.opt.pad_w) * g.in_c;
  const index_t saved = g.in_h * g.in_w * g.in_c + g.out_h * g.out_w * g.patch_size();
  return padded <= 4 * saved;
}

// out[pixel] = pipeline(sum over the receptive field), for every output pixel; x has
// the zero point `zx`. The caller checked the geometry and implicit_conv_available().
template <class Pipeline>
void implicit_conv_forward(const implicit_conv_weights& iw, const conv_geometry& g, tensor_view<const std::uint8_t, 4> x,
                           std::int32_t zx, const Pipeline& pipeline, std::uint8_t* out) {
#if QLIB_HAS_X86_KERNELS
  using kernel = kernels::avx512vnni_conv_kernel;
  const auto& o = g.opt;
  // What gemm() checks at its boundary: the stages, and that no int32 can overflow
  // (the largest |x - zx| times the largest sum_k |w| of a column).
  const std::int64_t bound = gemm::max_abs_centered_activation<std::uint8_t>(zx) * iw.packed.max_abs_column_sum();
  QLIB_CHECK(bound <= std::numeric_limits<std::int32_t>::max(), errc::overflow,
             "nn::qconv2d: int32 accumulators could overflow (K = " + std::to_string(iw.packed.k()) + ")");
  gemm::validate_pipeline(pipeline, g.output_pixels(), g.out_c);
  gemm::check_pipeline_int32_range(pipeline, bound);
  // The input with its padding made real (zero point) and slack after the end for the
  // kernel's reads of up to 3 bytes past a run. Any padding fits: the output size keeps
  // oh * stride_h + dilation_h * (kernel_h - 1) < hp and ow * stride_w + kernel_w <= wp, so
  // every run ends inside its image (its 3 extra bytes at most reach the next image or
  // the slack). Windows entirely in the padding read only zx, which the -zx column-sum
  // correction cancels: their sum is 0 and the pipeline gives the bias.
  const index_t hp = g.in_h + 2 * o.pad_h, wp = g.in_w + 2 * o.pad_w, c = g.in_c;
  const index_t image = hp * wp * c, slack = 64;
  std::vector<std::uint8_t> padded(static_cast<std::size_t>(g.batch * image + slack), static_cast<std::uint8_t>(zx));
  for (index_t n = 0; n < g.batch; ++n)
    for (index_t h = 0; h < g.in_h; ++h) {
      const std::uint8_t* src = &x(n, h, 0, 0);
      std::uint8_t* dst = padded.data() + n * image + ((h + o.pad_h) * wp + o.pad_w) * c;
      if (x.stride(2) == c) std::memcpy(dst, src, static_cast<std::size_t>(g.in_w * c));
      else
        for (index_t w = 0; w < g.in_w; ++w) std::memcpy(dst + w * c, &x(n, h, w, 0), static_cast<std::size_t>(c));
    }
  const index_t run_stride = o.dilation_h * wp * c, groups = iw.run_padded / gemm::k_group;
  const index_t pixels = g.output_pixels(), n_out = g.out_c;
  alignas(64) std::int32_t init[gemm::panel_width];
  alignas(64) std::int32_t tile[12 * gemm::panel_width];
  const std::uint8_t* rows[12];
  for (index_t p = 0; p < iw.packed.panel_count(); ++p) {
    const index_t col0 = p * gemm::panel_width, cols = std::min(gemm::panel_width, n_out - col0);
    for (index_t j = 0; j < gemm::panel_width; ++j)  // zero-point correction: -zx * column sum
      init[j] = j < cols ? gemm::detail::wrapping_mul(-zx, iw.packed.column_sums()[static_cast<std::size_t>(col0 + j)]) : 0;
    const index_t mr = kernel::tile_rows(cols);
    for (index_t r = 0; r < pixels; r += mr) {
      // A last partial tile runs at full height, ending at the last pixel (it recomputes
      // rows of the tile before, whose sums are the same); only its new rows are stored.
      const index_t r0 = std::max<index_t>(0, std::min(r, pixels - mr));
      const index_t live = std::min(mr, pixels - r0);
      // Row pointers: one division for the tile, then counters (divisions per pixel
      // cost more than the whole kernel for the small K of a first layer).
      index_t n = r0 / (g.out_h * g.out_w), oh = r0 / g.out_w % g.out_h, ow = r0 % g.out_w;
      for (index_t i = 0; i < mr; ++i) {
        rows[i] = padded.data() + n * image + (oh * o.stride_h * wp + ow * o.stride_w) * c;
        if (i + 1 >= live) continue;  // short outputs (< mr pixels) repeat the last pixel
        if (++ow == g.out_w) {
          ow = 0;
          if (++oh == g.out_h) {
            oh = 0;
            ++n;
          }
        }
      }
      if (live == mr) {  // a whole tile: the pipeline runs in registers, C is written directly
        kernel::run_fused(cols, rows, o.kernel_h, groups, run_stride, iw.packed.panel(p), init, pipeline,
                          out + r0 * n_out + col0, n_out, r0, col0);
        continue;
      }
      kernel::run(cols, rows, o.kernel_h, groups, run_stride, iw.packed.panel(p), init, tile);
      const index_t skip = r - r0;
      kernels::store_tile(arch::avx512{}, pipeline, tile + skip * gemm::panel_width, gemm::panel_width, live - skip,
                          cols, out + r * n_out + col0, n_out, r, col0);
    }
  }
#else
  (void)iw, (void)g, (void)x, (void)zx, (void)pipeline, (void)out;
  QLIB_CHECK(false, errc::unsupported, "implicit convolution needs the x86 kernels");
#endif
}
}  // namespace detail

}  // namespace nn
}  // namespace qlib
