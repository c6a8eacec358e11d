#!/usr/bin/python3
"""Writes torch_affine_golden.txt: PyTorch 1.13 quantize_per_tensor / quantize_per_channel
outputs (quint8, qint8) that tests/test_torch_golden.cpp checks qlib against.

Run from this directory with Debian's python3-torch:  /usr/bin/python3 gen_torch_golden.py
Format, one case per three lines:
  case <per_tensor|per_channel> <quint8|qint8> shape=<d0,d1,..> axis=<a> scales=<s,..> zps=<z,..>
  x <float values, %.9g>
  q <integer codes>
"""
import torch

torch.manual_seed(1234)
g = torch.Generator().manual_seed(99)


def fmt(v):
    return " ".join("%.9g" % float(t) for t in v)


def values(shape, scale, zp, qmin, qmax):
    n = 1
    for d in shape:
        n *= d
    # random values spanning beyond the range (saturation), exact ties, grid points, zero
    lo, hi = (qmin - zp - 3) * scale, (qmax - zp + 3) * scale
    x = torch.rand(n, generator=g) * (hi - lo) + lo
    k = torch.randint(qmin - zp, qmax - zp, (n,), generator=g).float()
    ties = (k + 0.5) * scale
    grid = k * scale
    sel = torch.randint(0, 4, (n,), generator=g)
    x = torch.where(sel == 1, ties, x)
    x = torch.where(sel == 2, grid, x)
    x = torch.where(sel == 3, torch.zeros_like(x), x)
    return x.reshape(shape)


lines = []
ranges = {torch.quint8: (0, 255), torch.qint8: (-128, 127)}
names = {torch.quint8: "quint8", torch.qint8: "qint8"}
cases = [
    ((37,), 0.0625, 128, torch.quint8),
    ((5, 13), 0.1, 3, torch.quint8),
    ((4, 9), 0.0078125, 0, torch.qint8),
    ((3, 7, 5), 0.3, -20, torch.qint8),
    ((64,), 1e-3, 255, torch.quint8),
    ((2, 33), 0.5, 0, torch.quint8),
    ((50,), 0.013, 0, torch.qint8),
]
for shape, scale, zp, dt in cases:
    qmin, qmax = ranges[dt]
    x = values(shape, scale, zp, qmin, qmax)
    q = torch.quantize_per_tensor(x, scale, zp, dt).int_repr()
    lines.append("case per_tensor %s shape=%s axis=0 scales=%.9g zps=%d"
                 % (names[dt], ",".join(map(str, shape)), scale, zp))
    lines.append("x " + fmt(x.flatten()))
    lines.append("q " + " ".join(str(int(t)) for t in q.flatten()))

pc_cases = [
    ((4, 11), 0, torch.qint8),
    ((6, 5), 1, torch.quint8),
    ((3, 4, 9), 1, torch.qint8),
    ((2, 3, 17), 2, torch.quint8),
    ((8, 3, 3, 3), 0, torch.qint8),
]
for shape, axis, dt in pc_cases:
    qmin, qmax = ranges[dt]
    c = shape[axis]
    scales = (torch.rand(c, generator=g) * 0.2 + 0.01).double()
    scales[0] = 0.125  # a power of two, so ties are exact
    if dt == torch.qint8:
        zps = torch.zeros(c, dtype=torch.long)
    else:
        zps = torch.randint(0, 256, (c,), generator=g)
    x = torch.randn(shape, generator=g) * 3.0
    x.view(-1)[:5] = torch.tensor([0.0, 0.0625, -0.1875, 1e6, -1e6])
    q = torch.quantize_per_channel(x, scales, zps, axis, dt).int_repr()
    lines.append("case per_channel %s shape=%s axis=%d scales=%s zps=%s"
                 % (names[dt], ",".join(map(str, shape)), axis,
                    ",".join("%.9g" % float(s) for s in scales.float()),
                    ",".join(str(int(z)) for z in zps)))
    lines.append("x " + fmt(x.flatten()))
    lines.append("q " + " ".join(str(int(t)) for t in q.flatten()))

with open("torch_affine_golden.txt", "w") as f:
    f.write("# PyTorch %s quantize_per_tensor/quantize_per_channel; made by gen_torch_golden.py\n"
            % torch.__version__)
    f.write("\n".join(lines) + "\n")
print("wrote", len(lines) // 3, "cases")
