// Feature macros: exceptions on or off, compiler and architecture detection.
#pragma once

#include "qlib/version.hpp"

// QLIB_EXCEPTIONS is 1 when C++ exceptions are available. Define it to 0 yourself to
// route errors to the error handler even in a build that has exceptions.
#ifndef QLIB_EXCEPTIONS
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
#define QLIB_EXCEPTIONS 1
#else
#define QLIB_EXCEPTIONS 0
#endif
#endif

#if defined(__x86_64__) || defined(_M_X64)
#define QLIB_ARCH_X86_64 1
#else
#define QLIB_ARCH_X86_64 0
#endif

#if defined(__aarch64__)
#define QLIB_ARCH_AARCH64 1
#else
#define QLIB_ARCH_AARCH64 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define QLIB_ALWAYS_INLINE inline __attribute__((always_inline))
#define QLIB_LIKELY(x) __builtin_expect(!!(x), 1)
#define QLIB_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define QLIB_ALWAYS_INLINE inline
#define QLIB_LIKELY(x) (x)
#define QLIB_UNLIKELY(x) (x)
#endif

// Internal invariants inside kernels (inputs were validated at the API boundary).
// Compiled out unless QLIB_ENABLE_ASSERTS is defined (the test builds define it).
#ifdef QLIB_ENABLE_ASSERTS
#include <cstdio>
#include <cstdlib>
#define QLIB_ASSERT(cond)                                                              \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "qlib: internal assertion failed: %s (%s:%d)\n", #cond,    \
                   __FILE__, __LINE__);                                                \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)
#else
#define QLIB_ASSERT(cond) ((void)0)
#endif
