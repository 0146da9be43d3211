"""The app's model of the session: which workspace, dataset and root model are open, the runner, the jobs.

Everything slow (importing torch and the plugins, loading the dataset, measuring the root variant, running
jobs) happens on worker threads; results come back through the ``Bridge`` as Qt signals on the GUI thread.
Qt widgets never touch the core directly for anything that can take time.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import os
import time
import weakref
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from workbench.ui.bridge import Bridge

DEMO_MODEL = "zoo:seed_cnn"
DEMO_DATASET = "digits"


def demo_workspace() -> Path:
    """A fresh demo workspace in the user's data folder (kept, so the demo's work is not lost)."""
    import platformdirs

    base = Path(platformdirs.user_data_dir("workbench", appauthor=False))
    return base / f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def _load_job_classes() -> dict[str, type]:
    """Import every enabled job (this imports torch); a broken plugin is reported, not fatal."""
    from workbench.core.jobs.registry import registry
    from workbench.core.notifications import notify
    from workbench.ui.plugin_manager import apply_saved_settings

    for problem in apply_saved_settings():  # disabled jobs and development folders saved by the plugin manager
        notify(problem, "warning", source="plugins")
    classes: dict[str, type] = {}
    registry().load_all()  # records broken plugins as failed, so the plugin manager can show why
    for name in registry().job_names():
        try:
            classes[name] = registry().load(name)
        except Exception as exc:  # noqa: BLE001 - a plugin may fail to import in any way
            notify(f"plugin {name} is disabled: {exc}", "warning", source="plugins")
    try:
        from workbench.core.execution.warmup import warm_up

        if inline_jobs():
            warm_up()  # the first job's lazy imports, now rather than on the worker thread mid-job
    except Exception as exc:  # noqa: BLE001 - only a speed-up; a job would import the same things itself
        notify(f"warm-up skipped: {exc}", "info", source="app")
    return classes


def inline_jobs() -> bool:
    """``workbench --inline`` (or WORKBENCH_INLINE=1): jobs run in the app's own process, for debugging."""
    return bool(os.environ.get("WORKBENCH_INLINE"))


def _limit_torch_threads() -> None:
    """Inline mode only: leave a core to the GUI thread so the event loop keeps ticking while a job trains in
    this process. (Jobs normally run in a worker process, which uses every core.)"""
    import torch

    cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, min(torch.get_num_threads(), cores - 1)))


def needs_own_workspace(model: str, dataset_spec: str) -> bool:
    """A language model opened into a classifier's workspace (or a zoo classifier into a corpus one) cannot share
    its dataset: it opens in a workspace of its own instead of failing."""
    from workbench.core.data import dataset_task
    from workbench.core.models.loading import is_language_model_spec

    lm_data = dataset_task(dataset_spec) == "causal_lm"
    lm_model = is_language_model_spec(model)
    return (lm_model and not lm_data) or (lm_data and model.startswith("zoo:") and not lm_model)


def _open_session(workspace: Path, model: str | None, dataset: str | None, trust: bool, device: str,
                  before_measuring: Any = None) -> tuple[Any, Any]:
    """The session and its runner (the job worker process started), and ``model`` opened as a root variant in
    that worker: the app's process measures nothing itself. Runs on a helper thread."""
    from workbench.core.errors import InputError, WorkbenchError
    from workbench.core.execution.runner import OpenModelRequest, Runner
    from workbench.core.execution.session import SessionSpec, open_session
    from workbench.core.workspace import Workspace

    ws = Workspace(workspace)
    existing = ws.variants()
    from workbench.core.models.loading import default_dataset_for

    dataset = dataset or ws.info("dataset") or (existing[0].dataset if existing else "") or default_dataset_for(model)
    ws.close()
    from workbench.core.data.corpus import lm_dataset_spec
    from workbench.core.data.specs import with_absolute_path
    from workbench.core.tasks import default_bench_batch

    dataset = lm_dataset_spec(with_absolute_path(dataset), model)  # absolute: the workspace stores it
    session = open_session(SessionSpec(str(workspace), dataset, bench_batch=default_bench_batch(dataset), trust=trust,
                                       device=device))
    if inline_jobs():
        _limit_torch_threads()
        runner = Runner(session)
    else:
        runner = Runner(session, executor="process")
        runner.executor(session.device).start()  # its imports now, not when the first job is asked for
    if model:
        if before_measuring is not None:
            before_measuring()  # let start-up imports finish: they would skew the root's latency
        outcome = runner.run(OpenModelRequest(model, None, session.device))
        if outcome.status != "ok":
            runner.shutdown(wait=False)
            raise (InputError if outcome.bad_input else WorkbenchError)(outcome.error or f"{model}: not opened")
    elif not existing:
        runner.shutdown(wait=False)
        raise InputError(f"{session.workspace.root}: the workspace has no variant yet; open a model "
                         "(File > Open model)")
    return session, runner


class Controller(QObject):
    """Owns the session and the runner; turns runner events into Qt signals (via the bridge)."""

    jobs_loaded = Signal(dict)          # job name -> Job class
    model_opening = Signal(str)         # a model spec being opened (the graph view previews files)
    session_opening = Signal(str)       # a line for the status bar
    session_ready = Signal(object)      # the Session
    session_failed = Signal(str, str)   # message, details
    variants_changed = Signal(list)     # list[Variant]
    job_event = Signal(object)          # one JobEvent, on the GUI thread

    def __init__(self, parent: QObject | None = None, trust: bool = False, device: str = "auto") -> None:
        super().__init__(parent)
        self.trust = trust
        self.device = device
        self.bridge = Bridge(self)
        self.bridge.events.connect(self._on_events)
        self.session: Any = None
        self.runner: Any = None
        self._unsubscribe: Any = None
        self._classes: dict[str, type] = {}
        self._jobs_future: concurrent.futures.Future | None = None
        self._waiting: list[tuple[Any, Any]] = []  # requests made before the session was ready
        self._waiting_models: list[str] = []  # models opened (File > Open model, the builder) while it was loading
        self.handles: dict[int, Any] = {}
        self.opening = False
        self.failed_jobs: set[str] = set()
        _live.add(self)

    # jobs -----------------------------------------------------------------------------------------------------
    def job_names(self) -> list[str]:
        """Listing reads installed metadata only: instant, no torch."""
        from workbench.core.jobs.registry import registry

        return registry().job_names()

    def load_jobs(self) -> None:
        if self._jobs_future is None:
            self._jobs_future = self.bridge.run_in_background(_load_job_classes, self._on_jobs_loaded)

    def reload_jobs(self) -> None:
        """After the plugin manager enabled, disabled or reloaded plugins: import the job list again."""
        if self._jobs_future is not None and not self._jobs_future.done():
            return
        self._jobs_future = None
        self._classes.clear()
        self.load_jobs()

    def _on_jobs_loaded(self, classes: dict[str, type]) -> None:
        self._classes.update(classes)
        self.failed_jobs = set(self.job_names()) - set(self._classes)
        self.jobs_loaded.emit(dict(self._classes))

    def job_class(self, name: str, wait: bool = True) -> type | None:
        """The class of a job; before the background import has finished, waits for it when ``wait``."""
        if name in self._classes:
            return self._classes[name]
        if wait:
            from workbench.core.jobs.registry import registry

            self.load_jobs()
            assert self._jobs_future is not None
            try:
                self._classes.update(self._jobs_future.result())
            except Exception:  # noqa: BLE001 - reported by the background task
                pass
            if name not in self._classes:
                try:
                    self._classes[name] = registry().load(name)
                except Exception:  # noqa: BLE001 - the selector shows it disabled
                    return None
            return self._classes.get(name)
        return None

    # session --------------------------------------------------------------------------------------------------
    def open(self, workspace: str | Path | None = None, model: str | None = None, dataset: str | None = None) -> None:
        """Open a workspace (a fresh one when None) and add ``model`` (the demo model in a new workspace) as a root
        variant, in the background."""
        if workspace is None:
            workspace = demo_workspace()
        if model is None and not (Path(workspace) / "workspace.sqlite").exists():
            model, dataset = DEMO_MODEL, dataset or DEMO_DATASET  # a new workspace starts on the demo model
        self.close_session()
        self.variants_changed.emit([])
        self.opening = True
        what = model or Path(workspace).name
        self.session_opening.emit(f"loading {what} ...")
        if model:
            self.model_opening.emit(model)
        jobs = self._jobs_future

        def settle() -> None:
            if jobs is not None:
                try:
                    jobs.result(timeout=120)
                except Exception:  # noqa: BLE001 - reported by the jobs task itself
                    pass

        self.bridge.run_in_background(
            lambda: _open_session(Path(workspace), model, dataset, self.trust, self.device, settle),
            self._on_session, self._on_session_error)

    def add_model(self, model: str) -> None:
        """Load another model into the open workspace as a new root (File > Open model, drag and drop)."""
        if self.session is None:
            if self.opening:  # a workspace is still opening: the model joins it once it is open
                self._waiting_models.append(model)
                self.session_opening.emit(f"{model} waits for the workspace to open ...")
                return
            self.open(None, model, None)
            return
        session, runner = self.session, self.runner
        if needs_own_workspace(model, session.dataset_spec):
            self.session_opening.emit(f"{model} does not fit {session.dataset_spec}: opening it in a new workspace")
            self.open(None, model, None)
            return
        self.session_opening.emit(f"loading {model} ...")

        def work() -> Any:
            from workbench.core.errors import InputError, WorkbenchError
            from workbench.core.execution.runner import OpenModelRequest

            outcome = runner.submit(OpenModelRequest(model, None, session.device)).wait()
            if outcome is None or outcome.status != "ok":
                error = outcome.error if outcome is not None else None
                raise (InputError if outcome is not None and outcome.bad_input else WorkbenchError)(
                    error or f"{model}: not opened")
            return outcome.variant

        self.bridge.run_in_background(work, lambda _v: self.refresh(), self._on_session_error)

    def _on_session(self, opened: tuple[Any, Any]) -> None:
        self.opening = False
        self.session, self.runner = opened
        self._unsubscribe = self.runner.bus.subscribe(self.bridge.push_event)
        self.session_ready.emit(self.session)
        self.refresh()
        waiting, self._waiting = self._waiting, []
        for request, callback in waiting:
            callback(self._submit_now(request))
        models, self._waiting_models = self._waiting_models, []
        for model in models:
            self.add_model(model)

    def _on_session_error(self, exc: BaseException) -> None:
        import traceback

        self.opening = False
        details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.session_failed.emit(str(exc) or type(exc).__name__, details)
        for _request, callback in self._waiting:
            callback(None)
        self._waiting_models = []
        self._waiting = []

    def refresh(self) -> None:
        if self.session is not None:
            self.variants_changed.emit(self.session.workspace.variants())

    def close_session(self) -> None:
        still_running = bool(self.pending())
        if self.runner is not None:
            if self._unsubscribe:
                self._unsubscribe()
            self.runner.shutdown(wait=False)
        if self.session is not None and not still_running:
            self.session.workspace.close()  # a cancelled run still finishing keeps its connection
        self.session = self.runner = None
        self.handles.clear()

    # runs -----------------------------------------------------------------------------------------------------
    def submit(self, job: str, params: dict[str, Any], input_variant: str | None, callback: Any = None) -> None:
        """Queue a job; if the session is still loading, it is submitted as soon as it is ready."""
        from workbench.core.execution.runner import JobRequest

        request = JobRequest(job, params, input_variant, self.device)
        callback = callback or (lambda _h: None)
        if self.session is None:
            self._waiting.append((request, callback))
            self.session_opening.emit(f"{job} waits for the model to load ...")
            return
        callback(self._submit_now(request))

    def _submit_now(self, request: Any) -> Any:
        handle = self.runner.submit(request)
        self.handles[handle.run_id] = handle
        return handle

    def pending(self) -> list[Any]:
        return self.runner.pending() if self.runner is not None else []

    def busy(self) -> bool:
        return bool(self.pending() or self._waiting)

    def cancel(self, run_id: int | None = None) -> None:
        """Cancel one run, or (None) the running one and everything queued."""
        self._waiting = []
        for handle in self.pending():
            if run_id is None or handle.run_id == run_id:
                handle.cancel()

    def _on_events(self, events: list[Any]) -> None:
        changed = False
        for event in events:
            self.job_event.emit(event)
            if event.kind == "finished":
                self.handles.pop(event.run_id, None)
                changed = changed or event.data.get("status") == "ok"
        if changed:
            self.refresh()

    def shutdown(self, wait: bool = False) -> None:
        """Cancel everything; with ``wait``, give the worker a few seconds to stop (at interpreter exit, a worker
        still inside torch would abort the process)."""
        self.cancel()
        runner = self.runner
        self.close_session()
        if wait and runner is not None:
            runner.shutdown(wait=True)
        self.bridge.shutdown()
        _live.discard(self)


_live: weakref.WeakSet[Controller] = weakref.WeakSet()


@atexit.register
def _stop_workers_at_exit() -> None:
    from workbench.ui.threads import join_all

    for controller in list(_live):
        try:
            controller.shutdown(wait=True)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
    join_all(timeout=20.0)  # no helper thread left inside an import when the interpreter freezes it
