// Tensor plumbing shared by the training layers: dense views and copies, reusable outputs, gradient shape checks.
#pragma once

#include <cstring>
#include <string>

#include "qlib/core/tensor.hpp"

namespace qlib {
namespace train {
namespace detail {

// A view as dense data: the view itself when contiguous, else a dense copy.
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

// Makes t a tensor of `shape`, reusing its storage when the shape already matches (the
// training buffers keep their shapes from step to step: no allocation, no page faults).
// The contents are unspecified afterwards; callers overwrite or clear them.
template <std::size_t Rank>
void ensure_shape(tensor<float, Rank>& t, const extents<Rank>& shape) {
  if (t.shape() != shape) t = tensor<float, Rank>(shape);
}

// Copies v into dst (reshaped to v's shape): one memcpy when v is contiguous.
inline void copy_dense(tensor_view<const float, 4> v, tensor<float, 4>& dst) {
  if (!v.is_contiguous()) {
    dst = tensor<float, 4>(v);
    return;
  }
  ensure_shape(dst, v.shape());
  if (dst.size() > 0) std::memcpy(dst.data(), v.data(), sizeof(float) * static_cast<std::size_t>(dst.size()));
}

inline void check_output_grad(const extents<4>& dy, const extents<4>& expected, const char* who) {
  QLIB_CHECK(dy == expected, errc::shape_mismatch,
             std::string(who) + ": output gradient " + qlib::detail::extents_string(dy) + ", the layer's output is " +
                 qlib::detail::extents_string(expected));
}
inline void check_param_grad(tensor_view<float, 1> g, index_t expected, const char* who, const char* what) {
  QLIB_CHECK(g.shape(0) == expected, errc::shape_mismatch,
             std::string(who) + ": " + what + " gradient has " + std::to_string(g.shape(0)) + " elements, expected " +
                 std::to_string(expected));
  QLIB_CHECK(g.shape(0) <= 1 || g.stride(0) == 1, errc::invalid_argument,
             std::string(who) + ": " + what + " gradient must be contiguous");
}

}  // namespace detail
}  // namespace train
}  // namespace qlib
