"""ONNX export of a language model's prefill: token ids (batch, seq_len) to logits (batch, seq_len, vocab), at a
fixed shape, checked against torch.

The shape is fixed on purpose: with dynamic batch and sequence axes the dynamo exporter's graph of a Llama failed
in onnxruntime at batch 4 (a broadcast in a Mul, 128 by 512; docs/LANGUAGE_MODELS.md), while a fixed shape runs,
and the latency figure is one prefill of exactly that shape anyway. TorchScript is not tried: it cannot export
transformers' mask code (``aten::diff``) and prints its whole graph when it fails.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from workbench.core.errors import JobFailed

OPSET = 18


def export_language_model(model: nn.Module, example: torch.Tensor, path: Path, *, opset: int = OPSET,
                          verify_batches: list[torch.Tensor] | None = None, atol: float = 1e-3,
                          min_agreement: float = 0.99, **_ignored: object) -> object:
    """Export ``model`` (CPU, eval) at ``example``'s shape to ``path`` atomically; verify it: max abs logit
    difference on ``example`` <= ``atol`` and next-token agreement >= ``min_agreement`` over every batch of the
    same shape. Returns an ``ExportResult``; JobFailed says why when the export does not hold."""
    import onnx

    from workbench.core.variants.export import ExportResult

    model = model.eval().cpu()
    example = example.cpu().to(torch.int64)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".export.", suffix=".onnx", dir=path.parent)
    os.close(fd)
    opset = max(int(opset), OPSET)
    try:
        try:
            _dynamo_fixed(model, example, tmp, opset)
            onnx.checker.check_model(tmp)
        except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds
            text = str(exc).strip()
            raise JobFailed(f"ONNX export of the language model failed ({type(exc).__name__}: "
                            f"{text.splitlines()[0][:200] if text else ''})") from None
        same_shape = [b for b in (verify_batches or []) if tuple(b.shape) == tuple(example.shape)]
        diff, agreement = verify_logits(model, tmp, [example, *same_shape])
        if not (diff <= atol and agreement >= min_agreement):
            raise JobFailed(f"ONNX export does not match torch: max abs logit difference {diff:.3g} (limit "
                            f"{atol:g}), next-token agreement {agreement:.4f} (limit {min_agreement})")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return ExportResult(path, "dynamo", opset, diff, agreement, path.stat().st_size)


def _dynamo_fixed(model: nn.Module, example: torch.Tensor, path: str, opset: int) -> None:
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset,
                                        input_names=["input_ids"], output_names=["logits"], verbose=False,
                                        external_data=False)
            program.save(path, external_data=False)
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)


def verify_logits(model: nn.Module, onnx_path: str | Path, batches: list[torch.Tensor]) -> tuple[float, float]:
    """Max abs logit difference on the first batch, and the share of positions whose most likely next token is the
    same in onnxruntime and torch over all batches."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    max_diff, agree, total = 0.0, 0, 0
    with torch.inference_mode():
        for i, batch in enumerate(batches):
            expected = model(batch.cpu()).float().numpy()
            got = session.run(None, {name: batch.cpu().numpy().astype(np.int64)})[0]
            if got.shape != expected.shape:
                return float("inf"), 0.0
            if i == 0:
                max_diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
            agree += int((got.argmax(-1) == expected.argmax(-1)).sum())
            total += int(np.prod(expected.shape[:-1]))
    return max_diff, (agree / total if total else 1.0)
