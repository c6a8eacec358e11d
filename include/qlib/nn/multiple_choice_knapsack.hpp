// The exact multiple-choice knapsack: one option per group, minimum summed cost under a size budget.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "qlib/core/error.hpp"

namespace qlib {
namespace nn {

// The choice: option index per group, its summed size and cost.
struct knapsack_solution {
  std::vector<std::size_t> choice;
  std::int64_t size = 0;
  double cost = 0.0;
};

// Picks exactly one option j of every group g (size[g][j] >= 0 integer, cost[g][j] finite)
// so that sum size <= budget and sum cost is minimal. Exact: dynamic programming over the
// integer size axis, kept sparse as the Pareto frontier of (size, cost) after each group -
// the reachable sizes at most `budget` whose cost beats every smaller size. That is the
// dense DP table with its dominated cells dropped, so it scales with the number of distinct
// sums, not with the magnitude of the sizes (millions of bits).
//
// Costs are summed in group order, ((c0 + c1) + c2) + ..., so an exhaustive search summing
// the same way gets bit-identical totals. Ties: among the choices of minimal cost, one of
// smallest size (which one, when several, is fixed by the input order: the same every run).
// Errors: no groups, an empty group, mismatched rows, a negative size, a non-finite cost,
// sums that would overflow, a budget below the smallest possible total (the message
// names that minimum), or more than `max_states` states (24 bytes each) held at once -
// checked before each group's states are built, so the search's memory stays near
// 24 * max_states bytes at most (400 MB by default).
inline knapsack_solution solve_multiple_choice_knapsack(const std::vector<std::vector<std::int64_t>>& size,
                                                        const std::vector<std::vector<double>>& cost,
                                                        std::int64_t budget,
                                                        std::size_t max_states = std::size_t{1} << 24) {
  const char* who = "nn::solve_multiple_choice_knapsack: ";
  QLIB_CHECK(!size.empty(), errc::empty_tensor, std::string(who) + "no groups");
  QLIB_CHECK(size.size() == cost.size(), errc::shape_mismatch,
             std::string(who) + std::to_string(size.size()) + " size rows but " + std::to_string(cost.size()) +
                 " cost rows");
  std::int64_t min_total = 0, max_total = 0;
  const std::int64_t limit = std::numeric_limits<std::int64_t>::max() / 2;
  for (std::size_t g = 0; g < size.size(); ++g) {
    QLIB_CHECK(!size[g].empty(), errc::empty_tensor,
               std::string(who) + "group " + std::to_string(g) + " has no options");
    QLIB_CHECK(size[g].size() == cost[g].size(), errc::shape_mismatch,
               std::string(who) + "group " + std::to_string(g) + " has " + std::to_string(size[g].size()) +
                   " sizes but " + std::to_string(cost[g].size()) + " costs");
    std::int64_t lo = limit, hi = 0;
    for (std::size_t j = 0; j < size[g].size(); ++j) {
      QLIB_CHECK(size[g][j] >= 0 && size[g][j] <= limit, errc::invalid_argument,
                 std::string(who) + "size " + std::to_string(size[g][j]) + " of option " + std::to_string(j) +
                     " of group " + std::to_string(g) + " is negative or too large");
      QLIB_CHECK(std::isfinite(cost[g][j]), errc::non_finite,
                 std::string(who) + "cost of option " + std::to_string(j) + " of group " + std::to_string(g) +
                     " is not finite");
      lo = std::min(lo, size[g][j]);
      hi = std::max(hi, size[g][j]);
    }
    QLIB_CHECK(max_total <= limit - hi, errc::overflow, std::string(who) + "total size overflows int64");
    min_total += lo;
    max_total += hi;
  }
  QLIB_CHECK(budget >= min_total, errc::invalid_argument,
             std::string(who) + "budget " + std::to_string(budget) + " is below the smallest possible total " +
                 std::to_string(min_total));

  // One frontier per group: states sorted by size with strictly falling cost. `prev` is the
  // state of the previous frontier it extends, `option` the option taken in this group.
  struct state {
    std::int64_t size;
    double cost;
    std::uint32_t prev, option;
  };
  QLIB_CHECK(max_states <= std::numeric_limits<std::uint32_t>::max(), errc::invalid_argument,
             std::string(who) + "max_states above 2^32 - 1");  // state indices are 32-bit
  auto too_many = [&] {
    return std::string(who) + "more than " + std::to_string(max_states) +
           " states (distinct reachable total sizes): too large for the exact search within max_states; fewer "
           "groups or options, or sizes in a coarser unit, make it smaller";
  };
  std::vector<std::vector<state>> frontiers{{{0, 0.0, 0, 0}}};  // frontiers[g]: after g groups
  std::size_t stored = 1;
  for (std::size_t g = 0; g < size.size(); ++g) {
    const std::vector<state>& cur = frontiers.back();
    // Those kept so far, plus this group's: `next`, and its frontier (at most as many).
    QLIB_CHECK(stored <= max_states && cur.size() <= (max_states - stored) / (2 * size[g].size()), errc::overflow,
               too_many());
    std::vector<state> next;
    // Generated in (prev, option) order; the stable sort keeps that order among exact ties.
    for (std::size_t s = 0; s < cur.size(); ++s)
      for (std::size_t j = 0; j < size[g].size(); ++j) {
        const std::int64_t sz = cur[s].size + size[g][j];
        if (sz <= budget)
          next.push_back({sz, cur[s].cost + cost[g][j], static_cast<std::uint32_t>(s), static_cast<std::uint32_t>(j)});
      }
    std::stable_sort(next.begin(), next.end(), [](const state& a, const state& b) {
      return a.size != b.size ? a.size < b.size : a.cost < b.cost;
    });
    // Keep a state only if it is cheaper than every smaller one: the rest are dominated
    // (adding the same later options keeps them no better, also in floating point,
    // since rounding is monotonic).
    std::vector<state> frontier;
    for (const state& st : next)
      if (frontier.empty() || st.cost < frontier.back().cost) frontier.push_back(st);
    stored += frontier.size();
    frontiers.push_back(std::move(frontier));  // `cur` is not used after this
  }
  // The last state has the lowest cost (costs fall along the frontier) and is the smallest
  // size reaching it.
  const std::vector<state>& last = frontiers.back();
  knapsack_solution sol;
  sol.choice.resize(size.size());
  sol.size = last.back().size;
  sol.cost = last.back().cost;
  std::size_t at = last.size() - 1;
  for (std::size_t g = size.size(); g-- > 0;) {
    const state& st = frontiers[g + 1][at];
    sol.choice[g] = st.option;
    at = st.prev;
  }
  return sol;
}

}  // namespace nn
}  // namespace qlib
