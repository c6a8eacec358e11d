// quant_params: scales and zero points sized by a granularity, plus the integer range.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "qlib/quant/granularity.hpp"
#include "qlib/quant/scheme.hpp"

namespace qlib {

// The smallest scale qlib accepts: the smallest normal float, so 1/scale stays finite.
inline constexpr float min_scale = FLT_MIN;

// What quantize() needs: real = (q - zero_point) * scale, q clamped to [qmin, qmax].
// scale[i] and zero_point[i] belong to parameter i of the granularity's layout.
struct quant_params {
  granularity gran;
  std::int32_t qmin = -128;
  std::int32_t qmax = 127;
  std::vector<float> scale;
  std::vector<std::int32_t> zero_point;

  quant_params() = default;
  quant_params(granularity g, std::int32_t qmin_, std::int32_t qmax_, std::vector<float> scales,
               std::vector<std::int32_t> zero_points)
      : gran(g), qmin(qmin_), qmax(qmax_), scale(std::move(scales)), zero_point(std::move(zero_points)) {}

  // Per-tensor parameters for a scheme.
  template <class S>
  static quant_params per_tensor(const affine_scheme<S>& scheme, float scale, std::int32_t zero_point) {
    scheme.validate();
    return quant_params(granularity::per_tensor(), scheme.qmin(), scheme.qmax(), {scale}, {zero_point});
  }
  // Parameters of any granularity for a scheme.
  template <class S>
  static quant_params make(const affine_scheme<S>& scheme, granularity g, std::vector<float> scales,
                           std::vector<std::int32_t> zero_points) {
    scheme.validate();
    return quant_params(g, scheme.qmin(), scheme.qmax(), std::move(scales), std::move(zero_points));
  }

  index_t size() const noexcept { return static_cast<index_t>(scale.size()); }

  // Checks every parameter: sizes agree, range valid, scales finite and >= min_scale,
  // zero points inside [qmin, qmax].
  void validate() const {
    QLIB_CHECK(qmin < qmax, errc::invalid_argument,
               "empty integer range [" + std::to_string(qmin) + "," + std::to_string(qmax) + "]");
    QLIB_CHECK(!scale.empty(), errc::empty_tensor, "quant_params has no scales");
    QLIB_CHECK(scale.size() == zero_point.size(), errc::shape_mismatch,
               std::to_string(scale.size()) + " scales but " + std::to_string(zero_point.size()) +
                   " zero points");
    for (std::size_t i = 0; i < scale.size(); ++i) {
      QLIB_CHECK(std::isfinite(scale[i]), errc::non_finite,
                 "scale[" + std::to_string(i) + "] is not finite");
      QLIB_CHECK(scale[i] >= min_scale, errc::invalid_argument,
                 "scale[" + std::to_string(i) + "] = " + std::to_string(scale[i]) +
                     " is not a positive normal float");
      QLIB_CHECK(zero_point[i] >= qmin && zero_point[i] <= qmax, errc::invalid_argument,
                 "zero_point[" + std::to_string(i) + "] = " + std::to_string(zero_point[i]) +
                     " outside [" + std::to_string(qmin) + "," + std::to_string(qmax) + "]");
    }
  }

  // validate(), plus: the parameter count fits a tensor of this shape.
  template <std::size_t Rank>
  void validate_for(const extents<Rank>& shape) const {
    validate();
    const index_t want = gran.param_count(shape);
    QLIB_CHECK(want == size(), errc::shape_mismatch,
               gran.describe() + " of shape " + detail::extents_string(shape) + " needs " +
                   std::to_string(want) + " parameters, got " + std::to_string(size()));
  }

  // validate_for(), plus: [qmin, qmax] fits the storage type Q.
  template <class Q, std::size_t Rank>
  void validate_for_storage(const extents<Rank>& shape) const {
    validate_for(shape);
    QLIB_CHECK(qmin >= std::numeric_limits<Q>::min() && qmax <= std::numeric_limits<Q>::max(),
               errc::invalid_argument,
               "integer range [" + std::to_string(qmin) + "," + std::to_string(qmax) +
                   "] does not fit the storage type");
  }
};

}  // namespace qlib
