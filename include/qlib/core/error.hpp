// The error model: qlib::error exceptions, or an overridable handler under -fno-exceptions.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#include "qlib/config.hpp"

#if QLIB_EXCEPTIONS
#include <stdexcept>
#endif

namespace qlib {

// What went wrong, so callers can branch without parsing messages.
enum class errc {
  invalid_argument,  // a value outside its documented domain (bits, scale, zero point...)
  shape_mismatch,    // tensors whose shapes or sizes do not agree
  empty_tensor,      // an operation that needs data got none
  out_of_range,      // an index or axis outside the tensor
  non_finite,        // NaN or Inf where a finite number is required
  overflow,          // a size or accumulation that would overflow
  unsupported,       // a valid request qlib does not implement (yet)
  io_error,          // reading or writing a file failed
};

inline const char* errc_name(errc c) noexcept {
  switch (c) {
    case errc::invalid_argument: return "invalid_argument";
    case errc::shape_mismatch: return "shape_mismatch";
    case errc::empty_tensor: return "empty_tensor";
    case errc::out_of_range: return "out_of_range";
    case errc::non_finite: return "non_finite";
    case errc::overflow: return "overflow";
    case errc::unsupported: return "unsupported";
    case errc::io_error: return "io_error";
  }
  return "unknown";
}

#if QLIB_EXCEPTIONS
// Thrown by every validating entry point when exceptions are enabled.
class error : public std::invalid_argument {
 public:
  error(errc code, const std::string& what) : std::invalid_argument(what), code_(code) {}
  errc code() const noexcept { return code_; }

 private:
  errc code_;
};
#endif

// Called on error when exceptions are disabled. It may log, flush or longjmp out of a
// pure-C frame; if it returns, qlib calls std::abort(), since the failed call cannot
// produce a valid result.
using error_handler = void (*)(errc code, const char* message);

namespace detail {
inline void default_error_handler(errc code, const char* message) {
  std::fprintf(stderr, "qlib error (%s): %s\n", errc_name(code), message);
}
inline error_handler& error_handler_slot() noexcept {
  static error_handler handler = &default_error_handler;
  return handler;
}
}  // namespace detail

// Installs a handler for -fno-exceptions builds; returns the previous one.
// nullptr restores the default (print to stderr).
inline error_handler set_error_handler(error_handler h) noexcept {
  error_handler old = detail::error_handler_slot();
  detail::error_handler_slot() = h ? h : &detail::default_error_handler;
  return old;
}

// Reports an error: throws qlib::error, or calls the handler then aborts.
[[noreturn]] inline void raise_error(errc code, const std::string& message) {
#if QLIB_EXCEPTIONS
  throw error(code, "qlib: " + message);
#else
  detail::error_handler_slot()(code, message.c_str());
  std::abort();
#endif
}

}  // namespace qlib

// Validation at the API boundary: QLIB_CHECK(cond, code, message-expression).
// The message is only built when the check fails.
#define QLIB_CHECK(cond, code, msg)                         \
  do {                                                      \
    if (QLIB_UNLIKELY(!(cond))) ::qlib::raise_error(code, msg); \
  } while (0)
