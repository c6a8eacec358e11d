// Naive pruning: explicit groups keyed by multi-index, a full sort of all scores; the oracle for the pruners.
#pragma once

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>
#include <type_traits>
#include <vector>

#include "qlib/prune/mask.hpp"
#include "qlib/prune/score.hpp"
#include "qlib/prune/select.hpp"
#include "qlib/prune/structure.hpp"

namespace qlib {
namespace prune {
namespace reference {

// The elements of one group: values and row-major flat indices, in row-major order.
struct group {
  std::vector<float> values;
  std::vector<index_t> flat;
};
// Groups keyed by their coordinates; std::map's lexicographic key order is the
// documented group order (row-major elements, channel index, row-major tile grid).
using groups = std::map<std::vector<index_t>, group>;

inline std::vector<index_t> key(const tensor_ref&, const std::vector<index_t>& idx, const unstructured&) { return idx; }
inline std::vector<index_t> key(const tensor_ref& t, std::vector<index_t> idx, const n_m& s) {
  const std::size_t a = static_cast<std::size_t>(s.axis < 0 ? s.axis + static_cast<std::ptrdiff_t>(t.rank()) : s.axis);
  idx[a] /= s.m;
  return idx;
}
inline std::vector<index_t> key(const tensor_ref& t, const std::vector<index_t>& idx, const channels& s) {
  return {idx[static_cast<std::size_t>(s.axis < 0 ? s.axis + static_cast<std::ptrdiff_t>(t.rank()) : s.axis)]};
}
inline std::vector<index_t> key(const tensor_ref& t, const std::vector<index_t>& idx, const blocks& s) {
  const std::size_t first = t.rank() == 1 ? 0 : 1;  // a 1-D tensor is one row
  const index_t row = t.rank() == 1 ? 0 : idx[0];
  index_t col = 0;
  for (std::size_t a = first; a < t.rank(); ++a) col = col * t.shape[a] + idx[a];
  return {row / s.r, col / s.c};
}

// Splits t into its groups by walking every multi-index.
template <class Structure>
groups split(const tensor_ref& t, const Structure& s) {
  layout(t.shape, s);  // the same argument checks as the pruners
  groups out;
  std::vector<index_t> idx(t.rank(), 0);
  for (index_t flat = 0; flat < t.size(); ++flat) {
    index_t off = 0;
    for (std::size_t a = 0; a < t.rank(); ++a) off += idx[a] * t.strides[a];
    group& g = out[key(t, idx, s)];
    g.values.push_back(t.data[off]);
    g.flat.push_back(flat);
    for (std::size_t a = t.rank(); a-- > 0;) {
      if (++idx[a] < t.shape[a]) break;
      idx[a] = 0;
    }
  }
  return out;
}

// A group's score; `element` when the scoring unit is one element (unstructured, N:M),
// where magnitude and every Lp norm are |w|.
template <class Score>
double score(const std::vector<float>& v, const Score& s, bool element) {
  if constexpr (detail::is_builtin_score<Score>) {
    if (element) return std::fabs(static_cast<double>(v.at(0)));
  }
  if constexpr (std::is_same<Score, magnitude>::value) {
    double sum = 0.0;
    for (float x : v) sum += std::fabs(static_cast<double>(x));
    return sum;
  } else if constexpr (std::is_same<Score, lp_norm>::value) {
    QLIB_CHECK(s.p >= 1.0, errc::invalid_argument, "prune::lp_norm: p must be >= 1");
    double acc = 0.0;
    for (float x : v) {
      const double a = std::fabs(static_cast<double>(x));
      if (std::isinf(s.p)) acc = std::isnan(acc) || std::isnan(a) ? NAN : std::max(acc, a);
      else if (s.p == 1.0) acc += a;
      else if (s.p == 2.0) acc += a * a;
      else acc += std::pow(a, s.p);
    }
    return std::isinf(s.p) || s.p == 1.0 ? acc : s.p == 2.0 ? std::sqrt(acc) : std::pow(acc, 1.0 / s.p);
  } else {
    return static_cast<double>(s(tensor_view<const float, 1>(v.data(), extents<1>{static_cast<index_t>(v.size())})));
  }
}

// Masks by the documented rules: score every group, sort all groups of all tensors by
// (score, tensor, group order), prune the first round(s * total) or those <= threshold.
template <class Structure, class Score>
std::vector<mask> masks(const std::vector<tensor_ref>& tensors, const Structure& s, const Score& sc,
                        const selection& sel, normalization norm = normalization::none) {
  QLIB_CHECK(!tensors.empty(), errc::empty_tensor, "prune::reference::masks: no tensors");
  std::vector<groups> gs;
  std::vector<std::vector<double>> scores;
  for (const tensor_ref& t : tensors) {
    gs.push_back(split(t, s));
    scores.emplace_back();
    for (const auto& kv : gs.back()) {
      const double v = score(kv.second.values, sc, std::is_same<Structure, unstructured>::value);
      QLIB_CHECK(!std::isnan(v), errc::non_finite, "prune::reference: NaN score");
      scores.back().push_back(v);
    }
  }
  if (norm == normalization::l2)
    for (auto& v : scores) {
      double ss = 0.0;
      for (double x : v) ss += x * x;
      QLIB_CHECK(std::isfinite(ss), errc::non_finite, "prune::reference: infinite score");
      if (ss > 0.0)
        for (double& x : v) x /= std::sqrt(ss);
    }
  std::vector<std::tuple<double, std::size_t, std::size_t>> all;  // score, tensor, group
  for (std::size_t t = 0; t < scores.size(); ++t)
    for (std::size_t g = 0; g < scores[t].size(); ++g) all.emplace_back(scores[t][g], t, g);
  std::sort(all.begin(), all.end());
  std::vector<std::vector<char>> pruned(scores.size());
  for (std::size_t t = 0; t < scores.size(); ++t) pruned[t].assign(scores[t].size(), 0);
  if (sel.k == selection::kind::sparsity) {
    QLIB_CHECK(sel.value >= 0.0 && sel.value <= 1.0, errc::invalid_argument, "prune::reference: bad sparsity");
    const auto k = static_cast<std::size_t>(std::nearbyint(sel.value * static_cast<double>(all.size())));
    for (std::size_t i = 0; i < k; ++i) pruned[std::get<1>(all[i])][std::get<2>(all[i])] = 1;
  } else {
    for (const auto& e : all) pruned[std::get<1>(e)][std::get<2>(e)] = std::get<0>(e) <= sel.value;
  }
  std::vector<mask> out;
  for (std::size_t t = 0; t < tensors.size(); ++t) {
    std::vector<std::uint8_t> keep(static_cast<std::size_t>(tensors[t].size()), 0);
    std::vector<index_t> kept_keys;
    std::size_t g = 0;
    for (const auto& kv : gs[t]) {
      if (!pruned[t][g++]) {
        for (index_t f : kv.second.flat) keep[static_cast<std::size_t>(f)] = 1;
        kept_keys.push_back(kv.first[0]);
      }
    }
    if constexpr (std::is_same<Structure, channels>::value) {
      const auto axis = static_cast<std::size_t>(s.axis < 0 ? s.axis + static_cast<std::ptrdiff_t>(tensors[t].rank()) : s.axis);
      out.push_back(mask::from_channels(tensors[t].shape, axis, kept_keys));
    } else {
      out.emplace_back(tensors[t].shape, std::move(keep));
    }
  }
  return out;
}

// N:M: in each group, the M - N elements with the lowest (score, position) are pruned.
template <class Score>
mask nm_mask(const tensor_ref& t, const n_m& s, const Score& sc) {
  std::vector<std::uint8_t> keep(static_cast<std::size_t>(t.size()), 1);
  for (const auto& kv : split(t, s)) {
    const group& g = kv.second;
    std::vector<std::pair<double, std::size_t>> e;
    for (std::size_t j = 0; j < g.values.size(); ++j) {
      const double v = score(std::vector<float>{g.values[j]}, sc, true);
      QLIB_CHECK(!std::isnan(v), errc::non_finite, "prune::reference: NaN score");
      e.emplace_back(v, j);
    }
    std::sort(e.begin(), e.end());
    for (index_t j = 0; j < s.m - s.n; ++j) keep[static_cast<std::size_t>(g.flat[e[static_cast<std::size_t>(j)].second])] = 0;
  }
  return mask(t.shape, std::move(keep));
}

}  // namespace reference
}  // namespace prune
}  // namespace qlib
