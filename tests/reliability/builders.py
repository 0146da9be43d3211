"""Builders of hostile files and helpers shared by the reliability tests."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np


def tiny_onnx(path: Path, *, weight_dims=(2, 2), raw: bytes | None = None, external: dict[str, str] | None = None,
              nodes=None, out_dims=("n", 2)) -> Path:
    """An ONNX file x[1, 2] @ W -> y, with W inline, external (``external`` = its external_data keys) or absurd."""
    import onnx
    from onnx import TensorProto, helper

    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=list(weight_dims))
    if external is not None:
        weight.data_location = TensorProto.EXTERNAL
        for key, value in external.items():
            entry = weight.external_data.add()
            entry.key, entry.value = key, value
    else:
        weight.raw_data = raw if raw is not None else np.ones(weight_dims, np.float32).tobytes()
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weight_dims[0]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_dims))
    graph = helper.make_graph(nodes or [helper.make_node("MatMul", ["x", "W"], ["y"])], "g", [x], [y],
                              [] if nodes else [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def idx_bytes(magic: int, dims: tuple[int, ...], data: bytes) -> bytes:
    """An IDX file: big-endian magic, dimensions, then the raw uint8 data."""
    return struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + data


def write_mnist(root: Path, n: int = 30) -> Path:
    """Four small, valid MNIST IDX files (n train and n test images of 4x4)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 255, (n, 4, 4), dtype=np.uint8).tobytes()
        labels = (np.arange(n) % 10).astype(np.uint8).tobytes()
        (root / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(0x803, (n, 4, 4), images))
        (root / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(0x801, (n,), labels))
    return root


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under ``root`` outside ``skip``: proves nothing else was touched."""
    out = {}
    for p in root.rglob("*"):
        if skip in p.parents or p == skip or not p.is_file():
            continue
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def workbench(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "workbench"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)
