# Test script: compiles and runs a one-line qlib program with `pkg-config --cflags qlib` from PREFIX.
# Run as: cmake -DPKG_CONFIG=... -DPREFIX=... -DCXX=... -DWORK_DIR=... -DVERSION=... -P pkgconfig_check.cmake
foreach(_v PKG_CONFIG PREFIX CXX WORK_DIR VERSION)
  if(NOT DEFINED ${_v})
    message(FATAL_ERROR "pkgconfig_check.cmake: -D${_v}=... is required")
  endif()
endforeach()

set(ENV{PKG_CONFIG_PATH} "${PREFIX}/share/pkgconfig")
execute_process(COMMAND "${PKG_CONFIG}" --modversion qlib
                OUTPUT_VARIABLE _version OUTPUT_STRIP_TRAILING_WHITESPACE COMMAND_ERROR_IS_FATAL ANY)
if(NOT _version STREQUAL VERSION)
  message(FATAL_ERROR "pkg-config says qlib ${_version}, expected ${VERSION}")
endif()
execute_process(COMMAND "${PKG_CONFIG}" --cflags qlib
                OUTPUT_VARIABLE _cflags OUTPUT_STRIP_TRAILING_WHITESPACE COMMAND_ERROR_IS_FATAL ANY)
message(STATUS "pkg-config --cflags qlib: ${_cflags}")
separate_arguments(_cflags UNIX_COMMAND "${_cflags}")
foreach(_flag IN LISTS _cflags)
  if(NOT _flag MATCHES "^-I")
    message(FATAL_ERROR "qlib.pc leaks a flag that is not an include dir: ${_flag}")
  endif()
endforeach()

file(MAKE_DIRECTORY "${WORK_DIR}")
file(WRITE "${WORK_DIR}/one_liner.cpp"
  "#include <qlib/core/tensor.hpp>\nint main() { return qlib::tensor<int, 1>({3}, 7)(2) == 7 ? 0 : 1; }\n")
execute_process(COMMAND "${CXX}" -std=c++17 ${_cflags} "${WORK_DIR}/one_liner.cpp" -o "${WORK_DIR}/one_liner"
                COMMAND_ECHO STDOUT COMMAND_ERROR_IS_FATAL ANY)
execute_process(COMMAND "${WORK_DIR}/one_liner" COMMAND_ERROR_IS_FATAL ANY)
message(STATUS "pkg-config consumer compiled and ran")
