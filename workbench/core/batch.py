"""Batch mode: run a pipeline headless with progress bars, then write the report. Exit codes: 0 ok,
1 a job failed (the report still records every step that ran), 2 bad arguments or unreadable input.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from workbench.core.errors import InputError
from workbench.core.jobs.events import FINISHED, LOG, METRIC, PROGRESS, STARTED, JobEvent
from workbench.core.pipeline import Pipeline, validate_steps


def default_out() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def open_session(pipe: Pipeline, trust: bool = False) -> tuple[Any, str]:
    """Workspace + dataset + the root variant for ``pipe.model``; returns (session, root variant id)."""
    from workbench.core.data import load_dataset
    from workbench.core.jobs.session import Session, resolve_device, seed_everything
    from workbench.core.models import load_model
    from workbench.core.workspace import Workspace

    device = resolve_device(pipe.device)
    data = load_dataset(pipe.dataset, seed=pipe.seed)
    workspace = Workspace(pipe.out or default_out())
    session = Session(workspace, data, seed=pipe.seed, bench_batch=pipe.bench_batch, trust=trust)
    if pipe.model is None:
        return session, session.latest_variant_id()
    existing = _variant_in_workspace(workspace, pipe.model)
    if existing:
        return session, existing
    seed_everything(pipe.seed)  # the root model's initial weights depend on the seed, like everything else
    model = load_model(pipe.model, data.info, weights=pipe.weights, trust=trust)
    root = session.add_root(model, pipe.model, device)
    return session, root.id


def _variant_in_workspace(workspace: Any, spec: str) -> str | None:
    path = Path(spec)
    if path.is_dir() and path.resolve().parent == workspace.variants_dir:
        try:
            return workspace.variant(path.name).id
        except InputError:
            return None
    return None


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
              plugins: Any = None) -> int:
    """``plugins``: the registry jobs are loaded from (``core.distributed`` passes one that launches ranks)."""
    from workbench.core.jobs.runner import JobRequest, Runner
    from workbench.core.report import write_report

    if not pipe.steps:
        raise InputError("no job to run: give --job NAME[:k=v,...] or a --pipeline file")
    validate_steps(pipe.steps)
    session, current = open_session(pipe, trust=trust)
    if plugins is None:
        from workbench.core.distributed import launching_registry

        plugins = launching_registry()  # a step with processes > 1 runs its ranks through torchrun
    runner = Runner(session, plugins=plugins)
    header = {"model": pipe.model or current, "dataset": pipe.dataset, "device": session.resolve_device(pipe.device),
              "workspace": str(session.workspace.root), "seed": pipe.seed}
    steps: list[dict[str, Any]] = []
    histories: dict[int, dict[str, list[tuple[int, float]]]] = {}
    exit_code = 0
    observer = ConsoleObserver(quiet=quiet or as_json)
    unsubscribe = runner.bus.subscribe(observer)
    try:
        with observer:
            for index, step in enumerate(pipe.steps):
                outcome = runner.run(JobRequest(step.job, step.params, current, pipe.device, pipe.seed), inline=True)
                record: dict[str, Any] = {
                    "job": step.job, "params": outcome.params, "variant": outcome.variant, "parent": current,
                    "status": outcome.status, "seconds": round(outcome.seconds, 3), "metrics": outcome.metrics,
                }
                if outcome.result:
                    record["result"] = outcome.result
                if outcome.marks:
                    record["marks"] = outcome.marks
                if outcome.error:
                    record["error"] = outcome.error
                steps.append(record)
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
    columns = ("accuracy", "params", "size_bytes", "latency_ms", "latency_torch_ms")
    for name in ("job", "variant", "status", "seconds", *columns):
        table.add_column(name, justify="right" if name in columns or name == "seconds" else "left")
    for s in report["steps"]:
        m = s.get("metrics", {})
        table.add_row(s["job"], str(s.get("variant") or "-"), s["status"], f"{s['seconds']:.1f}",
                      *(_fmt(c, m.get(c)) for c in columns))
    console = Console()
    console.print(table)
    console.print(f"report: {Path(report['workspace']) / 'report.json'}")
