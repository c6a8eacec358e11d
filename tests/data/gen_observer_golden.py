#!/usr/bin/python3
"""Writes observer_golden.txt: quantization parameters chosen by PyTorch's observers and by
the ONNX Runtime and TFLite parameter rules, checked by tests/test_observer_presets.cpp.

Run from this directory with Debian's python3-torch:  /usr/bin/python3 gen_observer_golden.py

- torch cases run the real torch.ao.quantization observers (MinMaxObserver,
  PerChannelMinMaxObserver, MovingAverageMinMaxObserver,
  MovingAveragePerChannelMinMaxObserver) and record calculate_qparams().
- ort and tflite cases: neither onnxruntime nor tensorflow is packaged in Debian 12, so
  these are computed by the functions below, written from the published rules
  (onnxruntime/python/tools/quantization/quant_utils.py: get_qmin_qmax_for_qType and
  compute_scale_zp, 1.16+; tensorflow/lite/tools/optimize/quantization_utils.cc:
  GetAsymmetricQuantizationParams and the symmetric per-channel weight scale
  max(|min|, |max|) / 127) with numpy dtypes matching theirs (float32 ranges, float64
  scale for ORT, float32 everything for TFLite).

Format, one case per block:
  case <framework> <observer> key=value ...   (shape=<d0,d1,..> batches=<n> and options)
  x <values of batch 1, %.9g>    (one line per batch, row-major)
  scale <s0,s1,..>               (%.9g; or "error unsupported" where PyTorch refuses)
  zp <z0,z1,..>
"""
import math
import warnings

import numpy as np
import torch
from torch.ao.quantization.observer import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)

warnings.filterwarnings("ignore")
g = torch.Generator().manual_seed(2024)
lines = []


def fmt(v):
    return " ".join("%.9g" % float(t) for t in v)


def batches_of(shape, n, kind):
    out = []
    for b in range(n):
        if kind == "normal":
            x = torch.randn(shape, generator=g) * (1.0 + b) + 0.3 * b
        elif kind == "positive":
            x = torch.rand(shape, generator=g) * 5.0 + 0.5
        elif kind == "negative":
            x = -torch.rand(shape, generator=g) * 3.0 - 0.25
        elif kind == "zeros":
            x = torch.zeros(shape)
        elif kind == "tiny":
            x = (torch.rand(shape, generator=g) - 0.5) * 1e-9
        elif kind == "wide":
            x = torch.randn(shape, generator=g) * 1e4
        else:
            raise ValueError(kind)
        # a few exact zeros and a per-channel scale spread, like real activations/weights
        x = x.contiguous()
        if kind == "normal" and len(shape) > 1:
            x = x * torch.linspace(0.1, 2.0, shape[1]).reshape([1, shape[1]] + [1] * (len(shape) - 2))
        out.append(x.float())
    return out


def header(framework, observer, shape, nb, **kv):
    opts = " ".join("%s=%s" % (k, v) for k, v in kv.items())
    return "case %s %s shape=%s batches=%d %s" % (framework, observer, ",".join(map(str, shape)), nb, opts)


def emit(head, xs, scales, zps):
    lines.append(head)
    for x in xs:
        lines.append("x " + fmt(x.flatten()))
    if scales is None:
        lines.append("scale error unsupported")
        lines.append("zp error")
    else:
        lines.append("scale " + ",".join("%.9g" % float(s) for s in scales))
        lines.append("zp " + ",".join(str(int(z)) for z in zps))


DT = {"quint8": torch.quint8, "qint8": torch.qint8}
QS = {
    "per_tensor_affine": torch.per_tensor_affine,
    "per_tensor_symmetric": torch.per_tensor_symmetric,
    "per_channel_affine": torch.per_channel_affine,
    "per_channel_symmetric": torch.per_channel_symmetric,
}


def torch_case(cls, name, dtype, qscheme, shape, nb, kind, reduce_range=False, qrange=None, ch_axis=0,
               averaging=0.01):
    kw = dict(dtype=DT[dtype], qscheme=QS[qscheme], reduce_range=reduce_range)
    if qrange is not None:
        kw["quant_min"], kw["quant_max"] = qrange
    if "per_channel" in qscheme:
        kw["ch_axis"] = ch_axis
    if "MovingAverage" in cls.__name__:
        kw["averaging_constant"] = averaging
    xs = batches_of(shape, nb, kind)
    try:
        obs = cls(**kw)
    except NotImplementedError:  # e.g. quint8 symmetric with reduce_range
        obs, bad, qmin, qmax = None, True, 0, 0
    if obs is not None:
        for x in xs:
            obs(x)
        s, z = obs.calculate_qparams()
        s, z = s.flatten(), z.flatten()
        qmin, qmax = obs.quant_min, obs.quant_max
        bad = any(int(t) < qmin or int(t) > qmax for t in z)
    head = header("torch", name, shape, nb, dtype=dtype, qscheme=qscheme, reduce_range=int(reduce_range),
                  custom=int(qrange is not None), quant_min=qrange[0] if qrange else 0,
                  quant_max=qrange[1] if qrange else 0, ch_axis=ch_axis, averaging="%.9g" % averaging,
                  qmin=qmin, qmax=qmax)
    emit(head, xs, None if bad else s, None if bad else z)


for dtype, qscheme in [("quint8", "per_tensor_affine"), ("qint8", "per_tensor_affine"),
                       ("qint8", "per_tensor_symmetric"), ("quint8", "per_tensor_symmetric")]:
    for kind in ["normal", "positive", "negative", "zeros", "tiny", "wide"]:
        torch_case(MinMaxObserver, "minmax", dtype, qscheme, (2, 3, 4), 3, kind)
torch_case(MinMaxObserver, "minmax", "quint8", "per_tensor_affine", (2, 17), 2, "normal", reduce_range=True)
torch_case(MinMaxObserver, "minmax", "qint8", "per_tensor_affine", (2, 17), 2, "normal", reduce_range=True)
torch_case(MinMaxObserver, "minmax", "qint8", "per_tensor_symmetric", (2, 17), 2, "normal", reduce_range=True)
torch_case(MinMaxObserver, "minmax", "quint8", "per_tensor_symmetric", (2, 17), 2, "normal", reduce_range=True)
torch_case(MinMaxObserver, "minmax", "quint8", "per_tensor_affine", (31,), 2, "normal", qrange=(0, 15))
torch_case(MinMaxObserver, "minmax", "qint8", "per_tensor_symmetric", (31,), 2, "normal", qrange=(-8, 7))
torch_case(MinMaxObserver, "minmax", "quint8", "per_tensor_symmetric", (31,), 2, "normal", qrange=(0, 15))
torch_case(MinMaxObserver, "minmax", "quint8", "per_tensor_affine", (31,), 2, "normal", qrange=(0, 31),
           reduce_range=True)
for dtype, qscheme in [("qint8", "per_channel_symmetric"), ("quint8", "per_channel_affine"),
                       ("qint8", "per_channel_affine"), ("quint8", "per_channel_symmetric")]:
    for shape, axis in [((6, 7), 0), ((4, 5, 3), 1), ((2, 3, 4, 5), 3), ((8, 2, 3, 3), 0)]:
        torch_case(PerChannelMinMaxObserver, "per_channel_minmax", dtype, qscheme, shape, 2, "normal", ch_axis=axis)
torch_case(PerChannelMinMaxObserver, "per_channel_minmax", "qint8", "per_channel_symmetric", (5, 9), 2, "normal",
           ch_axis=0, reduce_range=True)
torch_case(PerChannelMinMaxObserver, "per_channel_minmax", "quint8", "per_channel_affine", (5, 9), 1, "positive",
           ch_axis=1)
torch_case(PerChannelMinMaxObserver, "per_channel_minmax", "quint8", "per_channel_symmetric", (5, 9), 1, "normal",
           ch_axis=1, reduce_range=True)
for dtype, qscheme in [("quint8", "per_tensor_affine"), ("qint8", "per_tensor_symmetric"),
                       ("qint8", "per_tensor_affine")]:
    for averaging in [0.01, 0.1, 0.5]:
        torch_case(MovingAverageMinMaxObserver, "moving_average_minmax", dtype, qscheme, (4, 6), 6, "normal",
                   averaging=averaging)
torch_case(MovingAverageMinMaxObserver, "moving_average_minmax", "quint8", "per_tensor_affine", (4, 6), 4, "wide",
           reduce_range=True)
torch_case(MovingAveragePerChannelMinMaxObserver, "moving_average_per_channel_minmax", "qint8",
           "per_channel_symmetric", (3, 4, 5), 5, "normal", ch_axis=1, averaging=0.2)
torch_case(MovingAveragePerChannelMinMaxObserver, "moving_average_per_channel_minmax", "quint8",
           "per_channel_affine", (6, 5), 4, "normal", ch_axis=0)


# ---- ONNX Runtime rules (quant_utils.py) --------------------------------------------
ORT_RANGE = {"uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535), "int16": (-32768, 32767)}
ORT_SYM = {"uint8": (0, 254), "int8": (-127, 127), "uint16": (0, 65534), "int16": (-32767, 32767)}
ORT_RED = {"uint8": (0, 127), "int8": (-64, 64), "uint16": (0, 32767), "int16": (-16384, 16384)}


def ort_qrange(qtype, reduce_range, symmetric):
    if reduce_range:
        return ORT_RED[qtype]
    return ORT_SYM[qtype] if symmetric else ORT_RANGE[qtype]


def ort_compute_scale_zp(rmin, rmax, qmin, qmax, symmetric):
    rmin = np.minimum(np.float32(rmin), np.float32(0))
    rmax = np.maximum(np.float32(rmax), np.float32(0))
    if symmetric:
        absmax = np.maximum(np.abs(rmin), np.abs(rmax))
        rmin, rmax = -absmax, +absmax
    dr = np.float64(np.float32(rmax - rmin))
    dq = np.float64(qmax) - np.float64(qmin)
    scale = dr / dq
    if scale < np.finfo(np.float32).tiny:
        return np.float32(1.0), 0
    if symmetric:
        zp = np.round((qmin + qmax) / np.float64(2.0))
    else:
        zp = np.round(np.float64(qmin) - np.float64(rmin) / scale)
    return np.float32(scale), int(zp)


def channel_ranges(xs, axis):
    x = torch.cat([t.unsqueeze(0) for t in xs])  # [batches, ...]
    if axis is None:
        return [float(x.min())], [float(x.max())]
    y = x.transpose(0, axis + 1).reshape(x.shape[axis + 1], -1)
    return [float(v) for v in y.min(dim=1).values], [float(v) for v in y.max(dim=1).values]


def ort_case(qtype, symmetric, reduce_range, calib_symmetric, shape, nb, kind, axis=None):
    xs = batches_of(shape, nb, kind)
    mins, maxs = channel_ranges(xs, axis)
    if calib_symmetric:  # MinMaxCalibrater(symmetric=True): (-absmax, absmax)
        a = [max(abs(lo), abs(hi)) for lo, hi in zip(mins, maxs)]
        mins, maxs = [-t for t in a], a
    qmin, qmax = ort_qrange(qtype, reduce_range, symmetric)
    sz = [ort_compute_scale_zp(lo, hi, qmin, qmax, symmetric) for lo, hi in zip(mins, maxs)]
    head = header("ort", "minmax", shape, nb, qtype=qtype, symmetric=int(symmetric), reduce_range=int(reduce_range),
                  calib_symmetric=int(calib_symmetric), axis=-1 if axis is None else axis)
    emit(head, xs, [s for s, _ in sz], [z for _, z in sz])


for qtype in ["uint8", "int8", "uint16", "int16"]:
    for symmetric in [False, True]:
        for kind in ["normal", "positive", "negative", "zeros", "tiny", "wide"]:
            ort_case(qtype, symmetric, False, False, (3, 5), 2, kind)
for qtype in ["uint8", "int8"]:
    for symmetric in [False, True]:
        ort_case(qtype, symmetric, True, False, (3, 7), 2, "normal")
        ort_case(qtype, symmetric, False, True, (3, 7), 2, "normal")
        ort_case(qtype, symmetric, False, False, (6, 4, 3), 1, "normal", axis=0)
        ort_case(qtype, symmetric, False, False, (2, 5, 3), 2, "normal", axis=1)


# ---- TFLite rules (quantization_utils.cc) -------------------------------------------
def tfl_asymmetric(mn, mx, qmin=-128, qmax=127):
    f = np.float32
    mn = min(f(mn), f(0.0))
    mx = max(f(mx), f(0.0))
    scale = f(f(mx - mn) / f(f(qmax) - f(qmin)))
    zp_from_min = f(qmin)
    if scale != 0:
        zp_from_min = f(f(qmin) - f(mn / scale))
    if zp_from_min < f(qmin):
        zp = qmin
    elif zp_from_min > f(qmax):
        zp = qmax
    else:
        zp = int(math.copysign(math.floor(abs(float(zp_from_min)) + 0.5), float(zp_from_min)))
    return (scale if scale != 0 else f(1.0)), zp  # qlib stores 1 for TFLite's scale 0


def tfl_symmetric(mn, mx):
    f = np.float32
    half = max(abs(f(mn)), abs(f(mx)))
    s = f(half / f(127.0))
    return s if s != 0 else f(1.0)


def tfl_case(which, shape, nb, kind, axis=None):
    xs = batches_of(shape, nb, kind)
    mins, maxs = channel_ranges(xs, axis)
    if which == "activation":
        sz = [tfl_asymmetric(lo, hi) for lo, hi in zip(mins, maxs)]
        scales, zps = [s for s, _ in sz], [z for _, z in sz]
    else:
        scales, zps = [tfl_symmetric(lo, hi) for lo, hi in zip(mins, maxs)], [0] * len(mins)
    head = header("tflite", which, shape, nb, axis=-1 if axis is None else axis)
    emit(head, xs, scales, zps)


for kind in ["normal", "positive", "negative", "zeros", "tiny", "wide"]:
    tfl_case("activation", (4, 6), 3, kind)
    tfl_case("weight", (4, 6), 1, kind)
tfl_case("weight", (8, 3, 3, 2), 1, "normal", axis=0)
tfl_case("weight", (3, 3, 2, 8), 1, "normal", axis=3)
tfl_case("activation", (2, 6, 5), 2, "normal", axis=1)

with open("observer_golden.txt", "w") as fh:
    fh.write("# PyTorch %s observers, ORT and TFLite rules; made by gen_observer_golden.py\n" % torch.__version__)
    fh.write("\n".join(lines) + "\n")
print("wrote", sum(1 for l in lines if l.startswith("case ")), "cases")
