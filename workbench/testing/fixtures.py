"""Pytest fixtures for plugin authors, loaded automatically through the ``pytest11`` entry point.

- ``workbench_run_job(job, params=None, *, model=..., dataset=..., after=None)`` runs a job class (or a job name)
  headless through the real runner, on a tiny model and dataset in a temporary workspace, and returns a
  :class:`JobRun`: the ``RunOutcome`` (status, error, variant, metrics, history) and the job's events.
- ``workbench_main_window(...)`` builds the desktop app's main window for ``qtbot`` (needs pytest-qt); the
  window's settings go to a temporary folder.

Nothing here imports torch or Qt until a fixture is used, so loading the plugin costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TINY_MODEL = "zoo:mlp:hidden=16"
TINY_DATASET = "digits:size=8"


@dataclass
class JobRun:
    """One finished run: ``outcome`` (a RunOutcome) and every event the job emitted, in order."""

    outcome: Any
    events: list[Any]
    session: Any = field(repr=False)

    @property
    def metrics(self) -> dict[str, Any]:
        """The report's metrics of the produced variant (or of the input, for a job that only measures)."""
        return dict(self.outcome.metrics)

    def events_of(self, kind: str) -> list[Any]:
        """Events of one kind: "metric", "progress", "log", "started", "finished"."""
        return [e for e in self.events if e.kind == kind]

    def model(self, variant: str | None = None) -> Any:
        """Load the produced variant (or another one) back from the workspace, on the CPU."""
        return self.session.load_variant(variant or self.outcome.variant, "cpu")


class _Harness:
    """Sessions, runners and registries made during one test; closed at teardown."""

    def __init__(self, tmp_factory: pytest.TempPathFactory) -> None:
        self.tmp_factory = tmp_factory
        self.closers: list[Callable[[], None]] = []
        self.runners: dict[int, Any] = {}

    def run(self, job: type | str, params: dict[str, Any] | None = None, *, model: str = TINY_MODEL,
            dataset: str = TINY_DATASET, after: JobRun | None = None, input_variant: str | None = None,
            device: str = "cpu", seed: int = 0, timeout: float = 600.0) -> JobRun:
        from workbench.core.batch import open_session
        from workbench.core.execution.runner import JobRequest, Runner
        from workbench.core.jobs.registry import Registry, registry
        from workbench.core.pipeline import Pipeline

        if after is not None:
            session = after.session
            input_variant = input_variant or after.outcome.variant
        else:
            out = self.tmp_factory.mktemp("workbench")
            session, root = open_session(Pipeline(model=model, dataset=dataset, seed=seed, device=device,
                                                  out=str(out)))
            self.closers.append(session.workspace.close)
            input_variant = input_variant or root
        runner = self.runners.get(id(session))
        if runner is None:
            runner = self.runners[id(session)] = Runner(session, plugins=Registry())
            self.closers.insert(0, runner.shutdown)
        if isinstance(job, type):
            runner.plugins.register(job, origin="test")
            name = job.name
        else:
            name = job
            if name not in runner.plugins.job_names() and name in registry().job_names():
                runner.plugins.register(registry().load(name), origin="test")  # a dev-folder or hand-made job
        seen: list[Any] = []
        unsubscribe = runner.bus.subscribe(seen.append)
        try:
            handle = runner.submit(JobRequest(name, dict(params or {}), input_variant, device, seed))
            outcome = handle.wait(timeout)
            if outcome is None:
                handle.cancel()
                handle.wait(30)
                raise AssertionError(f"job {name} did not finish within {timeout:g} s")
        finally:
            unsubscribe()
        return JobRun(outcome, [e for e in seen if e.run_id == handle.run_id], session)

    def close(self) -> None:
        for close in self.closers:
            try:
                close()
            except Exception:  # noqa: BLE001 - teardown must not hide the test's own failure
                pass


@pytest.fixture
def workbench_run_job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., JobRun]]:
    """Run a job headless: ``run = workbench_run_job(MyJob, {"amount": 0.5})``; ``run.outcome.status == "ok"``.

    ``model``/``dataset`` default to a 16-unit MLP on 8x8 digits (seconds on a CPU). Pass ``after=run`` to run
    the next job on the previous one's variant, in the same workspace (e.g. train, then your job).
    """
    harness = _Harness(tmp_path_factory)
    yield harness.run
    harness.close()


@pytest.fixture
def workbench_main_window(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Build the main window for qtbot: ``window = workbench_main_window(jobs=[MyJob])``.

    Defaults to the tiny model and dataset in a temporary workspace; ``jobs`` are registered for the window's
    lifetime. Settings (QSettings) are written under the test's temporary folder, never the user's.
    """
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    qtbot = request.getfixturevalue("qtbot")  # pytest-qt; imported only when this fixture is used
    from PySide6.QtCore import QSettings

    from workbench.app import create_main_window
    from workbench.core.jobs.registry import registry

    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    registered: list[str] = []
    windows: list[Any] = []

    def make(workspace: str | Path | None = None, model: str | None = TINY_MODEL, dataset: str | None = TINY_DATASET,
             jobs: list[type] = (), **kwargs: Any) -> Any:  # type: ignore[assignment]
        for cls in jobs:
            registry().register(cls, origin="test")
            registered.append(cls.name)
        window = create_main_window(workspace or tmp_path / f"ws{len(windows)}", model, dataset, **kwargs)
        qtbot.addWidget(window)
        windows.append(window)
        return window

    yield make
    for window in windows:
        controller = getattr(window, "controller", None)
        if controller is not None and hasattr(controller, "shutdown"):
            controller.shutdown(wait=True)  # stop the window's job runner before the test's folders go
        window.close()
    for name in registered:
        registry().unregister(name)
