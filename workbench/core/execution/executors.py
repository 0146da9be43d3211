"""Executors: where and how a request runs. The seam the runner, batch mode and the app share.

- ``InlineExecutor`` runs a request in this process, on the calling thread (debugging, ``--inline``, tests that
  register job classes by hand); ``local_executor`` builds one that hands data-parallel jobs to the distributed
  executor.
- ``DistributedExecutor`` (``workbench.core.execution.distributed``) runs ``Job.run`` in torch.distributed ranks
  and saves rank 0's model here.
- ``ProcessExecutor`` (``workbench.core.execution.process``) runs requests in a worker process that hosts an
  ``InlineExecutor``: a job that crashes its process fails alone.

Every executor answers ``execute(handle, device, emit) -> RunOutcome`` and never raises for a job's failure.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any, Protocol

from workbench.core.errors import Cancelled, InputError, JobFailed, WorkbenchError
from workbench.core.execution.requests import OpenModelRequest, RunHandle, RunOutcome
from workbench.core.jobs.events import FINISHED, STARTED, JobEvent
from workbench.core.jobs.registry import Registry, registry

Emit = Callable[[JobEvent], None]


class Executor(Protocol):
    def execute(self, handle: RunHandle, device: str, emit: Emit) -> RunOutcome: ...

    def close(self) -> None: ...


class InlineExecutor:
    """Runs requests against ``session`` in this process."""

    def __init__(self, session: Any, plugins: Registry | None = None, launch: Any = None,
                 route: Callable[[Any], InlineExecutor | None] | None = None) -> None:
        self.session = session
        self.plugins = plugins or registry()
        self.launch = launch  # LaunchOptions for data-parallel jobs (None: the defaults)
        self.route = route    # another executor for some jobs (see ``local_executor``)

    def close(self) -> None:
        pass

    def invoke(self, job: Any, ctx: Any) -> Any:
        """Run the job's own code; the distributed executor overrides this to run it in ranks."""
        return job.run(ctx)

    def _for(self, job: Any) -> InlineExecutor:
        other = self.route(job) if self.route is not None else None
        return other or self

    def execute(self, handle: RunHandle, device: str, emit: Emit) -> RunOutcome:
        request, session = handle.request, self.session
        start = time.perf_counter()
        outcome = RunOutcome("failed", params=dict(request.params), input_variant=getattr(request, "input_variant", None))
        ws_run = None
        ctx = None
        try:
            if handle.cancel_event.is_set():
                raise Cancelled("cancelled before it started")
            if isinstance(request, OpenModelRequest):
                emit(JobEvent(STARTED, handle.run_id, "load", {"params": request.params, "input": None,
                                                               "device": device}))
                variant = session.open_root(request.model, request.weights, device)
                outcome.variant, outcome.metrics, outcome.status = variant.id, dict(variant.metrics), "ok"
                return outcome
            job_class = self.plugins.load(request.job)
            job = job_class(**request.params)
            outcome.params = job.values
            input_id = request.input_variant or session.latest_variant_id()
            outcome.input_variant = input_id
            ws_run = session.workspace.start_run(request.job, job.values, input_id, device)
            emit(JobEvent(STARTED, handle.run_id, request.job,
                          {"params": job.values, "input": input_id, "device": device, "record": ws_run}))
            ctx = session.make_context(handle.run_id, handle.cancel_event, job_class, input_id, device, emit,
                                       request.seed, self.plugins)
            returned = self._for(job).invoke(job, ctx)
            ctx.check_cancelled()
            if returned is None:
                outcome.variant = input_id
                outcome.metrics = dict(ctx.reported)
            else:
                variant = session.save_result(returned, ctx, job, input_id, device)
                outcome.variant, outcome.metrics = variant.id, {**variant.metrics, **ctx.reported}
            if ctx.stored:
                session.workspace.update_metrics(outcome.variant, ctx.stored)
            outcome.status = "ok"
        except Cancelled as exc:
            outcome.status, outcome.error = "cancelled", str(exc)
        except (InputError, JobFailed, WorkbenchError) as exc:
            outcome.error = str(exc)
            outcome.bad_input = isinstance(exc, InputError)
            outcome.traceback = traceback.format_exc()
        except Exception as exc:  # noqa: BLE001 - a plugin may raise anything; it fails the job only
            outcome.error = describe_exception(exc, request.job)
            outcome.traceback = traceback.format_exc()
        finally:
            outcome.seconds = time.perf_counter() - start
            if ctx is not None:
                outcome.result = dict(ctx.result)
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
            emit(finished_event(handle.run_id, request.job, outcome))
        return outcome


def finished_event(run_id: int, job: str, outcome: RunOutcome) -> JobEvent:
    return JobEvent(FINISHED, run_id, job, {
        "status": outcome.status, "variant": outcome.variant, "error": outcome.error,
        "traceback": outcome.traceback, "metrics": outcome.metrics, "seconds": outcome.seconds,
        "result": outcome.result, "marks": outcome.marks})


def describe_exception(exc: BaseException, job: str) -> str:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return f"job {job}: out of GPU memory (try a smaller batch_size or auto_batch=true)"
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and any(
            text in str(exc) for text in ("can't allocate memory", "not enough memory", "out of memory"))):
        return f"job {job}: out of memory ({str(exc).strip().splitlines()[0][:120]})" if str(exc).strip() \
            else f"job {job}: out of memory"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"job {job} raised {type(exc).__name__}: {text}" if text else f"job {job} raised {type(exc).__name__}"
