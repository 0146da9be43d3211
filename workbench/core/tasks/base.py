"""The Task interface and its registry."""

from __future__ import annotations

import warnings
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from workbench.core.errors import InputError

if TYPE_CHECKING:
    import torch

    from workbench.core.data import DataBundle, DatasetInfo
    from workbench.core.variants.export import ExportResult

ENTRY_POINT_GROUP = "workbench.tasks"
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

    def extra_measurements(self, model: Any, data: DataBundle, device: Any) -> dict[str, float]:
        """Figures beyond the common ones (e.g. decode tokens/s), for a PyTorch variant; {} when none."""
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


_TASKS: dict[str, type[Task]] = {}
_plugins_loaded = False


def register_task(task_class: type[Task]) -> None:
    """Make a task available to ``task_of``; a later registration of the same name replaces the earlier one."""
    if not (isinstance(task_class, type) and issubclass(task_class, Task)) or not task_class.name:
        raise TypeError(f"register_task needs a Task subclass with a name, got {task_class!r}")
    _TASKS[task_class.name] = task_class


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            register_task(ep.load())
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the app
            warnings.warn(f"task plugin '{ep.name}' ({ep.value}) could not be loaded: {exc}", stacklevel=2)


def _builtins() -> None:
    if "classification" not in _TASKS:
        from workbench.core.tasks.classification import ClassificationTask

        _TASKS.setdefault("classification", ClassificationTask)
    if "causal_lm" not in _TASKS:
        from workbench.core.tasks.causal_lm import CausalLMTask

        _TASKS.setdefault("causal_lm", CausalLMTask)


def get_task(name: str) -> Task:
    """The task registered as ``name`` (a fresh instance; tasks keep no state)."""
    _builtins()
    if name not in _TASKS:
        _load_plugins()
    if name not in _TASKS:
        raise InputError(f"unknown task {name!r} (known: {', '.join(sorted(_TASKS))})")
    return _TASKS[name]()


def task_of(info: DatasetInfo) -> Task:
    """The task of a dataset: ``info.task``, classification when the dataset does not say."""
    return get_task(getattr(info, "task", None) or "classification")


def ensure_supported(job_name: str, info: DatasetInfo) -> None:
    """A built-in job that cannot take this dataset's kind of model says so in one line (InputError)."""
    reason = task_of(info).supports_job(job_name)
    if reason:
        raise InputError(reason)


def default_bench_batch(dataset_spec: str) -> int:
    """The latency batch of a dataset's task when the user gave none (64 classifier inputs; 1 LM sequence)."""
    from workbench.core.data import dataset_task

    return get_task(dataset_task(dataset_spec)).default_bench_batch


def list_tasks() -> list[str]:
    _builtins()
    _load_plugins()
    return sorted(_TASKS)
