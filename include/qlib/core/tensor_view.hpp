// tensor_view<T, Rank>: a non-owning strided view (shape and strides in elements).
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <type_traits>

#include "qlib/core/error.hpp"

namespace qlib {

using index_t = std::ptrdiff_t;
template <std::size_t Rank>
using extents = std::array<index_t, Rank>;

namespace detail {
template <std::size_t Rank>
std::string extents_string(const extents<Rank>& e) {
  std::string s = "[";
  for (std::size_t i = 0; i < Rank; ++i) s += (i ? "," : "") + std::to_string(e[i]);
  return s + "]";
}

template <std::size_t Rank>
extents<Rank> row_major_strides(const extents<Rank>& shape) {
  extents<Rank> strides{};
  index_t s = 1;
  for (std::size_t i = Rank; i-- > 0;) {
    strides[i] = s;
    s *= shape[i] > 0 ? shape[i] : 1;
  }
  return strides;
}

template <std::size_t Rank>
index_t checked_numel(const extents<Rank>& shape) {
  index_t n = 1;
  for (std::size_t i = 0; i < Rank; ++i) {
    QLIB_CHECK(shape[i] >= 0, errc::invalid_argument,
               "negative extent in shape " + extents_string(shape));
    QLIB_CHECK(shape[i] == 0 || n <= PTRDIFF_MAX / shape[i], errc::overflow,
               "element count of shape " + extents_string(shape) + " overflows");
    n *= shape[i];
  }
  return n;
}
}  // namespace detail

// A view of Rank-dimensional data that it does not own. Strides may be any value
// (padding between rows, transposes, slices); const T gives a read-only view.
template <class T, std::size_t Rank>
class tensor_view {
  static_assert(Rank >= 1, "tensor_view needs at least one dimension");

 public:
  using element_type = T;
  using value_type = std::remove_const_t<T>;
  static constexpr std::size_t rank = Rank;

  tensor_view() : data_(nullptr), shape_{}, strides_{} {}

  // A dense row-major view.
  tensor_view(T* data, const extents<Rank>& shape)
      : tensor_view(data, shape, detail::row_major_strides(shape)) {}

  tensor_view(T* data, const extents<Rank>& shape, const extents<Rank>& strides)
      : data_(data), shape_(shape), strides_(strides) {
    index_t n = detail::checked_numel(shape);
    QLIB_CHECK(n == 0 || data != nullptr, errc::invalid_argument,
               "null data pointer for a non-empty view of shape " +
                   detail::extents_string(shape));
  }

  // A mutable view converts to a read-only one.
  template <class U, class = std::enable_if_t<std::is_same<const U, T>::value &&
                                               !std::is_same<U, T>::value>>
  tensor_view(const tensor_view<U, Rank>& other)  // NOLINT(implicit)
      : data_(other.data()), shape_(other.shape()), strides_(other.strides()) {}

  T* data() const noexcept { return data_; }
  const extents<Rank>& shape() const noexcept { return shape_; }
  const extents<Rank>& strides() const noexcept { return strides_; }
  index_t shape(std::size_t axis) const noexcept { return shape_[axis]; }
  index_t stride(std::size_t axis) const noexcept { return strides_[axis]; }

  index_t size() const noexcept {
    index_t n = 1;
    for (index_t e : shape_) n *= e;
    return n;
  }
  bool empty() const noexcept { return size() == 0; }

  // Dense row-major with no gaps.
  bool is_contiguous() const noexcept {
    index_t expect = 1;
    for (std::size_t i = Rank; i-- > 0;) {
      if (shape_[i] != 1 && strides_[i] != expect) return false;
      expect *= shape_[i];
    }
    return true;
  }
  // The last axis has unit stride (rows may be padded): what SIMD paths need.
  bool is_inner_contiguous() const noexcept { return shape_[Rank - 1] <= 1 || strides_[Rank - 1] == 1; }

  template <class... I>
  T& operator()(I... idx) const noexcept {
    static_assert(sizeof...(I) == Rank, "wrong number of indices");
    const index_t ii[] = {static_cast<index_t>(idx)...};
    index_t off = 0;
    for (std::size_t a = 0; a < Rank; ++a) off += ii[a] * strides_[a];
    return data_[off];
  }
  T& operator[](const extents<Rank>& idx) const noexcept {
    index_t off = 0;
    for (std::size_t a = 0; a < Rank; ++a) off += idx[a] * strides_[a];
    return data_[off];
  }
  // Bounds-checked element access.
  T& at(const extents<Rank>& idx) const {
    for (std::size_t a = 0; a < Rank; ++a)
      QLIB_CHECK(idx[a] >= 0 && idx[a] < shape_[a], errc::out_of_range,
                 "index " + detail::extents_string(idx) + " outside shape " +
                     detail::extents_string(shape_));
    return (*this)[idx];
  }

  // Elements [begin, end) along one axis; same rank.
  tensor_view slice(std::size_t axis, index_t begin, index_t end) const {
    check_axis(axis);
    QLIB_CHECK(0 <= begin && begin <= end && end <= shape_[axis], errc::out_of_range,
               "slice [" + std::to_string(begin) + "," + std::to_string(end) +
                   ") outside extent " + std::to_string(shape_[axis]) + " of axis " +
                   std::to_string(axis));
    extents<Rank> s = shape_;
    s[axis] = end - begin;
    return tensor_view(begin < end ? data_ + begin * strides_[axis] : data_, s, strides_,
                       raw_tag{});
  }

  // Fixes one index along an axis, dropping that axis.
  template <std::size_t R = Rank, class = std::enable_if_t<(R > 1)>>
  tensor_view<T, Rank - 1> select(std::size_t axis, index_t i) const {
    check_axis(axis);
    QLIB_CHECK(0 <= i && i < shape_[axis], errc::out_of_range,
               "index " + std::to_string(i) + " outside extent " +
                   std::to_string(shape_[axis]) + " of axis " + std::to_string(axis));
    extents<Rank - 1> s{}, st{};
    for (std::size_t a = 0, b = 0; a < Rank; ++a) {
      if (a == axis) continue;
      s[b] = shape_[a];
      st[b++] = strides_[a];
    }
    return tensor_view<T, Rank - 1>(data_ + i * strides_[axis], s, st);
  }

  // Swaps two axes (no data moves).
  tensor_view transpose(std::size_t a, std::size_t b) const {
    check_axis(a);
    check_axis(b);
    extents<Rank> s = shape_, st = strides_;
    std::swap(s[a], s[b]);
    std::swap(st[a], st[b]);
    return tensor_view(data_, s, st, raw_tag{});
  }

  // A dense view with another shape of the same element count; needs a contiguous view.
  template <std::size_t R2>
  tensor_view<T, R2> reshape(const extents<R2>& shape) const {
    QLIB_CHECK(is_contiguous(), errc::invalid_argument,
               "reshape needs a contiguous view, got strides " +
                   detail::extents_string(strides_));
    QLIB_CHECK(detail::checked_numel(shape) == size(), errc::shape_mismatch,
               "cannot reshape " + detail::extents_string(shape_) + " to " +
                   detail::extents_string(shape));
    return tensor_view<T, R2>(data_, shape);
  }

 private:
  struct raw_tag {};
  tensor_view(T* data, const extents<Rank>& shape, const extents<Rank>& strides, raw_tag)
      : data_(data), shape_(shape), strides_(strides) {}

  void check_axis(std::size_t axis) const {
    QLIB_CHECK(axis < Rank, errc::out_of_range,
               "axis " + std::to_string(axis) + " out of range for rank " +
                   std::to_string(Rank));
  }

  T* data_;
  extents<Rank> shape_;
  extents<Rank> strides_;
};

// Convenience: a 1-D dense view of n elements.
template <class T>
tensor_view<T, 1> make_view(T* data, index_t n) {
  return tensor_view<T, 1>(data, extents<1>{n});
}

// Shapes equal, element for element.
template <class A, class B, std::size_t R>
bool same_shape(const tensor_view<A, R>& a, const tensor_view<B, R>& b) noexcept {
  return a.shape() == b.shape();
}

}  // namespace qlib
