# Install rules: headers, the exported qlib::qlib target, a versioned package config, pkg-config.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# qlib is header-only, so its package files are architecture independent (share/).
set(QLIB_INSTALL_CMAKEDIR "${CMAKE_INSTALL_DATADIR}/cmake/qlib"
    CACHE STRING "Where to install qlibConfig.cmake (relative to the prefix)")
set(QLIB_INSTALL_PKGCONFIGDIR "${CMAKE_INSTALL_DATADIR}/pkgconfig"
    CACHE STRING "Where to install qlib.pc (relative to the prefix)")
mark_as_advanced(QLIB_INSTALL_CMAKEDIR QLIB_INSTALL_PKGCONFIGDIR)

install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/qlib" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")

# Only `qlib` is exported: qlib_dev_flags (warnings, sanitizers, -fno-exceptions) stays
# inside this build, so no compile or link flags reach consumers.
install(TARGETS qlib EXPORT qlibTargets)
install(EXPORT qlibTargets NAMESPACE qlib:: DESTINATION "${QLIB_INSTALL_CMAKEDIR}")

configure_package_config_file(
  "${PROJECT_SOURCE_DIR}/cmake/qlibConfig.cmake.in" "${PROJECT_BINARY_DIR}/qlibConfig.cmake"
  INSTALL_DESTINATION "${QLIB_INSTALL_CMAKEDIR}")
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/qlibConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}" COMPATIBILITY SameMajorVersion ARCH_INDEPENDENT)
install(FILES
  "${PROJECT_BINARY_DIR}/qlibConfig.cmake"
  "${PROJECT_BINARY_DIR}/qlibConfigVersion.cmake"
  "${PROJECT_SOURCE_DIR}/cmake/qlibDependencies.cmake"  # the xtl workaround, for consumers too
  DESTINATION "${QLIB_INSTALL_CMAKEDIR}")

# pkg-config. The prefix is filled in at install time, so `cmake --install --prefix P`
# writes P (not the configure-time CMAKE_INSTALL_PREFIX). Stage 1 (now) fills the rest.
if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(QLIB_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
  set(QLIB_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
set(QLIB_PC_PREFIX "@QLIB_PC_PREFIX@")  # kept as a placeholder for stage 2
configure_file("${PROJECT_SOURCE_DIR}/cmake/qlib.pc.in" "${PROJECT_BINARY_DIR}/qlib.pc.stage" @ONLY)
install(CODE "
  set(QLIB_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
  configure_file(\"${PROJECT_BINARY_DIR}/qlib.pc.stage\" \"${PROJECT_BINARY_DIR}/qlib.pc\" @ONLY)
")
install(FILES "${PROJECT_BINARY_DIR}/qlib.pc" DESTINATION "${QLIB_INSTALL_PKGCONFIGDIR}")
