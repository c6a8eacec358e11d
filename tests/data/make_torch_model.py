#!/usr/bin/python3
"""Writes tests/data/torch_model/: a small random PyTorch 1.13 CNN's state_dict as
safetensors (written by hand from the spec, independently of qlib), an input and the
model's eval-mode output, which tests/test_nn_io.cpp loads into the same architecture
built with qlib's nn::sequential.

Run with Debian's python3-torch:  /usr/bin/python3 tests/data/make_torch_model.py

The model (indices are the state_dict prefixes):
   0 Conv2d(3, 8, 3, padding=1)      1 BatchNorm2d(8)   2 ReLU   3 MaxPool2d(2)
   4 Conv2d(8, 12, 3, stride=2, padding=1, groups=4)    5 ReLU   6 AvgPool2d(2)
   7 Flatten   8 Linear(12*2*3, 16)   9 ReLU   10 Linear(16, 5)
on a 3 x 16 x 24 input: 16x24 -> pool 8x12 -> stride 2: 4x6 -> pool 2x3, so the linear
layer after the flatten sees a non-square 2 x 3 map (a swap of H and W, or of the
(C, H, W) and (H, W, C) orders, changes the result). The batch norm's running
statistics come from a few train-mode batches (non-trivial mean and variance), its
affine parameters are randomized, and num_batches_tracked (I64, shape []) is written
too, as torch.save would (the loader ignores it).

Outputs:
  model.safetensors  the state_dict, PyTorch layout (conv OIHW, linear [out, in] with
                     (C, H, W) column order after the flatten), F32 / I64 little-endian;
                     tensors ordered by item size then name as the safetensors writer
                     does, header padded with spaces to a multiple of 8
  x.npy              input, float32 NCHW [2, 3, 16, 24]
  y.npy              eval-mode output, float32 [2, 5]
"""
import json
import os
import struct

import numpy as np
import torch

torch.manual_seed(20240611)
torch.set_num_threads(1)
out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_model")
os.makedirs(out_dir, exist_ok=True)

H, W = 16, 24
model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 8, 3, padding=1),
    torch.nn.BatchNorm2d(8),
    torch.nn.ReLU(),
    torch.nn.MaxPool2d(2),
    torch.nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=4),
    torch.nn.ReLU(),
    torch.nn.AvgPool2d(2),
    torch.nn.Flatten(),
    torch.nn.Linear(12 * 2 * 3, 16),
    torch.nn.ReLU(),
    torch.nn.Linear(16, 5),
)
with torch.no_grad():
    bn = model[1]
    bn.weight.uniform_(0.5, 1.5)
    bn.bias.uniform_(-0.3, 0.3)
    # Running statistics from train-mode batches whose channels have other means and spreads.
    model.train()
    for _ in range(4):
        shift = torch.linspace(-1.0, 1.0, 3).view(1, 3, 1, 1)
        model(torch.randn(8, 3, H, W) * 1.5 + shift)
    model.eval()
    assert bn.num_batches_tracked.item() == 4
    assert bn.running_var.sub(1.0).abs().max() > 0.05 and bn.running_mean.abs().max() > 0.05

    x = torch.randn(2, 3, H, W)
    y = model(x)
    assert y.shape == (2, 5)

# state_dict -> safetensors, by hand.
DT = {torch.float32: ("F32", "<f4", 4), torch.int64: ("I64", "<i8", 8)}
entries = []
for name, t in model.state_dict().items():
    dtype, np_type, item = DT[t.dtype]
    entries.append((name, dtype, list(t.shape), t.detach().cpu().numpy().astype(np_type).tobytes(), item))
entries.sort(key=lambda e: (-e[4], e[0]))
header = {"__metadata__": {"format": "pt"}}
offset = 0
for name, dtype, shape, blob, _ in entries:
    header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
    offset += len(blob)
h = json.dumps(header, separators=(",", ":")).encode("utf-8")
h += b" " * ((8 - len(h) % 8) % 8)
with open(os.path.join(out_dir, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(e[3] for e in entries))

np.save(os.path.join(out_dir, "x.npy"), x.numpy().astype("<f4"))
np.save(os.path.join(out_dir, "y.npy"), y.numpy().astype("<f4"))
print("wrote", out_dir, "tensors:", ", ".join(e[0] for e in entries))
