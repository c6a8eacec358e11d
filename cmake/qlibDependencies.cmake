# Finds qlib's header-only dependencies; shared by the build and the installed config.
include_guard(GLOBAL)

find_package(xsimd REQUIRED)
# Debian's xsimd 8.1 exports a target that links a library named "xtl", which it does
# not ship a target for (xsimd only needs xtl for optional xtl-based features). Give
# that name an empty interface target once, so linking xsimd works everywhere.
if(NOT TARGET xtl)
  add_library(xtl INTERFACE IMPORTED)
endif()

find_package(Eigen3 3.3 QUIET NO_MODULE)  # only qlib/interop/eigen.hpp needs it
