"""Jobs in a worker process: started once per device, reused, restarted after it dies.

The parent (the app, or batch mode) sends requests over a socket pair and re-emits the events the worker streams
back, so plots and progress bars work as with a job in this process. A worker that dies (a segfault, an
out-of-memory kill, ``os._exit``) fails only its job, with the cause in words; the workspace stays sound because
the worker writes variants atomically and this side then records the run as failed and removes what the dead
worker left half-written. Cancel is cooperative first; a job that has not stopped a second later is killed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from workbench.core.execution.executors import Emit, finished_event
from workbench.core.execution.requests import RunHandle, RunOutcome
from workbench.core.jobs.events import METRIC, STARTED
from workbench.core.jobs.registry import Registry, registry

CANCEL_GRACE_S = 1.0
START_TIMEOUT_S = 120.0


def describe_exit(code: int) -> str:
    """The cause of a worker's death, in words: "killed by signal 11 (SIGSEGV)"."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        text = f"the job's process was killed by signal {-code} ({name})"
        if -code == signal.SIGKILL:
            text += ": the system may have run out of memory"
        return text
    return f"the job's process exited with code {code}"


def worker_command(endpoint: str) -> list[str]:
    if getattr(sys, "frozen", False):
        return [sys.executable, "--worker", endpoint]
    return [sys.executable, "-m", "workbench.core.execution.worker", endpoint]


class _Worker:
    """One live worker process and its connection."""

    def __init__(self, config: Any, log_path: Path) -> None:
        from multiprocessing.connection import Connection

        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        parent_sock, child_sock = socket.socketpair()
        try:
            self.proc = subprocess.Popen(worker_command(str(child_sock.fileno())), stdin=subprocess.DEVNULL,
                                         stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                         pass_fds=(child_sock.fileno(),))
        finally:
            child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.conn.send(config)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.conn.poll(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the worker process did not start ({describe_exit(self.proc.wait())}): "
                                   f"{self.last_log_line()}")
        kind, self.pid = self.conn.recv()
        assert kind == "ready"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> int:
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait()
        self.close_files()
        return code

    def stop(self, timeout: float = 5.0) -> None:
        try:
            self.conn.send(("stop",))
            self.proc.wait(timeout=timeout)
        except (OSError, EOFError, subprocess.TimeoutExpired):
            self.kill()
        self.close_files()

    def close_files(self) -> None:
        for closer in (self.conn.close, self._log.close):
            try:
                closer()
            except OSError:
                pass

    def last_log_line(self) -> str:
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1].strip()[:200] if lines else ""


class ProcessExecutor:
    """Runs requests in a worker process of its own (one per device: the runner makes one executor per device)."""

    def __init__(self, session: Any, plugins: Registry | None = None, launch: Any = None) -> None:
        self.session = session
        self.plugins = plugins or registry()
        self.launch = launch
        self._worker: _Worker | None = None
        self._lock = threading.Lock()

    # the worker's life ----------------------------------------------------------------------------------------
    def _config(self) -> Any:
        from workbench.core.execution.worker import WorkerConfig
        from workbench.core.jobs.devplugins import loaded_folders
        from workbench.core.variants.timing import fixed_threads

        registered = [(p.job, p.target) for p in self.plugins.plugins()
                      if p.origin == "registered" and p.job_class is not None]
        return WorkerConfig(session=self.session.spec, plugin_folders=[str(f) for f in loaded_folders()],
                            registered=registered, disabled=sorted(self.plugins.disabled),
                            sys_path=[p for p in sys.path if p], launch=self.launch, threads=fixed_threads())

    def _ensure(self) -> _Worker:
        if self._worker is None or not self._worker.alive():
            if self._worker is not None:
                self._worker.kill()
            log = self.session.workspace.root / ".scratch" / f"worker-{os.getpid()}.log"
            self._worker = _Worker(self._config(), log)
        return self._worker

    def start(self) -> None:
        """Start the worker now (the app does, so the first job does not wait for its imports)."""
        with self._lock:
            self._ensure()

    def close(self) -> None:
        with self._lock:
            if self._worker is not None:
                self._worker.stop()
                self._worker = None

    # one request ---------------------------------------------------------------------------------------------
    def execute(self, handle: RunHandle, device: str, emit: Emit) -> RunOutcome:
        with self._lock:
            return self._execute(handle, device, emit)

    def _execute(self, handle: RunHandle, device: str, emit: Emit) -> RunOutcome:
        request = handle.request
        start = time.perf_counter()
        try:
            worker = self._ensure()
            worker.conn.send(("run", handle.run_id, request, device))
        except Exception as exc:  # noqa: BLE001 - no worker: this job fails, the next one tries again
            return self._failed(handle, emit, f"job {request.job}: {exc}", None, [], start)
        record: int | None = None
        history: list[tuple[int, dict[str, float]]] = []
        cancel_sent = None
        while True:
            try:
                ready = worker.conn.poll(0.05)
                message = worker.conn.recv() if ready else None
            except (EOFError, OSError):
                message, ready = None, False
            if message is not None:
                if message[0] == "event":
                    event = message[1]
                    if event.kind == STARTED:
                        record = event.data.get("record")
                    elif event.kind == METRIC:
                        history.append((event.data["step"], event.data["metrics"]))
                    emit(event)
                elif message[0] == "outcome":
                    return message[2]
                continue
            if not worker.alive():
                code = worker.kill()
                self._worker = None
                return self._failed(handle, emit, f"job {request.job}: {describe_exit(code)}", record, history,
                                    start, pid=worker.pid)
            if handle.cancel_event.is_set():
                now = time.monotonic()
                if cancel_sent is None:
                    cancel_sent = now
                    try:
                        worker.conn.send(("cancel", handle.run_id))
                    except OSError:
                        pass
                elif now - cancel_sent > CANCEL_GRACE_S:
                    worker.kill()
                    self._worker = None
                    return self._failed(handle, emit, f"cancelled: job {request.job} did not stop within "
                                        f"{CANCEL_GRACE_S:.0f} s, so its process was stopped", record, history,
                                        start, pid=worker.pid, status="cancelled")

    def _failed(self, handle: RunHandle, emit: Emit, error: str, record: int | None,
                history: list[tuple[int, dict[str, float]]], start: float, pid: int | None = None,
                status: str = "failed") -> RunOutcome:
        """The outcome of a job whose process died: recorded in the workspace, announced like any other end."""
        outcome = RunOutcome(status, error=error, params=dict(handle.request.params),
                             input_variant=getattr(handle.request, "input_variant", None), history=history,
                             seconds=time.perf_counter() - start)
        workspace = self.session.workspace
        if pid is not None:
            workspace.remove_leftovers_of(pid)
        if record is not None:
            try:
                workspace.add_metrics(record, history)
                workspace.finish_run(record, status, None, error, outcome.seconds, {})
            except Exception:  # noqa: BLE001 - bookkeeping must not mask the outcome
                pass
        emit(finished_event(handle.run_id, handle.request.job, outcome))
        return outcome
