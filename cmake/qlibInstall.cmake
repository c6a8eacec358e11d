# Install rules: headers, the exported target, a package config with version, pkg-config.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)
