// Pruning an nn::sequential: masks over its conv/linear weights, re-applied after each optimizer step.
#pragma once

#include <string>
#include <variant>
#include <vector>

#include "qlib/nn/sequential.hpp"
#include "qlib/prune/pruner.hpp"
#include "qlib/train/gradients.hpp"

namespace qlib {
namespace prune {

// The mask of one layer's weight (conv2d OHWI, linear [out, in]). Output-channel masks
// also zero the bias of every pruned channel and, when a batch_norm2d follows the layer,
// that channel's BN weight and bias, so a pruned filter outputs exactly 0 (for finite
// inputs) as if it had been removed: what prune/shrink.hpp's equivalence assumes.
struct layer_mask {
  std::size_t layer = 0;  // index in the sequential
  mask weight;
  std::vector<std::uint8_t> bias_keep;  // per output channel; empty: no channel masking
  bool batch_norm_next = false;         // with bias_keep: model[layer + 1] is a batch_norm2d to mask
};

// What a fine-tuning loop holds: apply() after every update keeps pruned weights at 0
// (or wrap the optimizer in masked_optimizer, which does it inside step()).
struct model_masks {
  std::vector<layer_mask> layers;

  // Zeroes the pruned weights (and masked biases) of `model`.
  void apply(nn::sequential& model) const {
    for (const layer_mask& l : layers) {
      QLIB_CHECK(l.layer < model.size(), errc::out_of_range,
                 "prune::model_masks: layer " + std::to_string(l.layer) + " outside a model of " +
                     std::to_string(model.size()));
      if (l.batch_norm_next && !l.bias_keep.empty()) {
        auto* bn = l.layer + 1 < model.size() ? std::get_if<nn::batch_norm2d>(&model[l.layer + 1]) : nullptr;
        QLIB_CHECK(bn != nullptr, errc::invalid_argument,
                   "prune::model_masks: layer " + std::to_string(l.layer + 1) + " is not the expected BatchNorm2d");
        apply_bias(l, bn->weight.data(), bn->weight.size());
        apply_bias(l, bn->bias.data(), bn->bias.size());
      }
      if (auto* c = std::get_if<nn::conv2d>(&model[l.layer])) apply_to(l, c->weight.data(), c->weight.size(), c->bias);
      else if (auto* f = std::get_if<nn::linear>(&model[l.layer])) apply_to(l, f->weight.data(), f->weight.size(), f->bias);
      else
        raise_error(errc::invalid_argument,
                    "prune::model_masks: layer " + std::to_string(l.layer) + " is a " + nn::layer_kind(model[l.layer]) +
                        ", not a Conv2d or Linear");
    }
  }

  // The same through an optimizer's parameter list (train::parameters(model, grads)),
  // matched by name ("3.weight", "3.bias"); every masked weight must be in the list.
  // A following batch norm's parameters ("4.weight", "4.bias") are masked too.
  void apply(const std::vector<train::parameter>& params) const {
    for (const layer_mask& l : layers) {
      const std::string w = std::to_string(l.layer) + ".weight", b = std::to_string(l.layer) + ".bias";
      const std::string nw = std::to_string(l.layer + 1) + ".weight", nb = std::to_string(l.layer + 1) + ".bias";
      const bool masks_channels = !l.bias_keep.empty();
      bool found = false;
      for (const train::parameter& p : params) {
        if (p.name == w) {
          l.weight.apply(p.value, p.size);
          found = true;
        } else if (masks_channels && (p.name == b || (l.batch_norm_next && (p.name == nw || p.name == nb)))) {
          apply_bias(l, p.value, p.size);
        }
      }
      QLIB_CHECK(found, errc::shape_mismatch, "prune::model_masks: no parameter named " + w);
    }
  }

  // Elements covered by the weight masks, and how many of them are pruned.
  index_t size() const noexcept {
    index_t n = 0;
    for (const auto& l : layers) n += l.weight.size();
    return n;
  }
  index_t pruned() const noexcept {
    index_t n = 0;
    for (const auto& l : layers) n += l.weight.pruned();
    return n;
  }
  double sparsity() const noexcept { return size() ? static_cast<double>(pruned()) / static_cast<double>(size()) : 0.0; }

 private:
  static void apply_bias(const layer_mask& l, float* b, index_t n) {
    QLIB_CHECK(n == static_cast<index_t>(l.bias_keep.size()), errc::shape_mismatch,
               "prune::model_masks: bias of layer " + std::to_string(l.layer) + " does not match its mask");
    for (index_t i = 0; i < n; ++i) b[i] = l.bias_keep[static_cast<std::size_t>(i)] ? b[i] : 0.0f;
  }
  static void apply_to(const layer_mask& l, float* w, index_t n, tensor<float, 1>& bias) {
    l.weight.apply(w, n);
    if (!l.bias_keep.empty() && !bias.empty()) apply_bias(l, bias.data(), bias.size());
  }
};

// An optimizer that re-applies the masks after every step; pass it to train::train_step
// or train::train_epoch in place of the optimizer it wraps (which it does not own).
template <class Optimizer>
class masked_optimizer {
 public:
  masked_optimizer(Optimizer& opt, const model_masks& masks) : opt_(&opt), masks_(&masks) {}
  void step(const std::vector<train::parameter>& params) {
    opt_->step(params);
    masks_->apply(params);
  }
  float lr() const { return opt_->lr(); }
  void set_lr(float lr) { opt_->set_lr(lr); }
  Optimizer& inner() noexcept { return *opt_; }

 private:
  Optimizer* opt_;
  const model_masks* masks_;
};

// Which layers a model-level pruner covers.
struct model_scope {
  bool global = true;        // one selection over all covered layers, or one per layer
  bool include_last = true;  // the last conv/linear layer (its outputs are the model's outputs)
  normalization norm = normalization::none;  // global only
};

// Masks for the weights of every conv2d and linear layer of `model` (the model is not
// changed). Layers are compared by structure, score and selection as in pruner.hpp.
template <class Structure, class Score>
model_masks masks_for(const nn::sequential& model, const Structure& s, const Score& score, const selection& sel,
                      const model_scope& scope = {}) {
  std::vector<std::size_t> ids;
  std::vector<tensor_ref> refs;
  for (std::size_t i = 0; i < model.size(); ++i) {
    if (auto* c = std::get_if<nn::conv2d>(&model[i])) refs.emplace_back(c->weight);
    else if (auto* f = std::get_if<nn::linear>(&model[i])) refs.emplace_back(f->weight);
    else continue;
    ids.push_back(i);
  }
  if (!scope.include_last && !ids.empty()) {
    ids.pop_back();
    refs.pop_back();
  }
  QLIB_CHECK(!refs.empty(), errc::empty_tensor, "prune::masks_for: the model has no conv2d/linear layer to prune");
  std::vector<mask> ms;
  if (scope.global) {
    ms = make_masks(refs, s, score, sel, scope.norm);
  } else {
    for (const tensor_ref& r : refs) ms.push_back(make_mask(r, s, score, sel));
  }
  model_masks out;
  for (std::size_t k = 0; k < ids.size(); ++k) {
    layer_mask l;
    l.layer = ids[k];
    if (ms[k].has_channels() && ms[k].channel_axis() == 0) {  // output channels: mask the bias too
      l.bias_keep.assign(static_cast<std::size_t>(ms[k].shape()[0]), 0);
      for (index_t c : ms[k].kept_channels()) l.bias_keep[static_cast<std::size_t>(c)] = 1;
      l.batch_norm_next = l.layer + 1 < model.size() && std::holds_alternative<nn::batch_norm2d>(model[l.layer + 1]);
    }
    l.weight = std::move(ms[k]);
    out.layers.push_back(std::move(l));
  }
  return out;
}

// Global (or per-layer) magnitude pruning of every conv/linear weight to `sparsity`,
// like torch.nn.utils.prune.global_unstructured(..., L1Unstructured, amount): zeroes the
// pruned weights in place and returns the masks for fine-tuning.
inline model_masks magnitude_prune(nn::sequential& model, double sparsity, bool global = true) {
  model_masks m = masks_for(model, unstructured{}, magnitude{}, prune::sparsity(sparsity), {global, true});
  m.apply(model);
  return m;
}

// L2 filter pruning: in each conv/linear layer but the last, the `fraction` of output
// channels with the smallest L2 norms (round half to even) are zeroed: weight rows, bias
// and a following batch norm's weight and bias, so they output exactly 0.
// The masks' kept_channels() are the keep-lists a physical shrink (prune/shrink.hpp) takes.
inline model_masks l2_filter_prune(nn::sequential& model, double fraction) {
  model_masks m = masks_for(model, channels{0}, l2, sparsity(fraction), {false, false});
  m.apply(model);
  return m;
}

}  // namespace prune
}  // namespace qlib
