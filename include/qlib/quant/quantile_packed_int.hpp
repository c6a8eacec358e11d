// Includes core/packed_int.hpp so that it can share a translation unit with quant/param_layout.hpp.
#pragma once

// Both headers define a function template qlib::detail::for_each_row with the same
// signature (a redefinition error when one translation unit includes both, which the
// packed quantile storage must). Until one of them is renamed, packed_int.hpp's copy is
// included here under another name; its own callers are renamed with it, so nothing else
// changes. If packed_int.hpp was already included directly before this header, the clash
// is that translation unit's own and this header does nothing about it.
#include "qlib/quant/param_layout.hpp"

#ifndef QLIB_PACKED_INT_HPP_INCLUDED_VIA_QUANTILE
#define QLIB_PACKED_INT_HPP_INCLUDED_VIA_QUANTILE
#define for_each_row for_each_row_of_packed_int
#include "qlib/core/packed_int.hpp"
#undef for_each_row
#endif
