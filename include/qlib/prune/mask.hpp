// prune::mask: which elements of a tensor are kept (a byte per element, plus a channel keep-list), applied in place.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "qlib/core/index_iteration.hpp"
#include "qlib/prune/tensor_ref.hpp"

namespace qlib {
namespace prune {

// One byte per element in row-major order of the tensor's shape: 1 kept, 0 pruned.
// Bytes rather than bits: applying is a branch-free select per element, and the mask
// of a model's weights is 1/4 of their size; to_bits() / from_bits() give and take the
// packed bitmask. A mask from channel pruning also lists the
// kept indices along its axis (what a physical shrink needs).
class mask {
 public:
  mask() = default;
  mask(std::vector<index_t> shape, std::vector<std::uint8_t> keep) : shape_(std::move(shape)), keep_(std::move(keep)) {
    index_t n = 1;
    for (index_t e : shape_) n *= e;
    QLIB_CHECK(static_cast<index_t>(keep_.size()) == n, errc::shape_mismatch,
               "prune::mask: " + std::to_string(keep_.size()) + " entries for shape " +
                   detail::shape_string(shape_));
    for (std::uint8_t& k : keep_) k = k != 0;
  }

  // A mask keeping the slices `kept` (ascending, distinct) along `axis` of `shape`.
  static mask from_channels(const std::vector<index_t>& shape, std::size_t axis, std::vector<index_t> kept) {
    QLIB_CHECK(axis < shape.size(), errc::out_of_range,
               "prune::mask: axis " + std::to_string(axis) + " out of range for " + detail::shape_string(shape));
    const index_t len = shape[axis];
    std::vector<std::uint8_t> on(static_cast<std::size_t>(len), 0);
    for (std::size_t i = 0; i < kept.size(); ++i)
      QLIB_CHECK(kept[i] >= 0 && kept[i] < len && (i == 0 || kept[i] > kept[i - 1]), errc::invalid_argument,
                 "prune::mask: kept channels must be ascending indices below " + std::to_string(len));
    for (index_t c : kept) on[static_cast<std::size_t>(c)] = 1;
    index_t inner = 1, n = 1;
    for (std::size_t i = 0; i < shape.size(); ++i) {
      n *= shape[i];
      if (i > axis) inner *= shape[i];
    }
    std::vector<std::uint8_t> keep(static_cast<std::size_t>(n));
    for (index_t e = 0; e < n; ++e) keep[static_cast<std::size_t>(e)] = on[static_cast<std::size_t>((e / inner) % len)];
    mask m(shape, std::move(keep));
    m.channel_axis_ = static_cast<std::ptrdiff_t>(axis);
    m.kept_channels_ = std::move(kept);
    return m;
  }

  // The packed bitmask: element e at bit e % 8 of byte e / 8 (the order of the model
  // files' weight masks, nn/weight_code_storage.hpp), 1 kept; the last byte's unused
  // bits are 0. For storing or sending a mask at one bit per element.
  std::vector<std::uint8_t> to_bits() const {
    std::vector<std::uint8_t> bits((keep_.size() + 7) / 8, 0);
    for (std::size_t e = 0; e < keep_.size(); ++e)
      bits[e / 8] = static_cast<std::uint8_t>(bits[e / 8] | (keep_[e] << (e % 8)));
    return bits;
  }
  // The mask of `shape` from its to_bits() form; refuses a wrong length or set unused bits.
  static mask from_bits(std::vector<index_t> shape, const std::vector<std::uint8_t>& bits) {
    index_t n = 1;
    for (index_t e : shape) {
      QLIB_CHECK(e >= 0 && (e == 0 || n <= PTRDIFF_MAX / 8 / e), errc::invalid_argument,
                 "prune::mask::from_bits: shape " + detail::shape_string(shape) +
                     " has a negative extent or too many elements");
      n *= e;
    }
    const auto count = static_cast<std::size_t>(n);
    QLIB_CHECK(bits.size() == (count + 7) / 8, errc::shape_mismatch,
               "prune::mask::from_bits: " + std::to_string(bits.size()) + " bytes for shape " +
                   detail::shape_string(shape) + ", expected " + std::to_string((count + 7) / 8));
    QLIB_CHECK(count % 8 == 0 || (bits.back() >> (count % 8)) == 0, errc::invalid_argument,
               "prune::mask::from_bits: bits set past the last element");
    std::vector<std::uint8_t> keep(count);
    for (std::size_t e = 0; e < count; ++e) keep[e] = (bits[e / 8] >> (e % 8)) & 1u;
    return mask(std::move(shape), std::move(keep));
  }

  const std::vector<index_t>& shape() const noexcept { return shape_; }
  index_t size() const noexcept { return static_cast<index_t>(keep_.size()); }
  const std::uint8_t* data() const noexcept { return keep_.data(); }
  bool keeps(index_t flat) const noexcept { return keep_[static_cast<std::size_t>(flat)] != 0; }

  index_t kept() const noexcept {
    index_t n = 0;
    for (std::uint8_t k : keep_) n += k;
    return n;
  }
  index_t pruned() const noexcept { return size() - kept(); }
  // Fraction of elements pruned (0 for an empty mask).
  double sparsity() const noexcept { return size() ? static_cast<double>(pruned()) / static_cast<double>(size()) : 0.0; }

  // Channel masks only: the axis and the kept indices along it (ascending).
  bool has_channels() const noexcept { return channel_axis_ >= 0; }
  std::size_t channel_axis() const noexcept { return static_cast<std::size_t>(channel_axis_); }
  const std::vector<index_t>& kept_channels() const noexcept { return kept_channels_; }

  // Zeroes the pruned elements of w (same shape as the mask; any strides).
  template <class T, std::size_t R>
  void apply(tensor_view<T, R> w) const {
    check_shape(std::vector<index_t>(w.shape().begin(), w.shape().end()));
    if (w.is_contiguous()) {
      apply_flat(w.data(), w.size());
      return;
    }
    extents<R> idx{};
    for (index_t e = 0; e < size(); ++e, qlib::detail::next_index(idx, w.shape()))
      if (!keep_[static_cast<std::size_t>(e)]) w[idx] = T(0);
  }
  template <class T, std::size_t R>
  void apply(tensor<T, R>& w) const {
    apply(w.view());
  }
  // A flat row-major buffer of n elements (a train::parameter's value or gradient).
  void apply(float* data, index_t n) const {
    QLIB_CHECK(n == size(), errc::shape_mismatch,
               "prune::mask: " + std::to_string(n) + " elements for a mask of " + std::to_string(size()));
    apply_flat(data, n);
  }

  // Elements of w that the mask prunes but are not zero (0 after apply()).
  template <std::size_t R>
  index_t violations(tensor_view<const float, R> w) const {
    check_shape(std::vector<index_t>(w.shape().begin(), w.shape().end()));
    index_t bad = 0;
    tensor_ref(w).for_each([&](index_t e, float v) { bad += !keep_[static_cast<std::size_t>(e)] && v != 0.0f; });
    return bad;
  }

 private:
  void check_shape(const std::vector<index_t>& s) const {
    QLIB_CHECK(s == shape_, errc::shape_mismatch,
               "prune::mask: tensor " + detail::shape_string(s) + " does not match the mask's " +
                   detail::shape_string(shape_));
  }
  // Fixed blocks of 64 so the select vectorizes (g++ -O2 vectorizes only loops without
  // a scalar epilogue), then the tail. Pruned elements become +0 (also NaN ones).
  template <class T>
  void apply_flat(T* w, index_t n) const {
    const std::uint8_t* k = keep_.data();
    index_t i = 0;
    for (; i + 64 <= n; i += 64)
      for (index_t j = 0; j < 64; ++j) w[i + j] = k[i + j] ? w[i + j] : T(0);
    for (; i < n; ++i) w[i] = k[i] ? w[i] : T(0);
  }

  std::vector<index_t> shape_;
  std::vector<std::uint8_t> keep_;
  std::ptrdiff_t channel_axis_ = -1;
  std::vector<index_t> kept_channels_;
};

}  // namespace prune
}  // namespace qlib
