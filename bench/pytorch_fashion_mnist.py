#!/usr/bin/python3
"""PyTorch reference for qlib's Fashion-MNIST demo (examples/fashion_mnist.cpp).

Loads qlib's shipped float weights (examples/data/fashion_mnist_cnn.safetensors, PyTorch
layout), measures the float test accuracy, quantizes the model with PyTorch's standard
eager-mode static post-training quantization (fuse conv+bn+relu and linear+relu, default
qconfig of the backend = per-channel weights, calibrate on the first 1,000 training images)
for the "onednn" and "fbgemm" engines (those this build supports), and times float and int8
inference on one thread: median latency at batch 1 and median time per batch of 64.

    /usr/bin/python3 bench/pytorch_fashion_mnist.py [--data DIR] [--weights FILE]

Written for PyTorch 1.13 (Debian's python3-torch) and numpy; no torchvision or safetensors
package needed. The images are pixel/255 with no mean/std normalization, as in qlib's demo.
"""
import argparse
import copy
import gzip
import json
import os
import struct
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn as nn

torch.set_num_threads(1)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_WEIGHTS = os.path.join(HERE, "..", "examples", "data", "fashion_mnist_cnn.safetensors")
DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
CALIBRATION = 1000
CALIBRATION_BATCH = 100
REPS_B1, REPS_B64 = 300, 50


def read_safetensors(path):
    """{name: torch.Tensor} from a safetensors file, parsed by hand (json + numpy)."""
    dtypes = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
              "I8": "i1", "U8": "u1"}
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = memoryview(blob)[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b0, b1 = t["data_offsets"]
        a = np.frombuffer(data[b0:b1], dtype=dtypes[t["dtype"]]).reshape(t["shape"])
        out[name] = torch.from_numpy(a.astype(a.dtype.newbyteorder("="), copy=True))
    return out, header.get("__metadata__", {})


def read_idx(path):
    """numpy array from a gzip IDX file (magic 0x0000 08 NDIM, big-endian u32 sizes, u8 data)."""
    with gzip.open(path, "rb") as f:
        blob = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", blob[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, blob[4:4 + 4 * ndim])
    return np.frombuffer(blob, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_split(data_dir, split):
    prefix = "train" if split == "train" else "t10k"
    img = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    lab = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    assert img.shape[1:] == (28, 28) and img.shape[0] == lab.shape[0]
    x = torch.from_numpy(img.astype(np.float32) / np.float32(255.0)).reshape(-1, 1, 28, 28)
    y = torch.from_numpy(lab.astype(np.int64))
    return x, y


def make_cnn():
    # Same layer indices as qlib's make_cnn() (examples/fashion_mnist_common.hpp) and the weight names.
    return nn.Sequential(nn.Conv2d(1, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(800, 128), nn.ReLU(), nn.Linear(128, 10))


class Quantizable(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.body = body
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.body(self.quant(x)))


def fuse(model_eval):
    """conv+bn+relu and linear+relu fused (eval mode: BN folded into the conv)."""
    return torch.ao.quantization.fuse_modules(copy.deepcopy(model_eval),
                                              [["0", "1", "2"], ["4", "5", "6"], ["9", "10"]])


def accuracy(model, x, y, batch=500):
    correct = 0
    with torch.inference_mode():
        for b0 in range(0, x.shape[0], batch):
            correct += (model(x[b0:b0 + batch]).argmax(1) == y[b0:b0 + batch]).sum().item()
    return correct / x.shape[0]


def quantize(model_eval, backend, calib_x):
    torch.backends.quantized.engine = backend
    m = Quantizable(fuse(model_eval)).eval()
    m.qconfig = torch.ao.quantization.get_default_qconfig(backend)
    torch.ao.quantization.prepare(m, inplace=True)
    with torch.inference_mode():
        for b0 in range(0, calib_x.shape[0], CALIBRATION_BATCH):
            m(calib_x[b0:b0 + CALIBRATION_BATCH])
    torch.ao.quantization.convert(m, inplace=True)
    return m


def time_calls(model, inputs, reps, warmup=5):
    """Median wall (perf_counter) and thread-CPU (thread_time) seconds per call, cycling through inputs."""
    wall, cpu = [], []
    with torch.no_grad(), torch.inference_mode():
        for i in range(warmup):
            model(inputs[i % len(inputs)])
        for i in range(reps):
            x = inputs[i % len(inputs)]
            c0, t0 = time.thread_time(), time.perf_counter()
            model(x)
            t1, c1 = time.perf_counter(), time.thread_time()
            wall.append(t1 - t0)
            cpu.append(c1 - c0)
    return float(np.median(wall)), float(np.median(cpu))


def load_average():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: %.2f, %.2f, %.2f" % os.getloadavg()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--weights", default=os.path.normpath(DEFAULT_WEIGHTS))
    args = ap.parse_args()
    start = time.perf_counter()
    torch.manual_seed(0)

    weights, meta = read_safetensors(args.weights)
    model = make_cnn()
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected, f"unexpected keys in {args.weights}: {unexpected}"
    assert all(k.endswith("num_batches_tracked") for k in missing), f"missing keys: {missing}"
    model.eval()

    test_x, test_y = load_split(args.data, "test")
    train_x, _ = load_split(args.data, "train")
    calib_x = train_x[:CALIBRATION].clone()
    del train_x

    backends = [b for b in ("onednn", "fbgemm") if b in torch.backends.quantized.supported_engines]
    skipped = [b for b in ("onednn", "fbgemm") if b not in backends]
    default_engine = torch.backends.quantized.engine

    # (name, model, engine or None)
    models = [("float (unfused)", model, None), ("float (conv+bn fused)", fuse(model).eval(), None)]
    for b in backends:
        models.append((f"int8 static ({b})", quantize(model, b, calib_x), b))

    # Different test images per call: 300 single images, 50 distinct batches of 64.
    b1_inputs = [test_x[i:i + 1].clone() for i in range(REPS_B1)]
    b64_inputs = [test_x[64 * i:64 * (i + 1)].clone() for i in range(REPS_B64)]

    rows = []
    for name, m, engine in models:
        torch.backends.quantized.engine = engine if engine else default_engine
        acc = accuracy(m, test_x, test_y)
        b1 = time_calls(m, b1_inputs, REPS_B1)
        b64 = time_calls(m, b64_inputs, REPS_B64)
        rows.append((name, acc, b1, b64))

    print(f"PyTorch Fashion-MNIST reference  (torch {torch.__version__}, numpy {np.__version__}, "
          f"{torch.get_num_threads()} thread, python {sys.version.split()[0]})")
    print(f"float weights: {args.weights}  ({meta.get('qlib.recipe', 'no recipe')})")
    print(f"quantized engines supported: {torch.backends.quantized.supported_engines}"
          + (f"; not available: {', '.join(skipped)}" if skipped else ""))
    print(f"\n{'model':<24} {'test acc':>9} {'batch 1 (us)':>13} {'b1 cpu (us)':>12} "
          f"{'batch 64 (ms)':>14} {'b64 cpu (ms)':>13} {'images/s':>10} {'img/s cpu':>10}")
    for name, acc, (b1w, b1c), (b64w, b64c) in rows:
        print(f"{name:<24} {100 * acc:8.2f}% {1e6 * b1w:13.1f} {1e6 * b1c:12.1f} "
              f"{1e3 * b64w:14.3f} {1e3 * b64c:13.3f} {64 / b64w:10.0f} {64 / b64c:10.0f}")
    print(f"\n(test set: {test_x.shape[0]} images; calibration: {calib_x.shape[0]} training images in batches of "
          f"{CALIBRATION_BATCH}; median of {REPS_B1} batch-1 and {REPS_B64} batch-64 calls; "
          f"images/s = 64 / batch-64 time; 'cpu' columns = time.thread_time)")
    print(f"uptime: {load_average()}")
    print(f"total runtime {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
