"""A variant's life: check a job's model, measure it (paired with its parent), export it, save it, load it.

``save_variant`` is the one way a model becomes a variant, whoever made it (a root opened from a file, a job's
result, the ranks of a data-parallel job): so every variant has the same verified ``model.onnx``, the same
figures, measured the same way, and is written atomically by the workspace.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from workbench.core.errors import JobFailed
from workbench.core.models.loading import load_torch_model
from workbench.core.models.onnx_model import OnnxModel, is_onnx
from workbench.core.models.recipe import recipe_of, set_recipe
from workbench.core.models.serialize import save_exported, save_torch_model
from workbench.core.variants import timing
from workbench.core.variants.timing import TimingBudget

if TYPE_CHECKING:
    from workbench.core.data import DataBundle
    from workbench.core.workspace.store import Variant, Workspace

Check = Callable[[], None] | None


def default_budget() -> TimingBudget:
    """The measuring budget; ``WORKBENCH_MEASURE_SECONDS`` shortens it (the test suite) or lengthens it."""
    seconds = os.environ.get("WORKBENCH_MEASURE_SECONDS")
    if not seconds:
        return timing.DEFAULT_BUDGET
    s = max(0.01, float(seconds))
    return TimingBudget(warmup_s=min(0.3, s / 4), seconds=s, min_samples=6 if s < 0.5 else 12)


@dataclass
class Measuring:
    """How variants are measured in one session: the latency batch size, the device, the time budget."""

    data: DataBundle
    device: str = "cpu"
    bench_batch: int = 64
    budget: TimingBudget = field(default_factory=default_budget)


def measure_model(model: Any, how: Measuring, *, split: str = "test", check: Check = None,
                  onnx_path: Path | None = None, baseline: tuple[str, Path] | None = None) -> dict[str, Any]:
    """The report's figures for a model; exports it to ONNX (verified) unless it is ONNX already.

    With a ``baseline`` (the parent's id and ONNX file) the onnxruntime latency is measured paired with it and
    the figures gain ``speedup``; every latency has its 95% interval (``latency_ms_ci``)."""
    from workbench.core.tasks import task_of
    from workbench.core.variants import measure as m

    device = how.device
    task = task_of(how.data.info)  # the task decides the quality metrics, the latency batch and the export
    batch = task.bench_input(how.data, how.bench_batch)
    metrics: dict[str, Any] = task.evaluate(model, how.data, split, device, check)
    params, nonzero = m.count_params(model)
    metrics.update(params=params, nonzero_params=nonzero)
    tmpdir = None
    if is_onnx(model):
        path = Path(model.path)
    else:
        if onnx_path is None:
            tmpdir = Path(tempfile.mkdtemp(prefix="measure-"))
            onnx_path = tmpdir / "model.onnx"
        task.export_onnx(cpu_copy(model), batch, onnx_path)
        path = onnx_path
    try:
        metrics["macs"] = m.count_macs(model if not is_onnx(model) else OnnxModel(path), batch)
        metrics["size_bytes"] = path.stat().st_size
        if check:
            check()
        run_new = m.onnx_runner(path, batch, device)
        if baseline is not None and Path(baseline[1]).exists():
            run_ref = m.onnx_runner(Path(baseline[1]), batch, device)
            latency, _, speedup = timing.compare(run_new, run_ref, baseline[0], how.budget, check)
            metrics["speedup"] = speedup.as_dict()
        else:
            latency = timing.measure(run_new, how.budget, check)
        metrics.update(latency.metrics("latency_ms"))
        if not is_onnx(model):
            metrics.update(m.latency_torch(model, batch, device, how.budget, check).metrics("latency_torch_ms"))
            metrics.update(task.extra_measurements(model, how.data, device, how.budget, check))
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()}


def save_variant(workspace: Workspace, model: Any, how: Measuring, *, parent: str | None, job: str,
                 params: dict[str, Any], source: str, marks: list[str] | None = None,
                 result: dict[str, Any] | None = None, check: Check = None) -> Variant:
    """Measure, export and write ``model`` as a new variant, atomically (all of it or nothing)."""
    metrics: dict[str, Any] = {}
    saved_result = dict(result or {})
    baseline = None
    if parent is not None:
        baseline = (parent, workspace.variant(parent).path / "model.onnx")

    def write(folder: Path) -> str:
        """Runs inside the workspace's temporary folder; the dicts above are filled before the commit."""
        if is_onnx(model):
            shutil.copyfile(model.path, folder / "model.onnx")
            metrics.update(measure_model(OnnxModel(folder / "model.onnx", how.device), how, check=check,
                                         baseline=baseline))
            saved_result["saved_as"] = "onnx"
            return "onnx"
        metrics.update(measure_model(model, how, check=check, onnx_path=folder / "model.onnx", baseline=baseline))
        if check:
            check()
        saved_result["saved_as"] = write_torch_model(model, folder, how.data.example_batch(8))
        return "torch"

    return workspace.add_variant(write, parent=parent, job=job, params=params, source=source,
                                 dataset=how.data.info.spec, metrics=metrics, marks=list(marks or []),
                                 result=saved_result)


def load_variant(workspace: Workspace, variant_id: str, device: str | torch.device = "cpu") -> Any:
    """A variant's model on ``device``."""
    from workbench.core.models.loading import load_variant_folder

    return load_variant_folder(workspace.variant(variant_id).path).to(torch.device(device))


def write_torch_model(model: nn.Module, folder: Path, example: torch.Tensor) -> str:
    """safetensors + recipe when the reload reproduces the outputs; a torch.export program otherwise."""
    cpu_model = cpu_copy(model)
    recipe = recipe_of(model)
    if recipe is not None:
        try:
            save_torch_model(cpu_model, folder, recipe)
            reloaded = load_torch_model(folder)
            with torch.inference_mode():
                if torch.equal(reloaded(example), cpu_model(example)):
                    return "safetensors"
        except OSError:
            raise  # the disk, not the model: falling back to torch.export would hide it
        except Exception:  # noqa: BLE001 - fall back to torch.export below
            pass
        for name in ("model.safetensors", "recipe.json"):
            (folder / name).unlink(missing_ok=True)
    try:
        return save_exported(cpu_model, folder, example)
    except Exception as exc:  # noqa: BLE001
        raise JobFailed(f"the model cannot be saved: no recipe rebuilds it and torch.export failed ({exc})") from None


def cpu_copy(model: nn.Module) -> nn.Module:
    """The model on the CPU in eval mode, without moving the caller's copy off its device."""
    params = list(model.parameters())
    if params and params[0].device.type != "cpu":
        clone = copy.deepcopy(model).cpu()
        if recipe_of(model) is not None:
            set_recipe(clone, recipe_of(model))
        return clone.eval()
    return model.eval()


def inherit_recipe(model: Any, parent: Any) -> Any:
    """A job that returns a new module of its input's class keeps the input's recipe (so it reloads)."""
    if not is_onnx(model) and recipe_of(model) is None and type(model) is type(parent) \
            and recipe_of(parent) is not None:
        set_recipe(model, recipe_of(parent))
    return model


def check_returned_model(returned: Any, data: DataBundle, device: torch.device | str, job_name: str) -> Any:
    """A job's result must be a model that runs on a test batch and gives the task's output (one score per class;
    next-token logits for a language model)."""
    from workbench.core.tasks import task_of

    if not (isinstance(returned, nn.Module) or is_onnx(returned)):
        raise JobFailed(f"job {job_name} returned a {type(returned).__name__}, not a model")
    task_of(data.info).check_output(returned, data, device, job_name)
    return returned
