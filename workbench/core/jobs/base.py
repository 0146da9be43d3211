"""The plugin job API: ``Job`` (what to do) and ``JobContext`` (what a job may use while it runs)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
    #: the job can train data-parallel: with its ``processes`` parameter above 1 the runner starts that many
    #: torch.distributed ranks, and ``ctx.parallel`` tells each rank who it is
    data_parallel: ClassVar[bool] = False
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
    """What a running job sees. Created by the runner where the job runs; methods are thread-safe.

    A job reports through four channels, each with one purpose:

    - ``log(step=..., **series)``: time series (loss per step), plotted live and kept in the metric history;
    - ``report_metrics(figures, store=...)``: final figures of this step (the report's ``metrics``), and with
      ``store=True`` also stored on the variant the job ends with (the variants table, the Pareto plot);
    - ``mark(text)``: a short label on the variant ("slower than fp32");
    - ``result``: JSON-ready details for people (tables, texts), shown in the app's Details tab and the report.

    ``parallel`` is ``None`` except inside a data-parallel rank, where it is the rank's ``DataParallel``.
    """

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
        evaluate: Callable[[Any, str], dict[str, Any]],
        load_variant: Callable[[str], Any],
        variant_id: str | None,
        accuracy: Callable[[Any, str], dict[str, float]] | None = None,
        seed: int = 0,
        bench_batch: int = 64,
        workspace_dir: Path | None = None,
        parallel: Any = None,
        services: Any = None,
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
        self.parallel = parallel
        self._services = services  # the execution room's JobServices: other jobs, saving, paired measuring
        self.result: dict[str, Any] = {}
        self.marks: list[str] = []
        self.reported: dict[str, Any] = {}   # report_metrics(): the step's figures
        self.stored: dict[str, Any] = {}     # report_metrics(store=True): also written onto the variant
        self.history: list[tuple[int, dict[str, float]]] = []
        self._emit = emit
        self._cancel = cancel_event
        self._evaluate = evaluate
        self._accuracy = accuracy
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

    def report_metrics(self, figures: Mapping[str, Any], *, store: bool = False) -> None:
        """The figures of this step (the report's ``metrics``; a job that makes a variant gets its measured
        figures anyway). ``store=True`` also writes them onto the variant this job ends with (the input one for a
        job that only measures), beside the standard ones: a measuring plugin (energy, a task metric) does so,
        and the built-in ``evaluate`` with ``record=true``. Values: numbers, or JSON-ready lists and dicts."""
        clean = {k: (v.item() if hasattr(v, "item") else v) for k, v in figures.items()}  # numpy/torch scalars
        self.reported.update(clean)
        if store:
            self.stored.update(clean)

    def record_metrics(self, **metrics: float) -> None:
        """``report_metrics(metrics, store=True)``, kept for plugins written against the first API."""
        self.report_metrics(metrics, store=True)

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
        if self._accuracy is None:
            raise RuntimeError("this context was built without an accuracy function")
        return self._accuracy(model, split)

    def variant(self, variant_id: str) -> Any:
        """Load another variant of the workspace (e.g. a teacher) on this job's device."""
        return self._load_variant(variant_id)

    # composing jobs (a search, a recipe): other jobs, extra variants, paired measurements -------------------
    def _need_services(self) -> Any:
        if self._services is None:
            raise RuntimeError("this context cannot run other jobs or save variants (inside a rank?)")
        return self._services

    def run_job(self, name: str, model: Any, **params: Any) -> SubRun:
        """Run another installed job on ``model`` (not saved): returns its model (or None) and what it
        reported. It shares this job's cancel; its log lines appear in this job's log."""
        return self._need_services().run_job(self, name, model, params)

    def save_variant(self, model: Any, *, parent: str | None = None, job: str | None = None,
                     params: Mapping[str, Any] | None = None, marks: list[str] | None = None,
                     result: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Save ``model`` as an extra variant now (a search's Pareto set), measured paired with ``parent``
        (default: this job's input); returns ``{"id": ..., "metrics": ...}``. The job's own result, if it
        returns a model, is saved after it as usual."""
        return self._need_services().save_variant(self, model, parent or self.variant_id, job or self.job_name,
                                                  dict(params or {}), list(marks or []), dict(result or {}))

    def measure(self, model: Any, vs: str | None = None) -> dict[str, Any]:
        """The standard figures of ``model`` (test split); with ``vs`` (a variant id) its onnxruntime latency is
        measured paired with that variant's and the figures include ``speedup``."""
        return self._need_services().measure(self, model, vs)


@dataclass
class SubRun:
    """What ``ctx.run_job`` gives back: the job's model (None for a job that only measures) and its reports."""

    job: str
    model: Any
    reported: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    marks: list[str] = field(default_factory=list)
