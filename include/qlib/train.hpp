// qlib's trainer (umbrella): initialization, training forward/backward, loss, optimizers, schedules, loops, QAT, distillation.
#pragma once

#include "qlib/train/backward.hpp"
#include "qlib/train/distill.hpp"
#include "qlib/train/fake_quant.hpp"
#include "qlib/train/gradients.hpp"
#include "qlib/train/init.hpp"
#include "qlib/train/loss.hpp"
#include "qlib/train/lr_schedule.hpp"
#include "qlib/train/lsq.hpp"
#include "qlib/train/optimizer.hpp"
#include "qlib/train/qat.hpp"
#include "qlib/train/qat_convert.hpp"
#include "qlib/train/qat_quantizer.hpp"
#include "qlib/train/rng.hpp"
#include "qlib/train/trainer.hpp"
