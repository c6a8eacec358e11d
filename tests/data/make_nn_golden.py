#!/usr/bin/python3
"""Writes tests/data/nn_golden/: PyTorch 1.13 float32 CPU outputs of conv2d, pooling,
BatchNorm2d (eval) and a small nn.Sequential, which tests/test_nn_layers.cpp checks
qlib's nn layers against.

Run with Debian's python3-torch:  /usr/bin/python3 tests/data/make_nn_golden.py
Layout: cases.txt lists one case a line (the C++ test reads the parameters from it);
<case>_x.npy is the input (NCHW), <case>_w.npy / <case>_b.npy the weights in PyTorch's
layout (OIHW for conv, [out, in] for linear), <case>_y.npy the output (NCHW, or [N, F]).
The Sequential's parameters are seq_<state_dict key>.npy.
"""
import os

import numpy as np
import torch

torch.manual_seed(20240601)
torch.set_num_threads(1)
out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nn_golden")
os.makedirs(out_dir, exist_ok=True)
lines = []


def save(name, t):
    np.save(os.path.join(out_dir, name + ".npy"), t.detach().cpu().numpy().astype("<f4"))


def pair(v):
    return v if isinstance(v, tuple) else (v, v)


# conv <name> n c h w out_c kh kw sh sw ph pw dh dw groups bias(0/1)
convs = [  # name, input (n, c, h, w), out_c, kernel, then Conv2d's keyword arguments
    ("conv_basic", (2, 3, 7, 5), 4, 3, dict(padding=1)),
    ("conv_stride_pad", (1, 4, 13, 9), 6, (5, 3), dict(stride=(2, 3), padding=(2, 1))),
    ("conv_dilation", (2, 3, 11, 10), 5, 3, dict(padding=(2, 1), dilation=2)),
    ("conv_groups", (3, 4, 9, 7), 6, 3, dict(stride=(2, 1), padding=1, groups=2)),
    ("conv_groups4_nobias", (1, 8, 6, 11), 4, (1, 3), dict(stride=3, padding=(0, 1), dilation=(1, 2), groups=4,
                                                          bias=False)),
    ("conv_depthwise", (2, 6, 9, 8), 6, 3, dict(padding=1, groups=6)),
    ("conv_depthwise_mult2", (1, 4, 10, 7), 8, 3, dict(stride=2, padding=1, groups=4)),
    ("conv_pointwise", (2, 8, 5, 6), 5, 1, dict(bias=False)),
    ("conv_5x5_s3", (1, 3, 13, 9), 4, 5, dict(stride=3, padding=2)),
]
for name, (n, c, h, w), oc, k, kw in convs:
    m = torch.nn.Conv2d(c, oc, k, **kw).eval()
    x = torch.randn(n, c, h, w)
    with torch.no_grad():
        y = m(x)
    save(name + "_x", x)
    save(name + "_w", m.weight)
    if m.bias is not None:
        save(name + "_b", m.bias)
    save(name + "_y", y)
    k, s, p, d = m.kernel_size, m.stride, m.padding, m.dilation
    lines.append("conv %s %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d" %
                 (name, n, c, h, w, oc, k[0], k[1], s[0], s[1], p[0], p[1], d[0], d[1], m.groups,
                  int(m.bias is not None)))

# pool <name> <max|avg> n c h w kh kw sh sw ph pw dh dw count_include_pad(0/1)
pools = [
    ("maxpool_3s2p1", "max", 2, 3, 9, 8, 3, 2, 1, 1, True),
    ("maxpool_dilated", "max", 1, 4, 11, 10, (3, 2), (2, 1), (1, 1), (2, 2), True),
    ("avgpool_pad_incl", "avg", 2, 3, 9, 8, 3, 2, 1, 1, True),
    ("avgpool_pad_excl", "avg", 2, 3, 9, 8, 3, 2, 1, 1, False),
    ("avgpool_rect", "avg", 1, 5, 7, 10, (2, 3), (1, 2), (1, 1), 1, False),
    ("maxpool_nan", "max", 1, 3, 6, 7, 3, (2, 3), 1, 1, True),  # NaNs in the input propagate
]
for name, kind, n, c, h, w, k, stride, pad, dil, incl in pools:
    k, stride, pad, dil = pair(k), pair(stride), pair(pad), pair(dil)
    if kind == "max":
        m = torch.nn.MaxPool2d(k, stride=stride, padding=pad, dilation=dil)
    else:
        assert dil == (1, 1)  # PyTorch's AvgPool2d has no dilation
        m = torch.nn.AvgPool2d(k, stride=stride, padding=pad, count_include_pad=incl)
    x = torch.randn(n, c, h, w)
    if name.endswith("_nan"):
        x[0, 0, 2, 3] = float("nan")  # an inner tap of its window
        x[0, 1, 0, 0] = float("nan")  # the first tap of window (0, 0) after padding
        x[0, 2, 5, 6] = float("nan")  # a corner
    y = m(x)
    save(name + "_x", x)
    save(name + "_y", y)
    lines.append("pool %s %s %d %d %d %d %d %d %d %d %d %d %d %d %d" %
                 (name, kind, n, c, h, w, k[0], k[1], stride[0], stride[1], pad[0], pad[1], dil[0], dil[1],
                  int(incl)))

# bn <name> n c h w eps: <name>_weight/_bias/_mean/_var.npy
bn = torch.nn.BatchNorm2d(6, eps=1e-3).eval()
with torch.no_grad():
    bn.weight.uniform_(0.5, 2.0)
    bn.bias.uniform_(-1.0, 1.0)
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.05, 3.0)
x = torch.randn(2, 6, 5, 4)
with torch.no_grad():
    y = bn(x)
save("bn_x", x)
save("bn_weight", bn.weight)
save("bn_bias", bn.bias)
save("bn_mean", bn.running_mean)
save("bn_var", bn.running_var)
save("bn_y", y)
lines.append("bn bn 2 6 5 4 %.9g" % bn.eps)

# A small CNN, eval mode. torch.flatten orders features (C, H, W); qlib's flatten is NHWC,
# so the test permutes the Linear's input columns (as a model loader must).
seq = torch.nn.Sequential(
    torch.nn.Conv2d(3, 8, 3, padding=1),
    torch.nn.BatchNorm2d(8),
    torch.nn.ReLU(),
    torch.nn.MaxPool2d(2),
    torch.nn.Conv2d(8, 6, 3, padding=1, groups=2),
    torch.nn.ReLU(),
    torch.nn.AvgPool2d(2),
    torch.nn.Flatten(),
    torch.nn.Linear(6 * 3 * 2, 10),
).eval()
with torch.no_grad():
    seq[1].weight.uniform_(0.5, 2.0)
    seq[1].bias.uniform_(-0.5, 0.5)
    seq[1].running_mean.uniform_(-0.3, 0.3)
    seq[1].running_var.uniform_(0.2, 2.0)
x = torch.randn(2, 3, 12, 10)
with torch.no_grad():
    y = seq(x)
save("seq_x", x)
for key, t in seq.state_dict().items():
    if key.endswith("num_batches_tracked"):
        continue
    save("seq_" + key, t)
save("seq_y", y)
lines.append("seq seq 2 3 12 10")

with open(os.path.join(out_dir, "cases.txt"), "w") as f:
    f.write("# written by tests/data/make_nn_golden.py (PyTorch %s); see that script for the format\n" %
            torch.__version__)
    f.write("\n".join(lines) + "\n")
