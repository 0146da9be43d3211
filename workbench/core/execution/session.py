"""A session: one workspace, one dataset, one seed. It turns variants into job contexts and job results into
measured, exported, saved variants. Shared by the CLI and the app.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from workbench.core.errors import InputError, JobFailed
from workbench.core.jobs.base import JobContext
from workbench.core.models.onnx_model import OnnxModel, is_onnx
from workbench.core.models.serialize import recipe_of, save_exported, save_torch_model, set_recipe
from workbench.core.workspace.store import Variant, Workspace

if TYPE_CHECKING:
    from workbench.core.data import DataBundle
    from workbench.core.jobs.base import Job
    from workbench.core.jobs.runner import RunHandle


def resolve_device(spec: str) -> str:
    """``auto`` is CUDA when available; ``cuda`` on a machine without it is a clear error."""
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

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class Session:
    """Workspace + dataset (+ defaults) that jobs run against."""

    def __init__(self, workspace: Workspace, data: DataBundle, *, seed: int = 0, bench_batch: int = 64,
                 trust: bool = False) -> None:
        self.workspace = workspace
        self.data = data
        self.seed = seed
        self.bench_batch = bench_batch
        self.trust = trust
        self._lock = threading.Lock()

    resolve_device = staticmethod(resolve_device)

    def latest_variant_id(self) -> str:
        variants = self.workspace.variants()
        if not variants:
            raise InputError("the workspace has no variant yet: give a model (--model)")
        return variants[-1].id

    # variants <-> models ---------------------------------------------------------------------------------
    def load_variant(self, variant_id: str, device: str | torch.device = "cpu") -> Any:
        from workbench.core.models.loading import load_variant_folder

        variant = self.workspace.variant(variant_id)
        model = load_variant_folder(variant.path)
        return model.to(torch.device(device))

    def add_root(self, model: Any, source: str, device: str = "cpu") -> Variant:
        """Save a freshly loaded model as the root variant of a lineage (measured like any other)."""
        return self._save(model, parent=None, job="load", params={"model": source}, device=device,
                          marks=[], result={}, source=source)

    def make_context(self, handle: RunHandle, job_class: type, input_id: str, device: str, emit: Any,
                     seed: int | None) -> JobContext:
        seed = self.seed if seed is None else seed
        seed_everything(seed)
        model = self.load_variant(input_id, device)
        if job_class.needs_torch_model and is_onnx(model):
            raise InputError(f"job {job_class.name} needs a PyTorch variant; {input_id} is ONNX-only")
        workdir = Path(tempfile.mkdtemp(prefix=f"run{handle.run_id}-", dir=self._scratch()))
        dev = torch.device(device)

        def evaluate(m: Any, split: str = "test") -> dict[str, Any]:
            return self.measure(m, device, split=split, check=ctx.check_cancelled)

        ctx = JobContext(
            run_id=handle.run_id, job_name=job_class.name, model=model, data=self.data, device=dev,
            workdir=workdir, emit=emit, cancel_event=handle.cancel_event, evaluate=evaluate,
            load_variant=lambda vid: self.load_variant(vid, device), variant_id=input_id, seed=seed,
            bench_batch=self.bench_batch, workspace_dir=self.workspace.root,
        )
        return ctx

    def release_context(self, ctx: JobContext) -> None:
        shutil.rmtree(ctx.workdir, ignore_errors=True)

    def _scratch(self) -> Path:
        path = self.workspace.root / ".scratch"
        path.mkdir(exist_ok=True)
        return path

    # measuring and saving -----------------------------------------------------------------------------------
    def measure(self, model: Any, device: str, split: str = "test", check: Any = None,
                onnx_path: Path | None = None) -> dict[str, Any]:
        """The report's metrics for a model; exports it to ONNX (verified) unless it is ONNX already."""
        from workbench.core import measure as m
        from workbench.core.export import export_onnx

        batch = m.bench_batch(self.data, self.bench_batch)
        metrics: dict[str, Any] = m.evaluate_accuracy(model, self.data, split, device, check)
        params, nonzero = m.count_params(model)
        metrics.update(params=params, nonzero_params=nonzero)
        tmpdir = None
        if is_onnx(model):
            path = model.path
        else:
            if onnx_path is None:
                tmpdir = Path(tempfile.mkdtemp(dir=self._scratch()))
                onnx_path = tmpdir / "model.onnx"
            cpu_model = _cpu_copy(model)
            export_onnx(cpu_model, batch[:2], onnx_path, verify_batches=[batch])
            path = onnx_path
        try:
            metrics["macs"] = m.count_macs(model if not is_onnx(model) else OnnxModel(path), batch)
            metrics["size_bytes"] = Path(path).stat().st_size
            if check:
                check()
            metrics["latency_ms"] = m.latency_onnx_ms(Path(path), batch, device)
            if not is_onnx(model):
                metrics["latency_torch_ms"] = m.latency_torch_ms(model, batch, device)
        finally:
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()}

    def save_result(self, returned: Any, ctx: JobContext, job: Job, input_id: str, device: str) -> Variant:
        model = check_returned_model(returned, ctx, job.name)
        if not is_onnx(model) and recipe_of(model) is None:
            parent = ctx.model
            if type(model) is type(parent) and recipe_of(parent) is not None:
                set_recipe(model, recipe_of(parent))
        ctx.check_cancelled()
        return self._save(model, parent=input_id, job=job.name, params=job.values, device=device,
                          marks=ctx.marks, result=ctx.result, check=ctx.check_cancelled,
                          source=self.workspace.variant(input_id).source)

    def _save(self, model: Any, *, parent: str | None, job: str, params: dict[str, Any], device: str,
              marks: list[str], result: dict[str, Any], source: str, check: Any = None) -> Variant:
        metrics: dict[str, Any] = {}
        saved_result = {k: v for k, v in result.items() if k != "metrics"}

        def write(folder: Path) -> str:
            """Runs inside the workspace's temporary folder; the dicts above are filled before the commit."""
            if is_onnx(model):
                shutil.copyfile(model.path, folder / "model.onnx")
                metrics.update(self.measure(OnnxModel(folder / "model.onnx", device), device, check=check))
                saved_result["saved_as"] = "onnx"
                return "onnx"
            metrics.update(self.measure(model, device, check=check, onnx_path=folder / "model.onnx"))
            if check:
                check()
            saved_result["saved_as"] = self._write_torch(model, folder)
            return "torch"

        return self.workspace.add_variant(
            write, parent=parent, job=job, params=params, source=source, dataset=self.data.info.spec,
            metrics=metrics, marks=marks, result=saved_result,
        )

    def _write_torch(self, model: nn.Module, folder: Path) -> str:
        """safetensors + recipe when the reload reproduces the outputs; a torch.export program otherwise."""
        from workbench.core.models.serialize import load_torch_model

        batch = self.data.example_batch(8)
        cpu_model = _cpu_copy(model)
        recipe = recipe_of(model)
        if recipe is not None:
            try:
                save_torch_model(cpu_model, folder, recipe)
                reloaded = load_torch_model(folder)
                with torch.inference_mode():
                    if torch.equal(reloaded(batch), cpu_model(batch)):
                        return "safetensors"
            except OSError:
                raise  # the disk, not the model: falling back to torch.export would hide it
            except Exception:  # noqa: BLE001 - fall back to torch.export below
                pass
            for name in ("model.safetensors", "recipe.json"):
                (folder / name).unlink(missing_ok=True)
        try:
            return save_exported(cpu_model, folder, batch)
        except Exception as exc:  # noqa: BLE001
            raise JobFailed(f"the model cannot be saved: no recipe rebuilds it and torch.export failed ({exc})") from None


def _cpu_copy(model: nn.Module) -> nn.Module:
    """The model on the CPU in eval mode, without moving the caller's copy off its device."""
    import copy

    params = list(model.parameters())
    if params and params[0].device.type != "cpu":
        clone = copy.deepcopy(model).cpu()
        if recipe_of(model) is not None:
            set_recipe(clone, recipe_of(model))
        return clone.eval()
    return model.eval()


def check_returned_model(returned: Any, ctx: JobContext, job_name: str) -> Any:
    """A job's result must be a model that runs on a test batch and gives one score per class."""
    if not (isinstance(returned, nn.Module) or is_onnx(returned)):
        raise JobFailed(f"job {job_name} returned a {type(returned).__name__}, not a model")
    batch = ctx.data.example_batch(4).to(ctx.device)
    try:
        if isinstance(returned, nn.Module):
            returned.eval()
        with torch.inference_mode():
            out = returned(batch)
    except Exception as exc:  # noqa: BLE001
        raise JobFailed(f"job {job_name} returned a model that fails on a test batch: "
                        f"{type(exc).__name__}: {str(exc)[:160]}") from None
    expected = (batch.shape[0], ctx.data.info.num_classes)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise JobFailed(f"job {job_name} returned a model whose output is {shape}, expected {expected}")
    return returned
