// Packed 4-bit and 2-bit integers (two or four per byte): layout, views, owning tensors, pack/unpack.
#pragma once

// Layout contract (normative; GEMM kernels, block formats and file readers rely on it)
// ----------------------------------------------------------------------------------
// A packed tensor of shape [d0, ..., dR-1] stores Bits-bit integers, K = 8 / Bits per byte.
// * The last axis is a "row". Element j of a row lives in byte j / K of that row, in bits
//   [(j % K) * Bits, (j % K) * Bits + Bits): the lowest bits hold the earliest element.
//   For 4 bits this is the low nibble for even j and the high nibble for odd j (PyTorch's
//   quint4x2 convention): row {1, 2, 3} is bytes {0x21, 0x03}.
// * Every row starts on a byte boundary and takes row_bytes = ceil(d_last / K) bytes. When
//   d_last is not a multiple of K, the unused high bits of the last byte ("padding") are
//   zero: pack() writes them as zero and set() never touches them. Readers ignore them.
// * Unsigned values are in [0, 2^Bits - 1]; signed values are two's complement in
//   [-2^(Bits-1), 2^(Bits-1) - 1] (int4: [-8, 7], stored nibble 0x8 = -8, 0xF = -1).
// * Outer axes (all but the last) have strides in bytes. A dense tensor has row stride
//   row_bytes and occupies packed_bytes<Bits>(shape) = rows * row_bytes bytes; views may
//   use larger strides (e.g. rows padded for SIMD loads). Slicing and selecting are only
//   possible along outer axes, never inside a row.
// * Values outside the range are never masked silently: pack() and set() report
//   errc::out_of_range.

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>

#include "qlib/core/index_iteration.hpp"
#include "qlib/core/tensor.hpp"
#include "qlib/core/tensor_view.hpp"

namespace qlib {

// The format of one packed element: Bits wide (2 or 4), signed (two's complement) or not.
template <int Bits, bool Signed>
struct packed_format {
  static_assert(Bits == 2 || Bits == 4, "packed formats are 2 or 4 bits wide");

  using value_type = std::conditional_t<Signed, std::int8_t, std::uint8_t>;  // unpacked type
  static constexpr int bits = Bits;
  static constexpr bool is_signed = Signed;
  static constexpr int per_byte = 8 / Bits;
  static constexpr unsigned field_mask = (1u << Bits) - 1u;
  static constexpr int min = Signed ? -(1 << (Bits - 1)) : 0;
  static constexpr int max = Signed ? (1 << (Bits - 1)) - 1 : (1 << Bits) - 1;

  static constexpr bool in_range(int v) noexcept { return v >= min && v <= max; }

  // The Bits-wide field that stores v (v must be in range).
  static constexpr unsigned encode(value_type v) noexcept {
    return static_cast<unsigned>(v) & field_mask;
  }
  // The value stored in a Bits-wide field (sign-extended for signed formats).
  static constexpr value_type decode(unsigned field) noexcept {
    if constexpr (Signed) {
      constexpr int sign = 1 << (Bits - 1);
      return static_cast<value_type>(static_cast<int>(field ^ static_cast<unsigned>(sign)) - sign);
    } else {
      return static_cast<value_type>(field);
    }
  }
  // Element k (0 <= k < per_byte) of a packed byte.
  static constexpr value_type extract(std::uint8_t byte, int k) noexcept {
    return decode((static_cast<unsigned>(byte) >> (k * Bits)) & field_mask);
  }
  // The byte with element k replaced by v (v must be in range); other elements kept.
  static constexpr std::uint8_t insert(std::uint8_t byte, int k, value_type v) noexcept {
    const unsigned shift = static_cast<unsigned>(k * Bits);
    return static_cast<std::uint8_t>((static_cast<unsigned>(byte) & ~(field_mask << shift)) |
                                     (encode(v) << shift));
  }

  static const char* name() noexcept {
    if constexpr (Bits == 4) return Signed ? "int4" : "uint4";
    else return Signed ? "int2" : "uint2";
  }
};

// Bytes one row of n Bits-wide elements takes (ceil(n * Bits / 8)); n >= 0.
template <int Bits>
constexpr index_t packed_row_bytes(index_t n) noexcept {
  static_assert(Bits == 2 || Bits == 4, "packed formats are 2 or 4 bits wide");
  constexpr index_t k = 8 / Bits;
  return n / k + (n % k != 0 ? 1 : 0);
}

// Bytes a dense packed tensor of this shape takes: rows * packed_row_bytes(last extent).
// Negative extents are errc::invalid_argument, overflowing shapes errc::overflow.
template <int Bits, std::size_t Rank>
index_t packed_bytes(const extents<Rank>& shape) {
  static_assert(Rank >= 1, "packed tensors need at least one dimension");
  (void)detail::checked_numel(shape);  // validates; rows * row_bytes <= numel cannot overflow
  index_t rows = 1;
  for (std::size_t a = 0; a + 1 < Rank; ++a) rows *= shape[a];
  return rows * packed_row_bytes<Bits>(shape[Rank - 1]);
}

namespace detail {
template <class T>
struct identity {
  using type = T;
};
template <class T>
using identity_t = typename identity<T>::type;  // blocks template argument deduction

template <class... I>
constexpr bool all_integral() {
  return (std::is_integral<I>::value && ...);
}


// Row kernels. Unit == true means stride 1 (the loops the compiler vectorizes).

// Index of the first element of a row outside Fmt's range, or -1.
template <class Fmt, bool Unit>
index_t find_out_of_range(const typename Fmt::value_type* s, index_t stride, index_t n) noexcept {
  if constexpr (Unit) {
    // v is in range iff (v - min) mod 256 <= max - min; written so that it vectorizes.
    std::uint8_t bad = 0;
    for (index_t j = 0; j < n; ++j)
      bad |= static_cast<std::uint8_t>(static_cast<std::uint8_t>(s[j] - Fmt::min) > Fmt::max - Fmt::min);
    if (QLIB_LIKELY(!bad)) return -1;
  }
  for (index_t j = 0; j < n; ++j)
    if (!Fmt::in_range(s[j * stride])) return j;
  return -1;
}

// Packs n in-range values into packed_row_bytes(n) bytes, padding bits zero.
template <class Fmt, bool Unit>
void pack_row(const typename Fmt::value_type* s, index_t stride, index_t n,
              std::uint8_t* out) noexcept {
  constexpr int K = Fmt::per_byte;
  if constexpr (Unit) stride = 1;
  const index_t full = n / K;
  for (index_t b = 0; b < full; ++b) {
    unsigned byte = 0;
    for (int k = 0; k < K; ++k) byte |= Fmt::encode(s[(b * K + k) * stride]) << (k * Fmt::bits);
    out[b] = static_cast<std::uint8_t>(byte);
  }
  const index_t rest = n - full * K;
  if (rest != 0) {
    unsigned byte = 0;
    for (int k = 0; k < rest; ++k) byte |= Fmt::encode(s[(full * K + k) * stride]) << (k * Fmt::bits);
    out[full] = static_cast<std::uint8_t>(byte);
  }
}

// Unpacks n values of a packed row.
template <class Fmt, bool Unit>
void unpack_row(const std::uint8_t* in, index_t n, typename Fmt::value_type* d,
                index_t stride) noexcept {
  constexpr int K = Fmt::per_byte;
  if constexpr (Unit) stride = 1;
  const index_t full = n / K;
  for (index_t b = 0; b < full; ++b) {
    const std::uint8_t byte = in[b];
    for (int k = 0; k < K; ++k) d[(b * K + k) * stride] = Fmt::extract(byte, k);
  }
  const index_t rest = n - full * K;
  for (int k = 0; k < rest; ++k) d[(full * K + k) * stride] = Fmt::extract(in[full], k);
}

inline void check_outer_axis(std::size_t axis, std::size_t rank) {
  QLIB_CHECK(axis < rank, errc::out_of_range,
             "axis " + std::to_string(axis) + " out of range for rank " + std::to_string(rank));
  QLIB_CHECK(axis + 1 < rank, errc::invalid_argument,
             "packed tensors can only be sliced along outer axes; axis " +
                 std::to_string(axis) + " is the packed (last) axis of rank " +
                 std::to_string(rank));
}
}  // namespace detail

// A non-owning view of packed Bits-wide integers (layout above). Byte is std::uint8_t for
// a mutable view and const std::uint8_t for a read-only one. Outer strides are in bytes
// and may be any value (they are not checked for overlap, as with tensor_view).
template <int Bits, bool Signed, std::size_t Rank, class Byte = std::uint8_t>
class packed_view {
  static_assert(Rank >= 1, "packed_view needs at least one dimension");
  static_assert(std::is_same<std::remove_const_t<Byte>, std::uint8_t>::value,
                "Byte is std::uint8_t or const std::uint8_t");

 public:
  using format = packed_format<Bits, Signed>;
  using value_type = typename format::value_type;
  using byte_type = Byte;
  using outer_extents = extents<Rank - 1>;
  static constexpr std::size_t rank = Rank;
  static constexpr int bits = Bits;
  static constexpr bool is_signed = Signed;
  static constexpr bool is_mutable = !std::is_const<Byte>::value;

  packed_view() : data_(nullptr), shape_{}, strides_{} {}

  // A dense view: rows of packed_row_bytes(last extent) bytes, one after another.
  packed_view(Byte* data, const extents<Rank>& shape)
      : packed_view(data, shape, dense_strides(shape)) {}

  // Outer strides in bytes, one per outer axis (none for Rank 1).
  packed_view(Byte* data, const extents<Rank>& shape, const outer_extents& byte_strides)
      : data_(data), shape_(shape), strides_(byte_strides) {
    const index_t n = detail::checked_numel(shape);
    QLIB_CHECK(n == 0 || data != nullptr, errc::invalid_argument,
               "null data pointer for a non-empty packed view of shape " +
                   detail::extents_string(shape));
  }

  // A mutable view converts to a read-only one.
  template <class B, class = std::enable_if_t<std::is_same<const B, Byte>::value &&
                                               !std::is_same<B, Byte>::value>>
  packed_view(const packed_view<Bits, Signed, Rank, B>& o)  // NOLINT(implicit)
      : data_(o.data()), shape_(o.shape()), strides_(o.strides()) {}

  Byte* data() const noexcept { return data_; }
  const extents<Rank>& shape() const noexcept { return shape_; }
  index_t shape(std::size_t axis) const noexcept { return shape_[axis]; }
  // Byte strides of the outer axes.
  const outer_extents& strides() const noexcept { return strides_; }
  index_t stride(std::size_t axis) const noexcept { return strides_[axis]; }
  // Bytes between consecutive rows along the innermost outer axis (row_bytes() for Rank 1).
  index_t row_stride() const noexcept {
    if constexpr (Rank == 1) return row_bytes();
    else return strides_[Rank - 2];
  }
  // Bytes that hold one row's elements (including the padding bits of the last byte).
  index_t row_bytes() const noexcept { return packed_row_bytes<Bits>(shape_[Rank - 1]); }
  index_t row_length() const noexcept { return shape_[Rank - 1]; }
  index_t rows() const noexcept {
    index_t r = 1;
    for (std::size_t a = 0; a + 1 < Rank; ++a) r *= shape_[a];
    return r;
  }
  index_t size() const noexcept { return rows() * shape_[Rank - 1]; }
  bool empty() const noexcept { return size() == 0; }

  // Rows are dense and back to back: the view is one block of packed_bytes(shape) bytes.
  bool is_contiguous() const noexcept {
    index_t expect = row_bytes();
    for (std::size_t a = Rank - 1; a-- > 0;) {
      if (shape_[a] != 1 && strides_[a] != expect) return false;
      expect *= shape_[a];
    }
    return true;
  }

  // The bytes of one row (outer indices only; unchecked).
  template <class... I>
  Byte* row(I... outer) const noexcept {
    static_assert(sizeof...(I) == Rank - 1, "row() takes one index per outer axis");
    static_assert(detail::all_integral<I...>(), "indices must be integers");
    return row(outer_extents{static_cast<index_t>(outer)...});
  }
  Byte* row(const outer_extents& outer) const noexcept {
    index_t off = 0;
    for (std::size_t a = 0; a + 1 < Rank; ++a) {
      QLIB_ASSERT(outer[a] >= 0 && outer[a] < shape_[a]);
      off += outer[a] * strides_[a];
    }
    return data_ + off;
  }

  // Reads one element (unchecked, like tensor_view::operator()).
  template <class... I>
  value_type operator()(I... idx) const noexcept {
    static_assert(sizeof...(I) == Rank, "wrong number of indices");
    static_assert(detail::all_integral<I...>(), "indices must be integers");
    return (*this)[extents<Rank>{static_cast<index_t>(idx)...}];
  }
  value_type operator[](const extents<Rank>& idx) const noexcept {
    const index_t j = idx[Rank - 1];
    QLIB_ASSERT(j >= 0 && j < shape_[Rank - 1]);
    return format::extract(byte_of(idx)[0], static_cast<int>(j % format::per_byte));
  }
  // Reads one element, bounds checked (errc::out_of_range).
  value_type at(const extents<Rank>& idx) const {
    check_index(idx);
    return (*this)[idx];
  }
  // Writes one element, leaving its neighbours and the padding untouched. Index and value
  // are checked (errc::out_of_range); a read-modify-write of one byte, so not for inner
  // loops: fill whole tensors with pack().
  template <bool M = is_mutable, class = std::enable_if_t<M>>
  void set(const extents<Rank>& idx, value_type v) const {
    check_index(idx);
    check_value(idx, v);
    Byte* p = byte_of(idx);
    *p = format::insert(*p, static_cast<int>(idx[Rank - 1] % format::per_byte), v);
  }

  // Elements [begin, end) along an outer axis; same rank.
  packed_view slice(std::size_t axis, index_t begin, index_t end) const {
    detail::check_outer_axis(axis, Rank);
    QLIB_CHECK(0 <= begin && begin <= end && end <= shape_[axis], errc::out_of_range,
               "slice [" + std::to_string(begin) + "," + std::to_string(end) +
                   ") outside extent " + std::to_string(shape_[axis]) + " of axis " +
                   std::to_string(axis));
    extents<Rank> s = shape_;
    s[axis] = end - begin;
    packed_view r;
    r.data_ = begin < end ? data_ + begin * strides_[axis] : data_;
    r.shape_ = s;
    r.strides_ = strides_;
    return r;
  }

  // Fixes one index along an outer axis, dropping that axis.
  template <std::size_t R = Rank, class = std::enable_if_t<(R > 1)>>
  packed_view<Bits, Signed, Rank - 1, Byte> select(std::size_t axis, index_t i) const {
    detail::check_outer_axis(axis, Rank);
    QLIB_CHECK(0 <= i && i < shape_[axis], errc::out_of_range,
               "index " + std::to_string(i) + " outside extent " +
                   std::to_string(shape_[axis]) + " of axis " + std::to_string(axis));
    extents<Rank - 1> s{};
    extents<Rank - 2> st{};
    for (std::size_t a = 0, b = 0; a < Rank; ++a) {
      if (a == axis) continue;
      s[b] = shape_[a];
      if (a + 1 < Rank) st[b] = strides_[a];
      ++b;
    }
    return packed_view<Bits, Signed, Rank - 1, Byte>(data_ + i * strides_[axis], s, st);
  }

 private:
  template <int, bool, std::size_t, class>
  friend class packed_view;

  static outer_extents dense_strides(const extents<Rank>& shape) {
    outer_extents st{};
    index_t s = packed_row_bytes<Bits>(shape[Rank - 1] > 0 ? shape[Rank - 1] : 0);
    for (std::size_t a = Rank - 1; a-- > 0;) {
      st[a] = s;
      s *= shape[a] > 0 ? shape[a] : 1;
    }
    return st;
  }

  Byte* byte_of(const extents<Rank>& idx) const noexcept {
    index_t off = 0;
    for (std::size_t a = 0; a + 1 < Rank; ++a) {
      QLIB_ASSERT(idx[a] >= 0 && idx[a] < shape_[a]);
      off += idx[a] * strides_[a];
    }
    return data_ + off + idx[Rank - 1] / format::per_byte;
  }

  void check_index(const extents<Rank>& idx) const {
    for (std::size_t a = 0; a < Rank; ++a)
      QLIB_CHECK(idx[a] >= 0 && idx[a] < shape_[a], errc::out_of_range,
                 "index " + detail::extents_string(idx) + " outside shape " +
                     detail::extents_string(shape_));
  }
  static void check_value(const extents<Rank>& idx, value_type v) {
    QLIB_CHECK(format::in_range(v), errc::out_of_range,
               "value " + std::to_string(static_cast<int>(v)) + " at index " +
                   detail::extents_string(idx) + " outside the " + format::name() + " range [" +
                   std::to_string(format::min) + "," + std::to_string(format::max) + "]");
  }

  Byte* data_;
  extents<Rank> shape_;
  outer_extents strides_;
};

// A read-only packed view.
template <int Bits, bool Signed, std::size_t Rank>
using packed_cview = packed_view<Bits, Signed, Rank, const std::uint8_t>;

// Owns dense packed storage (64-byte aligned, zero-initialized: every element 0, padding
// zero); copying copies the bytes.
template <int Bits, bool Signed, std::size_t Rank>
class packed_tensor {
 public:
  using format = packed_format<Bits, Signed>;
  using value_type = typename format::value_type;
  using view_type = packed_view<Bits, Signed, Rank>;
  using cview_type = packed_cview<Bits, Signed, Rank>;
  static constexpr std::size_t rank = Rank;

  packed_tensor() : shape_{} {}
  explicit packed_tensor(const extents<Rank>& shape)
      : data_(detail::aligned_alloc_zeroed<std::uint8_t>(packed_bytes<Bits>(shape))),
        shape_(shape) {}
  // Packs src (any strides); values outside the range are errc::out_of_range.
  explicit packed_tensor(const tensor_view<const value_type, Rank>& src);

  packed_tensor(const packed_tensor& o) : packed_tensor(o.shape_) {
    if (o.byte_size()) std::memcpy(data(), o.data(), static_cast<std::size_t>(byte_size()));
  }
  packed_tensor& operator=(const packed_tensor& o) {
    if (this != &o) *this = packed_tensor(o);
    return *this;
  }
  packed_tensor(packed_tensor&& o) noexcept : data_(std::move(o.data_)), shape_(o.shape_) {
    o.shape_ = {};
  }
  packed_tensor& operator=(packed_tensor&& o) noexcept {
    data_ = std::move(o.data_);
    shape_ = o.shape_;
    o.shape_ = {};
    return *this;
  }

  std::uint8_t* data() noexcept { return data_.get(); }
  const std::uint8_t* data() const noexcept { return data_.get(); }
  const extents<Rank>& shape() const noexcept { return shape_; }
  index_t shape(std::size_t axis) const noexcept { return shape_[axis]; }
  index_t size() const noexcept { return cview().size(); }
  bool empty() const noexcept { return size() == 0; }
  index_t row_bytes() const noexcept { return packed_row_bytes<Bits>(shape_[Rank - 1]); }
  // Bytes owned: packed_bytes<Bits>(shape()).
  index_t byte_size() const noexcept { return cview().rows() * row_bytes(); }

  view_type view() noexcept { return raw_view<std::uint8_t>(data()); }
  cview_type view() const noexcept { return raw_view<const std::uint8_t>(data()); }
  cview_type cview() const noexcept { return view(); }
  operator view_type() noexcept { return view(); }               // NOLINT
  operator cview_type() const noexcept { return view(); }        // NOLINT

  template <class... I>
  std::uint8_t* row(I... outer) noexcept { return view().row(outer...); }
  template <class... I>
  const std::uint8_t* row(I... outer) const noexcept { return view().row(outer...); }
  template <class... I>
  value_type operator()(I... idx) const noexcept { return view()(idx...); }
  value_type at(const extents<Rank>& idx) const { return view().at(idx); }
  void set(const extents<Rank>& idx, value_type v) { view().set(idx, v); }

 private:
  template <class B>
  packed_view<Bits, Signed, Rank, B> raw_view(B* p) const noexcept {
    // The shape was validated at construction, so the checking constructor cannot fail.
    return packed_view<Bits, Signed, Rank, B>(p, shape_);
  }

  detail::aligned_ptr<std::uint8_t> data_;
  extents<Rank> shape_;
};

// Packs src into dst. Shapes must be equal (errc::shape_mismatch); every value must be in
// the format's range (errc::out_of_range, naming the first offending value and index, in
// row-major order). dst is only written once all of src has been validated. src may
// have any strides; unit-stride rows take a vectorizable path.
template <int Bits, bool Signed, std::size_t Rank>
void pack(const detail::identity_t<
              tensor_view<const typename packed_format<Bits, Signed>::value_type, Rank>>& src,
          const packed_view<Bits, Signed, Rank, std::uint8_t>& dst) {
  using fmt = packed_format<Bits, Signed>;
  QLIB_CHECK(src.shape() == dst.shape(), errc::shape_mismatch,
             std::string("pack: source shape ") + detail::extents_string(src.shape()) +
                 " differs from packed shape " + detail::extents_string(dst.shape()));
  const index_t n = src.shape(Rank - 1), step = src.stride(Rank - 1);
  const bool unit = step == 1 || n <= 1;
  auto src_row = [&](const extents<Rank>& idx) { return &src[idx]; };
  detail::for_each_row(src.shape(), [&](const extents<Rank>& idx) {
    const index_t j = unit ? detail::find_out_of_range<fmt, true>(src_row(idx), 1, n)
                           : detail::find_out_of_range<fmt, false>(src_row(idx), step, n);
    if (QLIB_UNLIKELY(j >= 0)) {
      extents<Rank> at = idx;
      at[Rank - 1] = j;
      raise_error(errc::out_of_range,
                  "pack: value " + std::to_string(static_cast<int>(src[at])) + " at index " +
                      detail::extents_string(at) + " outside the " + fmt::name() + " range [" +
                      std::to_string(fmt::min) + "," + std::to_string(fmt::max) + "]");
    }
  });
  detail::for_each_row(src.shape(), [&](const extents<Rank>& idx) {
    extents<Rank - 1> outer{};
    for (std::size_t a = 0; a + 1 < Rank; ++a) outer[a] = idx[a];
    std::uint8_t* out = dst.row(outer);
    if (unit) detail::pack_row<fmt, true>(src_row(idx), 1, n, out);
    else detail::pack_row<fmt, false>(src_row(idx), step, n, out);
  });
}
template <int Bits, bool Signed, std::size_t Rank>
void pack(const detail::identity_t<
              tensor_view<const typename packed_format<Bits, Signed>::value_type, Rank>>& src,
          packed_tensor<Bits, Signed, Rank>& dst) {
  pack<Bits, Signed, Rank>(src, dst.view());
}

// Unpacks src into dst (any strides). Shapes must be equal (errc::shape_mismatch).
template <int Bits, bool Signed, std::size_t Rank, class Byte>
void unpack(const packed_view<Bits, Signed, Rank, Byte>& src,
            const detail::identity_t<
                tensor_view<typename packed_format<Bits, Signed>::value_type, Rank>>& dst) {
  using fmt = packed_format<Bits, Signed>;
  QLIB_CHECK(src.shape() == dst.shape(), errc::shape_mismatch,
             std::string("unpack: packed shape ") + detail::extents_string(src.shape()) +
                 " differs from destination shape " + detail::extents_string(dst.shape()));
  const index_t n = dst.shape(Rank - 1), step = dst.stride(Rank - 1);
  const bool unit = step == 1 || n <= 1;
  detail::for_each_row(dst.shape(), [&](const extents<Rank>& idx) {
    extents<Rank - 1> outer{};
    for (std::size_t a = 0; a + 1 < Rank; ++a) outer[a] = idx[a];
    const std::uint8_t* in = src.row(outer);
    if (unit) detail::unpack_row<fmt, true>(in, n, &dst[idx], 1);
    else detail::unpack_row<fmt, false>(in, n, &dst[idx], step);
  });
}
template <int Bits, bool Signed, std::size_t Rank>
void unpack(const packed_tensor<Bits, Signed, Rank>& src,
            const detail::identity_t<
                tensor_view<typename packed_format<Bits, Signed>::value_type, Rank>>& dst) {
  unpack<Bits, Signed, Rank, const std::uint8_t>(src.view(), dst);
}

// Unpacks into a new dense tensor.
template <int Bits, bool Signed, std::size_t Rank, class Byte>
tensor<typename packed_format<Bits, Signed>::value_type, Rank> unpack(
    const packed_view<Bits, Signed, Rank, Byte>& src) {
  tensor<typename packed_format<Bits, Signed>::value_type, Rank> out(src.shape());
  unpack<Bits, Signed, Rank, Byte>(src, out.view());
  return out;
}
template <int Bits, bool Signed, std::size_t Rank>
tensor<typename packed_format<Bits, Signed>::value_type, Rank> unpack(
    const packed_tensor<Bits, Signed, Rank>& src) {
  return unpack(src.view());
}

template <int Bits, bool Signed, std::size_t Rank>
packed_tensor<Bits, Signed, Rank>::packed_tensor(const tensor_view<const value_type, Rank>& src)
    : packed_tensor(src.shape()) {
  pack<Bits, Signed, Rank>(src, view());
}

// Short names for the common formats.
template <std::size_t Rank> using s4_tensor = packed_tensor<4, true, Rank>;
template <std::size_t Rank> using u4_tensor = packed_tensor<4, false, Rank>;
template <std::size_t Rank> using s4_view = packed_view<4, true, Rank>;
template <std::size_t Rank> using u4_view = packed_view<4, false, Rank>;
template <std::size_t Rank> using s4_cview = packed_cview<4, true, Rank>;
template <std::size_t Rank> using u4_cview = packed_cview<4, false, Rank>;
template <std::size_t Rank> using s2_tensor = packed_tensor<2, true, Rank>;
template <std::size_t Rank> using u2_tensor = packed_tensor<2, false, Rank>;
template <std::size_t Rank> using s2_view = packed_view<2, true, Rank>;
template <std::size_t Rank> using u2_view = packed_view<2, false, Rank>;
template <std::size_t Rank> using s2_cview = packed_cview<2, true, Rank>;
template <std::size_t Rank> using u2_cview = packed_cview<2, false, Rank>;

}  // namespace qlib
