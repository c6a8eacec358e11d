// nn::qlinear: an int8 fully connected layer, uint8 in; uint8 out (requantized) or float out (dequantized).
#pragma once

#include <memory>
#include <vector>

#include "qlib/arch/isa.hpp"
#include "qlib/gemm/driver.hpp"
#include "qlib/nn/qconv2d.hpp"
#include "qlib/nn/quantized_weights.hpp"
#include "qlib/prune/sparse_nm.hpp"

namespace qlib {
namespace nn {

// Input [N, 1, 1, in] uint8. With float_output (used for a model's last layer: logits
// need no requantization) the epilogue is bias + dequantize by input_scale * weight
// scale; otherwise it is `output` (requantize, fused ReLU, uint8).
struct qlinear {
  activation_qparams in;
  quantized_weights w;  // [out][in]
  bool float_output = false;
  quantized_output output;          // when !float_output
  std::vector<float> channel_scale;  // weight scale per output channel (float_output)
  // Weights pruned N:M along the inputs (at most 2 of every 4 consecutive input codes of
  // an output non-zero) also in prune's N:M format, built by prepare(); forward() runs
  // them on the sparse kernel where that is faster (prune::sparse_nm_beats_dense: 2:4 at
  // 1.4x dense on AVX-512 VNNI), with the same bits as the dense GEMM. The dense
  // panels stay (the other ISAs use them): such a layer holds its weights twice.
  std::shared_ptr<const prune::packed_nm> nm;

  // After conversion or loading, and after any change of w: the N:M form when the codes
  // allow it (1:4 or 2:4).
  void prepare() {
    nm.reset();
    const tensor_view<const std::int8_t, 2> b = w.group_view(0, out_features());
    const int keep = prune::max_nonzeros_per_group(b, 4);
    if (keep == 1 || keep == 2)
      nm = std::make_shared<const prune::packed_nm>(prune::pack_nm(b, keep, 4, w.group_params(0, out_features())));
  }
  // Whether forward() takes the N:M path on the ISA dispatch picks now.
  bool runs_sparse() const { return nm && prune::sparse_nm_beats_dense(active_isa()); }

  index_t in_features() const noexcept { return w.k(); }
  index_t out_features() const noexcept { return w.out_channels(); }

  void check_input(const extents<4>& s, float scale, std::int32_t zp) const {
    QLIB_CHECK(s[1] == 1 && s[2] == 1 && s[3] == in_features() && s[0] > 0, errc::shape_mismatch,
               "nn::qlinear: expects input [N,1,1," + std::to_string(in_features()) + "], got " +
                   qlib::detail::extents_string(s));
    QLIB_CHECK(scale == in.scale && zp == in.zero_point, errc::invalid_argument,
               "nn::qlinear: input quantized with other parameters than the layer was converted for");
    QLIB_CHECK(w.packed.size() == 1, errc::shape_mismatch, "nn::qlinear: weights are not packed");
    QLIB_CHECK(!nm || (nm->k() == in_features() && nm->n() == out_features()), errc::shape_mismatch,
               "nn::qlinear: the N:M weights do not match the layer; call prepare() after changing w");
    w.validate("nn::qlinear");
    QLIB_CHECK(!float_output || static_cast<index_t>(channel_scale.size()) == out_features(), errc::shape_mismatch,
               "nn::qlinear: " + std::to_string(channel_scale.size()) + " channel scales for " +
                   std::to_string(out_features()) + " outputs");
  }

  qactivation forward(const qactivation& x, const gemm::gemm_options& gopt = {}) const {
    QLIB_CHECK(!float_output, errc::invalid_argument, "nn::qlinear: this layer outputs float; call forward_float");
    check_input(x.values.shape(), x.scale, x.zero_point);
    const index_t n = x.values.shape(0);
    qactivation y{tensor<std::uint8_t, 4>(extents<4>{n, 1, 1, out_features()}), output.out.scale, output.out.zero_point};
    run_gemm(x, output.pipeline(w, 0, out_features()),
             tensor_view<std::uint8_t, 2>(y.values.data(), {n, out_features()}), gopt);
    return y;
  }

  tensor<float, 4> forward_float(const qactivation& x, const gemm::gemm_options& gopt = {}) const {
    QLIB_CHECK(float_output, errc::invalid_argument, "nn::qlinear: this layer outputs uint8; call forward");
    check_input(x.values.shape(), x.scale, x.zero_point);
    const index_t n = x.values.shape(0);
    tensor<float, 4> y(extents<4>{n, 1, 1, out_features()});
    const auto pipe = gemm::make_pipeline(gemm::bias_add{w.bias.data(), out_features()},
                                          gemm::dequantize_per_channel{in.scale, channel_scale.data(), out_features()});
    run_gemm(x, pipe, tensor_view<float, 2>(y.data(), {n, out_features()}), gopt);
    return y;
  }

 private:
  // C = pipeline(x W^T) on the N:M form (runs_sparse()) or the dense panels.
  template <class Pipeline, class Out>
  void run_gemm(const qactivation& x, const Pipeline& pipeline, tensor_view<Out, 2> c,
                const gemm::gemm_options& gopt) const {
    const tensor_view<const std::uint8_t, 2> a(x.values.data(), {x.values.shape(0), in_features()});
    if (runs_sparse()) prune::sparse_gemm(a, {x.zero_point}, *nm, pipeline, c, gopt);
    else gemm::gemm(a, {x.zero_point}, w.packed[0], pipeline, c, gopt);
  }
};

}  // namespace nn
}  // namespace qlib
