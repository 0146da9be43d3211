"""ONNX export with numerical verification: an export that changes the model's outputs is an error."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from workbench.core.errors import JobFailed

DEFAULT_OPSET = 17


@dataclass(frozen=True)
class ExportResult:
    path: Path
    exporter: str  # "dynamo" or "torchscript"
    opset: int
    max_abs_diff: float
    top1_agreement: float
    size_bytes: int
    fallback_reason: str = ""  # why the preferred exporter was not used ("" when it was)


def _export_torchscript(model: nn.Module, example: torch.Tensor, path: str, opset: int) -> None:
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), \
            contextlib.redirect_stdout(io.StringIO()):  # a failing TorchScript export prints its whole graph
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), path, dynamo=False, opset_version=opset, input_names=["input"],
            output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )


def _export_dynamo(model: nn.Module, example: torch.Tensor, path: str, opset: int) -> None:
    import logging

    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, (example,), dynamo=True, opset_version=max(opset, 18), input_names=["input"],
                output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                verbose=False, external_data=False,
            )
            program.save(path, external_data=False)
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    opset: int = DEFAULT_OPSET,
    prefer: str = "torchscript",
    verify_batches: list[torch.Tensor] | None = None,
    atol: float = 1e-4,
    min_agreement: float = 0.999,
) -> ExportResult:
    """Export ``model`` (CPU copy, eval mode) to ``path`` atomically, then check it against torch.

    ``prefer`` picks the first exporter to try; the other is the fallback, used when the first fails to export
    or its file does not match torch. The check runs onnx.checker, then compares onnxruntime with torch on
    ``example`` (max abs difference <= ``atol``) and, over ``verify_batches``, the top-1 agreement
    (>= ``min_agreement``). When no exporter passes, ``JobFailed`` says what each one did.
    """
    import onnx

    model = model.eval().cpu()
    example = example.cpu()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    order = ["dynamo", "torchscript"] if prefer == "dynamo" else ["torchscript", "dynamo"]
    errors = []
    fd, tmp = tempfile.mkstemp(prefix=".export.", suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        used, diff, agreement = "", float("inf"), 0.0
        for exporter in order:
            try:
                (_export_dynamo if exporter == "dynamo" else _export_torchscript)(model, example, tmp, opset)
                onnx.checker.check_model(tmp)
            except Exception as exc:  # noqa: BLE001 - try the other exporter
                text = str(exc).strip()
                errors.append(f"{exporter}: {type(exc).__name__}: {text.splitlines()[0][:160] if text else ''}")
                continue
            diff, agreement = verify_onnx(model, tmp, [example] + list(verify_batches or []))
            if diff <= atol and agreement >= min_agreement:
                used = exporter
                break
            errors.append(f"{exporter}: ONNX export does not match torch: max abs difference {diff:.3g} "
                          f"(limit {atol:g}), top-1 agreement {agreement:.4f} (limit {min_agreement})")
        if not used:
            raise JobFailed("ONNX export failed (" + "; ".join(errors) + ")")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    opset_used = opset if used == "torchscript" else max(opset, 18)
    return ExportResult(path, used, opset_used, diff, agreement, path.stat().st_size, "; ".join(errors))


def verify_onnx(model: nn.Module, onnx_path: str | Path, batches: list[torch.Tensor]) -> tuple[float, float]:
    """Max abs difference on the first batch and top-1 agreement over all batches, onnxruntime vs torch."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    max_diff, agree, total = 0.0, 0, 0
    with torch.inference_mode():
        for i, batch in enumerate(batches):
            expected = model(batch.cpu()).float().numpy()
            got = session.run(None, {name: batch.cpu().numpy()})[0]
            if got.shape != expected.shape:
                return float("inf"), 0.0
            if i == 0:
                max_diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
            if expected.ndim == 2:
                agree += int((got.argmax(1) == expected.argmax(1)).sum())
                total += expected.shape[0]
    return max_diff, (agree / total if total else 1.0)


def onnx_node_count(path: Path | str) -> int:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)

