# Toolchain: cross-compile for AArch64 Linux with Debian's g++-aarch64-linux-gnu; run under qemu-aarch64.
#
# Header-only host packages (xsimd, Catch2, Eigen3) are reached through a staging dir
# in the build tree, <build>/host-headers/usr, holding symlinks to just their include
# subdirs (include/xsimd, include/catch2, include/eigen3) and copies of their CMake
# package files, which compute their prefix from where they sit. The cross compiler
# thus sees -isystem <staging>/usr/include, never host /usr/include, which would
# shadow the aarch64 glibc headers in /usr/aarch64-linux-gnu/include.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(QLIB_CROSS_TRIPLET aarch64-linux-gnu)

set(CMAKE_C_COMPILER ${QLIB_CROSS_TRIPLET}-gcc)
set(CMAKE_CXX_COMPILER ${QLIB_CROSS_TRIPLET}-g++)
set(CMAKE_LIBRARY_ARCHITECTURE ${QLIB_CROSS_TRIPLET})

# Tests (add_test on an executable target) are run through this. A preset or -D may set it.
if(NOT CMAKE_CROSSCOMPILING_EMULATOR)
  set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -cpu max -L /usr/${QLIB_CROSS_TRIPLET})
endif()

set(QLIB_HOST_HEADERS_ROOT "${CMAKE_BINARY_DIR}/host-headers")

# _qlib_stage_host_package(<config dir under /usr> <include subdir>...): mirrors one
# header-only host package into the staging root. Per-configuration import files
# (*Targets-<config>.cmake) are left out: they name host binaries (e.g. Catch2's
# x86-64 libCatch2WithMain.a) that must not be linked into aarch64 programs.
function(_qlib_stage_host_package config_rel)
  set(_src "/usr/${config_rel}")
  if(NOT EXISTS "${_src}")
    return()  # not installed on the host: find_package will say so
  endif()
  # Keep the directory depth (the package files count levels up to their prefix), but
  # put a multiarch dir under the target triplet so find_package searches it.
  string(REGEX REPLACE "^lib/[^/]+-linux-gnu[^/]*/" "lib/${QLIB_CROSS_TRIPLET}/" _dst_rel "${config_rel}")
  set(_dst "${QLIB_HOST_HEADERS_ROOT}/usr/${_dst_rel}")
  file(GLOB _files "${_src}/*.cmake")
  list(FILTER _files EXCLUDE REGEX "Targets-[^/]*\\.cmake$")
  file(MAKE_DIRECTORY "${_dst}" "${QLIB_HOST_HEADERS_ROOT}/usr/include")
  file(COPY ${_files} DESTINATION "${_dst}")
  foreach(_inc IN LISTS ARGN)
    set(_link "${QLIB_HOST_HEADERS_ROOT}/usr/include/${_inc}")
    if(EXISTS "/usr/include/${_inc}" AND NOT IS_SYMLINK "${_link}")
      file(CREATE_LINK "/usr/include/${_inc}" "${_link}" SYMBOLIC)
    endif()
  endforeach()
endfunction()

# The toolchain file is read again for every try_compile; stage only for the real build.
get_property(_qlib_in_try_compile GLOBAL PROPERTY IN_TRY_COMPILE)
if(NOT _qlib_in_try_compile)
  file(GLOB _qlib_xsimd_dirs RELATIVE /usr /usr/lib/*-linux-gnu*/cmake/xsimd)
  foreach(_dir IN LISTS _qlib_xsimd_dirs)  # Debian ships xsimd's package files per arch
    _qlib_stage_host_package("${_dir}" xsimd)
  endforeach()
  _qlib_stage_host_package(lib/cmake/Catch2 catch2)
  _qlib_stage_host_package(share/eigen3/cmake eigen3)
endif()

# Look for target libraries in the aarch64 tree and for packages in the staging root
# only; programs (qemu, pkg-config, ...) come from the host.
set(CMAKE_FIND_ROOT_PATH "/usr/${QLIB_CROSS_TRIPLET}" "${QLIB_HOST_HEADERS_ROOT}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
