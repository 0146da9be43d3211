"""Data-parallel jobs through torch.distributed: the launching side.

A job that declares ``data_parallel = True`` and a ``processes`` parameter (``train``, ``distill``) runs with ``processes > 1`` as ranks
started by torch's elastic launcher (``python -m torch.distributed.run``) in a subprocess: each rank is
``workbench.core.execution.distributed_rank``. The launching process stays the one that owns the workspace: rank 0
streams its events back as JSON lines (replayed here through ``ctx.log``/``ctx.progress``, so live plots and
progress bars work unchanged) and writes the trained model to a scratch folder; this process then measures and
saves it through the normal runner path, so exactly one new variant appears and only on success. Cancelling the
job stops the launcher's whole process group (all ranks); a failing rank fails the job with that rank's error.

``DistributedExecutor`` is the executor the runner uses for such a request (``InlineExecutor`` hands it over).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.core.errors import Cancelled, InputError, JobFailed
from workbench.core.execution.distributed_rank import ERRORS_DIR, EVENTS_FILE, MODEL_DIR, RESULT_FILE
from workbench.core.execution.executors import InlineExecutor


@dataclass
class LaunchOptions:
    """torchrun's topology flags; ``nproc_per_node`` is the default for steps that do not set ``processes``."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    launch_single: bool = False  # launch even one process (checks the nccl path on a one-GPU machine)

    def check(self) -> None:
        if self.nproc_per_node < 1 or self.nnodes < 1:
            raise InputError("--nproc-per-node and --nnodes must be at least 1")
        if not 0 <= self.node_rank < self.nnodes:
            raise InputError(f"--node-rank {self.node_rank} must be in 0..{self.nnodes - 1}")
        if not 0 < self.master_port < 65536:
            raise InputError(f"--master-port {self.master_port}: not a port number")


def supports_processes(job_class: type) -> bool:
    """The job declares ``data_parallel = True`` (and so its ``processes`` parameter)."""
    return bool(getattr(job_class, "data_parallel", False)) and "processes" in job_class.params()


# launching the ranks --------------------------------------------------------------------------------------------
def launch_ranks(spec: dict[str, Any], nproc: int, options: LaunchOptions, out: Path,
                 on_event: Callable[[dict[str, Any]], None] | None = None,
                 cancelled: Callable[[], bool] | None = None, poll: float = 0.1) -> dict[str, Any]:
    """Run ``spec`` on ``nproc`` ranks of this node (and ``options.nnodes`` nodes); returns rank 0's result.

    Blocks until the ranks finish; rank 0's events are passed to ``on_event`` as they arrive. Raises
    ``Cancelled`` (after stopping every rank) when ``cancelled()`` turns true, and InputError/JobFailed with the
    first failing rank's error.
    """
    out.mkdir(parents=True, exist_ok=True)
    spec = dict(spec, out=str(out))
    spec_file = out / "spec.json"
    spec_file.write_text(json.dumps(spec, default=str))
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--max-restarts=0"]
    if options.nnodes == 1:
        cmd += ["--nnodes=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{_free_port()}"]
    else:
        cmd += [f"--nnodes={options.nnodes}", f"--node-rank={options.node_rank}",
                f"--master-addr={options.master_addr}", f"--master-port={options.master_port}"]
    cmd += ["-m", "workbench.core.execution.distributed_rank", str(spec_file)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(nproc, 1))))
    log_path = out / "launcher.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        tail = _Tail(out / EVENTS_FILE)
        try:
            while proc.poll() is None:
                if cancelled is not None and cancelled():
                    _stop(proc)
                    raise Cancelled("cancelled by the user")
                _deliver(tail.read(), on_event)
                time.sleep(poll)
        except BaseException:
            if proc.poll() is None:
                _stop(proc)
            raise
        _deliver(tail.read(), on_event)
    if proc.returncode != 0:
        raise _rank_error(out, log_path, proc.returncode)
    result_file = out / RESULT_FILE
    if options.node_rank == 0 and not result_file.exists():
        raise JobFailed(f"the ranks finished but rank 0 wrote no result (see {log_path})")
    return json.loads(result_file.read_text()) if result_file.exists() else {}


class _Tail:
    """Complete lines appended to a file since the last read."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.partial = path, 0, b""

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        self.offset += len(chunk)
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]


def _deliver(events: list[dict[str, Any]], on_event: Callable[[dict[str, Any]], None] | None) -> None:
    if on_event is not None:
        for event in events:
            on_event(event)


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the launcher's process group (torchrun and every rank it started), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _rank_error(out: Path, log_path: Path, returncode: int) -> Exception:
    """The first failing rank's error (others only report the broken connection that followed)."""
    records = []
    for path in (out / ERRORS_DIR).glob("rank-*.json"):
        try:
            records.append(json.loads(path.read_text()))
        except ValueError:
            continue
    if not records:
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit code {returncode}"
        return JobFailed(f"the distributed launcher failed: {last[:300]}")
    first = min(records, key=lambda r: (r["kind"] == "error", r["time"]))
    message = f"rank {first['rank']}: {first['message']}"
    return InputError(message) if first["kind"] == "input" else JobFailed(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# a job run from the runner --------------------------------------------------------------------------------------
def job_spec(job: Any, ctx: Any) -> dict[str, Any]:
    """What every rank needs to rebuild the job: its name and values, the data, the input variant, the seed."""
    from workbench.core.jobs.devplugins import loaded_folders

    return {
        "job": job.name, "params": job.values, "variant": ctx.variant_id,
        "variants_dir": str(ctx.workspace_dir / "variants") if ctx.workspace_dir is not None else None,
        "dataset": ctx.data.info.spec, "seed": ctx.seed, "device": ctx.device.type,
        "strategy": job.values.get("strategy", "ddp"), "bench_batch": ctx.bench_batch,
        "plugin_paths": [str(p) for p in loaded_folders()],
    }


def run_job_distributed(job: Any, ctx: Any, options: LaunchOptions) -> Any:
    """Run ``job`` on ``job.processes`` ranks; replay rank 0's events on ``ctx``; return the trained model."""
    from workbench.core.models.loading import load_torch_model

    nproc = int(job.values["processes"])
    if ctx.device.type == "cuda":
        import torch

        if nproc > torch.cuda.device_count():
            raise InputError(f"processes={nproc} but this node has {torch.cuda.device_count()} CUDA device(s): "
                             "one process per GPU (use --device cpu for gloo on the CPU)")
    out = Path(ctx.workdir) / "ranks"
    ctx.info(f"{job.name}: data-parallel over {nproc * options.nnodes} processes "
             f"({'nccl' if ctx.device.type == 'cuda' else 'gloo'}, {job.values.get('strategy', 'ddp')})")
    result = launch_ranks(job_spec(job, ctx), nproc, options, out, on_event=_replayer(ctx),
                          cancelled=lambda: ctx.cancelled)
    ctx.result.update(result.get("result", {}))
    for mark in result.get("marks", []):
        ctx.mark(mark)
    if not result.get("model"):
        return None
    return load_torch_model(out / MODEL_DIR).to(ctx.device)


def _replayer(ctx: Any) -> Callable[[dict[str, Any]], None]:
    def replay(event: dict[str, Any]) -> None:
        kind, data = event["kind"], event["data"]
        if kind == "metric":
            ctx.log(step=data["step"], **data["metrics"])
        elif kind == "progress":
            ctx.progress(data["done"], data["total"], text=data.get("text", ""))
        elif kind == "log":
            (ctx.warn if data.get("level") == "warning" else ctx.info)(data["message"])

    return replay


class DistributedExecutor(InlineExecutor):
    """The executor for a data-parallel request: ``Job.run`` happens in torch.distributed ranks, and rank 0's
    model is measured and saved here like any job's result (one new variant, only on success)."""

    def __init__(self, session: Any, plugins: Any = None, options: LaunchOptions | None = None) -> None:
        super().__init__(session, plugins, options or LaunchOptions())

    def _for(self, job: Any) -> InlineExecutor:
        return self

    def invoke(self, job: Any, ctx: Any) -> Any:
        return run_job_distributed(job, ctx, self.launch)


def wants_ranks(job: Any, options: LaunchOptions) -> bool:
    """A data-parallel job asked for more than one process (or a multi-node / forced launch)."""
    if not supports_processes(type(job)):
        return False
    return int(job.values.get("processes", 1)) > 1 or options.nnodes > 1 or options.launch_single
