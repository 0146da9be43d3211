"""ONNX Runtime int8 quantization helpers: pre-processing, calibration, one candidate, fair timing.

Kept free of the job so the bench script and the tests can call the same functions.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import statistics
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CALIBRATE = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
TYPES = {"uint8": "QUInt8", "int8": "QInt8"}
SHORT = {"uint8": "u8", "int8": "s8"}


@dataclass(frozen=True)
class Candidate:
    """One way to quantize: ``mode`` static|dynamic, ``fmt`` qdq|qoperator, activation/weight types."""

    mode: str
    fmt: str
    activation_type: str
    weight_type: str
    per_channel: bool
    exclude: tuple[str, ...] = field(default=())

    @property
    def label(self) -> str:
        if self.mode == "dynamic":
            text = f"dynamic w{SHORT[self.weight_type]}"
        else:
            text = f"{self.fmt} a{SHORT[self.activation_type]}/w{SHORT[self.weight_type]}"
        text += " per-channel" if self.per_channel else ""
        return text + (f" ({len(self.exclude)} nodes float)" if self.exclude else "")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """onnxruntime.quantization logs advice through the root logger and warnings; keep the CLI readable."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def input_name(path: Path | str) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in initializers)


def preprocess(src: Path, dst: Path) -> tuple[Path, str]:
    """onnxruntime's pre-processing (symbolic shape inference, graph optimization), then name every node.

    Node names are what ``nodes_to_exclude`` and the sensitivity table refer to, so unnamed nodes get
    ``<op>_<index>``. Returns the path and a one-line note (the fallback is said, never silent).
    """
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    note = "pre-processed (shape inference + optimization)"
    try:
        with quiet():
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
    except Exception as exc:  # noqa: BLE001 - pre-processing is an optimisation; quantization works without it
        shutil.copyfile(src, dst)
        note = f"pre-processing skipped ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})"
    model = onnx.load(str(dst))
    used = {n.name for n in model.graph.node if n.name}
    changed = False
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name, changed = name, True
            used.add(name)
    if changed:
        onnx.save(model, str(dst))
    return dst, note


class BatchReader:
    """A ``CalibrationDataReader`` over fixed numpy batches (re-iterable via ``rewind``)."""

    def __init__(self, name: str, batches: Sequence[np.ndarray]) -> None:
        self.name = name
        self.batches = list(batches)
        self._it = iter(self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {self.name: batch}

    def rewind(self) -> None:
        self._it = iter(self.batches)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter({self.name: b} for b in self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def quantize(src: Path, dst: Path, cand: Candidate, batches: Sequence[np.ndarray] = (),
             calibrate: str = "minmax", op_types: Sequence[str] | None = None) -> Path:
    """Write ``src`` quantized as ``cand`` to ``dst``. Static mode calibrates on ``batches``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    weight = getattr(QuantType, TYPES[cand.weight_type])
    ops = list(op_types) if op_types else None
    with quiet():
        if cand.mode == "dynamic":
            quantize_dynamic(str(src), str(dst), weight_type=weight, per_channel=cand.per_channel,
                             nodes_to_exclude=list(cand.exclude), op_types_to_quantize=ops)
        else:
            if not batches:
                raise ValueError("static quantization needs calibration batches")

            class Reader(BatchReader, CalibrationDataReader):
                pass

            quantize_static(
                str(src), str(dst), Reader(input_name(src), batches),
                quant_format=QuantFormat.QDQ if cand.fmt == "qdq" else QuantFormat.QOperator,
                activation_type=getattr(QuantType, TYPES[cand.activation_type]), weight_type=weight,
                per_channel=cand.per_channel, nodes_to_exclude=list(cand.exclude), op_types_to_quantize=ops,
                calibrate_method=getattr(CalibrationMethod, CALIBRATE[calibrate]),
            )
    return Path(dst)


def latency_ms(sess: Any, batch: np.ndarray, give_up_above_ms: float | None = None, budget_s: float = 1.5,
               max_runs: int = 15) -> float:
    """Median milliseconds per batch through an onnxruntime session after one warm-up run (as the report does).

    ``give_up_above_ms``: a candidate whose first timed run is already that slow is not timed further (its
    single figure is returned), so a 10x slower format costs one run, not fifteen.
    """
    name = sess.get_inputs()[0].name
    if "int64" in sess.get_inputs()[0].type:
        batch = batch.astype(np.int64)
    sess.run(None, {name: batch})
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (len(times) < max_runs and time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        sess.run(None, {name: batch})
        times.append((time.perf_counter() - t0) * 1000)
        if give_up_above_ms is not None and len(times) == 1 and times[0] > give_up_above_ms:
            break
    return statistics.median(times)


def file_size(path: Path | str) -> int:
    return os.path.getsize(path)
