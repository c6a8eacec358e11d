// Portable int8 GEMM panel kernel (plain C++) and the contract every ISA's panel kernel follows.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "qlib/arch/isa.hpp"
#include "qlib/core/tensor_view.hpp"
#include "qlib/gemm/packed_layout.hpp"

// A GEMM kernel is a descriptor struct found by overload resolution on the ISA tag,
// kernels::gemm_kernel_for(tag); an ISA without its own kernel gets its ancestor's (the
// tags inherit along the ISA chain). Each descriptor has
//
//   static constexpr const char* name;          // the contract, e.g. "avx512vnni_x8s8_6x64c4"
//   template <class Act> static constexpr std::int32_t activation_offset();
//   template <class Act, class Output>
//   static void run_panel(index_t m, index_t k, const Act* a, index_t lda, const std::int8_t* panel,
//                         const std::int32_t* column_init, Output& out);
//
// run_panel computes, for rows [0, m) of A (row r at a + r * lda, k bytes) and the 64
// columns of one packed panel (gemm/packed_layout.hpp),
//
//   S[r][j] = column_init[j] + sum_k (a[r][k] + activation_offset) * b[k][j]   (wrapping int32)
//
// one row tile at a time. column_init holds 64 values, 64-byte aligned (the driver puts
// the zero-point and sign-flip corrections there, so they cost nothing in the loop).
// `out` receives each tile (hand_over() below):
//  - a direct_int32_output: the sums of columns [0, cols) go straight to C, row r at
//    c + r * ldc (kernels that can store from registers do so);
//  - anything else is called as out(row0, rows, tile) with tile = rows x 64 int32, row
//    stride 64, for the output pipeline to run on.
// activation_offset is what the kernel adds to the activations to bring them into its
// own domain: +128 for int8 A on kernels that multiply unsigned by signed bytes
// (vpdpbusd), -128 for uint8 A on kernels that multiply signed bytes (sdot), else 0.
// Kernels only assert: inputs were validated by gemm().
namespace qlib {
namespace kernels {

// int32 results stored as they are: columns [0, cols) of a panel into c (row stride ldc).
struct direct_int32_output {
  std::int32_t* c;
  index_t ldc;
  index_t cols;
};
template <class Output>
using is_direct_output = std::is_same<std::decay_t<Output>, direct_int32_output>;

// Delivers a finished rows x 64 tile (row stride 64) to `out`, see the contract above.
template <class Output>
void hand_over(Output& out, index_t row0, index_t rows, const std::int32_t* tile) {
  if constexpr (is_direct_output<Output>::value) {
    for (index_t r = 0; r < rows; ++r)
      std::memcpy(out.c + (row0 + r) * out.ldc, tile + r * gemm::panel_width,
                  sizeof(std::int32_t) * static_cast<std::size_t>(out.cols));
  } else {
    out(row0, rows, tile);
  }
}

// The real columns of the panel when the output says so (direct_int32_output and the
// driver's epilogue carry `cols`), else the whole panel: kernels may skip the others.
template <class Output, class = void>
struct has_columns : std::false_type {};
template <class Output>
struct has_columns<Output, decltype((void)std::declval<const Output&>().cols)> : std::true_type {};
template <class Output>
index_t output_columns(const Output& out) {
  if constexpr (has_columns<Output>::value) return out.cols;
  else return gemm::panel_width;
}

// Splits m rows into tiles of at most `mr` rows, calling f(row0, rows). A short last
// tile (< mr/2 rows) is merged with the one before and the pair split evenly, so every
// tile keeps enough independent accumulators (m = 8, mr = 6 gives 4 + 4, not 6 + 2).
template <class F>
void for_each_row_tile(index_t m, index_t mr, F&& f) {
  index_t r = 0;
  while (m - r > mr) {
    const index_t left = m - r;
    if (left < mr + mr / 2) {  // two tiles left, the last would be short: balance them
      const index_t first = (left + 1) / 2;
      f(r, first);
      r += first;
      break;
    }
    f(r, mr);
    r += mr;
  }
  if (r < m) f(r, m - r);
}

namespace portable_detail {

// Rows [0, rows) of one panel into tile (row stride 64), int32 wrapping sums.
template <class Act>
void panel_rows(index_t rows, index_t k, const Act* a, index_t lda, const std::int8_t* panel,
                const std::int32_t* column_init, std::int32_t* tile) {
  constexpr index_t nr = gemm::panel_width, kg = gemm::k_group;
  for (index_t r = 0; r < rows; ++r) {
    std::uint32_t acc[nr];
    for (index_t j = 0; j < nr; ++j) acc[j] = static_cast<std::uint32_t>(column_init[j]);
    const Act* ar = a + r * lda;
    for (index_t kk = 0; kk < k; ++kk) {
      const std::int32_t av = ar[kk];
      const std::int8_t* bk = panel + (kk / kg) * gemm::k_group_bytes + kk % kg;
      for (index_t j = 0; j < nr; ++j) acc[j] += static_cast<std::uint32_t>(av * bk[j * kg]);
    }
    for (index_t j = 0; j < nr; ++j) tile[r * nr + j] = static_cast<std::int32_t>(acc[j]);
  }
}

}  // namespace portable_detail

// Scalar C++: int8 or uint8 activations as they are (offset 0), 4 x 64 tiles.
struct portable_gemm_kernel {
  static constexpr const char* name = "portable_x8s8_4x64c4";
  template <class Act>
  static constexpr std::int32_t activation_offset() noexcept {
    return 0;
  }
  template <class Act, class Output>
  static void run_panel(index_t m, index_t k, const Act* a, index_t lda, const std::int8_t* panel,
                        const std::int32_t* column_init, Output& out) {
    alignas(64) std::int32_t tile[4 * gemm::panel_width];
    for_each_row_tile(m, 4, [&](index_t r0, index_t rows) {
      portable_detail::panel_rows(rows, k, a + r0 * lda, lda, panel, column_init, tile);
      hand_over(out, r0, rows, tile);
    });
  }
};

inline portable_gemm_kernel gemm_kernel_for(arch::portable) noexcept { return {}; }

}  // namespace kernels
}  // namespace qlib
