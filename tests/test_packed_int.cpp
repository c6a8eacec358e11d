// Tests for packed low-bit integers: the byte layout contract, round trips, views, errors; b-bit code rows.
#include "qlib/core/packed_bits.hpp"
#include "qlib/core/packed_int.hpp"
#include "test_util.hpp"

#include <cstdint>
#include <string>
#include <vector>

using namespace qlib;

namespace {
using s4 = packed_format<4, true>;
using u4 = packed_format<4, false>;
using s2 = packed_format<2, true>;
using u2 = packed_format<2, false>;

template <std::size_t R, class F>
void for_each_index(const extents<R>& shape, F&& f) {
  for (index_t e : shape)
    if (e == 0) return;
  extents<R> idx{};
  for (;;) {
    f(static_cast<const extents<R>&>(idx));
    std::size_t a = R;
    for (;;) {
      if (a == 0) return;
      --a;
      if (++idx[a] < shape[a]) break;
      idx[a] = 0;
    }
  }
}

// The layout contract written out literally, independent of the header's helpers:
// element j of a row is in byte j*Bits/8 of the row, at bit (j*Bits)%8.
template <class Fmt, std::size_t R>
std::vector<std::uint8_t> reference_bytes(const tensor_view<const typename Fmt::value_type, R>& src) {
  const extents<R>& shape = src.shape();
  const index_t row_bytes = (shape[R - 1] * Fmt::bits + 7) / 8;
  index_t rows = 1;
  for (std::size_t a = 0; a + 1 < R; ++a) rows *= shape[a];
  std::vector<std::uint8_t> out(static_cast<std::size_t>(rows * row_bytes), 0);
  for_each_index(shape, [&](const extents<R>& idx) {
    index_t row = 0;
    for (std::size_t a = 0; a + 1 < R; ++a) row = row * shape[a] + idx[a];
    const index_t bit = idx[R - 1] * Fmt::bits;
    const unsigned field = static_cast<unsigned>(src[idx]) & ((1u << Fmt::bits) - 1u);
    out[static_cast<std::size_t>(row * row_bytes + bit / 8)] |=
        static_cast<std::uint8_t>(field << (bit % 8));
  });
  return out;
}

template <class Fmt>
typename Fmt::value_type rand_value() {
  return static_cast<typename Fmt::value_type>(qlib_test::rand_int(Fmt::min, Fmt::max));
}

template <std::size_t R>
extents<R> random_shape(int max_extent) {
  extents<R> s{};
  for (auto& e : s) e = qlib_test::rand_int(0, max_extent);
  // Mostly non-empty, with both parities of the row length.
  if (qlib_test::rand_int(0, 7) != 0)
    for (auto& e : s) e = e == 0 ? 1 : e;
  return s;
}

template <std::size_t R>
extents<R> add(extents<R> a, index_t k) {
  for (auto& e : a) e += k;
  return a;
}

// Builds a source view of `shape` in one of several memory layouts, filled with random
// in-range values. The backing vector is `buf`.
enum class src_layout { dense, padded_strided, reversed_rows, transposed };

template <class Fmt, std::size_t R>
tensor_view<typename Fmt::value_type, R> make_source(std::vector<typename Fmt::value_type>& buf,
                                                     const extents<R>& shape, src_layout layout) {
  using V = typename Fmt::value_type;
  index_t n = 1;
  for (index_t e : shape) n *= e + 3;
  buf.assign(static_cast<std::size_t>(2 * n + 8), V{0});
  tensor_view<V, R> v;
  switch (layout) {
    case src_layout::dense:
      v = tensor_view<V, R>(buf.data(), shape);
      break;
    case src_layout::padded_strided: {
      // Every axis strided with gaps: the last axis has stride 2.
      extents<R> st{};
      index_t s = 2;
      for (std::size_t a = R; a-- > 0;) {
        st[a] = s;
        s *= shape[a] + 3;
      }
      v = tensor_view<V, R>(buf.data(), shape, st);
      break;
    }
    case src_layout::reversed_rows: {
      // Last axis with stride -1 (start at the end of each row).
      extents<R> st{};
      index_t s = 1;
      for (std::size_t a = R; a-- > 0;) {
        st[a] = a == R - 1 ? -1 : s;
        s *= shape[a] + 1;
      }
      v = tensor_view<V, R>(buf.data() + shape[R - 1], shape, st);
      break;
    }
    case src_layout::transposed: {
      // A dense buffer of the reversed shape, viewed with reversed axes.
      extents<R> rs{}, st{};
      for (std::size_t a = 0; a < R; ++a) rs[a] = shape[R - 1 - a];
      const extents<R> dense = detail::row_major_strides(rs);
      for (std::size_t a = 0; a < R; ++a) st[a] = dense[R - 1 - a];
      v = tensor_view<V, R>(buf.data(), shape, st);
      break;
    }
  }
  for_each_index(shape, [&](const extents<R>& idx) { v[idx] = rand_value<Fmt>(); });
  return v;
}

template <class Fmt, std::size_t R>
void round_trip_case(const extents<R>& shape, src_layout layout) {
  using V = typename Fmt::value_type;
  constexpr int B = Fmt::bits;
  constexpr bool S = Fmt::is_signed;
  INFO("format " << Fmt::name() << " shape " << detail::extents_string(shape) << " layout "
                 << static_cast<int>(layout));
  std::vector<V> buf;
  tensor_view<const V, R> src = make_source<Fmt>(buf, shape, layout);
  const std::vector<std::uint8_t> ref = reference_bytes<Fmt>(src);

  // 1. Into an owning tensor: bytes follow the contract exactly (padding zero).
  packed_tensor<B, S, R> p(shape);
  pack(src, p);
  REQUIRE(p.byte_size() == packed_bytes<B>(shape));
  REQUIRE(static_cast<std::size_t>(p.byte_size()) == ref.size());
  CHECK(std::vector<std::uint8_t>(p.data(), p.data() + p.byte_size()) == ref);
  CHECK(p.view().is_contiguous());
  for_each_index(shape, [&](const extents<R>& idx) {
    REQUIRE(static_cast<int>(p.view()[idx]) == static_cast<int>(src[idx]));
  });

  // 2. Into an external buffer with padded rows: bytes past each row stay untouched.
  const index_t rb = packed_row_bytes<B>(shape[R - 1]);
  const index_t gap = 3;
  index_t rows = 1;
  for (std::size_t a = 0; a + 1 < R; ++a) rows *= shape[a];
  std::vector<std::uint8_t> ext(static_cast<std::size_t>(rows * (rb + gap)) + 1, 0xA5);
  typename packed_view<B, S, R>::outer_extents st{};
  index_t s = rb + gap;
  for (std::size_t a = R - 1; a-- > 0;) {
    st[a] = s;
    s *= shape[a];
  }
  packed_view<B, S, R> pv(ext.data(), shape, st);
  pack(src, pv);
  if (R > 1 && rows > 1 && shape[R - 1] > 0) CHECK_FALSE(pv.is_contiguous());
  for (index_t r = 0; r < rows; ++r) {
    for (index_t b = 0; b < rb; ++b)
      REQUIRE(ext[static_cast<std::size_t>(r * (rb + gap) + b)] == ref[static_cast<std::size_t>(r * rb + b)]);
    for (index_t b = rb; b < rb + gap; ++b) REQUIRE(ext[static_cast<std::size_t>(r * (rb + gap) + b)] == 0xA5);
  }
  CHECK(ext.back() == 0xA5);

  // 3. Unpack both into a dense tensor and into a strided destination with sentinels.
  tensor<V, R> back = unpack(p);
  tensor<V, R> back2 = unpack(pv);
  packed_cview<B, S, R> cv = pv;
  extents<R> dst_st{};
  index_t ds = 2;
  for (std::size_t a = R; a-- > 0;) {
    dst_st[a] = ds;
    ds *= shape[a] + 1;
  }
  std::vector<V> dbuf(static_cast<std::size_t>(ds + 2), V{3});
  tensor_view<V, R> strided_dst(dbuf.data(), shape, dst_st);
  unpack(cv, strided_dst);
  index_t visited = 0;
  for_each_index(shape, [&](const extents<R>& idx) {
    ++visited;
    REQUIRE(static_cast<int>(back.view()[idx]) == static_cast<int>(src[idx]));
    REQUIRE(static_cast<int>(back2.view()[idx]) == static_cast<int>(src[idx]));
    REQUIRE(static_cast<int>(strided_dst[idx]) == static_cast<int>(src[idx]));
  });
  CHECK(visited == p.size());
  // Destination gaps (odd offsets) untouched.
  for (std::size_t i = 1; i < dbuf.size(); i += 2) REQUIRE(static_cast<int>(dbuf[i]) == 3);

  // 4. The packing constructor agrees.
  packed_tensor<B, S, R> p2(src);
  CHECK(std::vector<std::uint8_t>(p2.data(), p2.data() + p2.byte_size()) == ref);
}

template <class Fmt, std::size_t R>
void random_round_trips(int cases) {
  for (int c = 0; c < cases; ++c) {
    const extents<R> shape = random_shape<R>(R == 1 ? 70 : R == 2 ? 11 : 6);
    for (src_layout l : {src_layout::dense, src_layout::padded_strided, src_layout::reversed_rows,
                         src_layout::transposed})
      round_trip_case<Fmt, R>(shape, l);
  }
}

template <class T>
std::vector<int> as_ints(const std::vector<T>& v) {
  return std::vector<int>(v.begin(), v.end());
}

#if QLIB_EXCEPTIONS
template <class F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const qlib::error& e) {
    return e.what();
  }
  return "";
}
#endif
}  // namespace

TEST_CASE("packed formats: ranges, encode/decode, byte counts", "[packed]") {
  STATIC_REQUIRE(s4::min == -8);
  STATIC_REQUIRE(s4::max == 7);
  STATIC_REQUIRE(u4::min == 0);
  STATIC_REQUIRE(u4::max == 15);
  STATIC_REQUIRE(s2::min == -2);
  STATIC_REQUIRE(s2::max == 1);
  STATIC_REQUIRE(u2::min == 0);
  STATIC_REQUIRE(u2::max == 3);
  STATIC_REQUIRE(s4::per_byte == 2);
  STATIC_REQUIRE(s2::per_byte == 4);
  STATIC_REQUIRE(s4::decode(0x8) == -8);
  STATIC_REQUIRE(s4::decode(0xF) == -1);
  STATIC_REQUIRE(s4::encode(-8) == 0x8);
  STATIC_REQUIRE(s4::insert(0x21, 1, -1) == 0xF1);
  for (int v = s4::min; v <= s4::max; ++v) {
    CHECK(s4::decode(s4::encode(static_cast<std::int8_t>(v))) == v);
    CHECK(s4::encode(static_cast<std::int8_t>(v)) == (static_cast<unsigned>(v) & 0xFu));
  }
  for (int v = 0; v <= 15; ++v) CHECK(u4::decode(u4::encode(static_cast<std::uint8_t>(v))) == v);
  for (int v = -2; v <= 1; ++v) CHECK(s2::decode(s2::encode(static_cast<std::int8_t>(v))) == v);
  for (unsigned f = 0; f < 16; ++f) CHECK(s4::decode(f) == (f < 8 ? static_cast<int>(f) : static_cast<int>(f) - 16));

  STATIC_REQUIRE(packed_row_bytes<4>(0) == 0);
  STATIC_REQUIRE(packed_row_bytes<4>(1) == 1);
  STATIC_REQUIRE(packed_row_bytes<4>(2) == 1);
  STATIC_REQUIRE(packed_row_bytes<4>(7) == 4);
  STATIC_REQUIRE(packed_row_bytes<2>(5) == 2);
  STATIC_REQUIRE(packed_row_bytes<2>(8) == 2);
  STATIC_REQUIRE(packed_row_bytes<4>(PTRDIFF_MAX) == PTRDIFF_MAX / 2 + 1);
  CHECK(packed_bytes<4>(extents<1>{4}) == 2);
  CHECK(packed_bytes<4>(extents<2>{3, 5}) == 9);  // 3 rows of 3 bytes: padding per row
  CHECK(packed_bytes<4>(extents<3>{2, 3, 1}) == 6);
  CHECK(packed_bytes<2>(extents<2>{2, 5}) == 4);
  CHECK(packed_bytes<4>(extents<2>{0, 7}) == 0);
  CHECK(packed_bytes<4>(extents<2>{3, 0}) == 0);
  QLIB_REQUIRE_ERROR(packed_bytes<4>(extents<2>{-1, 4}), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(packed_bytes<4>(extents<2>{PTRDIFF_MAX / 2, 4}), errc::overflow);
}

TEST_CASE("exact byte layout on hand-made examples", "[packed][layout]") {
  SECTION("uint4: low nibble first, odd row padded with zero") {
    const std::uint8_t v[] = {1, 2, 3};
    u4_tensor<1> p(tensor_view<const std::uint8_t, 1>(v, {3}));
    REQUIRE(p.byte_size() == 2);
    CHECK(p.data()[0] == 0x21);
    CHECK(p.data()[1] == 0x03);
  }
  SECTION("uint4: extremes") {
    const std::uint8_t v[] = {15, 0, 0, 15};
    u4_tensor<1> p(tensor_view<const std::uint8_t, 1>(v, {4}));
    CHECK(p.data()[0] == 0x0F);
    CHECK(p.data()[1] == 0xF0);
  }
  SECTION("int4: two's complement nibbles, -8 and 7") {
    const std::int8_t v[] = {-8, 7, -1, 0, 1};
    s4_tensor<1> p(tensor_view<const std::int8_t, 1>(v, {5}));
    REQUIRE(p.byte_size() == 3);
    CHECK(p.data()[0] == 0x78);
    CHECK(p.data()[1] == 0x0F);
    CHECK(p.data()[2] == 0x01);
    const tensor<std::int8_t, 1> back = unpack(p);
    CHECK(as_ints(std::vector<std::int8_t>(back.begin(), back.end())) ==
          std::vector<int>{-8, 7, -1, 0, 1});
  }
  SECTION("int4 2-D: each row starts on a byte boundary") {
    const std::int8_t v[] = {1, -2, 3,  //
                             -4, 5, -6};
    s4_tensor<2> p(tensor_view<const std::int8_t, 2>(v, {2, 3}));
    REQUIRE(p.byte_size() == 4);
    CHECK(p.row_bytes() == 2);
    CHECK(p.view().row_stride() == 2);
    const std::vector<std::uint8_t> expect = {0xE1, 0x03, 0x5C, 0x0A};
    CHECK(std::vector<std::uint8_t>(p.data(), p.data() + 4) == expect);
    CHECK(p.row(1) == p.data() + 2);
    CHECK(p(1, 2) == -6);
  }
  SECTION("uint2: four per byte, lowest bits first") {
    const std::uint8_t v[] = {0, 1, 2, 3, 3};
    u2_tensor<1> p(tensor_view<const std::uint8_t, 1>(v, {5}));
    REQUIRE(p.byte_size() == 2);
    CHECK(p.data()[0] == 0xE4);
    CHECK(p.data()[1] == 0x03);
  }
  SECTION("int2: two's complement fields") {
    const std::int8_t v[] = {-2, -1, 0, 1, -2, 1};
    s2_tensor<2> p(tensor_view<const std::int8_t, 2>(v, {2, 3}));
    REQUIRE(p.byte_size() == 2);
    CHECK(p.data()[0] == 0x0E);  // -2 -> 10b, -1 -> 11b, 0 -> 00b
    CHECK(p.data()[1] == 0x19);  // 1 -> 01b, -2 -> 10b, 1 -> 01b
    CHECK(p(0, 1) == -1);
    CHECK(p(1, 1) == -2);
  }
  SECTION("views read bytes written by hand") {
    // Two rows of 3 int4 values, row stride 4 bytes (rows padded for alignment).
    std::uint8_t raw[8] = {0x78, 0x0F, 0xEE, 0xEE, 0x10, 0x02, 0xEE, 0xEE};
    s4_cview<2> v(raw, {2, 3}, {4});
    CHECK(v(0, 0) == -8);
    CHECK(v(0, 1) == 7);
    CHECK(v(0, 2) == -1);
    CHECK(v(1, 0) == 0);
    CHECK(v(1, 1) == 1);
    CHECK(v(1, 2) == 2);
    CHECK(v.row(1) == raw + 4);
    tensor<std::int8_t, 2> out = unpack(v);
    CHECK(as_ints(std::vector<std::int8_t>(out.begin(), out.end())) ==
          std::vector<int>{-8, 7, -1, 0, 1, 2});
  }
}

TEST_CASE("all values of each format survive a round trip", "[packed]") {
  std::vector<std::int8_t> sv;
  for (int r = 0; r < 3; ++r)
    for (int v = -8; v <= 7; ++v) sv.push_back(static_cast<std::int8_t>(v));
  sv.push_back(-8);  // odd length
  s4_tensor<1> p(tensor_view<const std::int8_t, 1>(sv.data(), {static_cast<index_t>(sv.size())}));
  tensor<std::int8_t, 1> b = unpack(p);
  CHECK(as_ints(std::vector<std::int8_t>(b.begin(), b.end())) == as_ints(sv));
  CHECK((p.data()[p.byte_size() - 1] & 0xF0) == 0);

  std::vector<std::uint8_t> uv;
  for (int v = 0; v <= 15; ++v) uv.push_back(static_cast<std::uint8_t>(v));
  uv.push_back(15);
  u4_tensor<1> q(tensor_view<const std::uint8_t, 1>(uv.data(), {17}));
  tensor<std::uint8_t, 1> c = unpack(q);
  CHECK(as_ints(std::vector<std::uint8_t>(c.begin(), c.end())) == as_ints(uv));
  CHECK(q.data()[8] == 0x0F);
}

TEST_CASE("random round trips: ranks 1-3, dense and strided sources", "[packed]") {
  random_round_trips<s4, 1>(12);
  random_round_trips<s4, 2>(12);
  random_round_trips<s4, 3>(8);
  random_round_trips<u4, 1>(12);
  random_round_trips<u4, 2>(12);
  random_round_trips<u4, 3>(8);
  random_round_trips<s2, 1>(10);
  random_round_trips<s2, 2>(10);
  random_round_trips<s2, 3>(6);
  random_round_trips<u2, 1>(10);
  random_round_trips<u2, 2>(10);
  random_round_trips<u2, 3>(6);
  // Long contiguous rows (the vectorized paths) of every length mod 64 around a block.
  for (index_t n = 60; n <= 200; n += 7) {
    round_trip_case<s4, 1>(extents<1>{n}, src_layout::dense);
    round_trip_case<u2, 2>(extents<2>{2, n}, src_layout::dense);
  }
  // Edge shapes.
  round_trip_case<s4, 2>(extents<2>{0, 5}, src_layout::dense);
  round_trip_case<s4, 2>(extents<2>{4, 0}, src_layout::padded_strided);
  round_trip_case<u4, 3>(extents<3>{3, 1, 1}, src_layout::transposed);
  round_trip_case<s2, 1>(extents<1>{1}, src_layout::reversed_rows);
}

TEST_CASE("packing into a slice leaves the rest alone", "[packed][view]") {
  const extents<3> shape{3, 4, 5};
  s4_tensor<3> p(shape);
  // Fill with a known pattern.
  tensor<std::int8_t, 3> src(shape);
  for_each_index(shape, [&](const extents<3>& i) {
    src.view()[i] = static_cast<std::int8_t>((i[0] * 7 + i[1] * 3 + i[2]) % 16 - 8);
  });
  pack(src.cview(), p);
  const std::vector<std::uint8_t> before(p.data(), p.data() + p.byte_size());

  s4_view<3> sub = p.view().slice(1, 1, 3);  // [3,2,5]
  CHECK(sub.shape() == extents<3>{3, 2, 5});
  CHECK(sub.strides() == extents<2>{12, 3});
  CHECK_FALSE(sub.is_contiguous());
  tensor<std::int8_t, 3> ones(sub.shape(), std::int8_t{-1});
  pack(ones.cview(), sub);
  for_each_index(shape, [&](const extents<3>& i) {
    const int expect = (i[1] == 1 || i[1] == 2) ? -1 : src.view()[i];
    REQUIRE(p.view()[i] == expect);
  });
  // Padding nibbles of every row are still zero (row length 5 is odd).
  for (index_t a = 0; a < 3; ++a)
    for (index_t b = 0; b < 4; ++b) CHECK((p.row(a, b)[2] & 0xF0) == 0);

  // Restore through a select(): a 2-D view of one outer slice.
  for (index_t a = 0; a < 3; ++a) {
    s4_view<2> plane = p.view().select(0, a);
    CHECK(plane.shape() == extents<2>{4, 5});
    CHECK(plane.row(0) == p.row(a, 0));
    pack(src.cview().select(0, a), plane);
  }
  CHECK(std::vector<std::uint8_t>(p.data(), p.data() + p.byte_size()) == before);
}

TEST_CASE("select and slice along outer axes", "[packed][view]") {
  const extents<3> shape{2, 3, 7};
  tensor<std::uint8_t, 3> src(shape);
  for_each_index(shape, [&](const extents<3>& i) {
    src.view()[i] = static_cast<std::uint8_t>((i[0] * 5 + i[1] * 11 + i[2] * 3) % 16);
  });
  u4_tensor<3> p(src.cview());
  u4_cview<3> v = p.cview();
  CHECK(v.row_bytes() == 4);
  CHECK(v.strides() == extents<2>{12, 4});
  CHECK(v.rows() == 6);
  CHECK(v.size() == 42);

  // select along axis 1 keeps axes 0 and 2: strides {12}.
  u4_cview<2> s1 = v.select(1, 2);
  CHECK(s1.shape() == extents<2>{2, 7});
  CHECK(s1.strides() == extents<1>{12});
  for (index_t a = 0; a < 2; ++a)
    for (index_t c = 0; c < 7; ++c) CHECK(s1(a, c) == src(a, 2, c));
  // select twice down to one row (rank 1).
  u4_cview<1> r = v.select(0, 1).select(0, 2);
  CHECK(r.data() == p.row(1, 2));
  CHECK(r.row() == r.data());
  CHECK(r.row_stride() == 4);
  for (index_t c = 0; c < 7; ++c) CHECK(r(c) == src(1, 2, c));
  // slice along axis 0, then unpack the slice.
  u4_cview<3> sl = v.slice(0, 1, 2);
  CHECK(sl.shape() == extents<3>{1, 3, 7});
  CHECK(sl.is_contiguous());
  tensor<std::uint8_t, 3> out = unpack(sl);
  for_each_index(out.shape(), [&](const extents<3>& i) {
    CHECK(out.view()[i] == src(1, i[1], i[2]));
  });
  // Empty slices are fine.
  CHECK(v.slice(1, 3, 3).empty());
  CHECK(unpack(v.slice(1, 3, 3)).size() == 0);
}

TEST_CASE("set changes one element and nothing else", "[packed]") {
  for (int trial = 0; trial < 4; ++trial) {
    const extents<2> shape{3, trial % 2 == 0 ? 7 : 8};
    s4_tensor<2> p(shape);
    tensor<std::int8_t, 2> model(shape);
    for (int step = 0; step < 200; ++step) {
      const extents<2> i{qlib_test::rand_int(0, 2), qlib_test::rand_int(0, static_cast<int>(shape[1]) - 1)};
      const auto v = rand_value<s4>();
      p.set(i, v);
      model.view()[i] = v;
      if (step % 20 == 0 || step == 199) {
        for_each_index(shape, [&](const extents<2>& j) { REQUIRE(p.at(j) == model.view()[j]); });
        if (shape[1] % 2) {
          for (index_t r = 0; r < 3; ++r) REQUIRE((p.row(r)[3] & 0xF0) == 0);
        }
      }
    }
    CHECK(std::vector<std::uint8_t>(p.data(), p.data() + p.byte_size()) ==
          reference_bytes<s4>(model.cview()));
  }
  // 2-bit: setting the middle fields of a byte.
  u2_tensor<1> q(extents<1>{6});
  q.set({1}, 3);
  q.set({2}, 2);
  q.set({5}, 1);
  CHECK(q.data()[0] == 0x2C);
  CHECK(q.data()[1] == 0x04);
  q.set({1}, 0);
  CHECK(q.data()[0] == 0x20);
  // Through a view: the view writes into the tensor.
  u2_view<1> qv = q;
  qv.set({0}, 3);
  CHECK(q(0) == 3);
  CHECK(q(2) == 2);
}

TEST_CASE("packed_tensor storage, copies and moves", "[packed]") {
  s4_tensor<2> p(extents<2>{5, 9});
  CHECK(reinterpret_cast<std::uintptr_t>(p.data()) % tensor_alignment == 0);
  CHECK(p.byte_size() == 25);
  CHECK(p.size() == 45);
  for (index_t b = 0; b < p.byte_size(); ++b) CHECK(p.data()[b] == 0);
  p.set({4, 8}, -3);
  s4_tensor<2> c = p;
  CHECK(c.data() != p.data());
  CHECK(c(4, 8) == -3);
  p.set({4, 8}, 2);
  CHECK(c(4, 8) == -3);
  s4_tensor<2> m = std::move(c);
  CHECK(m(4, 8) == -3);
  CHECK(c.empty());
  c = m;
  CHECK(c(4, 8) == -3);
  s4_tensor<2> e;
  CHECK(e.empty());
  CHECK(e.byte_size() == 0);
  s4_tensor<2> z(extents<2>{3, 0});
  CHECK(z.empty());
  CHECK(unpack(z).size() == 0);
}

TEST_CASE("packed errors are reported, never masked", "[packed][errors]") {
  SECTION("values out of range") {
    const std::int8_t bad_hi[] = {0, 1, 8, 2};
    const std::int8_t bad_lo[] = {-9, 0};
    const std::uint8_t bad_u[] = {3, 16};
    const std::int8_t bad_s2[] = {1, 0, 0, 2};
    const std::uint8_t bad_u2[] = {4};
    s4_tensor<1> p(extents<1>{4});
    QLIB_REQUIRE_ERROR(pack(tensor_view<const std::int8_t, 1>(bad_hi, {4}), p), errc::out_of_range);
    QLIB_REQUIRE_ERROR((s4_tensor<1>(tensor_view<const std::int8_t, 1>(bad_lo, {2}))), errc::out_of_range);
    QLIB_REQUIRE_ERROR((u4_tensor<1>(tensor_view<const std::uint8_t, 1>(bad_u, {2}))), errc::out_of_range);
    QLIB_REQUIRE_ERROR((s2_tensor<1>(tensor_view<const std::int8_t, 1>(bad_s2, {4}))), errc::out_of_range);
    QLIB_REQUIRE_ERROR((u2_tensor<1>(tensor_view<const std::uint8_t, 1>(bad_u2, {1}))), errc::out_of_range);
    // Strided source: the bad value is only reached through the stride.
    const std::int8_t strided[] = {1, 100, 2, 100, -100, 100};
    QLIB_REQUIRE_ERROR((s4_tensor<1>(tensor_view<const std::int8_t, 1>(strided, {3}, {2}))),
                       errc::out_of_range);
    // set() checks the value too.
    QLIB_REQUIRE_ERROR(p.set({0}, 8), errc::out_of_range);
    QLIB_REQUIRE_ERROR(p.set({0}, -9), errc::out_of_range);
    u4_tensor<1> u(extents<1>{3});
    QLIB_REQUIRE_ERROR(u.set({2}, 16), errc::out_of_range);
    QLIB_REQUIRE_ERROR(u.view().set({1}, 200), errc::out_of_range);
  }
#if QLIB_EXCEPTIONS
  SECTION("the message names the value and its index; dst is untouched") {
    tensor<std::int8_t, 2> src(extents<2>{3, 5}, std::int8_t{1});
    src(2, 3) = -11;
    src(2, 4) = 9;
    s4_tensor<2> p(extents<2>{3, 5});
    const std::string msg = error_message([&] { pack(src.cview(), p); });
    INFO(msg);
    CHECK(msg.find("-11") != std::string::npos);
    CHECK(msg.find("[2,3]") != std::string::npos);
    CHECK(msg.find("int4") != std::string::npos);
    for (index_t b = 0; b < p.byte_size(); ++b) CHECK(p.data()[b] == 0);
    const std::string smsg = error_message([&] { p.set({1, 2}, 12); });
    CHECK(smsg.find("12") != std::string::npos);
    CHECK(smsg.find("[1,2]") != std::string::npos);
    CHECK(p(1, 2) == 0);
  }
#endif
  SECTION("shape mismatches") {
    tensor<std::int8_t, 2> src(extents<2>{3, 5});
    s4_tensor<2> p(extents<2>{3, 4});
    QLIB_REQUIRE_ERROR(pack(src.cview(), p), errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(pack(src.cview(), p.view()), errc::shape_mismatch);
    tensor<std::int8_t, 2> dst(extents<2>{4, 3});
    QLIB_REQUIRE_ERROR(unpack(p, dst), errc::shape_mismatch);
    QLIB_REQUIRE_ERROR(unpack(p.cview(), dst.view()), errc::shape_mismatch);
    tensor<std::int8_t, 2> empty_dst(extents<2>{0, 4});
    QLIB_REQUIRE_ERROR(unpack(p, empty_dst), errc::shape_mismatch);
  }
  SECTION("indices, axes and views") {
    s4_tensor<3> p(extents<3>{2, 3, 5});
    s4_view<3> v = p.view();
    QLIB_REQUIRE_ERROR(p.at({2, 0, 0}), errc::out_of_range);
    QLIB_REQUIRE_ERROR(p.at({0, 0, 5}), errc::out_of_range);
    QLIB_REQUIRE_ERROR(p.at({0, -1, 0}), errc::out_of_range);
    QLIB_REQUIRE_ERROR(p.set({0, 0, 5}, 1), errc::out_of_range);
    QLIB_REQUIRE_ERROR(v.select(0, 2), errc::out_of_range);
    QLIB_REQUIRE_ERROR(v.select(1, -1), errc::out_of_range);
    QLIB_REQUIRE_ERROR(v.select(2, 0), errc::invalid_argument);  // inside a row
    QLIB_REQUIRE_ERROR(v.select(3, 0), errc::out_of_range);
    QLIB_REQUIRE_ERROR(v.slice(1, 2, 4), errc::out_of_range);
    QLIB_REQUIRE_ERROR(v.slice(0, 1, 0), errc::out_of_range);
    QLIB_REQUIRE_ERROR(v.slice(2, 0, 2), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(v.slice(5, 0, 1), errc::out_of_range);
    s4_view<1> row = v.select(0, 0).select(0, 0);
    QLIB_REQUIRE_ERROR(row.slice(0, 0, 2), errc::invalid_argument);
    QLIB_REQUIRE_ERROR((s4_view<2>(nullptr, {2, 3})), errc::invalid_argument);
    QLIB_REQUIRE_ERROR((u4_cview<2>(nullptr, {2, 3}, {4})), errc::invalid_argument);
    QLIB_REQUIRE_ERROR((s4_tensor<2>(extents<2>{-1, 3})), errc::invalid_argument);
    QLIB_REQUIRE_ERROR((s4_tensor<2>(extents<2>{PTRDIFF_MAX / 2, 4})), errc::overflow);
    CHECK(s4_view<2>(nullptr, {0, 3}).empty());  // empty views may have no data
  }
}

TEST_CASE("b-bit code rows: layout, widths, round trips, errors", "[packed][bits]") {
  SECTION("2 and 4 bits give packed_int's bytes; 8 bits the int8 codes") {
    for (index_t n : {0, 1, 2, 3, 5, 8, 17}) {
      std::vector<std::int8_t> c4(static_cast<std::size_t>(n)), c2(c4.size());
      for (auto& v : c4) v = static_cast<std::int8_t>(qlib_test::rand_int(-8, 7));
      for (auto& v : c2) v = static_cast<std::int8_t>(qlib_test::rand_int(-2, 1));
      packed_tensor<4, true, 1> p4(extents<1>{n});
      packed_tensor<2, true, 1> p2(extents<1>{n});
      pack<4, true, 1>(tensor_view<const std::int8_t, 1>(c4.data(), {n}), p4);
      pack<2, true, 1>(tensor_view<const std::int8_t, 1>(c2.data(), {n}), p2);
      std::vector<std::uint8_t> b4(static_cast<std::size_t>(packed_bits_row_bytes(n, 4)) + 1, 0xAB),
          b2(static_cast<std::size_t>(packed_bits_row_bytes(n, 2)) + 1, 0xAB), b8(c4.size() + 1, 0xAB);
      pack_bits_row(c4.data(), n, 4, b4.data());
      pack_bits_row(c2.data(), n, 2, b2.data());
      pack_bits_row(c4.data(), n, 8, b8.data());
      INFO("n " << n);
      CHECK(std::vector<std::uint8_t>(b4.begin(), b4.end() - 1) ==
            std::vector<std::uint8_t>(p4.data(), p4.data() + p4.byte_size()));
      CHECK(std::vector<std::uint8_t>(b2.begin(), b2.end() - 1) ==
            std::vector<std::uint8_t>(p2.data(), p2.data() + p2.byte_size()));
      for (std::size_t j = 0; j < c4.size(); ++j) CHECK(static_cast<std::int8_t>(b8[j]) == c4[j]);
      CHECK(b4.back() == 0xAB);  // nothing written past the row
      CHECK(b8.back() == 0xAB);
    }
  }
  SECTION("hand-made 3-bit row: codes 1, -1, 3, -4 -> bits 001 111 011 100") {
    const std::int8_t c[4] = {1, -1, 3, -4};
    std::uint8_t b[2] = {0xFF, 0xFF};
    pack_bits_row(c, 4, 3, b);
    // bit stream, lowest first: 1 0 0 | 1 1 1 | 1 1 0 | 0 0 1 -> byte 0 = 0b11111001, byte 1 = 0b00001000
    CHECK(b[0] == 0xF9);
    CHECK(b[1] == 0x08);
    CHECK(packed_bits_padding_clear(b, 4, 3));
    b[1] |= 0x10;
    CHECK_FALSE(packed_bits_padding_clear(b, 4, 3));
  }
  SECTION("every width: random rows round-trip, padding stays 0, the narrowest width is found") {
    for (int bits = 2; bits <= 8; ++bits)
      for (int it = 0; it < 20; ++it) {
        const index_t n = qlib_test::rand_int(0, 40);
        const int lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1;
        std::vector<std::int8_t> c(static_cast<std::size_t>(n)), back(c.size());
        for (auto& v : c) v = static_cast<std::int8_t>(qlib_test::rand_int(lo, hi));
        if (n > 0) c[0] = static_cast<std::int8_t>(qlib_test::rand_int(0, 1) ? lo : hi);  // the range's end
        std::vector<std::uint8_t> b(static_cast<std::size_t>(packed_bits_row_bytes(n, bits)));
        pack_bits_row(c.data(), n, bits, b.data());
        CHECK(packed_bits_padding_clear(b.data(), n, bits));
        unpack_bits_row(b.data(), n, bits, back.data());
        INFO("bits " << bits << " n " << n);
        CHECK(back == c);
        if (n > 0) CHECK(narrowest_signed_bits(c.data(), n) == bits);
      }
    CHECK(narrowest_signed_bits(nullptr, 0) == 2);
    // Row sizes without forming n * b (a file may claim any n): ceil((2^63 - 1) * 7 / 8).
    CHECK(packed_bits_row_bytes(PTRDIFF_MAX, 7) == 7 * (index_t{1} << 60));
    CHECK(packed_bits_row_bytes(PTRDIFF_MAX, 8) == PTRDIFF_MAX);
  }
  SECTION("a code that does not fit is refused, and nothing is written") {
    const std::int8_t c[3] = {1, 4, -4};
    std::uint8_t b[2] = {0xAA, 0xAA};
    QLIB_REQUIRE_ERROR(pack_bits_row(c, 3, 3, b), errc::out_of_range);
    CHECK(b[0] == 0xAA);
    QLIB_REQUIRE_ERROR(pack_bits_row(c, 3, 9, b), errc::invalid_argument);
    QLIB_REQUIRE_ERROR(pack_bits_row(c, 3, 1, b), errc::invalid_argument);
  }
}
