"""Batch mode: run a pipeline headless with progress bars, then write the report. Exit codes: 0 ok,
1 a job failed (the report still records every step that ran), 2 bad arguments or unreadable input.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from workbench.core.data.specs import with_absolute_path
from workbench.core.errors import InputError, WorkbenchError
from workbench.core.jobs.events import FINISHED, LOG, METRIC, PROGRESS, STARTED, JobEvent
from workbench.core.pipeline import Pipeline, validate_steps


def default_out() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def default_dataset(pipe: Pipeline) -> str:
    """The dataset when the pipeline names none: a reopened workspace keeps its own; a language model learns the
    built-in corpus (pydocs); anything else the demo's digits."""
    from workbench.core.models.loading import default_dataset_for

    if pipe.out and (Path(pipe.out) / "workspace.sqlite").is_file():
        from workbench.core.workspace import Workspace

        ws = Workspace(Path(pipe.out))
        try:
            named = ws.info("dataset")
        finally:
            ws.close()
        if named:
            return str(named)
    return default_dataset_for(pipe.model)


def session_spec(pipe: Pipeline, trust: bool = False) -> Any:
    """The session a pipeline runs in: its workspace (``--out``), dataset, seed, device and latency batch."""
    from workbench.core.data.corpus import lm_dataset_spec
    from workbench.core.execution.session import SessionSpec
    from workbench.core.tasks import default_bench_batch

    dataset = with_absolute_path(pipe.dataset or default_dataset(pipe))  # stored: must hold from any folder
    dataset = lm_dataset_spec(dataset, pipe.model)  # a corpus is tokenized by the model folder's tokenizer
    bench = pipe.bench_batch or default_bench_batch(dataset)
    return SessionSpec(str(pipe.out or default_out()), dataset, pipe.seed, bench, trust, pipe.device)


def open_pipeline(pipe: Pipeline, runner: Any) -> str:
    """The variant the first step runs on: the pipeline's model opened as a root (in the runner's worker), the
    same variant when the model is a folder of this workspace, or the workspace's latest one."""
    from workbench.core.execution.runner import OpenModelRequest
    from workbench.core.execution.session import variant_in_workspace

    session = runner.session
    if pipe.model is None:
        return session.latest_variant_id()
    existing = variant_in_workspace(session.workspace, pipe.model)
    if existing:
        return existing
    outcome = runner.run(OpenModelRequest(pipe.model, pipe.weights, pipe.device))
    if outcome.status != "ok":
        raise (InputError if outcome.bad_input else WorkbenchError)(outcome.error or "the model could not be opened")
    assert outcome.variant is not None
    return outcome.variant


def open_session(pipe: Pipeline, trust: bool = False) -> tuple[Any, str]:
    """Session + root variant in this process (tests and plugin fixtures; batch mode uses a worker)."""
    from workbench.core.execution.runner import Runner
    from workbench.core.execution.session import open_session as open_spec

    session = open_spec(session_spec(pipe, trust))
    runner = Runner(session)
    try:
        return session, open_pipeline(pipe, runner)
    finally:
        runner.shutdown()


class ConsoleObserver:
    """Rich progress bars on stderr, one per step, with ETA and the latest loss."""

    def __init__(self, quiet: bool = False) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.fields[job]}[/bold]"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[text]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            TextColumn("{task.fields[metric]}"), console=self.console, disable=quiet, transient=False,
        )
        self.tasks: dict[int, Any] = {}
        self.quiet = quiet

    def __enter__(self) -> ConsoleObserver:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def __call__(self, event: JobEvent) -> None:
        task = self.tasks.get(event.run_id)
        if event.kind == STARTED:
            self.tasks[event.run_id] = self.progress.add_task("", total=None, job=event.job, text="", metric="")
        elif task is None:
            return
        elif event.kind == PROGRESS:
            self.progress.update(task, total=event.data["total"], completed=event.data["done"],
                                 text=event.data.get("text", ""))
        elif event.kind == METRIC:
            m = event.data["metrics"]
            shown = [f"{k} {m[k]:.4f}" for k in ("loss", "val_accuracy") if k in m]
            if shown:
                self.progress.update(task, metric=" ".join(shown))
        elif event.kind == LOG and event.data.get("level") == "warning":
            self.progress.console.print(f"[yellow]warning[/yellow] {event.job}: {event.data['message']}")
        elif event.kind == FINISHED:
            status = event.data["status"]
            total = self.progress.tasks[task].total or 1
            self.progress.update(task, total=total, completed=total if status == "ok" else None,
                                 text={"ok": "done", "failed": "[red]failed[/red]"}.get(status, status))


def run_batch(pipe: Pipeline, *, trust: bool = False, as_json: bool = False, quiet: bool = False,
              launch: Any = None, inline: bool = False) -> int:
    """Run the pipeline's steps one after another in a worker process (``inline``: in this one); ``launch``:
    torch.distributed options for data-parallel steps."""
    from workbench.core.execution.runner import JobRequest, Runner
    from workbench.core.execution.session import open_session as open_spec
    from workbench.core.report import write_report

    if not pipe.steps:
        raise InputError("no job to run: give --job NAME[:k=v,...] or a --pipeline file")
    validate_steps(pipe.steps)
    pipe.dataset = with_absolute_path(pipe.dataset or default_dataset(pipe))
    session = open_spec(session_spec(pipe, trust))
    runner = Runner(session, executor="inline" if inline or os.environ.get("WORKBENCH_INLINE") else "process",
                    launch=launch)
    from workbench.core.data import dataset_task

    header = {"model": pipe.model, "dataset": pipe.dataset, "device": session.device,
              "workspace": str(session.workspace.root), "seed": pipe.seed, "task": dataset_task(pipe.dataset)}
    steps: list[dict[str, Any]] = []
    histories: dict[int, dict[str, list[tuple[int, float]]]] = {}
    exit_code = 0
    observer = ConsoleObserver(quiet=quiet or as_json)
    unsubscribe = runner.bus.subscribe(observer)
    try:
        with observer:
            current = open_pipeline(pipe, runner)
            header["model"] = pipe.model or current
            for index, step in enumerate(pipe.steps):
                outcome = runner.run(JobRequest(step.job, step.params, current, pipe.device, pipe.seed))
                steps.append({**step_record(step.job, outcome, current), "task": header["task"]})
                histories[index] = _series(outcome.history)
                if outcome.status != "ok":
                    exit_code = 2 if outcome.bad_input else 1
                    break
                current = outcome.variant or current
    finally:
        unsubscribe()
        runner.shutdown()
        report = write_report(session.workspace.root, header, steps, session.workspace.variants(), histories)
        session.workspace.close()
    if as_json:
        print(json.dumps(report, indent=1, default=str))
    elif not quiet:
        print_table(report)
    if exit_code:
        failed = steps[-1]
        print(f"error: {failed['job']}: {failed.get('error')}", file=sys.stderr)
    return exit_code


def step_record(job: str, outcome: Any, parent: str) -> dict[str, Any]:
    """One step of report.json: its figures, and the paired speed-up beside them (contract, section 8)."""
    metrics = dict(outcome.metrics)
    record: dict[str, Any] = {
        "job": job, "params": outcome.params, "variant": outcome.variant, "parent": parent,
        "status": outcome.status, "seconds": round(outcome.seconds, 3), "metrics": metrics,
    }
    if "speedup" in metrics and outcome.variant != parent:
        record["speedup"] = metrics.pop("speedup")
    else:
        metrics.pop("speedup", None)
    for key in ("result", "marks", "error"):
        value = getattr(outcome, key)
        if value:
            record[key] = value
    return record


def _series(history: list[tuple[int, dict[str, float]]]) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for step, metrics in history:
        for k, v in metrics.items():
            out.setdefault(k, []).append((step, v))
    return out


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from workbench.core.report import _fmt

    table = Table(title=f"{report['model']} on {report['dataset']} ({report['device']})")
    from workbench.core.tasks import get_task

    columns = (get_task(report.get("task") or "classification").headline, "params", "size_bytes", "latency_ms",
               "latency_torch_ms")
    for name in ("job", "variant", "status", "seconds", *columns):
        table.add_column(name, justify="right" if name in columns or name == "seconds" else "left")
    for s in report["steps"]:
        m = s.get("metrics", {})
        table.add_row(s["job"], str(s.get("variant") or "-"), s["status"], f"{s['seconds']:.1f}",
                      *(_fmt(c, m.get(c)) for c in columns))
    console = Console()
    console.print(table)
    from workbench.core.report import generated_texts

    for number, step, prompt, text in generated_texts(report):
        console.print(f"step {number} ({step['job']}), prompt {prompt!r}:", style="bold")
        console.print((prompt + text).rstrip(), markup=False, highlight=False, soft_wrap=True)
    console.print(f"report: {Path(report['workspace']) / 'report.json'}")


# data-parallel batch runs (--nproc-per-node, --nnodes) ---------------------------------------------------------
def options_from_args(args: Any) -> Any:
    """torchrun's topology from the command line's flags, checked."""
    from workbench.core.execution.distributed import LaunchOptions

    options = LaunchOptions(
        nproc_per_node=args.nproc_per_node, nnodes=getattr(args, "nnodes", 1) or 1,
        node_rank=getattr(args, "node_rank", 0) or 0,
        master_addr=getattr(args, "master_addr", None) or "127.0.0.1",
        master_port=getattr(args, "master_port", None) or 29500,
    )
    options.check()
    return options


def run_distributed_batch(pipe: Any, args: Any) -> int:
    """``--batch --nproc-per-node N``: steps that can run data-parallel get ``processes=N`` unless they set it."""
    from workbench.core.execution.distributed import supports_processes
    from workbench.core.jobs.registry import registry

    options = options_from_args(args)
    pipe.dataset = with_absolute_path(pipe.dataset or default_dataset(pipe))
    parallel = []
    for step in pipe.steps:
        if supports_processes(registry().load(step.job)):
            step.params.setdefault("processes", options.nproc_per_node)
            parallel.append(step)
    if not parallel:
        names = ", ".join(s.job for s in pipe.steps) or "none"
        raise InputError(f"--nproc-per-node: none of the steps ({names}) can run data-parallel (train, distill do)")
    if options.node_rank > 0:
        return _follow(pipe, parallel, options, quiet=args.quiet or args.json)
    return run_batch(pipe, trust=args.trust, as_json=args.json, quiet=args.quiet, launch=options,
                     inline=getattr(args, "inline", False))


def _follow(pipe: Any, steps: list[Any], options: Any, quiet: bool) -> int:
    """A node other than 0: start this node's ranks for each data-parallel step; node 0 owns the workspace."""
    import tempfile

    from workbench.core.data.corpus import lm_dataset_spec
    from workbench.core.execution.distributed import launch_ranks
    from workbench.core.execution.session import resolve_device
    from workbench.core.jobs.registry import registry
    from workbench.core.tasks import default_bench_batch

    for index, step in enumerate(steps):
        job = registry().load(step.job)(**step.params)
        spec = {"job": job.name, "params": job.values, "variant": None, "variants_dir": None,
                "dataset": lm_dataset_spec(pipe.dataset, pipe.model), "seed": pipe.seed, "device": resolve_device(pipe.device),
                "strategy": job.values.get("strategy", "ddp"), "bench_batch": pipe.bench_batch or default_bench_batch(
                    pipe.dataset), "plugin_paths": []}
        with tempfile.TemporaryDirectory(prefix="wb-node-") as tmp:
            if not quiet:
                print(f"node {options.node_rank}: step {index + 1}/{len(steps)} {job.name}: starting "
                      f"{job.values['processes']} ranks", file=sys.stderr)
            launch_ranks(spec, int(job.values["processes"]), options, Path(tmp))
    return 0
