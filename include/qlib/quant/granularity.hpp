// granularity: per-tensor, per-channel on any axis, per-group along any axis.
#pragma once

#include <string>

#include "qlib/core/tensor_view.hpp"

namespace qlib {

// Which elements share one (scale, zero point). A value, not a type: the parameter
// lookup happens once per run of elements, so a compile-time granularity would buy no
// speed, and a value lets a model pick it per layer at run time.
//
// Parameter layout (row-major, what quant_params::scale holds):
//  - per_tensor: 1 parameter.
//  - per_channel(axis): shape[axis] parameters, one per index along the axis.
//  - per_group(axis, g): the tensor's shape with shape[axis] replaced by
//    ceil(shape[axis] / g); group k along the axis covers indices [k*g, (k+1)*g).
//    The last group may be shorter when g does not divide shape[axis] (it is quantized
//    with its own parameters like any other); use require_divisible() to refuse that.
struct granularity {
  enum class kind { per_tensor, per_channel, per_group };

  kind type = kind::per_tensor;
  std::size_t axis = 0;
  index_t group_size = 0;
  bool divisible_only = false;

  static granularity per_tensor() noexcept { return {}; }
  static granularity per_channel(std::size_t axis) noexcept { return {kind::per_channel, axis, 0, false}; }
  static granularity per_group(std::size_t axis, index_t group_size) noexcept {
    return {kind::per_group, axis, group_size, false};
  }
  // Same granularity, but a group size that does not divide the axis is an error.
  granularity require_divisible() const noexcept {
    granularity g = *this;
    g.divisible_only = true;
    return g;
  }

  bool operator==(const granularity& o) const noexcept {
    return type == o.type && (type == kind::per_tensor || axis == o.axis) &&
           (type != kind::per_group || group_size == o.group_size);
  }
  bool operator!=(const granularity& o) const noexcept { return !(*this == o); }

  std::string describe() const {
    switch (type) {
      case kind::per_tensor: return "per_tensor";
      case kind::per_channel: return "per_channel(axis=" + std::to_string(axis) + ")";
      case kind::per_group:
        return "per_group(axis=" + std::to_string(axis) + ", group_size=" + std::to_string(group_size) + ")";
    }
    return "?";
  }

  // Checks this granularity against a tensor shape and returns the parameter count.
  template <std::size_t Rank>
  index_t param_count(const extents<Rank>& shape) const {
    if (type == kind::per_tensor) return 1;
    QLIB_CHECK(axis < Rank, errc::out_of_range,
               describe() + ": axis out of range for a rank-" + std::to_string(Rank) + " tensor");
    if (type == kind::per_channel) return shape[axis];
    QLIB_CHECK(group_size >= 1, errc::invalid_argument, describe() + ": group size must be >= 1");
    QLIB_CHECK(!divisible_only || shape[axis] % group_size == 0, errc::invalid_argument,
               describe() + " does not divide extent " + std::to_string(shape[axis]) + " of axis " +
                   std::to_string(axis));
    index_t n = 1;
    for (std::size_t a = 0; a < Rank; ++a) n *= a == axis ? groups_along(shape[a]) : shape[a];
    return n;
  }

  // The shape of the parameter tensor (row-major), see the layout above.
  template <std::size_t Rank>
  extents<Rank> param_shape(const extents<Rank>& shape) const {
    extents<Rank> p;
    p.fill(1);
    (void)param_count(shape);  // validates
    if (type == kind::per_channel) p[axis] = shape[axis];
    if (type == kind::per_group) {
      p = shape;
      p[axis] = groups_along(shape[axis]);
    }
    return p;
  }

  index_t groups_along(index_t extent) const noexcept { return (extent + group_size - 1) / group_size; }
};

}  // namespace qlib
