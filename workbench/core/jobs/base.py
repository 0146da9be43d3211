"""The plugin job API: ``Job`` (what to do) and ``JobContext`` (what a job may use while it runs)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from workbench.core.errors import Cancelled
from workbench.core.jobs.events import LOG, METRIC, PROGRESS, JobEvent
from workbench.core.jobs.params import Param, collect_params, parse_params

if TYPE_CHECKING:
    import torch
    from torch import nn

    from workbench.core.data import DataBundle


class Job:
    """Subclass to add a job. Declare parameters as ``name: type = Param(default, min=..., help=...)``.

    ``run(ctx)`` returns a model (it becomes a new variant) or ``None`` (the job only measures).
    ``produces_variant = False`` says up front that a job only measures (the app labels it so).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    produces_variant: ClassVar[bool] = True
    needs_torch_model: ClassVar[bool] = False
    _declared: ClassVar[dict[str, Param]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._declared = collect_params(cls)
        if not cls.title:
            cls.title = cls.name.replace("_", " ").capitalize()

    def __init__(self, **params: Any) -> None:
        self._params = parse_params(self._declared, params, self.name)

    @classmethod
    def params(cls) -> dict[str, Param]:
        """The declared parameters, in order."""
        return dict(cls._declared)

    @property
    def values(self) -> dict[str, Any]:
        """The validated parameter values of this instance."""
        return dict(self._params)

    def run(self, ctx: JobContext) -> nn.Module | None:  # pragma: no cover - abstract
        raise NotImplementedError(f"job {self.name} does not implement run()")


class JobContext:
    """What a running job sees. Created by the runner on the worker thread; methods are thread-safe."""

    def __init__(
        self,
        *,
        run_id: int,
        job_name: str,
        model: Any,
        data: DataBundle,
        device: torch.device,
        workdir: Path,
        emit: Any,
        cancel_event: threading.Event,
        evaluate: Any,
        load_variant: Any,
        variant_id: str | None,
        seed: int = 0,
        bench_batch: int = 64,
        workspace_dir: Path | None = None,
    ) -> None:
        self.run_id = run_id
        self.job_name = job_name
        self.model = model
        self.data = data
        self.device = device
        self.workdir = workdir
        self.variant_id = variant_id
        self.seed = seed
        self.bench_batch = bench_batch
        self.workspace_dir = workspace_dir
        self.result: dict[str, Any] = {}
        self.marks: list[str] = []
        self.recorded: dict[str, float] = {}
        self.history: list[tuple[int, dict[str, float]]] = []
        self._emit = emit
        self._cancel = cancel_event
        self._evaluate = evaluate
        self._load_variant = load_variant
        self._step = 0
        self._last_progress = 0.0

    def log(self, step: int | None = None, **metrics: float) -> None:
        """Record metrics (plotted live, stored in the metric history). ``step`` defaults to a counter."""
        if step is None:
            self._step += 1
            step = self._step
        else:
            self._step = max(self._step, step)
        clean = {k: float(v) for k, v in metrics.items()}
        self.history.append((step, clean))
        self._emit(JobEvent(METRIC, self.run_id, self.job_name, {"step": step, "metrics": clean}))

    def progress(self, done: int, total: int, text: str = "") -> None:
        """Report progress; cheap to call every step (events are sent at most 20 times a second)."""
        now = time.monotonic()
        if done < total and now - self._last_progress < 0.05:
            return
        self._last_progress = now
        self._emit(JobEvent(PROGRESS, self.run_id, self.job_name, {"done": done, "total": total, "text": text}))

    def info(self, message: str) -> None:
        self._emit(JobEvent(LOG, self.run_id, self.job_name, {"level": "info", "message": message}))

    def warn(self, message: str) -> None:
        self._emit(JobEvent(LOG, self.run_id, self.job_name, {"level": "warning", "message": message}))

    def record_metrics(self, **metrics: float) -> None:
        """Store figures on the variant this job ends with (the input one for a job that only measures): the
        variants table, the Pareto plot and the report show them with the standard ones. A measuring plugin
        (energy, a task metric) uses it; the built-in ``evaluate`` does with ``record=true``."""
        self.recorded.update({k: float(v) for k, v in metrics.items()})

    def mark(self, text: str) -> None:
        """Attach a label to the variant this job produces, e.g. "slower than fp32"."""
        if text not in self.marks:
            self.marks.append(text)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        """Raise ``Cancelled`` once the user asked to stop; call it between steps."""
        if self._cancel.is_set():
            raise Cancelled("cancelled by the user")

    def evaluate(self, model: Any, split: str = "test") -> dict[str, float]:
        """Accuracy and loss on a split (test by default) and the model's size figures."""
        return self._evaluate(model, split)

    def accuracy(self, model: Any, split: str = "val") -> dict[str, float]:
        """Just accuracy and loss on a split (validation by default): cheap enough for every epoch."""
        from workbench.core.measure import evaluate_accuracy

        return evaluate_accuracy(model, self.data, split, self.device, self.check_cancelled)

    def variant(self, variant_id: str) -> Any:
        """Load another variant of the workspace (e.g. a teacher) on this job's device."""
        return self._load_variant(variant_id)
