// prune::tensor_ref: a read-only float view of any rank, so one selection can span tensors of different ranks.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "qlib/core/tensor.hpp"

namespace qlib {
namespace prune {

// Shape and strides in elements, like tensor_view, but with the rank a run-time value:
// global pruning compares a conv's OHWI weights with a linear layer's [out, in].
struct tensor_ref {
  const float* data = nullptr;
  std::vector<index_t> shape, strides;

  tensor_ref() = default;
  template <std::size_t R>
  tensor_ref(tensor_view<const float, R> v)  // NOLINT(implicit): any view is a tensor_ref
      : data(v.data()), shape(v.shape().begin(), v.shape().end()), strides(v.strides().begin(), v.strides().end()) {}
  template <std::size_t R>
  tensor_ref(tensor_view<float, R> v) : tensor_ref(tensor_view<const float, R>(v)) {}  // NOLINT
  template <std::size_t R>
  tensor_ref(const tensor<float, R>& t) : tensor_ref(t.cview()) {}  // NOLINT

  std::size_t rank() const noexcept { return shape.size(); }
  index_t size() const noexcept {
    index_t n = 1;
    for (index_t e : shape) n *= e;
    return n;
  }

  // Calls f(flat, value) for every element in row-major order (flat = row-major index).
  template <class F>
  void for_each(F&& f) const {
    const index_t n = size();
    if (n == 0) return;
    const std::size_t r = rank();
    const index_t len = shape[r - 1], st = strides[r - 1];
    std::vector<index_t> idx(r, 0);
    index_t off = 0;  // offset of idx with idx[r-1] == 0
    for (index_t flat = 0; flat < n; flat += len) {
      const float* p = data + off;
      for (index_t i = 0; i < len; ++i) f(flat + i, p[i * st]);
      for (std::size_t a = r - 1; a-- > 0;) {  // odometer over the outer axes
        off += strides[a];
        if (++idx[a] < shape[a]) break;
        off -= strides[a] * shape[a];
        idx[a] = 0;
      }
    }
  }
};

namespace detail {
inline std::string shape_string(const std::vector<index_t>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

// A Python-style axis (negative counts from the end) as an index; refuses out of range.
inline std::size_t resolve_axis(std::ptrdiff_t axis, std::size_t rank, const char* who) {
  const std::ptrdiff_t r = static_cast<std::ptrdiff_t>(rank);
  QLIB_CHECK(axis >= -r && axis < r, errc::out_of_range,
             std::string(who) + ": axis " + std::to_string(axis) + " out of range for rank " + std::to_string(rank));
  return static_cast<std::size_t>(axis < 0 ? axis + r : axis);
}
}  // namespace detail

}  // namespace prune
}  // namespace qlib
