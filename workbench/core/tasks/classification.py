"""The ``classification`` task: one score per class; top-1 accuracy (higher is better) and cross-entropy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench.core.errors import JobFailed
from workbench.core.tasks.base import Check, Task

if TYPE_CHECKING:
    from workbench.core.data import DataBundle


class ClassificationTask(Task):
    name = "classification"
    headline = "accuracy"
    higher_is_better = True
    default_bench_batch = 64
    metric_names = ("accuracy", "loss")

    def evaluate(self, model: Any, data: DataBundle, split: str = "test", device: Any = "cpu",
                 check: Check = None) -> dict[str, float]:
        """Top-1 accuracy and mean cross-entropy on a whole split, in eval mode."""
        device = torch.device(device)
        was_training = getattr(model, "training", False)
        if isinstance(model, nn.Module):
            model.eval()
        correct, total, loss_sum = 0, 0, 0.0
        try:
            with torch.inference_mode():
                for x, y in data.loader(split, shuffle=False):
                    if check is not None:
                        check()
                    x, y = x.to(device), y.to(device)
                    logits = model(x).float()
                    loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
                    correct += int((logits.argmax(1) == y).sum())
                    total += int(y.numel())
        finally:
            if was_training and isinstance(model, nn.Module):
                model.train()
        return {"accuracy": correct / max(total, 1), "loss": loss_sum / max(total, 1)}

    def check_output(self, model: Any, data: DataBundle, device: Any, job_name: str) -> None:
        """The model runs on a test batch and gives one score per class: (batch, classes)."""
        batch = data.example_batch(4).to(torch.device(device))
        out = run_on(model, batch, job_name)
        expected = (batch.shape[0], data.info.num_classes)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise JobFailed(f"job {job_name} returned a model whose output is {shape}, expected {expected}")

    def bench_input(self, data: DataBundle, batch_size: int) -> torch.Tensor:
        """``batch_size`` real test inputs (repeated when the test split is smaller)."""
        return repeat_to(data.example_batch(batch_size), batch_size)

    def training_loss(self, output: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        return F.cross_entropy(output, target, label_smoothing=label_smoothing)


def run_on(model: Any, batch: torch.Tensor, job_name: str) -> Any:
    """``model(batch)`` in eval and inference mode; a failure is a one-line JobFailed naming the job."""
    try:
        if isinstance(model, nn.Module):
            model.eval()
        with torch.inference_mode():
            return model(batch)
    except Exception as exc:  # noqa: BLE001 - a job's model may raise anything
        raise JobFailed(f"job {job_name} returned a model that fails on a test batch: "
                        f"{type(exc).__name__}: {str(exc)[:160]}") from None


def repeat_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """The rows of ``x`` repeated until there are ``size`` of them."""
    if x.shape[0] < size:
        reps = -(-size // max(x.shape[0], 1))
        x = x.repeat(reps, *([1] * (x.dim() - 1)))[:size]
    return x
