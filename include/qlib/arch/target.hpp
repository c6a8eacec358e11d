// Function attributes that let ISA-specific code live in headers without per-file flags.
#pragma once

#include "qlib/config.hpp"

// Put one of these before a function that uses intrinsics of that ISA. Callers must
// check the CPU first (see arch/isa.hpp); the attributes never leak to other code.
#if QLIB_ARCH_X86_64 && (defined(__GNUC__) || defined(__clang__))
#define QLIB_TARGET_AVX2 __attribute__((target("avx2,fma,f16c,bmi2,popcnt")))
#define QLIB_TARGET_AVX_VNNI __attribute__((target("avx2,fma,f16c,bmi2,popcnt,avxvnni")))
#define QLIB_TARGET_AVX512 \
  __attribute__((target("avx2,fma,f16c,bmi2,popcnt,avx512f,avx512bw,avx512dq,avx512vl")))
#define QLIB_TARGET_AVX512_VNNI \
  __attribute__((target("avx2,fma,f16c,bmi2,popcnt,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))
#define QLIB_TARGET_AVX512_BF16 \
  __attribute__((target("avx2,fma,f16c,bmi2,popcnt,avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")))
#define QLIB_HAS_X86_KERNELS 1
#else
#define QLIB_HAS_X86_KERNELS 0
#endif

#if QLIB_ARCH_AARCH64 && (defined(__GNUC__) || defined(__clang__))
#define QLIB_TARGET_NEON
#define QLIB_TARGET_NEON_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#define QLIB_HAS_ARM_KERNELS 1
#else
#define QLIB_HAS_ARM_KERNELS 0
#endif

// Wrap kernel headers in these: g++ 12's AVX-512 intrinsic headers initialize their
// "undefined" registers from themselves (GCC bug 105593), which -W(maybe-)uninitialized
// reports inside every function that inlines them.
#if defined(__GNUC__) && !defined(__clang__)
#define QLIB_KERNEL_BEGIN                                                  \
  _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"") \
      _Pragma("GCC diagnostic ignored \"-Wuninitialized\"")
#define QLIB_KERNEL_END _Pragma("GCC diagnostic pop")
#else
#define QLIB_KERNEL_BEGIN
#define QLIB_KERNEL_END
#endif
