// Umbrella header for pruning: structures, scores, selection, masks, schedules, model-level pruners, shrink, sparse int8 GEMM.
#pragma once

#include "qlib/prune/mask.hpp"
#include "qlib/prune/model.hpp"
#include "qlib/prune/pruner.hpp"
#include "qlib/prune/reference.hpp"
#include "qlib/prune/schedule.hpp"
#include "qlib/prune/score.hpp"
#include "qlib/prune/select.hpp"
#include "qlib/prune/shrink.hpp"
#include "qlib/prune/sparse_block.hpp"
#include "qlib/prune/sparse_nm.hpp"
#include "qlib/prune/structure.hpp"
#include "qlib/prune/tensor_ref.hpp"
