// Boundary checks shared by the reference and the fast quantization entry points.
#pragma once

#include <string>

#include "qlib/core/tensor_view.hpp"

namespace qlib {
namespace detail {

// An elementwise operation needs equal, non-empty shapes.
template <class A, class B, std::size_t R>
void check_elementwise(const tensor_view<A, R>& in, const tensor_view<B, R>& out, const char* op) {
  QLIB_CHECK(same_shape(in, out), errc::shape_mismatch,
             std::string(op) + ": input shape " + extents_string(in.shape()) + " differs from output shape " +
                 extents_string(out.shape()));
  QLIB_CHECK(!in.empty(), errc::empty_tensor, std::string(op) + ": empty tensor " + extents_string(in.shape()));
}

}  // namespace detail
}  // namespace qlib
