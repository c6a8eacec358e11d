// Pruning structures as values (elements, N:M, channels, blocks) and how each splits a tensor into groups.
#pragma once

#include <string>
#include <vector>

#include "qlib/prune/tensor_ref.hpp"

namespace qlib {
namespace prune {

// Every element on its own (torch.nn.utils.prune's unstructured pruning).
struct unstructured {};

// N of every M consecutive elements along `axis` are kept (2:4, 1:4...). For weights
// [out][K] (or OHWI) that is the last axis, the GEMM's reduction dimension, which is
// what N:M sparse kernels need. Negative axes count from the end.
// Tail rule: M must divide the axis length; a shorter last group is refused
// (errc::shape_mismatch) because no N:M kernel could use it. 0 <= N <= M, M >= 1.
// N:M fixes the sparsity at 1 - N/M: each group keeps its N best elements and no
// ratio or threshold applies (see pruner.hpp).
struct n_m {
  index_t n = 2;
  index_t m = 4;
  std::ptrdiff_t axis = -1;
};

// Whole slices along `axis`: axis 0 of OHWI/OIHW conv weights or of [out, in] linear
// weights is one output channel (filter) per slice.
struct channels {
  std::ptrdiff_t axis = 0;
};

// R x C tiles of the tensor seen as 2-D: [shape[0], product of the other extents]
// (for OHWI conv weights that is [out][kh*kw*in], the GEMM's weight rows; a 1-D tensor
// is one row). When R or C does not divide the view, the edge tiles are smaller and are
// groups of their own, scored over the elements they have and counted as one group each.
struct blocks {
  index_t r = 1;
  index_t c = 4;
};

// A structure applied to a shape: the tensor's elements (row-major flat indices) fall in
// `groups` groups. Groups are numbered in their documented order, which breaks ties:
// elements in row-major order; N:M groups in row-major order of their first element;
// channels by index along the axis; blocks row-major over the grid of tiles.
struct group_layout {
  enum class kind { elements, n_m, channels, blocks };
  kind k = kind::elements;
  index_t elements = 0, groups = 0;
  std::size_t axis = 0;                               // n_m, channels: the axis
  index_t len = 1, inner = 1, m = 1, n = 1;           // n_m, channels: axis extent, product of later extents
  index_t cols = 1, r = 1, c = 1, col_blocks = 1;     // blocks: 2-D view width, tile, tiles per row

  index_t group_of(index_t flat) const noexcept {
    switch (k) {
      case kind::elements: return flat;
      case kind::n_m: {
        const index_t outer = flat / (len * inner), a = (flat / inner) % len;
        return (outer * (len / m) + a / m) * inner + flat % inner;
      }
      case kind::channels: return (flat / inner) % len;
      case kind::blocks: return (flat / cols / r) * col_blocks + (flat % cols) / c;
    }
    return 0;
  }
};

namespace detail {
inline index_t checked_size(const std::vector<index_t>& shape, const char* who) {
  QLIB_CHECK(!shape.empty(), errc::invalid_argument, std::string(who) + ": a tensor needs at least one axis");
  index_t n = 1;
  for (index_t e : shape) {
    QLIB_CHECK(e >= 0, errc::invalid_argument, std::string(who) + ": negative extent in " + shape_string(shape));
    n *= e;
  }
  QLIB_CHECK(n > 0, errc::empty_tensor, std::string(who) + ": empty tensor " + shape_string(shape));
  return n;
}
// Extent of `axis` and the product of the later extents.
inline void axis_split(const std::vector<index_t>& shape, std::size_t axis, group_layout& g) {
  g.axis = axis;
  g.len = shape[axis];
  g.inner = 1;
  for (std::size_t i = axis + 1; i < shape.size(); ++i) g.inner *= shape[i];
}
}  // namespace detail

inline group_layout layout(const std::vector<index_t>& shape, const unstructured&) {
  group_layout g;
  g.elements = g.groups = detail::checked_size(shape, "prune::unstructured");
  return g;
}

inline group_layout layout(const std::vector<index_t>& shape, const n_m& s) {
  const char* who = "prune::n_m";
  group_layout g;
  g.k = group_layout::kind::n_m;
  QLIB_CHECK(s.m >= 1 && s.n >= 0 && s.n <= s.m, errc::invalid_argument,
             "prune::n_m: needs 0 <= N <= M and M >= 1, got " + std::to_string(s.n) + ":" + std::to_string(s.m));
  g.elements = detail::checked_size(shape, who);
  detail::axis_split(shape, detail::resolve_axis(s.axis, shape.size(), who), g);
  QLIB_CHECK(g.len % s.m == 0, errc::shape_mismatch,
             "prune::n_m: M = " + std::to_string(s.m) + " does not divide the axis extent " + std::to_string(g.len) +
                 " of " + detail::shape_string(shape) + " (a short last group is refused)");
  g.m = s.m;
  g.n = s.n;
  g.groups = g.elements / s.m;
  return g;
}

inline group_layout layout(const std::vector<index_t>& shape, const channels& s) {
  const char* who = "prune::channels";
  group_layout g;
  g.k = group_layout::kind::channels;
  g.elements = detail::checked_size(shape, who);
  detail::axis_split(shape, detail::resolve_axis(s.axis, shape.size(), who), g);
  g.groups = g.len;
  return g;
}

inline group_layout layout(const std::vector<index_t>& shape, const blocks& s) {
  group_layout g;
  g.k = group_layout::kind::blocks;
  QLIB_CHECK(s.r >= 1 && s.c >= 1, errc::invalid_argument,
             "prune::blocks: tile extents must be >= 1, got " + std::to_string(s.r) + "x" + std::to_string(s.c));
  g.elements = detail::checked_size(shape, "prune::blocks");
  const index_t rows = shape.size() == 1 ? 1 : shape[0];
  g.cols = g.elements / rows;
  g.r = s.r;
  g.c = s.c;
  g.col_blocks = (g.cols - 1) / s.c + 1;  // ceil without overflow for huge tiles
  g.groups = ((rows - 1) / s.r + 1) * g.col_blocks;
  return g;
}

}  // namespace prune
}  // namespace qlib
