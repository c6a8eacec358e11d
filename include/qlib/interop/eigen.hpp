// Eigen interop: Eigen::Map over qlib views and qlib views over Eigen objects (the only header including Eigen).
#pragma once

#include <Eigen/Core>

#include <type_traits>

#include "qlib/core/tensor_view.hpp"

namespace qlib {

// An Eigen::Map of a rank-2 view, any strides (row stride = outer, column stride = inner).
template <class T>
auto to_eigen(const tensor_view<T, 2>& v) {
  using scalar = std::remove_const_t<T>;
  using matrix = Eigen::Matrix<scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using map = Eigen::Map<std::conditional_t<std::is_const<T>::value, const matrix, matrix>, Eigen::Unaligned,
                         Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;
  return map(v.data(), v.shape(0), v.shape(1), Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(v.stride(0), v.stride(1)));
}

// An Eigen::Map of a rank-1 view as a column vector.
template <class T>
auto to_eigen(const tensor_view<T, 1>& v) {
  using scalar = std::remove_const_t<T>;
  using vector = Eigen::Matrix<scalar, Eigen::Dynamic, 1>;
  using map = Eigen::Map<std::conditional_t<std::is_const<T>::value, const vector, vector>, Eigen::Unaligned,
                         Eigen::InnerStride<Eigen::Dynamic>>;
  return map(v.data(), v.shape(0), Eigen::InnerStride<Eigen::Dynamic>(v.stride(0)));
}

// A rank-2 view of any Eigen object with direct storage access (Matrix, Map, Block of
// those...), in either storage order: element (i, j) of the view is m(i, j).
template <class Derived>
tensor_view<typename Derived::Scalar, 2> as_view(Eigen::PlainObjectBase<Derived>& m) {
  return tensor_view<typename Derived::Scalar, 2>(m.data(), {m.rows(), m.cols()}, {m.rowStride(), m.colStride()});
}
template <class Derived>
tensor_view<const typename Derived::Scalar, 2> as_view(const Eigen::PlainObjectBase<Derived>& m) {
  return tensor_view<const typename Derived::Scalar, 2>(m.data(), {m.rows(), m.cols()},
                                                        {m.rowStride(), m.colStride()});
}
template <class Derived, int Access>
auto as_view(const Eigen::MapBase<Derived, Access>& m) {
  using scalar = std::remove_pointer_t<decltype(m.data())>;
  return tensor_view<scalar, 2>(m.data(), {m.rows(), m.cols()}, {m.rowStride(), m.colStride()});
}

}  // namespace qlib
