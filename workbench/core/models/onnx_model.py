"""ONNX variants as first-class models: checked on load, run through onnxruntime, callable like a module."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.core.errors import InputError

MAX_ONNX_BYTES = 4 << 30


def ort_providers(device: torch.device | str) -> list[str]:
    """The execution providers for a device: CUDA when asked for and present, always CPU as the fallback."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def check_external_data(model_path: Path, proto: Any) -> None:
    """Refuse external data that points outside the model's folder (CVE-2022-25882, CVE-2024-27318)."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    base = model_path.parent.resolve()
    for tensor in _get_all_tensors(proto):
        if not uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (base / location).resolve()
        if os.path.isabs(location) or base not in target.parents:
            raise InputError(f"{model_path}: external data {location!r} points outside the model's folder")


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
