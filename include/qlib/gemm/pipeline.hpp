// Output pipelines: a std::tuple of stages, its output type, validation and portable evaluation.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "qlib/gemm/output_stages.hpp"

// make_pipeline(bias_add{...}, requantize_fixed_point<>{...}, saturating_cast<int8_t>{})
// is a std::tuple; the stages run left to right on each int32 accumulator, each
// stage's output type being the next one's input type (checked at compile time). The
// empty pipeline std::tuple<>{} stores the int32 accumulators themselves.
namespace qlib {
namespace gemm {

template <class... Stages>
std::tuple<Stages...> make_pipeline(const Stages&... stages) {
  return std::tuple<Stages...>(stages...);
}

namespace detail {
template <class T, class... Stages>
struct stage_chain {
  using type = T;
};
template <class T, class S0, class... Stages>
struct stage_chain<T, S0, Stages...> {
  static_assert(std::is_same<T, typename S0::input_type>::value,
                "gemm pipeline: a stage's input_type must be the previous stage's output_type (int32 first)");
  using type = typename stage_chain<typename S0::output_type, Stages...>::type;
};

template <class S, class = void>
struct has_max_magnitude : std::false_type {};
template <class S>
struct has_max_magnitude<S, decltype((void)std::declval<const S&>().max_magnitude(std::int64_t{}))> : std::true_type {};

template <class S>
std::int64_t stage_int32_bound(const S& s, std::int64_t in) {
  if constexpr (has_max_magnitude<S>::value) return s.max_magnitude(in);
  else return std::numeric_limits<std::int32_t>::max();  // unknown: assume any int32
}
}  // namespace detail

template <class Pipeline>
struct pipeline_traits;
template <class... Stages>
struct pipeline_traits<std::tuple<Stages...>> {
  using output_type = typename detail::stage_chain<std::int32_t, Stages...>::type;
  static constexpr std::size_t size = sizeof...(Stages);
};
// The element type a pipeline stores (the type of C).
template <class Pipeline>
using pipeline_output_t = typename pipeline_traits<Pipeline>::output_type;

// Validates every stage for a C of rows x cols.
template <class... Stages>
void validate_pipeline(const std::tuple<Stages...>& p, index_t rows, index_t cols) {
  std::apply([&](const auto&... s) { (s.validate(rows, cols), ...); }, p);
}

// Follows the largest |value| through the leading int32 -> int32 stages, starting from
// `bound` on the accumulators, and refuses a pipeline whose int32 values could overflow.
template <class... Stages>
void check_pipeline_int32_range(const std::tuple<Stages...>& p, std::int64_t bound) {
  bool in_int32 = true;
  std::size_t index = 0;
  auto step = [&](const auto& s) {
    using S = std::decay_t<decltype(s)>;
    in_int32 = in_int32 && std::is_same<typename S::output_type, std::int32_t>::value;
    if (in_int32) {
      bound = detail::stage_int32_bound(s, bound);
      QLIB_CHECK(bound <= std::numeric_limits<std::int32_t>::max(), errc::overflow,
                 "gemm pipeline stage " + std::to_string(index) + " can overflow int32: its result can reach " +
                     std::to_string(bound) + " in magnitude");
    }
    ++index;
  };
  std::apply([&](const auto&... s) { (step(s), ...); }, p);
}

namespace detail {
template <std::size_t I, class Pipeline, class T>
auto eval_from(const Pipeline& p, T x, index_t row, index_t col) {
  if constexpr (I == std::tuple_size<Pipeline>::value) return x;
  else return eval_from<I + 1>(p, std::get<I>(p).eval(x, row, col), row, col);
}
}  // namespace detail

// The portable evaluation of a whole pipeline on one accumulator: the definition every
// ISA path matches.
template <class Pipeline>
pipeline_output_t<Pipeline> eval_pipeline(const Pipeline& p, std::int32_t acc, index_t row, index_t col) {
  return detail::eval_from<0>(p, acc, row, col);
}

}  // namespace gemm
}  // namespace qlib
