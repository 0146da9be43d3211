"""A session: one workspace, one dataset, one seed, one device. Batch mode and the app open it the same way
(``open_session``), and a worker process reopens the same one from its ``SessionSpec``.

The session turns variants into job contexts and job results into variants (through
``workbench.core.variants.lifecycle``); opening it loads nothing heavy: the dataset is read the first time a
job (in whichever process runs it) needs it.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.core.errors import InputError
from workbench.core.jobs.base import JobContext
from workbench.core.workspace.store import Variant, Workspace

if TYPE_CHECKING:
    import torch

    from workbench.core.data import DataBundle
    from workbench.core.variants.lifecycle import Measuring


def resolve_device(spec: str) -> str:
    """``auto`` is CUDA when available; ``cuda`` on a machine without it is a clear error."""
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {spec!r}: CUDA is not available on this machine")
        index = spec.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise InputError(f"device {spec!r}: no such CUDA device")
        return spec
    raise InputError(f"device {spec!r}: expected auto, cpu, cuda or cuda:N")


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass(frozen=True)
class SessionSpec:
    """Everything needed to (re)open a session, in this process or a worker: plain, picklable values."""

    workspace: str
    dataset: str
    seed: int = 0
    bench_batch: int = 64
    trust: bool = False
    device: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Session:
    """Workspace + dataset (+ defaults) that jobs run against."""

    def __init__(self, workspace: Workspace, data: DataBundle | None = None, *, seed: int = 0,
                 bench_batch: int = 64, trust: bool = False, dataset: str | None = None,
                 device: str = "cpu") -> None:
        if data is None and dataset is None:
            raise ValueError("a Session needs a dataset: a DataBundle or its spec")
        self.workspace = workspace
        self._data = data
        self.dataset_spec = dataset or data.info.spec  # type: ignore[union-attr]
        self.seed = seed
        self.bench_batch = bench_batch
        self.trust = trust
        self.device = device
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, spec: SessionSpec) -> Session:
        return cls(Workspace(spec.workspace), dataset=spec.dataset, seed=spec.seed, bench_batch=spec.bench_batch,
                   trust=spec.trust, device=resolve_device(spec.device))

    @property
    def spec(self) -> SessionSpec:
        return SessionSpec(str(self.workspace.root), self.dataset_spec, self.seed, self.bench_batch, self.trust,
                           self.device)

    @property
    def data(self) -> DataBundle:
        """The dataset, loaded on first use (a worker process loads its own)."""
        with self._lock:
            if self._data is None:
                from workbench.core.data import load_dataset

                self._data = load_dataset(self.dataset_spec, seed=self.seed)
            return self._data

    resolve_device = staticmethod(resolve_device)

    def measuring(self, device: str) -> Measuring:
        from workbench.core.variants.lifecycle import Measuring

        return Measuring(self.data, device, self.bench_batch)

    def latest_variant_id(self) -> str:
        variants = self.workspace.variants()
        if not variants:
            raise InputError("the workspace has no variant yet: give a model (--model)")
        return variants[-1].id

    # variants <-> models ---------------------------------------------------------------------------------
    def load_variant(self, variant_id: str, device: str | torch.device = "cpu") -> Any:
        from workbench.core.variants.lifecycle import load_variant

        return load_variant(self.workspace, variant_id, device)

    def add_root(self, model: Any, source: str, device: str = "cpu") -> Variant:
        """Save a freshly loaded model as the root variant of a lineage (measured like any other)."""
        from workbench.core.variants.lifecycle import save_variant

        return save_variant(self.workspace, model, self.measuring(device), parent=None, job="load",
                            params={"model": source}, source=source)

    def open_root(self, model_spec: str, weights: str | None, device: str) -> Variant:
        """Load a model spec (seeded: a zoo model's initial weights depend on the seed) and save it as a root."""
        from workbench.core.models import load_model

        seed_everything(self.seed)
        model = load_model(model_spec, self.data.info, weights=weights, trust=self.trust)
        return self.add_root(model, model_spec, device)

    def make_context(self, run_id: int, cancel_event: threading.Event, job_class: type, input_id: str,
                     device: str, emit: Any, seed: int | None, plugins: Any = None) -> JobContext:
        import torch

        from workbench.core.models.onnx_model import is_onnx
        from workbench.core.variants import measure as m
        from workbench.core.variants.lifecycle import measure_model

        seed = self.seed if seed is None else seed
        seed_everything(seed)
        model = self.load_variant(input_id, device)
        if job_class.needs_torch_model and is_onnx(model):
            raise InputError(f"job {job_class.name} needs a PyTorch variant; {input_id} is ONNX-only")
        workdir = Path(tempfile.mkdtemp(prefix=f"run{run_id}-{os.getpid()}-", dir=self._scratch()))
        how = self.measuring(device)
        data = self.data
        ctx: JobContext

        def evaluate(m_: Any, split: str = "test") -> dict[str, Any]:
            return measure_model(m_, how, split=split, check=ctx.check_cancelled)

        def accuracy(m_: Any, split: str = "val") -> dict[str, float]:
            return m.evaluate_accuracy(m_, data, split, device, ctx.check_cancelled)

        ctx = JobContext(
            run_id=run_id, job_name=job_class.name, model=model, data=data, device=torch.device(device),
            workdir=workdir, emit=emit, cancel_event=cancel_event, evaluate=evaluate, accuracy=accuracy,
            load_variant=lambda vid: self.load_variant(vid, device), variant_id=input_id, seed=seed,
            bench_batch=self.bench_batch, workspace_dir=self.workspace.root,
            services=JobServices(self, device, plugins),
        )
        return ctx

    def sub_context(self, parent: JobContext, job_class: type, model: Any) -> JobContext:
        """A context for a job run by another job: the same data, device, cancel and workspace; its own
        scratch folder (inside the parent's); only log lines reach the parent's observers."""
        from workbench.core.jobs.events import LOG

        workdir = Path(tempfile.mkdtemp(prefix=f"{job_class.name}-", dir=parent.workdir))
        return JobContext(
            run_id=parent.run_id, job_name=job_class.name, model=model, data=parent.data, device=parent.device,
            workdir=workdir, emit=lambda e: parent._emit(e) if e.kind == LOG else None,
            cancel_event=parent._cancel, evaluate=parent._evaluate, accuracy=parent._accuracy,
            load_variant=parent._load_variant, variant_id=parent.variant_id, seed=parent.seed,
            bench_batch=parent.bench_batch, workspace_dir=parent.workspace_dir, services=parent._services,
        )

    def release_context(self, ctx: JobContext) -> None:
        shutil.rmtree(ctx.workdir, ignore_errors=True)

    def _scratch(self) -> Path:
        path = self.workspace.root / ".scratch"
        path.mkdir(exist_ok=True)
        return path

    def save_result(self, returned: Any, ctx: JobContext, job: Any, input_id: str, device: str) -> Variant:
        """A job's returned model, checked, as a new variant measured paired with its input."""
        from workbench.core.variants.lifecycle import check_returned_model, inherit_recipe, save_variant

        model = inherit_recipe(check_returned_model(returned, ctx.data, ctx.device, job.name), ctx.model)
        ctx.check_cancelled()
        return save_variant(self.workspace, model, self.measuring(device), parent=input_id, job=job.name,
                            params=job.values, source=self.workspace.variant(input_id).source, marks=ctx.marks,
                            result=ctx.result, check=ctx.check_cancelled)


def open_session(spec: SessionSpec) -> Session:
    """Open (or create) the workspace of ``spec``; the dataset is remembered in it for the next opening."""
    workspace = Workspace(spec.workspace)
    workspace.set_info("dataset", spec.dataset)
    return Session(workspace, dataset=spec.dataset, seed=spec.seed, bench_batch=spec.bench_batch, trust=spec.trust,
                   device=resolve_device(spec.device))


def variant_in_workspace(workspace: Workspace, spec: str) -> str | None:
    """The id of a variant folder given as a model spec when it belongs to ``workspace`` (reopened, not copied)."""
    path = Path(spec)
    if path.is_dir() and path.resolve().parent == workspace.variants_dir:
        try:
            return workspace.variant(path.name).id
        except InputError:
            return None
    return None


class JobServices:
    """What the execution room lends a running job that composes others (``ctx.run_job``, ``ctx.save_variant``,
    ``ctx.measure``): all of it in the job's own process, against the session's workspace."""

    def __init__(self, session: Session, device: str, plugins: Any = None) -> None:
        self.session, self.device, self.plugins = session, device, plugins

    def run_job(self, ctx: JobContext, name: str, model: Any, params: dict[str, Any]) -> Any:
        from workbench.core.jobs.base import SubRun
        from workbench.core.jobs.registry import registry

        job_class = (self.plugins or registry()).load(name)
        job = job_class(**params)
        sub = self.session.sub_context(ctx, job_class, model)
        try:
            returned = _kept(job.run(sub), sub.workdir, ctx.workdir)
        finally:
            shutil.rmtree(sub.workdir, ignore_errors=True)
        ctx.check_cancelled()
        return SubRun(name, returned, dict(sub.reported), dict(sub.result), list(sub.marks))

    def save_variant(self, ctx: JobContext, model: Any, parent: str | None, job: str, params: dict[str, Any],
                     marks: list[str], result: dict[str, Any]) -> dict[str, Any]:
        from workbench.core.variants.lifecycle import check_returned_model, inherit_recipe, save_variant

        model = inherit_recipe(check_returned_model(model, ctx.data, ctx.device, job), ctx.model)
        source = self.session.workspace.variant(parent).source if parent else job
        variant = save_variant(self.session.workspace, model, self.session.measuring(self.device), parent=parent,
                               job=job, params=params, source=source, marks=marks, result=result,
                               check=ctx.check_cancelled)
        return {"id": variant.id, "metrics": dict(variant.metrics)}

    def measure(self, ctx: JobContext, model: Any, vs: str | None) -> dict[str, Any]:
        from workbench.core.variants.lifecycle import measure_model

        baseline = (vs, self.session.workspace.variant(vs).path / "model.onnx") if vs else None
        return measure_model(model, self.session.measuring(self.device), check=ctx.check_cancelled,
                             baseline=baseline)


def _kept(returned: Any, sub_dir: Path, parent_dir: Path) -> Any:
    """An ONNX model a sub-job wrote into its own scratch folder (quantize does) is moved to the calling job's
    scratch folder, with the files beside it (external data), since the sub-job's folder is removed."""
    from workbench.core.models.onnx_model import OnnxModel, is_onnx

    if not is_onnx(returned):
        return returned
    path = Path(returned.path).resolve()
    if sub_dir.resolve() not in path.parents:
        return returned
    target = Path(tempfile.mkdtemp(prefix="onnx-", dir=parent_dir))
    for item in path.parent.iterdir():  # the model and its external data files (model.onnx.data, ...)
        if item.is_file() and item.name.startswith(path.name):
            shutil.copy2(item, target / item.name)
    return OnnxModel(target / path.name, getattr(returned, "device", "cpu"))
