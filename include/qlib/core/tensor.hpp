// tensor<T, Rank>: an owning, dense, 64-byte aligned tensor with views onto it.
#pragma once

#include <algorithm>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>

#include "qlib/core/tensor_view.hpp"

namespace qlib {

// Alignment of owned buffers: one cache line, also one AVX-512 register.
inline constexpr std::size_t tensor_alignment = 64;

namespace detail {
struct aligned_deleter {
  void operator()(void* p) const noexcept { ::operator delete(p, std::align_val_t{tensor_alignment}); }
};
template <class T>
using aligned_ptr = std::unique_ptr<T[], aligned_deleter>;

template <class T>
aligned_ptr<T> aligned_alloc_zeroed(index_t n) {
  static_assert(std::is_trivially_copyable<T>::value, "tensor elements must be trivially copyable");
  QLIB_CHECK(n >= 0 && static_cast<std::size_t>(n) <= SIZE_MAX / sizeof(T), errc::overflow,
             "tensor of " + std::to_string(n) + " elements is too large");
  if (n == 0) return aligned_ptr<T>();
  std::size_t bytes = static_cast<std::size_t>(n) * sizeof(T);
#if QLIB_EXCEPTIONS
  void* p = ::operator new(bytes, std::align_val_t{tensor_alignment});
#else
  void* p = ::operator new(bytes, std::align_val_t{tensor_alignment}, std::nothrow);
  QLIB_CHECK(p != nullptr, errc::overflow, "out of memory allocating " + std::to_string(bytes) + " bytes");
#endif
  std::memset(p, 0, bytes);
  return aligned_ptr<T>(static_cast<T*>(p));
}
}  // namespace detail

// Owns its elements (zero-initialized); copying copies the data.
template <class T, std::size_t Rank>
class tensor {
  static_assert(!std::is_const<T>::value, "tensor owns mutable elements");

 public:
  using value_type = T;
  static constexpr std::size_t rank = Rank;

  tensor() : shape_{} {}
  explicit tensor(const extents<Rank>& shape)
      : data_(detail::aligned_alloc_zeroed<T>(detail::checked_numel(shape))), shape_(shape) {}
  tensor(const extents<Rank>& shape, T fill) : tensor(shape) { std::fill_n(data(), size(), fill); }

  // A dense copy of any view (strided or not).
  template <class U>
  explicit tensor(const tensor_view<U, Rank>& src) : tensor(src.shape()) {
    copy_from(src);
  }

  tensor(const tensor& o) : tensor(o.shape_) {
    if (o.size()) std::memcpy(data(), o.data(), sizeof(T) * static_cast<std::size_t>(size()));
  }
  tensor& operator=(const tensor& o) {
    if (this != &o) *this = tensor(o);
    return *this;
  }
  tensor(tensor&& o) noexcept : data_(std::move(o.data_)), shape_(o.shape_) { o.shape_ = {}; }
  tensor& operator=(tensor&& o) noexcept {
    data_ = std::move(o.data_);
    shape_ = o.shape_;
    o.shape_ = {};
    return *this;
  }

  T* data() noexcept { return data_.get(); }
  const T* data() const noexcept { return data_.get(); }
  const extents<Rank>& shape() const noexcept { return shape_; }
  index_t shape(std::size_t axis) const noexcept { return shape_[axis]; }
  index_t size() const noexcept {
    index_t n = 1;
    for (index_t e : shape_) n *= e;
    return n;
  }
  bool empty() const noexcept { return size() == 0; }

  tensor_view<T, Rank> view() noexcept { return tensor_view<T, Rank>(data(), shape_); }
  tensor_view<const T, Rank> view() const noexcept { return tensor_view<const T, Rank>(data(), shape_); }
  tensor_view<const T, Rank> cview() const noexcept { return view(); }
  operator tensor_view<T, Rank>() noexcept { return view(); }              // NOLINT
  operator tensor_view<const T, Rank>() const noexcept { return view(); }  // NOLINT

  template <class... I>
  T& operator()(I... idx) noexcept { return view()(idx...); }
  template <class... I>
  const T& operator()(I... idx) const noexcept { return view()(idx...); }

  T* begin() noexcept { return data(); }
  T* end() noexcept { return data() + size(); }
  const T* begin() const noexcept { return data(); }
  const T* end() const noexcept { return data() + size(); }

 private:
  template <class U>
  void copy_from(const tensor_view<U, Rank>& src) {
    if constexpr (std::is_same<std::remove_const_t<U>, T>::value) {
      if (src.is_contiguous()) {  // the common case: one memcpy
        if (size() > 0) std::memcpy(data(), src.data(), sizeof(T) * static_cast<std::size_t>(size()));
        return;
      }
    }
    extents<Rank> idx{};
    T* out = data();
    for (index_t n = 0, total = size(); n < total; ++n) {
      *out++ = static_cast<T>(src[idx]);
      for (std::size_t a = Rank; a-- > 0;) {
        if (++idx[a] < shape_[a]) break;
        idx[a] = 0;
      }
    }
  }

  detail::aligned_ptr<T> data_;
  extents<Rank> shape_;
};

}  // namespace qlib
