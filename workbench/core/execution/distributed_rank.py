"""One rank of a data-parallel job: the module that ``torchrun`` starts ``nproc_per_node`` times per node.

``python -m workbench.core.execution.distributed_rank SPEC.json`` reads the job spec written by
``workbench.core.execution.distributed``, joins the process group (gloo on CPU, nccl on CUDA), loads the dataset and the
input variant (rank 0 reads the variant folder and broadcasts its files, so other nodes need no shared disk), and
runs the job with a context whose ``parallel`` attribute the shared train loop uses for DDP/FSDP, the
DistributedSampler and metric reductions. Only global rank 0 emits events (JSON lines) and writes the trained
model; a rank that raises writes its error to ``OUT/errors/rank-N.json`` and exits 1, which makes torchrun stop
the others.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from workbench.core.errors import InputError, WorkbenchError
from workbench.core.jobs.base import JobContext
from workbench.core.jobs.events import JobEvent

EVENTS_FILE = "events.jsonl"
RESULT_FILE = "result.json"
MODEL_DIR = "model"
ERRORS_DIR = "errors"


def _variant_files(folder: Path) -> list[str]:
    """The files a rank needs to load the variant: every file of its folder (a language model's config.json,
    generation config and tokenizer beside its weights), less the ONNX exports of a PyTorch variant."""
    if not folder.is_dir():
        return []
    meta = folder / "meta.json"
    onnx = meta.exists() and json.loads(meta.read_text()).get("format") == "onnx"
    return sorted(p.name for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and (onnx or p.suffix != ".onnx"))


class SameOrderSampler(DistributedSampler):
    """A DistributedSampler whose shuffled order is the one-process train loader's for the same seed and epoch.

    Rank r takes every world-size-th index of that order, so each step's global batch holds exactly the samples
    one process would have used: N processes reproduce a single-process run up to floating-point sums.
    """

    def __iter__(self) -> Iterator[int]:
        from torch.utils.data import DataLoader

        n = len(self.dataset)  # type: ignore[arg-type]
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        # the same DataLoader machinery as DataBundle.loader(shuffle=True), so the generator is consumed alike
        (order,) = DataLoader(range(n), batch_size=max(n, 1), shuffle=True, generator=generator)
        indices = order.tolist()
        if len(indices) < self.total_size:
            indices += indices[: self.total_size - len(indices)]
        return iter(indices[self.rank:self.total_size:self.num_replicas])


class DataParallel:
    """What the train loop needs to run data-parallel; set as ``ctx.parallel`` inside a rank."""

    def __init__(self, rank: int, world_size: int, local_rank: int, device: torch.device, strategy: str) -> None:
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.device, self.strategy = device, strategy
        self.is_main = rank == 0
        self._plain: nn.Module | None = None

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP (gradients all-reduced) or FSDP2 ``fully_shard`` (parameters sharded); call before the optimizer."""
        if self.strategy == "fsdp":
            from torch.distributed.fsdp import fully_shard

            self._plain = copy.deepcopy(model).cpu()  # the unsharded module the result is gathered into
            try:
                return fully_shard(model)
            except Exception as exc:  # noqa: BLE001 - an unsupported device/backend is the user's choice
                raise InputError(f"strategy=fsdp is not supported here ({type(exc).__name__}: {exc}); "
                                 "use strategy=ddp") from None
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The plain trained module (for FSDP, the full weights gathered from every rank; a collective)."""
        if self._plain is None:
            return model
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.is_main:
            self._plain.load_state_dict(state)
        return self._plain.to(self.device)

    def train_loader(self, data: Any, batch_size: int, seed: int, epoch: int) -> Any:
        """This rank's share of the shuffled train split; per-rank batch = global batch / world size."""
        if batch_size < self.world_size:
            raise InputError(f"batch_size={batch_size} is smaller than the {self.world_size} processes")
        if batch_size % self.world_size and epoch == 1 and self.is_main:
            print(f"warning: batch_size={batch_size} is not a multiple of {self.world_size} processes: the global "
                  f"batch is {batch_size // self.world_size * self.world_size}", file=sys.stderr)
        n = len(data.tensors("train")[1])
        sampler = SameOrderSampler(range(n), num_replicas=self.world_size, rank=self.rank, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return data.loader("train", batch_size=batch_size // self.world_size, sampler=sampler)

    def sum(self, *values: float) -> list[float]:
        """Element-wise sum of numbers over all ranks."""
        t = torch.tensor(values, dtype=torch.float64, device=self._reduce_device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(v) for v in t.cpu()]

    def average_gradients(self, params: list[nn.Parameter]) -> None:
        """Average the gradients of parameters DDP does not own (e.g. distillation adapters)."""
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad.div_(self.world_size)

    def broadcast(self, params: list[nn.Parameter]) -> None:
        """Start every rank from rank 0's values of parameters outside the wrapped model."""
        for p in params:
            dist.broadcast(p.data, src=0)

    def accuracy(self, model: Any, data: Any, split: str, batch_size: int = 256) -> dict[str, float]:
        """Accuracy and loss on a split, each rank scoring an equal share (padded, so FSDP's collectives match)."""
        x_all, y_all = data.tensors(split)
        n = len(y_all)
        share = math.ceil(n / self.world_size)
        index = torch.arange(self.rank * share, (self.rank + 1) * share)
        weight = (index < n).to(torch.float64)
        index = index.clamp(max=max(n - 1, 0))
        was_training = getattr(model, "training", False)
        model.eval()
        correct, loss_sum = 0.0, 0.0
        with torch.no_grad():
            for start in range(0, share, batch_size):
                idx, w = index[start:start + batch_size], weight[start:start + batch_size]
                x, y = x_all[idx].to(self.device), y_all[idx].to(self.device)
                logits = model(x).float()
                w = w.to(self.device)
                loss_sum += float((F.cross_entropy(logits, y, reduction="none").double() * w).sum())
                correct += float(((logits.argmax(1) == y).double() * w).sum())
        model.train(was_training)
        correct, loss_sum, total = self.sum(correct, loss_sum, float(weight.sum()))
        return {"accuracy": correct / max(total, 1.0), "loss": loss_sum / max(total, 1.0)}

    def _reduce_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


class RankContext(JobContext):
    """A job context inside one rank: sharded validation, rank-0 events, variants fetched through rank 0.

    ``evaluate`` gives accuracy and loss only: the full measurement (ONNX export, latency) happens once, in the
    launching process, on the model rank 0 returns.
    """

    parallel: DataParallel

    def accuracy(self, model: Any, split: str = "val") -> dict[str, float]:
        return self.parallel.accuracy(model, self.data, split)


class EventWriter:
    """Rank 0's events as JSON lines (one flushed line each), tailed by the launching process."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()

    def __call__(self, event: JobEvent) -> None:
        line = json.dumps({"kind": event.kind, "data": event.data, "time": event.time}, default=str)
        with self._lock:
            self._file.write(line + "\n")


def fetch_variant(variants_dir: str | None, variant_id: str | None, device: torch.device) -> tuple[Any, str]:
    """Collective: rank 0 reads a variant folder and broadcasts its files; every rank loads the model."""
    from workbench.core.models.loading import load_variant_folder

    payload: list[Any] = [None]
    if dist.get_rank() == 0:
        if variants_dir is None or variant_id is None:
            payload = [{"error": "no input variant given to rank 0"}]
        else:
            folder = Path(variants_dir) / variant_id
            files = {n: (folder / n).read_bytes() for n in _variant_files(folder)}
            payload = [{"id": variant_id, "files": files} if files else {"error": f"{folder}: no variant there"}]
    dist.broadcast_object_list(payload, src=0, device=device if dist.get_backend() == "nccl" else None)
    got = payload[0]
    if "error" in got:
        raise InputError(got["error"])
    with tempfile.TemporaryDirectory(prefix="wb-rank-") as tmp:
        for name, data in got["files"].items():
            (Path(tmp) / name).write_bytes(data)
        model = load_variant_folder(Path(tmp))
        if isinstance(model, nn.Module):
            model = model.to(device)
        return model, got["id"]


def run_rank(spec: dict[str, Any]) -> None:
    """Everything one rank does, from joining the group to (rank 0) writing the trained model."""
    from workbench.core.data import load_dataset
    from workbench.core.execution.session import seed_everything
    from workbench.core.jobs.registry import registry
    from workbench.core.models.onnx_model import is_onnx
    from workbench.core.variants.lifecycle import check_returned_model

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = spec["device"].startswith("cuda")
    if cuda:
        torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    dist.init_process_group("nccl" if cuda else "gloo")
    out = Path(spec["out"])
    if spec.get("plugin_paths"):
        from workbench.core.jobs.devplugins import load_plugin_folders

        load_plugin_folders([Path(p) for p in spec["plugin_paths"]])
    job_class = registry().load(spec["job"])
    job = job_class(**spec["params"])
    seed_everything(spec["seed"])
    data = load_dataset(spec["dataset"], seed=spec["seed"])
    model, variant_id = fetch_variant(spec.get("variants_dir"), spec.get("variant"), device)
    if job_class.needs_torch_model and is_onnx(model):
        raise InputError(f"job {job.name} needs a PyTorch variant; {variant_id} is ONNX-only")
    helper = DataParallel(rank, world, local_rank, device, spec.get("strategy", "ddp"))
    emit = EventWriter(out / EVENTS_FILE) if helper.is_main else (lambda event: None)
    workdir = Path(tempfile.mkdtemp(prefix=f"wb-rank{rank}-"))
    ctx = RankContext(
        run_id=0, job_name=job.name, model=model, data=data, device=device, workdir=workdir, emit=emit,
        cancel_event=threading.Event(), evaluate=lambda m, split="test": helper.accuracy(m, data, split),
        load_variant=lambda vid: fetch_variant(spec.get("variants_dir"), vid, device)[0],
        variant_id=variant_id, seed=spec["seed"], bench_batch=spec.get("bench_batch", 64), parallel=helper,
    )
    seed_everything(spec["seed"] + rank)  # independent augmentation and dropout draws on each rank
    try:
        returned = job.run(ctx)
        if helper.is_main:
            _write_result(returned, ctx, job.name, out, check_returned_model)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    dist.barrier()


def _write_result(returned: Any, ctx: RankContext, job_name: str, out: Path, check: Any) -> None:
    from workbench.core.models.serialize import recipe_of, save_exported, save_torch_model

    folder = out / MODEL_DIR
    folder.mkdir(parents=True, exist_ok=True)
    if returned is not None:
        model = check(returned, ctx.data, ctx.device, job_name)
        cpu = copy.deepcopy(model).cpu().eval()
        recipe = recipe_of(model)
        if recipe is not None or getattr(cpu, "is_causal_lm", False):  # a language model saves as an HF folder
            save_torch_model(cpu, folder, recipe)
        else:
            save_exported(cpu, folder, ctx.data.example_batch(8))
    payload = {"model": returned is not None, "result": ctx.result, "marks": ctx.marks}
    (out / RESULT_FILE).write_text(json.dumps(payload, default=str))


def _write_error(out: Path, exc: BaseException) -> None:
    rank = int(os.environ.get("RANK", "-1"))
    kind = "input" if isinstance(exc, InputError) else "failed" if isinstance(exc, WorkbenchError) else "error"
    message = str(exc) if kind != "error" else f"{type(exc).__name__}: {exc}"
    folder = out / ERRORS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    record = {"rank": rank, "kind": kind, "message": message, "time": time.time(),
              "traceback": traceback.format_exc()}
    (folder / f"rank-{rank}.json").write_text(json.dumps(record))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text())
    out = Path(spec["out"])
    try:
        run_rank(spec)
        return 0
    except BaseException as exc:  # noqa: BLE001 - recorded for the launcher, then this rank exits non-zero
        _write_error(out, exc)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
