"""The job runner: one worker thread per device, each with a queue; cooperative cancel; nothing a job raises
escapes. The CLI and the app use the same runner; they differ only in how they observe its events.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from workbench.core.errors import Cancelled, InputError, JobFailed, WorkbenchError
from workbench.core.jobs.events import FINISHED, QUEUED, STARTED, EventBus, JobEvent
from workbench.core.jobs.registry import Registry, registry
from workbench.core.jobs.session import Session


@dataclass
class JobRequest:
    """What to run: a job by name with raw or typed parameters, on an input variant of the workspace."""

    job: str
    params: dict[str, Any] = field(default_factory=dict)
    input_variant: str | None = None
    device: str = "auto"
    seed: int = 0


@dataclass
class RunOutcome:
    status: str  # "ok" | "failed" | "cancelled"
    variant: str | None = None
    error: str | None = None
    traceback: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    input_variant: str | None = None
    marks: list[str] = field(default_factory=list)
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    bad_input: bool = False  # the failure was the user's input (exit code 2 in batch mode)


class RunHandle:
    """A queued or running job; ``cancel()`` is honoured between steps (within a second in training)."""

    def __init__(self, run_id: int, request: JobRequest) -> None:
        self.run_id = run_id
        self.request = request
        self.cancel_event = threading.Event()
        self.done_event = threading.Event()
        self.outcome: RunOutcome | None = None

    def cancel(self) -> None:
        self.cancel_event.set()

    def wait(self, timeout: float | None = None) -> RunOutcome | None:
        self.done_event.wait(timeout)
        return self.outcome


class _Worker(threading.Thread):
    def __init__(self, runner: Runner, device: str) -> None:
        super().__init__(name=f"workbench-worker-{device}", daemon=True)
        self.runner = runner
        self.device = device
        self.queue: queue.Queue[RunHandle | None] = queue.Queue()
        self.current: RunHandle | None = None

    def run(self) -> None:
        while True:
            handle = self.queue.get()
            if handle is None:
                return
            self.current = handle
            try:
                self.runner._execute(handle, self.device)
            except BaseException as exc:  # noqa: BLE001 - last line of defence: the worker never dies
                handle.outcome = RunOutcome("failed", error=f"internal error: {exc}",
                                            traceback=traceback.format_exc())
            finally:
                self.current = None
                handle.done_event.set()


class Runner:
    """Queues job requests per device and executes them against a session (workspace + dataset)."""

    def __init__(self, session: Session, bus: EventBus | None = None, plugins: Registry | None = None) -> None:
        self.session = session
        self.bus = bus or EventBus()
        self.plugins = plugins or registry()
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._handles: list[RunHandle] = []

    def _queued(self, request: JobRequest) -> tuple[RunHandle, str]:
        """A handle for a new request on its resolved device, announced to the observers."""
        device = self.session.resolve_device(request.device)
        handle = RunHandle(next(self._ids), request)
        with self._lock:
            self._handles.append(handle)
        self.bus.emit(JobEvent(QUEUED, handle.run_id, request.job,
                               {"params": request.params, "input": request.input_variant, "device": device}))
        return handle, device

    def submit(self, request: JobRequest) -> RunHandle:
        """Queue a request on its device's worker; returns at once."""
        handle, device = self._queued(request)
        with self._lock:
            worker = self._workers.get(device)
            if worker is None or not worker.is_alive():
                worker = self._workers[device] = _Worker(self, device)
                worker.start()
        worker.queue.put(handle)
        return handle

    def run(self, request: JobRequest, inline: bool = False) -> RunOutcome:
        """Submit and wait. ``inline`` runs the job on the calling thread instead (batch mode, where the main
        thread has nothing else to do): PyTorch's CPU thread pool is per calling thread, and a second pool beside
        the main thread's costs CPU training 10-30% on small machines."""
        if not inline:
            handle = self.submit(request)
            outcome = handle.wait()
            assert outcome is not None
            return outcome
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
            workers = list(self._workers.values())
        for w in workers:
            w.queue.put(None)
        if wait:
            for w in workers:
                w.join(timeout=10)

    def _execute(self, handle: RunHandle, device: str) -> None:
        request, session = handle.request, self.session
        start = time.perf_counter()
        outcome = RunOutcome("failed", params=dict(request.params), input_variant=request.input_variant)
        ws_run = None
        ctx = None
        try:
            if handle.cancel_event.is_set():
                raise Cancelled("cancelled before it started")
            job_class = self.plugins.load(request.job)
            job = job_class(**request.params)
            outcome.params = job.values
            input_id = request.input_variant or session.latest_variant_id()
            outcome.input_variant = input_id
            ws_run = session.workspace.start_run(request.job, job.values, input_id, device)
            self.bus.emit(JobEvent(STARTED, handle.run_id, request.job,
                                   {"params": job.values, "input": input_id, "device": device}))
            ctx = session.make_context(handle, job_class, input_id, device, self.bus.emit, request.seed)
            returned = job.run(ctx)
            ctx.check_cancelled()
            if returned is None:
                outcome.metrics = dict(ctx.result.get("metrics", {}))
                outcome.variant = input_id
            else:
                variant = session.save_result(returned, ctx, job, input_id, device)
                outcome.variant, outcome.metrics = variant.id, dict(variant.metrics)
            if ctx.recorded:
                session.workspace.update_metrics(outcome.variant, ctx.recorded)
                outcome.metrics.update(ctx.recorded)
            outcome.status = "ok"
        except Cancelled as exc:
            outcome.status, outcome.error = "cancelled", str(exc)
        except (InputError, JobFailed, WorkbenchError) as exc:
            outcome.error = str(exc)
            outcome.bad_input = isinstance(exc, InputError)
            outcome.traceback = traceback.format_exc()
        except Exception as exc:  # noqa: BLE001 - a plugin may raise anything; it fails the job only
            outcome.error = _describe(exc, request.job)
            outcome.traceback = traceback.format_exc()
        finally:
            outcome.seconds = time.perf_counter() - start
            if ctx is not None:
                outcome.result = {k: v for k, v in ctx.result.items() if k != "metrics"}
                outcome.marks = list(ctx.marks)
                outcome.history = list(ctx.history)
            if ws_run is not None:
                try:
                    if ctx is not None:
                        session.workspace.add_metrics(ws_run, ctx.history)
                    session.workspace.finish_run(ws_run, outcome.status, outcome.variant, outcome.error,
                                                 outcome.seconds, outcome.result)
                except Exception:  # noqa: BLE001 - bookkeeping must not mask the outcome
                    pass
            if ctx is not None:
                session.release_context(ctx)
            handle.outcome = outcome
            self.bus.emit(JobEvent(FINISHED, handle.run_id, request.job, {
                "status": outcome.status, "variant": outcome.variant, "error": outcome.error,
                "traceback": outcome.traceback, "metrics": outcome.metrics, "seconds": outcome.seconds,
                "result": outcome.result, "marks": outcome.marks}))


def _describe(exc: BaseException, job: str) -> str:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return f"job {job}: out of GPU memory (try a smaller batch_size or auto_batch=true)"
    if isinstance(exc, MemoryError):
        return f"job {job}: out of memory"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"job {job} raised {type(exc).__name__}: {text}" if text else f"job {job} raised {type(exc).__name__}"
