// Pruning scores: magnitude, Lp norm of each group, or any user callable; NaN scores are refused.
#pragma once

#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "qlib/prune/structure.hpp"

namespace qlib {
namespace prune {

// |w| of an element. On a group of several elements (channels, blocks) it is the sum of
// |w|, the same as l1.
struct magnitude {};

// (sum |w|^p)^(1/p) over each group, p >= 1; p = +infinity is max |w|. On single elements
// every p orders like |w|.
struct lp_norm {
  double p = 2.0;
};
inline constexpr lp_norm l1{1.0};
inline constexpr lp_norm l2{2.0};

// Any other score is a callable taking a group's elements as a dense
// tensor_view<const float, 1> (row-major order within the group) and returning a number
// convertible to double; higher means more important.
//
// Which elements a score sees: one element for unstructured and N:M (N:M ranks the
// elements within each group), the whole slice for channels, the tile for blocks.
// Scores are doubles; a NaN score (a NaN weight under magnitude/Lp, or a callable's NaN)
// is refused with errc::non_finite, since it has no place in the order. Infinite scores
// are ordered as usual.

namespace detail {
inline void check_score(const lp_norm& s) {
  QLIB_CHECK(s.p >= 1.0, errc::invalid_argument,
             "prune::lp_norm: p must be >= 1 (or +infinity), got " + std::to_string(s.p));
}
inline void check_score(const magnitude&) {}
template <class F>
void check_score(const F&) {}

template <class S>
constexpr bool is_builtin_score = std::is_same<S, magnitude>::value || std::is_same<S, lp_norm>::value;

inline void require_finite_scores(const std::vector<double>& s, const char* who) {
  for (std::size_t i = 0; i < s.size(); ++i)
    QLIB_CHECK(!std::isnan(s[i]), errc::non_finite,
               std::string(who) + ": the score of group " + std::to_string(i) + " is NaN (NaN weights?)");
}
}  // namespace detail

// One score per scoring unit of t under g: per element when `per_element` (unstructured,
// N:M), else per group.
template <class Score>
std::vector<double> score_units(const tensor_ref& t, const group_layout& g, const Score& score, bool per_element) {
  detail::check_score(score);
  const index_t units = per_element ? g.elements : g.groups;
  std::vector<double> s(static_cast<std::size_t>(units), 0.0);
  if constexpr (detail::is_builtin_score<Score>) {
    double p = 1.0;
    if constexpr (std::is_same<Score, lp_norm>::value) p = score.p;
    if (per_element || p == 1.0) {  // sums of |w| (a single |w| per element)
      if (per_element)
        t.for_each([&](index_t e, float v) { s[static_cast<std::size_t>(e)] = std::fabs(static_cast<double>(v)); });
      else
        t.for_each([&](index_t e, float v) { s[static_cast<std::size_t>(g.group_of(e))] += std::fabs(static_cast<double>(v)); });
    } else if (p == 2.0) {
      t.for_each([&](index_t e, float v) {
        const double d = v;
        s[static_cast<std::size_t>(g.group_of(e))] += d * d;
      });
      for (double& x : s) x = std::sqrt(x);
    } else if (std::isinf(p)) {
      // Starts at 0 and keeps a NaN once seen (std::max would drop it).
      t.for_each([&](index_t e, float v) {
        double& x = s[static_cast<std::size_t>(g.group_of(e))];
        const double a = std::fabs(static_cast<double>(v));
        if (!(a <= x) && !std::isnan(x)) x = a;
      });
    } else {
      t.for_each([&](index_t e, float v) {
        s[static_cast<std::size_t>(g.group_of(e))] += std::pow(std::fabs(static_cast<double>(v)), p);
      });
      for (double& x : s) x = std::pow(x, 1.0 / p);
    }
  } else {
    static_assert(std::is_invocable<const Score&, tensor_view<const float, 1>>::value,
                  "a prune score is prune::magnitude, prune::lp_norm or a callable taking tensor_view<const float, 1>");
    if (per_element || g.k == group_layout::kind::elements) {
      t.for_each([&](index_t e, float v) {
        s[static_cast<std::size_t>(e)] = static_cast<double>(score(tensor_view<const float, 1>(&v, extents<1>{1})));
      });
    } else {
      // Gather each group's elements contiguously (a counting sort by group keeps the
      // row-major order within a group), then score each group once.
      std::vector<index_t> start(static_cast<std::size_t>(g.groups) + 1, 0);
      t.for_each([&](index_t e, float) { ++start[static_cast<std::size_t>(g.group_of(e)) + 1]; });
      for (std::size_t i = 1; i < start.size(); ++i) start[i] += start[i - 1];
      std::vector<index_t> fill(start.begin(), start.end() - 1);
      std::vector<float> buf(static_cast<std::size_t>(g.elements));
      t.for_each([&](index_t e, float v) { buf[static_cast<std::size_t>(fill[static_cast<std::size_t>(g.group_of(e))]++)] = v; });
      for (index_t i = 0; i < g.groups; ++i) {
        const index_t b = start[static_cast<std::size_t>(i)], n = start[static_cast<std::size_t>(i) + 1] - b;
        s[static_cast<std::size_t>(i)] = static_cast<double>(score(tensor_view<const float, 1>(buf.data() + b, extents<1>{n})));
      }
    }
  }
  detail::require_finite_scores(s, "prune::score");
  return s;
}

}  // namespace prune
}  // namespace qlib
