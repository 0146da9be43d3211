"""The job runner: a queue and a thread per device, each feeding that device's executor; cooperative cancel;
nothing a job does escapes. Batch mode and the app use the same runner; they differ only in how they observe
its events.

The executor decides where a job runs: ``executor="process"`` (batch mode and the app) starts one worker
process per device, reused from job to job; ``"inline"`` runs jobs in this process (debugging, tests).
"""

from __future__ import annotations

import itertools
import queue
import threading
import traceback
from collections.abc import Callable
from typing import Any

from workbench.core.execution.executors import Executor, finished_event
from workbench.core.execution.requests import JobRequest, OpenModelRequest, Request, RunHandle, RunOutcome
from workbench.core.execution.session import Session
from workbench.core.jobs.events import QUEUED, EventBus, JobEvent
from workbench.core.jobs.registry import Registry, registry

__all__ = ["JobRequest", "OpenModelRequest", "RunHandle", "RunOutcome", "Runner"]


class _DeviceThread(threading.Thread):
    def __init__(self, runner: Runner, device: str) -> None:
        super().__init__(name=f"workbench-worker-{device}", daemon=True)
        self.runner = runner
        self.device = device
        self.queue: queue.Queue[RunHandle | None] = queue.Queue()

    def run(self) -> None:
        while True:
            handle = self.queue.get()
            if handle is None:
                return
            try:
                self.runner._execute(handle, self.device)
            finally:
                handle.done_event.set()


class Runner:
    """Queues requests per device and executes them against a session (workspace + dataset)."""

    def __init__(self, session: Session, bus: EventBus | None = None, plugins: Registry | None = None, *,
                 executor: str | Callable[[str], Executor] = "inline", launch: Any = None) -> None:
        self.session = session
        self.bus = bus or EventBus()
        self.plugins = plugins or registry()
        self.launch = launch
        self._make_executor = self._executor_factory(executor)
        self._executors: dict[str, Executor] = {}
        self._threads: dict[str, _DeviceThread] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._handles: list[RunHandle] = []

    def _executor_factory(self, kind: str | Callable[[str], Executor]) -> Callable[[str], Executor]:
        if callable(kind):
            return kind
        if kind == "inline":
            from workbench.core.execution.local import local_executor

            return lambda device: local_executor(self.session, self.plugins, self.launch)
        if kind == "process":
            from workbench.core.execution.process import ProcessExecutor

            return lambda device: ProcessExecutor(self.session, self.plugins, self.launch)
        raise ValueError(f"unknown executor {kind!r}: expected 'inline' or 'process'")

    def executor(self, device: str) -> Executor:
        with self._lock:
            if device not in self._executors:
                self._executors[device] = self._make_executor(device)
            return self._executors[device]

    def _queued(self, request: Request) -> tuple[RunHandle, str]:
        """A handle for a new request on its resolved device, announced to the observers."""
        device = self.session.resolve_device(request.device)
        handle = RunHandle(next(self._ids), request)
        with self._lock:
            self._handles.append(handle)
        self.bus.emit(JobEvent(QUEUED, handle.run_id, request.job,
                               {"params": request.params, "input": getattr(request, "input_variant", None),
                                "device": device}))
        return handle, device

    def submit(self, request: Request) -> RunHandle:
        """Queue a request on its device's thread; returns at once."""
        handle, device = self._queued(request)
        with self._lock:
            thread = self._threads.get(device)
            if thread is None or not thread.is_alive():
                thread = self._threads[device] = _DeviceThread(self, device)
                thread.start()
        thread.queue.put(handle)
        return handle

    def run(self, request: Request) -> RunOutcome:
        """Run a request on the calling thread and return its outcome (batch mode: one step after another)."""
        handle, device = self._queued(request)
        try:
            self._execute(handle, device)
        finally:
            handle.done_event.set()
        assert handle.outcome is not None
        return handle.outcome

    def pending(self) -> list[RunHandle]:
        with self._lock:
            return [h for h in self._handles if not h.done_event.is_set()]

    def cancel_all(self) -> None:
        for handle in self.pending():
            handle.cancel()

    def shutdown(self, wait: bool = True) -> None:
        self.cancel_all()
        with self._lock:
            threads = list(self._threads.values())
        for t in threads:
            t.queue.put(None)
        if wait:
            for t in threads:
                t.join(timeout=10)
        with self._lock:
            executors, self._executors = list(self._executors.values()), {}
        for executor in executors:
            executor.close()

    def _execute(self, handle: RunHandle, device: str) -> None:
        try:
            handle.outcome = self.executor(device).execute(handle, device, self.bus.emit)
        except BaseException as exc:  # noqa: BLE001 - last line of defence: the runner never dies
            handle.outcome = RunOutcome("failed", error=f"internal error: {exc}", traceback=traceback.format_exc(),
                                        params=dict(handle.request.params))
            self.bus.emit(finished_event(handle.run_id, handle.request.job, handle.outcome))
