# Finds qlib's header-only dependencies; shared by qlib's build and the installed qlibConfig.cmake.
# Guarded per directory (not globally): imported targets are directory-scoped, so a second
# find_package(qlib) in a sibling directory must find xsimd again.
include_guard(DIRECTORY)

if(CMAKE_FIND_PACKAGE_NAME STREQUAL "qlib")
  # Included from qlibConfig.cmake: forward QUIET/REQUIRED and let find_package(qlib)
  # report a missing xsimd instead of failing on its own.
  include(CMakeFindDependencyMacro)
  find_dependency(xsimd)
else()
  find_package(xsimd REQUIRED)
endif()
# Debian's xsimd 8.1 exports a target that links a library named "xtl", which it does
# not ship a target for (xsimd only needs xtl for optional xtl-based features). Give
# that name an empty interface target once, so linking xsimd works everywhere.
if(TARGET xsimd AND NOT TARGET xtl)
  add_library(xtl INTERFACE IMPORTED)
endif()

find_package(Eigen3 3.3 QUIET NO_MODULE)  # only qlib/interop/eigen.hpp needs it
