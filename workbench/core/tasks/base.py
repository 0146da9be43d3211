"""The Task interface and its registry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from workbench.core.data import DataBundle
    from workbench.core.variants.export import ExportResult

Check = Any  # a no-argument callable that raises Cancelled, or None


class Task:
    """One kind of model. Subclass it, set the class attributes, implement the methods; ``register_task`` it.

    Metrics are plain floats keyed by name; ``headline`` names the one the variants table, the Compare tab and
    the Pareto plot rank by (``higher_is_better`` says which way)."""

    name: ClassVar[str] = ""
    headline: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = True
    default_bench_batch: ClassVar[int] = 64
    metric_names: ClassVar[tuple[str, ...]] = ()  # what evaluate() returns, headline first

    def evaluate(self, model: Any, data: DataBundle, split: str = "test", device: Any = "cpu",
                 check: Check = None) -> dict[str, float]:
        """The task's quality metrics on a whole split, in eval mode (the model's mode is restored)."""
        raise NotImplementedError

    def check_output(self, model: Any, data: DataBundle, device: Any, job_name: str) -> None:
        """Run ``model`` on a few test inputs; raise JobFailed with one clear line if it fails or its output has
        the wrong shape for this task."""
        raise NotImplementedError

    def bench_input(self, data: DataBundle, batch_size: int) -> torch.Tensor:
        """One latency batch of ``batch_size`` real test inputs."""
        raise NotImplementedError

    def training_loss(self, output: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """The loss a training job minimises, from the model's output and the loader's targets."""
        raise NotImplementedError

    def extra_measurements(self, model: Any, data: DataBundle, device: Any, budget: Any = None,
                           check: Check = None) -> dict[str, Any]:
        """Figures beyond the common ones (e.g. decode tokens/s and its interval), for a PyTorch variant, timed
        within the measuring ``budget`` (a ``TimingBudget``; None: the default); {} when none."""
        return {}

    def export_onnx(self, model: Any, example: torch.Tensor, path: Path, *,
                    verify_batches: list[torch.Tensor] | None = None, **options: Any) -> ExportResult:
        """Export to ONNX, verified against torch; ``example`` is the latency batch (the shape to export at)."""
        from workbench.core.variants.export import export_onnx

        return export_onnx(model, example[:2], path, verify_batches=[example, *(verify_batches or [])], **options)

    def throughput_unit(self, data: DataBundle) -> str:
        """What training throughput counts: ``samples`` (classification) or ``tokens`` (language models)."""
        return "samples"

    def items_in(self, target: torch.Tensor) -> int:
        """How many of ``throughput_unit`` a batch of targets holds."""
        return int(target.shape[0])

    def supports_job(self, job_name: str) -> str | None:
        """None when a built-in job works on this task's models, else the one-line reason it does not."""
        return None
