// Pruners: a structure, a score and a selection composed into masks, per tensor or globally over many tensors.
#pragma once

#include <string>
#include <type_traits>
#include <vector>

#include "qlib/prune/mask.hpp"
#include "qlib/prune/score.hpp"
#include "qlib/prune/select.hpp"
#include "qlib/prune/structure.hpp"

namespace qlib {
namespace prune {

namespace detail {
// Expands per-group decisions to a mask over t's elements (channel masks get their keep-list).
inline mask expand(const tensor_ref& t, const group_layout& g, const std::vector<char>& pruned) {
  if (g.k == group_layout::kind::channels) {
    std::vector<index_t> kept;
    for (index_t c = 0; c < g.groups; ++c)
      if (!pruned[static_cast<std::size_t>(c)]) kept.push_back(c);
    return mask::from_channels(t.shape, g.axis, std::move(kept));
  }
  std::vector<std::uint8_t> keep(static_cast<std::size_t>(g.elements));
  for (index_t e = 0; e < g.elements; ++e) keep[static_cast<std::size_t>(e)] = !pruned[static_cast<std::size_t>(g.group_of(e))];
  return mask(t.shape, std::move(keep));
}
}  // namespace detail

// Masks for several tensors (any shapes and ranks) from one selection over all their
// groups: global pruning, like torch.nn.utils.prune.global_unstructured with
// sparsity(s). `norm` (select.hpp) can make the tensors' scores comparable first. With
// one tensor this is per-tensor (local) pruning. Structures: unstructured, channels,
// blocks (N:M has its own overload below). An empty list or empty tensor is refused.
template <class Structure, class Score>
std::vector<mask> make_masks(const std::vector<tensor_ref>& tensors, const Structure& s, const Score& score,
                             const selection& sel, normalization norm = normalization::none) {
  static_assert(!std::is_same<Structure, n_m>::value,
                "N:M fixes its sparsity at 1 - N/M: call make_mask(s)(tensor(s), n_m, score) without a selection");
  QLIB_CHECK(!tensors.empty(), errc::empty_tensor, "prune::make_masks: no tensors");
  detail::check_selection(sel);
  std::vector<group_layout> layouts;
  std::vector<std::vector<double>> scores;
  for (const tensor_ref& t : tensors) {
    layouts.push_back(layout(t.shape, s));
    scores.push_back(score_units(t, layouts.back(), score, std::is_same<Structure, unstructured>::value));
  }
  normalize_scores(scores, norm);
  const std::vector<std::vector<char>> pruned = select_pruned(scores, sel);
  std::vector<mask> out;
  for (std::size_t i = 0; i < tensors.size(); ++i) out.push_back(detail::expand(tensors[i], layouts[i], pruned[i]));
  return out;
}

// Per-tensor (local) pruning.
template <class Structure, class Score>
mask make_mask(const tensor_ref& t, const Structure& s, const Score& score, const selection& sel) {
  return std::move(make_masks(std::vector<tensor_ref>{t}, s, score, sel)[0]);
}

// N:M: in every group of M consecutive elements along the axis, the N with the highest
// scores are kept (ties: the earlier element along the axis is pruned first). Every
// group keeps exactly N, so local and global are the same thing.
template <class Score>
mask make_mask(const tensor_ref& t, const n_m& s, const Score& score) {
  const group_layout g = layout(t.shape, s);
  const std::vector<double> sc = score_units(t, g, score, /*per_element=*/true);
  std::vector<std::uint8_t> keep(static_cast<std::size_t>(g.elements), 1);
  const index_t m = g.m, drop = g.m - g.n, outer = g.elements / (g.len * g.inner);
  std::vector<index_t> order(static_cast<std::size_t>(m));
  for (index_t o = 0; o < outer; ++o)
    for (index_t blk = 0; blk < g.len / m; ++blk)
      for (index_t in = 0; in < g.inner; ++in) {
        const index_t base = (o * g.len + blk * m) * g.inner + in;
        auto at = [&](index_t j) { return sc[static_cast<std::size_t>(base + j * g.inner)]; };
        // Insertion sort of the group's positions by (score, position): M is small.
        for (index_t j = 0; j < m; ++j) {
          index_t p = j;
          for (; p > 0 && at(order[static_cast<std::size_t>(p - 1)]) > at(j); --p)
            order[static_cast<std::size_t>(p)] = order[static_cast<std::size_t>(p - 1)];
          order[static_cast<std::size_t>(p)] = j;
        }
        for (index_t j = 0; j < drop; ++j)
          keep[static_cast<std::size_t>(base + order[static_cast<std::size_t>(j)] * g.inner)] = 0;
      }
  return mask(t.shape, std::move(keep));
}

template <class Score>
std::vector<mask> make_masks(const std::vector<tensor_ref>& tensors, const n_m& s, const Score& score) {
  QLIB_CHECK(!tensors.empty(), errc::empty_tensor, "prune::make_masks: no tensors");
  std::vector<mask> out;
  for (const tensor_ref& t : tensors) out.push_back(make_mask(t, s, score));
  return out;
}

}  // namespace prune
}  // namespace qlib
