"""ONNX variants as first-class models: checked on load, run through onnxruntime, callable like a module."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.core.errors import InputError

MAX_ONNX_BYTES = 4 << 30


def _cores() -> int:
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def ort_providers(device: torch.device | str) -> list[str]:
    """The execution providers for a device: CUDA when asked for and present, always CPU as the fallback."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def check_external_data(model_path: Path, proto: Any) -> None:
    """Refuse external data that points outside the model's folder (CVE-2022-25882, CVE-2024-27318) through
    ``..``, an absolute path or a symlink (resolved), or that declares more bytes than its file holds."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    base = model_path.parent.resolve()
    for tensor in _get_all_tensors(proto):
        if not uses_external_data(tensor):
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        target = (base / location).resolve()
        if not location or os.path.isabs(location) or base not in target.parents:
            raise InputError(f"{model_path}: external data {location!r} points outside the model's folder")
        if not target.is_file():
            raise InputError(f"{model_path}: external data file {location!r} is missing")
        try:
            offset, length = int(info.get("offset", 0)), int(info.get("length", 0))
        except ValueError:
            raise InputError(f"{model_path}: tensor {tensor.name!r} has a bad external data offset or length") from None
        available = target.stat().st_size - offset
        needed = max(length, _declared_bytes(tensor))
        if offset < 0 or length < 0 or needed > available:
            raise InputError(f"{model_path}: tensor {tensor.name!r} declares {needed} bytes but {location!r} holds "
                             f"{max(available, 0)} from offset {offset}")


def check_declared_sizes(model_path: Path, proto: Any, limit: int = MAX_ONNX_BYTES) -> None:
    """Refuse a graph whose statically known tensors (after shape inference) would exceed ``limit`` bytes, so an
    absurd declared shape is an error on load, not an allocation at run time."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception:  # noqa: BLE001 - the checker already passed; inference is a best effort
        return
    graph = inferred.graph
    for info in (*graph.input, *graph.value_info, *graph.output):
        kind = info.type.tensor_type
        if not kind.HasField("shape") or any(not d.HasField("dim_value") for d in kind.shape.dim):
            continue
        dims = [d.dim_value for d in kind.shape.dim]
        size = math.prod(dims) * _itemsize(kind.elem_type)
        if size > limit:
            raise InputError(f"{model_path}: tensor {info.name!r} declares shape {dims} ({size} bytes), refused")


def _itemsize(elem_type: int) -> int:
    from onnx.helper import tensor_dtype_to_np_dtype

    try:
        return max(1, tensor_dtype_to_np_dtype(elem_type).itemsize)
    except (KeyError, TypeError, ValueError):
        return 1


def _declared_bytes(tensor: Any) -> int:
    if any(d < 0 for d in tensor.dims):
        return 0  # the checker reports negative dimensions
    return math.prod(tensor.dims) * _itemsize(tensor.data_type)


class OnnxModel:
    """An ONNX file run by onnxruntime. ``model(x)`` takes and returns torch tensors, like a module."""

    def __init__(self, path: Path | str, device: torch.device | str = "cpu") -> None:
        self.path = Path(path)
        self.device = torch.device(device)
        self._session: Any = None
        self._providers: list[str] = []

    @classmethod
    def load_checked(cls, path: Path | str) -> OnnxModel:
        """Open a file from the user: size, structure (onnx.checker) and external data are checked first."""
        import onnx

        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        if path.stat().st_size > MAX_ONNX_BYTES:
            raise InputError(f"{path}: larger than 4 GiB, refused")
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - protobuf raises many kinds on garbage
            raise InputError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
        check_external_data(path, proto)
        try:
            onnx.checker.check_model(str(path))
        except Exception as exc:  # noqa: BLE001
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{path}: invalid ONNX model ({first[:200]})") from None
        check_declared_sizes(path, proto)
        model = cls(path)
        try:
            model.session()
        except Exception as exc:  # noqa: BLE001
            first = str(exc).strip().splitlines()[0][:200]
            raise InputError(f"{path}: onnxruntime cannot load it ({first})") from None
        return model

    def to(self, device: torch.device | str) -> OnnxModel:
        device = torch.device(device)
        if device != self.device:
            self.device = device
            self._session = None
        return self

    def eval(self) -> OnnxModel:
        return self

    def session(self) -> Any:
        import onnxruntime as ort

        if self._session is None:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            # fixed thread settings, so every variant is timed alike (and not with whatever the default picks)
            options.intra_op_num_threads = _cores()
            options.inter_op_num_threads = 1
            # no busy-waiting after a run: a session's spinning pool would steal the cores from the next session
            # timed beside it (a variant and its parent measured in turn), which once made one model look 1.3x
            # faster than an identical copy of itself
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
            self._providers = ort_providers(self.device)
            self._session = ort.InferenceSession(str(self.path), options, providers=self._providers)
        return self._session

    @property
    def input_name(self) -> str:
        return self.session().get_inputs()[0].name

    def run_numpy(self, x: np.ndarray) -> np.ndarray:
        return self.session().run(None, {self.input_name: x})[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().cpu().numpy()
        expected = self.session().get_inputs()[0].type
        if "int64" in expected:
            array = array.astype(np.int64)
        elif "float" in expected and array.dtype != np.float32:
            array = array.astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(self.run_numpy(array))).to(x.device)

    def parameters(self) -> list[Any]:
        return []

    def __repr__(self) -> str:
        return f"OnnxModel({self.path})"


def is_onnx(model: Any) -> bool:
    return isinstance(model, OnnxModel)
