// sgemm(): fp32 C = A x B (+ C, + bias, clamp) for float layers and training; validates once, packs, blocks, threads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>

#include "qlib/arch/isa.hpp"
#include "qlib/core/tensor.hpp"
#include "qlib/core/thread_pool.hpp"
#include "qlib/gemm/driver.hpp"  // detail::isa_of, detail::require_tag
#include "qlib/gemm/sgemm_packed.hpp"
#include "qlib/gemm/sgemm_params.hpp"
// Every kernel overload must be declared before the templates below.
#include "qlib/kernels/avx2/sgemm_panel.hpp"
#include "qlib/kernels/avx512/sgemm_panel.hpp"
#include "qlib/kernels/portable/sgemm_panel.hpp"

// API (namespace qlib::gemm; options and semantics in gemm/sgemm_params.hpp):
//
//   sgemm(a, b, c, opt)          A: M x K, B: K x N (both any strides, so a.transpose(0, 1)
//                                and b.transpose(0, 1) work), C: M x N, rows contiguous,
//                                any row stride. B is packed on the fly.
//   pack_float(b) -> packed_float_weights, then sgemm(a, packed, c, opt): B packed once.
//   sgemm(arch::avx2{}, ...)     the same on one ISA (tests); errc::unsupported if the CPU
//                                lacks it.
//
// C must not overlap A, B or the bias (errc::invalid_argument). Empty M or N: nothing
// happens; K = 0: C = clamp((accumulate ? C : 0) + bias). On one ISA the bits depend on
// neither the thread count nor on whether B was packed once; across ISAs they differ in
// the last bits (fused multiply-add, vector order), within the bound that
// gemm/sgemm_reference.hpp states.
//
// Loop nest of one thread's part of C (rows [r0, r1), panels of 32 columns):
//   for each block of 512 columns (16 panels)
//     for each block of 256 k (the K block fixes the order of the float sums)
//       pack B's block (K block x 512 columns, 512 KiB: stays in Zen 4's 1 MiB L2),
//       or take it from packed_float_weights
//       for each row tile (12 rows on AVX-512): A's tile is read in place (A row-major
//         or transposed), else copied k-major to a 256 x 12 buffer;
//         for each panel: the micro-kernel, C += tile (bias and clamp on the last K block)
// The A tile (12 KiB) stays in L1 across the 16 panels; B streams from L2.
// Scratch memory: per thread, thread_local and reused, at most 256 x 512 + 12 x 256
// floats (about 536 KiB), allocated on first use.
namespace qlib {
namespace gemm {
namespace detail {

inline constexpr index_t sgemm_n_block = 512;  // columns per packed B block (16 panels)

// A growing, 64-byte aligned per-thread buffer (never shrinks; bounded by the blocking).
inline float* sgemm_scratch(int which, index_t n) {
  struct buffer {
    qlib::detail::aligned_ptr<float> data;
    index_t size = 0;
  };
  static thread_local buffer buffers[2];
  buffer& b = buffers[which];
  if (n > b.size) {
    b.data = qlib::detail::aligned_alloc_zeroed<float>(n);
    b.size = n;
  }
  return b.data.get();
}

// B as sgemm_part() needs it: K blocks of panels [panel0, panel0 + count).
template <class Tag>
struct sgemm_unpacked_b {
  Tag tag;
  tensor_view<const float, 2> b;
  sgemm_b_block block(index_t kb, index_t panel0, index_t count) const {
    const index_t k0 = kb * sgemm_k_block, kc = std::min(sgemm_k_block, b.shape(0) - k0);
    if (kc <= 0) return {nullptr, 0};  // K = 0: the kernels read no B
    const index_t n0 = panel0 * sgemm_panel_width, nc = std::min(count * sgemm_panel_width, b.shape(1) - n0);
    float* buf = sgemm_scratch(0, kc * count * sgemm_panel_width);
    pack_b_block(tag, b, k0, kc, n0, nc, buf);
    return {buf, kc};
  }
};
struct sgemm_packed_b {
  const packed_float_weights& w;
  sgemm_b_block block(index_t kb, index_t panel0, index_t) const {
    const sgemm_b_block blk = w.block(kb);
    return {blk.kc > 0 ? blk.panel(panel0) : nullptr, blk.kc};
  }
};

// Rows [r0, r1) x panels [p0, p1) of C.
template <class Kernel, class BSource>
void sgemm_part(tensor_view<const float, 2> a, const BSource& bsrc, tensor_view<float, 2> c, const sgemm_options& opt,
                index_t r0, index_t r1, index_t p0, index_t p1) {
  constexpr index_t mr = Kernel::mr;
  const index_t k = a.shape(1), n = c.shape(1), ldc = c.stride(0);
  const index_t k_blocks = k == 0 ? 1 : (k + sgemm_k_block - 1) / sgemm_k_block;
  // A is read in place when either stride is 1: row-major (k contiguous), or A
  // transposed (rows contiguous: the 12 elements of one k are adjacent, and each k of the
  // tile is one cache line or two; measured on Zen 4 faster than copying the tile: 107
  // against 104 GFLOPS at K = 64, 106 against 97 at K = 512). Other strides: each tile is
  // copied k-major to a 256 x 12 buffer.
  const bool a_row_major = a.stride(1) == 1 || k <= 1;
  const bool a_k_major = !a_row_major && (a.stride(0) == 1 || a.shape(0) == 1);
  const bool clamp = opt.clamp_lo > -std::numeric_limits<float>::infinity() ||
                     opt.clamp_hi < std::numeric_limits<float>::infinity();
  constexpr index_t panels_per_block = sgemm_n_block / sgemm_panel_width;
  for (index_t pb = p0; pb < p1; pb += panels_per_block) {
    const index_t pcount = std::min(panels_per_block, p1 - pb);
    for (index_t kb = 0; kb < k_blocks; ++kb) {
      const sgemm_b_block blk = bsrc.block(kb, pb, pcount);
      const index_t k0 = kb * sgemm_k_block, kc = blk.kc;
      kernels::sgemm_tile_params t{opt.accumulate || kb > 0, kb == k_blocks - 1, nullptr, clamp, opt.clamp_lo,
                                   opt.clamp_hi};
      for (index_t i = r0; i < r1; i += mr) {
        const index_t rows = std::min(mr, r1 - i);
        // K = 0: A may be empty with a null data pointer, which must take no offset (the
        // kernels' row pointers too: lda 0).
        const float* at = kc > 0 ? a.data() + i * a.stride(0) + k0 * a.stride(1) : a.data();
        index_t lda = kc == 0 ? 0 : a_row_major ? a.stride(0) : a.stride(1);
        if (!a_row_major && !a_k_major && kc > 0) {
          float* buf = sgemm_scratch(1, mr * sgemm_k_block);
          const index_t sr = a.stride(0), sk = a.stride(1);
          for (index_t kk = 0; kk < kc; ++kk)
            for (index_t r = 0; r < rows; ++r) buf[kk * mr + r] = at[kk * sk + r * sr];
          at = buf;
          lda = mr;
        }
        for (index_t p = pb; p < pb + pcount; ++p) {
          const index_t col0 = p * sgemm_panel_width, cols = std::min(sgemm_panel_width, n - col0);
          t.bias = opt.bias ? opt.bias + col0 : nullptr;
          Kernel::run_tile(rows, cols, kc, at, lda, a_row_major, kc > 0 ? blk.panel(p - pb) : nullptr,
                           c.data() + i * ldc + col0, ldc, t);
        }
      }
    }
  }
}

template <class Tag, class BSource>
void run_sgemm(Tag tag, tensor_view<const float, 2> a, const BSource& bsrc, tensor_view<float, 2> c,
               const sgemm_options& opt) {
  using kernel = decltype(kernels::sgemm_kernel_for(tag));
  const index_t m = c.shape(0), n = c.shape(1);
  if (m == 0 || n == 0) return;
  const index_t panels = (n + sgemm_panel_width - 1) / sgemm_panel_width;
  if (opt.threads == 1) return sgemm_part<kernel>(a, bsrc, c, opt, 0, m, 0, panels);
  // Panels first (each thread packs and streams its own part of B), then rows. Every
  // element is one kernel chain over the same K blocks, so any split gives the same bits.
  const index_t threads = opt.threads;
  const index_t panel_parts = std::min(panels, threads);
  const index_t row_parts =
      std::max(index_t{1}, std::min((threads + panel_parts - 1) / panel_parts, (m + kernel::mr - 1) / kernel::mr));
  auto part = [&](index_t t) {
    const index_t pp = t % panel_parts, rp = t / panel_parts;
    sgemm_part<kernel>(a, bsrc, c, opt, m * rp / row_parts, m * (rp + 1) / row_parts, panels * pp / panel_parts,
                       panels * (pp + 1) / panel_parts);
  };
  parallel_executor& ex = opt.executor ? *opt.executor : default_thread_pool();
  ex.parallel_for(panel_parts * row_parts, part);
}

// [lowest, highest] byte of a view's elements (false if it has none).
template <class T>
bool byte_range(const tensor_view<T, 2>& v, std::uintptr_t& lo, std::uintptr_t& hi) {
  if (v.empty()) return false;
  index_t first = 0, last = 0;  // element offsets of the lowest and highest element
  for (std::size_t ax = 0; ax < 2; ++ax) {
    const index_t span = (v.shape(ax) - 1) * v.stride(ax);
    (span < 0 ? first : last) += span;
  }
  lo = reinterpret_cast<std::uintptr_t>(v.data() + first);
  hi = reinterpret_cast<std::uintptr_t>(v.data() + last) + sizeof(float) - 1;
  return true;
}
inline bool ranges_overlap(std::uintptr_t lo1, std::uintptr_t hi1, std::uintptr_t lo2, std::uintptr_t hi2) {
  return lo1 <= hi2 && lo2 <= hi1;
}

inline void validate_sgemm(tensor_view<const float, 2> a, index_t bk, index_t bn, const tensor_view<const float, 2>* b,
                           tensor_view<float, 2> c, const sgemm_options& opt) {
  using qlib::detail::extents_string;
  QLIB_CHECK(a.shape(1) == bk && c.shape(0) == a.shape(0) && c.shape(1) == bn, errc::shape_mismatch,
             "sgemm: A " + extents_string(a.shape()) + " x B [" + std::to_string(bk) + "," + std::to_string(bn) +
                 "] does not give C " + extents_string(c.shape()));
  QLIB_CHECK((a.empty() || a.data()) && (c.empty() || c.data()) && (!b || b->empty() || b->data()),
             errc::invalid_argument, "sgemm: null data for a non-empty operand");
  QLIB_CHECK(c.is_inner_contiguous(), errc::invalid_argument,
             "sgemm: C's rows must be contiguous (column stride 1), got strides " + extents_string(c.strides()));
  QLIB_CHECK(c.shape(0) <= 1 || c.shape(1) == 0 || c.stride(0) >= c.shape(1) || c.stride(0) <= -c.shape(1),
             errc::invalid_argument,
             "sgemm: C's rows overlap (row stride " + std::to_string(c.stride(0)) + " < N = " +
                 std::to_string(c.shape(1)) + ")");
  QLIB_CHECK(opt.threads >= 1, errc::invalid_argument, "sgemm: threads must be >= 1, got " + std::to_string(opt.threads));
  QLIB_CHECK(opt.clamp_lo <= opt.clamp_hi, errc::invalid_argument,
             "sgemm: need clamp_lo <= clamp_hi (and neither NaN), got [" + std::to_string(opt.clamp_lo) + ", " +
                 std::to_string(opt.clamp_hi) + "]");
  std::uintptr_t clo, chi, lo, hi;
  if (!byte_range(c, clo, chi)) return;
  QLIB_CHECK(!(byte_range(a, lo, hi) && ranges_overlap(clo, chi, lo, hi)), errc::invalid_argument,
             "sgemm: C overlaps A");
  QLIB_CHECK(!(b && byte_range(*b, lo, hi) && ranges_overlap(clo, chi, lo, hi)), errc::invalid_argument,
             "sgemm: C overlaps B");
  if (opt.bias) {
    lo = reinterpret_cast<std::uintptr_t>(opt.bias);
    hi = lo + static_cast<std::uintptr_t>(bn) * sizeof(float) - 1;
    QLIB_CHECK(!ranges_overlap(clo, chi, lo, hi), errc::invalid_argument, "sgemm: C overlaps the bias");
  }
}

inline void check_sgemm_isa(isa i) {
  QLIB_CHECK(isa_supported(i), errc::unsupported, std::string("sgemm: this CPU cannot run ISA ") + isa_name(i));
}

}  // namespace detail

// C = A x B (B packed on the fly) on the ISA that run-time dispatch picks.
inline void sgemm(tensor_view<const float, 2> a, tensor_view<const float, 2> b, tensor_view<float, 2> c,
                  const sgemm_options& opt = {}) {
  detail::validate_sgemm(a, b.shape(0), b.shape(1), &b, c, opt);
  dispatch_isa(active_isa(), [&](auto tag) { detail::run_sgemm(tag, a, detail::sgemm_unpacked_b<decltype(tag)>{tag, b}, c, opt); });
}

// C = A x B with B packed once by pack_float().
inline void sgemm(tensor_view<const float, 2> a, const packed_float_weights& b, tensor_view<float, 2> c,
                  const sgemm_options& opt = {}) {
  detail::validate_sgemm(a, b.k(), b.n(), nullptr, c, opt);
  dispatch_isa(active_isa(), [&](auto tag) { detail::run_sgemm(tag, a, detail::sgemm_packed_b{b}, c, opt); });
}

// The same on one ISA chosen at compile time (static dispatch, tests): Tag is an arch:: tag.
template <class Tag, detail::require_tag<Tag> = 0>
void sgemm(Tag tag, tensor_view<const float, 2> a, tensor_view<const float, 2> b, tensor_view<float, 2> c,
           const sgemm_options& opt = {}) {
  detail::check_sgemm_isa(detail::isa_of(tag));
  detail::validate_sgemm(a, b.shape(0), b.shape(1), &b, c, opt);
  detail::run_sgemm(tag, a, detail::sgemm_unpacked_b<Tag>{tag, b}, c, opt);
}
template <class Tag, detail::require_tag<Tag> = 0>
void sgemm(Tag tag, tensor_view<const float, 2> a, const packed_float_weights& b, tensor_view<float, 2> c,
           const sgemm_options& opt = {}) {
  detail::check_sgemm_isa(detail::isa_of(tag));
  detail::validate_sgemm(a, b.k(), b.n(), nullptr, c, opt);
  detail::run_sgemm(tag, a, detail::sgemm_packed_b{b}, c, opt);
}

// The name of the sgemm micro-kernel that ISA `i` runs (for logs and benchmarks).
inline const char* sgemm_kernel_name(isa i) {
  return dispatch_isa(i, [](auto tag) { return decltype(kernels::sgemm_kernel_for(tag))::name; });
}

}  // namespace gemm
}  // namespace qlib
