// ISA tags, CPU feature detection (cached once) and the user's ISA limit (env or API).
#pragma once

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "qlib/core/error.hpp"

#if QLIB_ARCH_X86_64 && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif
#if QLIB_ARCH_AARCH64 && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace qlib {

// ISA tags: empty structs that inherit along the ISA chain, so a kernel overload that
// is missing for one ISA falls back to the one it derives from.
namespace arch {
struct portable {};
struct avx2 : portable {};
struct avx_vnni : avx2 {};
struct avx512 : avx2 {};           // AVX-512 F/BW/DQ/VL
struct avx512_vnni : avx512 {};
struct neon : portable {};
struct neon_dotprod : neon {};
}  // namespace arch

// Run-time ISA levels, ordered within each architecture from least to most capable.
enum class isa { portable, avx2, avx_vnni, avx512, avx512_vnni, neon, neon_dotprod };

inline const char* isa_name(isa i) noexcept {
  switch (i) {
    case isa::portable: return "portable";
    case isa::avx2: return "avx2";
    case isa::avx_vnni: return "avx_vnni";
    case isa::avx512: return "avx512";
    case isa::avx512_vnni: return "avx512_vnni";
    case isa::neon: return "neon";
    case isa::neon_dotprod: return "neon_dotprod";
  }
  return "unknown";
}

// Parses an ISA name as isa_name() spells it; false if unknown.
inline bool parse_isa(const char* s, isa& out) noexcept {
  for (isa i : {isa::portable, isa::avx2, isa::avx_vnni, isa::avx512, isa::avx512_vnni,
                isa::neon, isa::neon_dotprod}) {
    if (std::strcmp(s, isa_name(i)) == 0) {
      out = i;
      return true;
    }
  }
  return false;
}

// What the CPU (and the OS, for register state) supports.
struct cpu_features {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false;
  bool avx512vnni = false, avx512bf16 = false, avxvnni = false;
  bool neon = false, dotprod = false;
};

namespace detail {
#if QLIB_ARCH_X86_64 && (defined(__GNUC__) || defined(__clang__))
inline unsigned long long read_xcr0() noexcept {
  unsigned eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}
#endif

inline cpu_features detect_cpu_features() noexcept {
  cpu_features f;
#if QLIB_ARCH_X86_64 && (defined(__GNUC__) || defined(__clang__))
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1;
  if (!osxsave) return f;
  const unsigned long long xcr0 = read_xcr0();
  const bool ymm_state = (xcr0 & 0x6) == 0x6;    // XMM and YMM saved by the OS
  const bool zmm_state = (xcr0 & 0xe6) == 0xe6;  // plus opmask and ZMM state
  const bool avx = ((c >> 28) & 1) && ymm_state;
  f.fma = avx && ((c >> 12) & 1);
  f.f16c = avx && ((c >> 29) & 1);
  if (__get_cpuid_max(0, nullptr) >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    f.avx2 = avx && ((b >> 5) & 1);
    f.avx512f = zmm_state && ((b >> 16) & 1);
    f.avx512dq = f.avx512f && ((b >> 17) & 1);
    f.avx512bw = f.avx512f && ((b >> 30) & 1);
    f.avx512vl = f.avx512f && ((b >> 31) & 1);
    f.avx512vnni = f.avx512f && ((c >> 11) & 1);
    unsigned a1, b1, c1, d1;
    __cpuid_count(7, 1, a1, b1, c1, d1);
    f.avxvnni = avx && ((a1 >> 4) & 1);
    f.avx512bf16 = f.avx512f && ((a1 >> 5) & 1);
  }
#elif QLIB_ARCH_AARCH64
  f.neon = true;  // Advanced SIMD is mandatory on AArch64.
#if defined(__linux__) && defined(AT_HWCAP)
  const unsigned long hw = getauxval(AT_HWCAP);
  f.dotprod = (hw & (1UL << 20)) != 0;  // HWCAP_ASIMDDP
#endif
#endif
  return f;
}

// The best ISA the CPU supports, ignoring any user limit.
inline isa best_supported_isa(const cpu_features& f) noexcept {
#if QLIB_ARCH_X86_64
  const bool avx512_base = f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl && f.avx2 && f.fma;
  if (avx512_base && f.avx512vnni) return isa::avx512_vnni;
  if (avx512_base) return isa::avx512;
  if (f.avx2 && f.fma && f.avxvnni) return isa::avx_vnni;
  if (f.avx2 && f.fma) return isa::avx2;
  return isa::portable;
#elif QLIB_ARCH_AARCH64
  return f.dotprod ? isa::neon_dotprod : isa::neon;
#else
  (void)f;
  return isa::portable;
#endif
}

// Is `want` usable on a CPU whose best ISA is `best`? (The x86 chain has two branches:
// AVX-VNNI (ymm) is not implied by AVX-512.)
inline bool isa_within(isa want, isa best) noexcept {
  if (want == isa::portable) return true;
  switch (best) {
    case isa::avx512_vnni: return want == isa::avx2 || want == isa::avx512 || want == isa::avx512_vnni;
    case isa::avx512: return want == isa::avx2 || want == isa::avx512;
    case isa::avx_vnni: return want == isa::avx2 || want == isa::avx_vnni;
    case isa::avx2: return want == isa::avx2;
    case isa::neon_dotprod: return want == isa::neon || want == isa::neon_dotprod;
    case isa::neon: return want == isa::neon;
    case isa::portable: return false;
  }
  return false;
}

// -1 means "no limit"; otherwise the isa value the user capped dispatch at.
inline std::atomic<int>& isa_limit_slot() noexcept {
  static std::atomic<int> slot{[] {
    const char* env = std::getenv("QLIB_ISA");
    isa i;
    return (env && *env && parse_isa(env, i)) ? static_cast<int>(i) : -1;
  }()};
  return slot;
}
}  // namespace detail

// Features of this CPU, detected once.
inline const cpu_features& cpu() noexcept {
  static const cpu_features f = detail::detect_cpu_features();
  return f;
}

// True if this CPU can run kernels of ISA `i`.
inline bool isa_supported(isa i) noexcept { return detail::isa_within(i, detail::best_supported_isa(cpu())); }

// Caps run-time dispatch at `i` (tests and users force lower paths this way; the
// QLIB_ISA environment variable, e.g. QLIB_ISA=avx2, does the same at start-up).
// Fails if the CPU cannot run `i`.
inline void set_isa_limit(isa i) {
  QLIB_CHECK(isa_supported(i), errc::unsupported,
             std::string("this CPU cannot run ISA ") + isa_name(i));
  detail::isa_limit_slot().store(static_cast<int>(i), std::memory_order_relaxed);
}
// Removes the cap: dispatch uses the best ISA the CPU has.
inline void clear_isa_limit() noexcept { detail::isa_limit_slot().store(-1, std::memory_order_relaxed); }

// The ISA run-time dispatch uses now: the best supported one, capped by the limit.
inline isa active_isa() noexcept {
  const isa best = detail::best_supported_isa(cpu());
  const int lim = detail::isa_limit_slot().load(std::memory_order_relaxed);
  if (lim < 0) return best;
  const isa cap = static_cast<isa>(lim);
  if (detail::isa_within(cap, best)) return cap;
  // A limit this CPU cannot honour exactly (e.g. QLIB_ISA=avx_vnni on an AVX-512 CPU
  // without AVX-VNNI): fall to the common ancestor.
  if (cap == isa::avx_vnni || cap == isa::avx512 || cap == isa::avx512_vnni)
    return isa_supported(isa::avx2) ? isa::avx2 : isa::portable;
  return isa::portable;
}

// Calls f(tag) with the ISA tag of `i`. Only tags compiled for this architecture are
// instantiated, so f must accept arch::portable and the tags of this architecture.
template <class F>
decltype(auto) dispatch_isa(isa i, F&& f) {
  switch (i) {
#if QLIB_ARCH_X86_64
    case isa::avx512_vnni: return f(arch::avx512_vnni{});
    case isa::avx512: return f(arch::avx512{});
    case isa::avx_vnni: return f(arch::avx_vnni{});
    case isa::avx2: return f(arch::avx2{});
#endif
#if QLIB_ARCH_AARCH64
    case isa::neon_dotprod: return f(arch::neon_dotprod{});
    case isa::neon: return f(arch::neon{});
#endif
    default: return f(arch::portable{});
  }
}

// The ISAs this build can dispatch to on this CPU, for tests that run every path.
inline std::string supported_isa_list() {
  std::string s;
  for (isa i : {isa::portable, isa::avx2, isa::avx_vnni, isa::avx512, isa::avx512_vnni,
                isa::neon, isa::neon_dotprod})
    if (isa_supported(i)) s += std::string(s.empty() ? "" : ",") + isa_name(i);
  return s;
}

}  // namespace qlib
