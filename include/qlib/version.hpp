// qlib version numbers, kept in step with the project() version in CMakeLists.txt.
#pragma once

#define QLIB_VERSION_MAJOR 0
#define QLIB_VERSION_MINOR 1
#define QLIB_VERSION_PATCH 0
#define QLIB_VERSION_STRING "0.1.0"
