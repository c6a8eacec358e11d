// Selecting what to prune from scores: by target sparsity or threshold, per tensor or global, with deterministic ties.
#pragma once

#include <algorithm>
#include <cmath>
#include <utility>
#include <string>
#include <vector>

#include "qlib/core/tensor_view.hpp"

namespace qlib {
namespace prune {

// What a selection removes, counted in groups (scoring units): elements for
// unstructured pruning, slices for channels, tiles for blocks (a partial edge tile is one
// group). So 50% of channels removes half the channels, whatever their sizes.
//
// sparsity(s): removes round(s * groups) groups with the lowest scores (round half to
// even, as torch.nn.utils.prune rounds `amount`); s in [0, 1], so 0 removes nothing and 1
// removes everything (an all-pruned mask is valid; physically shrinking a layer to zero
// channels is not, and prune/shrink.hpp refuses it).
// threshold(t): removes every group whose score is <= t (so t = 0 removes exact zeros
// under magnitude); t is any number but NaN.
//
// Ties: groups are ordered by score, then by position (the tensor's index in a global
// list, then the group's documented order, see structure.hpp): among equal scores the
// earlier group is pruned first.
struct selection {
  enum class kind { sparsity, threshold };
  kind k = kind::sparsity;
  double value = 0.0;
};
inline selection sparsity(double s) { return {selection::kind::sparsity, s}; }
inline selection threshold(double t) { return {selection::kind::threshold, t}; }

// Global selection over several tensors compares raw scores by default, as
// torch.nn.utils.prune.global_unstructured does, so layers with small weights lose more.
// l2 divides each tensor's scores by the L2 norm of that tensor's scores first (a
// tensor whose scores are all 0 keeps them), making layers comparable.
enum class normalization { none, l2 };

namespace detail {
inline void check_selection(const selection& s) {
  if (s.k == selection::kind::sparsity)
    QLIB_CHECK(s.value >= 0.0 && s.value <= 1.0, errc::invalid_argument,
               "prune::sparsity: must be in [0, 1], got " + std::to_string(s.value));
  else
    QLIB_CHECK(!std::isnan(s.value), errc::invalid_argument, "prune::threshold: must not be NaN");
}
}  // namespace detail

// round(s * total), ties to even, independent of the floating-point environment.
inline index_t prune_count(double s, index_t total) {
  detail::check_selection(sparsity(s));
  const double x = s * static_cast<double>(total), f = std::floor(x), d = x - f;
  index_t k = static_cast<index_t>(f);
  if (d > 0.5 || (d == 0.5 && k % 2 != 0)) ++k;
  return std::min(k, total);
}

// Scales each tensor's scores for a global comparison (see normalization).
inline void normalize_scores(std::vector<std::vector<double>>& scores, normalization n) {
  if (n == normalization::none) return;
  for (auto& s : scores) {
    double ss = 0.0;
    for (double v : s) ss += v * v;
    const double norm = std::sqrt(ss);
    QLIB_CHECK(std::isfinite(norm), errc::non_finite, "prune: an infinite score cannot be L2-normalized");
    if (norm > 0.0)
      for (double& v : s) v /= norm;
  }
}

// Per tensor, per group: 1 if pruned. One selection over all the tensors' groups
// (a single tensor is per-tensor selection).
inline std::vector<std::vector<char>> select_pruned(const std::vector<std::vector<double>>& scores,
                                                    const selection& sel) {
  detail::check_selection(sel);
  std::vector<std::vector<char>> out(scores.size());
  index_t total = 0;
  for (std::size_t t = 0; t < scores.size(); ++t) {
    out[t].assign(scores[t].size(), 0);
    total += static_cast<index_t>(scores[t].size());
  }
  if (sel.k == selection::kind::threshold) {
    for (std::size_t t = 0; t < scores.size(); ++t)
      for (std::size_t i = 0; i < scores[t].size(); ++i) out[t][i] = scores[t][i] <= sel.value;
    return out;
  }
  const index_t k = prune_count(sel.value, total);
  if (k == 0) return out;
  // (score, flat position over the concatenated tensors) pairs are a total order, so
  // nth_element picks exactly the k groups a full sort would; pairs in one array keep
  // the partitioning cache-friendly.
  std::vector<std::pair<double, index_t>> order;
  order.reserve(static_cast<std::size_t>(total));
  for (const auto& s : scores)
    for (double v : s) order.emplace_back(v, static_cast<index_t>(order.size()));
  if (k < total) std::nth_element(order.begin(), order.begin() + (k - 1), order.end());
  std::vector<char> pruned(static_cast<std::size_t>(total), 0);
  for (index_t i = 0; i < k; ++i) pruned[static_cast<std::size_t>(order[static_cast<std::size_t>(i)].second)] = 1;
  index_t base = 0;
  for (std::size_t t = 0; t < scores.size(); ++t) {
    std::copy(pruned.begin() + base, pruned.begin() + base + static_cast<index_t>(scores[t].size()), out[t].begin());
    base += static_cast<index_t>(scores[t].size());
  }
  return out;
}

}  // namespace prune
}  // namespace qlib
