// Sparse weight formats on ISAs without a sparse kernel: each panel unpacked to the dense layout, then the ISA's dense kernel.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "qlib/arch/isa.hpp"
#include "qlib/arch/target.hpp"
#include "qlib/gemm/packed_layout.hpp"
#include "qlib/kernels/avx2/gemm_panel.hpp"
#include "qlib/kernels/avx_vnni/gemm_panel.hpp"
#include "qlib/kernels/neon/gemm_panel.hpp"
#include "qlib/kernels/neon_dotprod/gemm_panel.hpp"

// prune::sparse_gemm and sparse_block_gemm have their own kernels on AVX-512 VNNI (and
// the portable ones, scalar C++ over the kept weights). Every other ISA used to fall
// back to those scalar kernels: on AVX2, 2:4 ran 54x and 90%-block-sparse 2.3x slower
// than the dense AVX2 GEMM. Here such an ISA unpacks each panel it is given (K x 64
// bytes, gemm/packed_layout.hpp) into a per-thread buffer and runs its dense kernel on
// it: the same bits (the dense GEMM on the masked weights), at the dense kernel's speed
// less one pass over the panel per row block (at least 144 rows, gemm/driver.hpp).
// The format provides unpack_panel(w, p, out): the dense bytes of panel p, zeros where
// nothing is kept (found by argument-dependent lookup next to the format).
namespace qlib {
namespace kernels {
namespace densified_detail {

// A 64-byte aligned buffer of at least `bytes` bytes for this thread, kept between
// calls (a fresh K x 64-byte allocation per panel would fault its pages in every time).
inline std::int8_t* panel_buffer(index_t bytes) {
  thread_local std::vector<std::int8_t> buffer;
  const auto needed = static_cast<std::size_t>(bytes) + 64;
  if (buffer.size() < needed) buffer.resize(needed);
  const auto address = reinterpret_cast<std::uintptr_t>(buffer.data());
  return buffer.data() + (64 - address % 64) % 64;
}

// "<dense kernel name>_densified", made at compile time.
constexpr std::size_t length(const char* s) noexcept {
  std::size_t n = 0;
  while (s[n] != '\0') ++n;
  return n;
}
template <class Dense>
struct densified_name {
  static constexpr const char suffix[] = "_densified";
  static constexpr std::size_t size = length(Dense::name) + sizeof(suffix);
  static constexpr std::array<char, size> make() noexcept {
    std::array<char, size> out{};
    std::size_t i = 0;
    for (const char* s = Dense::name; *s != '\0'; ++s) out[i++] = *s;
    for (const char* s = suffix; *s != '\0'; ++s) out[i++] = *s;
    return out;  // zero-terminated: the array was value-initialised
  }
  static constexpr std::array<char, size> value = make();
};

}  // namespace densified_detail

// A sparse-format kernel (the run_panel contract of kernels/portable/sparse_common.hpp)
// made of the dense kernel Dense.
template <class Dense>
struct densified_sparse_kernel {
  static constexpr const char* name = densified_detail::densified_name<Dense>::value.data();
  template <class Act>
  static constexpr std::int32_t activation_offset() noexcept {
    return Dense::template activation_offset<Act>();
  }
  template <class Act, class W, class Output>
  static void run_panel(index_t m, index_t k, const Act* a, index_t lda, const W& w, index_t p,
                        const std::int32_t* column_init, Output& out) {
    std::int8_t* dense = densified_detail::panel_buffer(gemm::round_up(k, gemm::k_group) * gemm::panel_width);
    unpack_panel(w, p, dense);
    Dense::run_panel(m, k, a, lda, static_cast<const std::int8_t*>(dense), column_init, out);
  }
};

// The ISAs without sparse kernels of their own (AVX-512 without VNNI takes the AVX2
// overloads, as its dense GEMM does). Both formats use the same adapter.
#if QLIB_HAS_X86_KERNELS
inline densified_sparse_kernel<avx2_gemm_kernel> sparse_nm_kernel_for(arch::avx2) noexcept { return {}; }
inline densified_sparse_kernel<avx_vnni_gemm_kernel> sparse_nm_kernel_for(arch::avx_vnni) noexcept { return {}; }
inline densified_sparse_kernel<avx2_gemm_kernel> sparse_block_kernel_for(arch::avx2) noexcept { return {}; }
inline densified_sparse_kernel<avx_vnni_gemm_kernel> sparse_block_kernel_for(arch::avx_vnni) noexcept { return {}; }
#endif
#if QLIB_HAS_ARM_KERNELS
inline densified_sparse_kernel<neon_gemm_kernel> sparse_nm_kernel_for(arch::neon) noexcept { return {}; }
inline densified_sparse_kernel<neon_dotprod_gemm_kernel> sparse_nm_kernel_for(arch::neon_dotprod) noexcept {
  return {};
}
inline densified_sparse_kernel<neon_gemm_kernel> sparse_block_kernel_for(arch::neon) noexcept { return {}; }
inline densified_sparse_kernel<neon_dotprod_gemm_kernel> sparse_block_kernel_for(arch::neon_dotprod) noexcept {
  return {};
}
#endif

}  // namespace kernels
}  // namespace qlib
