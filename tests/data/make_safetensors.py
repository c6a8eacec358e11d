#!/usr/bin/python3
"""Writes the safetensors files that tests/test_safetensors.cpp reads, independently of qlib.

Run from this directory with numpy only:  /usr/bin/python3 make_safetensors.py
(torch 1.13 has no safetensors package, so the format is written by hand from the spec:
8-byte little-endian header length, JSON header, little-endian row-major data.)

Outputs in safetensors/:
  all_dtypes.safetensors  every dtype, ranks 0..4, an empty tensor, special float values,
                          integer extremes, non-ASCII names (\\u escapes and a surrogate
                          pair), metadata with escapes; pretty-printed JSON with newlines,
                          header keys in another order than the data, header length not a
                          multiple of 8 (tensor data at unaligned file offsets)
  small_model.safetensors laid out as the safetensors Python writer does: compact JSON,
                          raw UTF-8, tensors by item size then name, header padded with
                          spaces to a multiple of 8
  small_model.<name>.npy  the float tensors of small_model as float32 (exact)
  expected.txt            what each file holds, one line per tensor in header order:
                            tensor <file> <name> <DTYPE> <d0,d1,..|scalar> <element bits in hex...>
                          and per metadata entry (UTF-8 bytes as hex):
                            meta <file> <key hex> <value hex>
"""
import json
import os
import struct

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "safetensors")
rng = np.random.default_rng(20240607)

NP = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
      "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1"}
ITEM = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4,
        "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}


def values(dtype, shape):
    """Row-major little-endian bytes for a tensor of `shape`, with the type's edge values first."""
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if dtype in ("F64", "F32", "F16"):
        t = np.dtype(NP[dtype])
        special = np.array([np.inf, -np.inf, np.nan, -0.0, np.finfo(t).tiny / 4, np.finfo(t).max, 1.0 / 3],
                           dtype=t)
        a = (rng.standard_normal(n) * 10).astype(t)
        a[:min(n, len(special))] = special[:n]
        return a.tobytes()
    if dtype == "BF16":
        # The top halves of float32 values; also the bf16 patterns of Inf, NaN, -0 and a subnormal.
        f = (rng.standard_normal(n) * 10).astype("<f4").view("<u4") >> 16
        special = np.array([0x7F80, 0xFF80, 0x7FC1, 0x8000, 0x0001, 0x7F7F], dtype="<u4")
        f[:min(n, len(special))] = special[:n]
        return f.astype("<u2").tobytes()
    if dtype in ("F8_E4M3", "F8_E5M2"):
        return rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    if dtype == "BOOL":
        return rng.integers(0, 2, n, dtype=np.uint8).tobytes()
    t = np.dtype(NP[dtype])
    info = np.iinfo(t)
    a = rng.integers(info.min, info.max, n, dtype=t, endpoint=True)
    special = np.array([info.min, info.max, 0, 1, -1 if info.min < 0 else 2], dtype=t)
    a[:min(n, len(special))] = special[:n]
    return a.tobytes()


def write(path, header_json, blobs_in_data_order):
    data = b"".join(blobs_in_data_order)
    h = header_json.encode("utf-8")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def expected_lines(fname, header_order, tensors, metadata):
    lines = []
    for k, v in (metadata or {}).items():
        lines.append("meta %s %s %s" % (fname, k.encode("utf-8").hex(), v.encode("utf-8").hex()))
    for name in header_order:
        dtype, shape, blob = tensors[name]
        item = ITEM[dtype]
        bits = [blob[i:i + item][::-1].hex() for i in range(0, len(blob), item)]
        shape_s = ",".join(str(d) for d in shape) if shape else "scalar"
        lines.append(" ".join(["tensor", fname, name, dtype, shape_s] + bits))
    return lines


def all_dtypes():
    ranks = {"F64": 1, "F32": 2, "F16": 3, "BF16": 4, "F8_E4M3": 1, "F8_E5M2": 2, "I64": 0, "I32": 1,
             "I16": 2, "I8": 3, "U64": 4, "U32": 0, "U16": 1, "U8": 2, "BOOL": 3}
    tensors = {}
    for dtype, rank in ranks.items():
        shape = [int(d) for d in rng.integers(1, 4, rank)]
        if shape:
            shape[0] = 8  # room for the edge values
        tensors["t_" + dtype.lower()] = (dtype, shape, values(dtype, shape))
    tensors["empty"] = ("F32", [3, 0, 2], b"")
    tensors["empty_vector"] = ("I16", [0], b"")
    tensors["layer.w\u00e9ight"] = ("F32", [2, 2], values("F32", [2, 2]))
    tensors["emoji_\U0001F600"] = ("U8", [3], values("U8", [3]))
    metadata = {"format": "pt", "note": "quote\" backslash\\ tab\t caf\u00e9"}

    data_order = sorted(tensors, reverse=True)  # data laid out in reverse name order
    header_order = sorted(tensors, key=lambda k: (len(k), k))  # header in another order
    offsets, at = {}, 0
    for name in data_order:
        offsets[name] = [at, at + len(tensors[name][2])]
        at += len(tensors[name][2])
    header = {"__metadata__": metadata}
    for name in header_order:
        dtype, shape, _ = tensors[name]
        header[name] = {"data_offsets": offsets[name], "dtype": dtype, "shape": shape}
    text = json.dumps(header, indent=2, ensure_ascii=True)
    if (8 + len(text.encode())) % 8 == 0:
        text += " "  # keep the data at unaligned file offsets
    write(os.path.join(OUT, "all_dtypes.safetensors"), text, [tensors[n][2] for n in data_order])
    return expected_lines("all_dtypes.safetensors", header_order, tensors, metadata)


def small_model():
    def bf16_exact(n):
        return ((rng.standard_normal(n) * 0.1).astype("<f4").view("<u4") & 0xFFFF0000).view("<f4")

    f32 = {
        "fc1.weight": (rng.standard_normal((8, 4)) * 0.5).astype("<f4"),
        "fc1.bias": (rng.standard_normal(8) * 0.1).astype("<f4"),
    }
    tensors = {name: ("F32", list(a.shape), a.tobytes()) for name, a in f32.items()}
    fc2_w = (rng.standard_normal((3, 8)) * 0.5).astype("<f2")
    fc2_b = bf16_exact(3)
    tensors["fc2.weight"] = ("F16", [3, 8], fc2_w.tobytes())
    tensors["fc2.bias"] = ("BF16", [3], (fc2_b.view("<u4") >> 16).astype("<u2").tobytes())
    tensors["emb.table"] = ("I8", [5, 4], values("I8", [5, 4]))
    tensors["mask"] = ("BOOL", [2, 3], values("BOOL", [2, 3]))
    tensors["step"] = ("I64", [], np.array([123456789012], dtype="<i8").tobytes())
    floats = dict(f32)
    floats["fc2.weight"] = fc2_w.astype("<f4")
    floats["fc2.bias"] = fc2_b
    for name, a in floats.items():
        np.save(os.path.join(OUT, "small_model.%s.npy" % name), a.astype("<f4"))

    # The safetensors writer's order: larger items first, then by name.
    order = sorted(tensors, key=lambda k: (-ITEM[tensors[k][0]], k))
    metadata = {"format": "pt"}
    header, at = {"__metadata__": metadata}, 0
    for name in order:
        dtype, shape, blob = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + len(blob)]}
        at += len(blob)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False)
    text += " " * ((8 - len(text.encode()) % 8) % 8)
    write(os.path.join(OUT, "small_model.safetensors"), text, [tensors[n][2] for n in order])
    return expected_lines("small_model.safetensors", order, tensors, metadata)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    lines = all_dtypes() + small_model()
    with open(os.path.join(OUT, "expected.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
