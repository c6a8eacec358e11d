// Tests for tensor_view and tensor: shapes, strides, slicing, contiguity, errors.
#include "qlib/core/tensor.hpp"
#include "test_util.hpp"

#include <numeric>
#include <vector>

using namespace qlib;

TEST_CASE("dense view indexes row-major", "[tensor_view]") {
  std::vector<int> v(24);
  std::iota(v.begin(), v.end(), 0);
  tensor_view<int, 3> t(v.data(), {2, 3, 4});
  CHECK(t.size() == 24);
  CHECK(t.strides() == extents<3>{12, 4, 1});
  CHECK(t(1, 2, 3) == 23);
  CHECK(t(1, 0, 2) == 14);
  CHECK(t.is_contiguous());
  CHECK(t.is_inner_contiguous());
  tensor_view<const int, 3> c = t;  // mutable converts to const
  CHECK(c(0, 1, 1) == 5);
}

TEST_CASE("slice, select and transpose share the data", "[tensor_view]") {
  std::vector<int> v(24);
  std::iota(v.begin(), v.end(), 0);
  tensor_view<int, 3> t(v.data(), {2, 3, 4});
  auto s = t.slice(2, 1, 3);  // [2,3,2]
  CHECK(s.shape() == extents<3>{2, 3, 2});
  CHECK(s(1, 2, 0) == 21);
  CHECK_FALSE(s.is_contiguous());
  CHECK(s.is_inner_contiguous());
  auto row = t.select(0, 1);  // [3,4]
  CHECK(row(0, 0) == 12);
  auto tr = t.transpose(1, 2);  // [2,4,3]
  CHECK(tr(0, 3, 1) == t(0, 1, 3));
  CHECK_FALSE(tr.is_inner_contiguous());
  auto r = t.reshape(extents<2>{6, 4});
  CHECK(r(5, 3) == 23);
  tr(1, 1, 1) = -7;
  CHECK(v[12 + 4 + 1] == -7);
  auto empty = t.slice(1, 2, 2);
  CHECK(empty.empty());
}

TEST_CASE("bad view arguments are refused", "[tensor_view][errors]") {
  std::vector<int> v(12);
  tensor_view<int, 2> t(v.data(), {3, 4});
  QLIB_REQUIRE_ERROR(t.slice(0, 2, 4), errc::out_of_range);
  QLIB_REQUIRE_ERROR(t.slice(2, 0, 1), errc::out_of_range);
  QLIB_REQUIRE_ERROR(t.select(1, 4), errc::out_of_range);
  QLIB_REQUIRE_ERROR(t.at({3, 0}), errc::out_of_range);
  QLIB_REQUIRE_ERROR(t.transpose(0, 1).reshape(extents<1>{12}), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(t.reshape(extents<1>{11}), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR((tensor_view<int, 1>(nullptr, {3})), errc::invalid_argument);
  QLIB_REQUIRE_ERROR((tensor_view<int, 2>(v.data(), {-1, 3})), errc::invalid_argument);
  QLIB_REQUIRE_ERROR((tensor<int, 2>({PTRDIFF_MAX / 2, 4})), errc::overflow);
}

TEST_CASE("tensor owns aligned zeroed storage and copies deeply", "[tensor]") {
  tensor<float, 2> a({5, 7});
  CHECK(reinterpret_cast<std::uintptr_t>(a.data()) % tensor_alignment == 0);
  for (float x : a) CHECK(x == 0.0f);
  a(4, 6) = 3.5f;
  tensor<float, 2> b = a;
  b(4, 6) = 1.0f;
  CHECK(a(4, 6) == 3.5f);
  tensor<float, 2> m = std::move(b);
  CHECK(m(4, 6) == 1.0f);
  CHECK(b.empty());
  // A dense copy of a strided view.
  tensor<float, 2> t(a.view().transpose(0, 1));
  CHECK(t.shape() == extents<2>{7, 5});
  CHECK(t(6, 4) == 3.5f);
}
