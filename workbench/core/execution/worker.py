"""The worker process: ``python -m workbench.core.execution.worker FD`` (``workbench --worker FD`` when frozen).

It reads its configuration (the session to reopen, the plugin folders and hand-registered jobs of its parent)
from the connection on file descriptor FD, then runs one request after another with an ``InlineExecutor``,
streaming every event back. A reader thread takes cancel requests while a job runs. The worker ends when its
parent closes the connection (so it never outlives the app), or when asked to stop.
"""

from __future__ import annotations

import faulthandler
import importlib
import os
import queue
import sys
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class WorkerConfig:
    """What the parent tells its worker, first thing on the connection."""

    session: Any  # SessionSpec
    plugin_folders: list[str] = field(default_factory=list)
    registered: list[tuple[str, str]] = field(default_factory=list)  # (job, "module:Qualname") registered by hand
    disabled: list[str] = field(default_factory=list)
    sys_path: list[str] = field(default_factory=list)
    launch: Any = None  # LaunchOptions
    threads: int = 0


def connect(argv: list[str]) -> Any:
    from multiprocessing.connection import Client, Connection

    target = argv[0]
    if target.isdigit():
        return Connection(int(target))
    return Client(target, authkey=bytes.fromhex(os.environ.pop("WORKBENCH_WORKER_KEY", "")))


def _setup(config: WorkerConfig) -> list[str]:
    """Make this process see the jobs its parent sees; returns the problems found (sent back as warnings)."""
    for entry in config.sys_path:
        if entry not in sys.path:
            sys.path.append(entry)
    import torch

    if config.threads > 0:
        torch.set_num_threads(config.threads)
    from workbench.core.jobs.devplugins import load_plugin_folders
    from workbench.core.jobs.registry import registry

    problems: list[str] = []
    reg = registry()
    reg.disabled.update(config.disabled)
    if config.plugin_folders:
        try:
            load_plugin_folders([__import__("pathlib").Path(p) for p in config.plugin_folders], into=reg)
        except Exception as exc:  # noqa: BLE001 - the parent already reported the folder's problems
            problems.append(f"plugin folders: {exc}")
    for name, target in config.registered:
        module_name, _, qualname = target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                obj = getattr(obj, part)
            reg.register(obj)
        except Exception:  # noqa: BLE001 - the job fails with a clear message if it is requested
            reg.record_failure(name, target, "registered",
                               f"it was registered by hand in the parent process and {target} cannot be imported "
                               "in a worker process (define it in a module or a plugin folder, or run --inline)")
    return problems


def serve(conn: Any) -> int:
    from workbench.core.execution.local import local_executor
    from workbench.core.execution.requests import RunHandle
    from workbench.core.execution.session import Session
    from workbench.core.jobs.registry import registry

    config: WorkerConfig = conn.recv()
    _setup(config)
    session = Session.from_spec(config.session)
    try:
        from workbench.core.execution.warmup import warm_up

        warm_up()  # the first job's lazy imports (the ONNX exporter), before it is asked for
    except Exception:  # noqa: BLE001 - only a speed-up
        pass
    executor = local_executor(session, registry(), config.launch)
    send_lock = threading.Lock()
    jobs: queue.Queue[tuple[int, Any, str] | None] = queue.Queue()
    handles: dict[int, RunHandle] = {}

    def send(message: tuple) -> None:
        with send_lock:
            try:
                conn.send(message)
            except (OSError, EOFError):
                os._exit(0)  # the parent is gone: nobody to work for

    def read() -> None:
        while True:
            try:
                message = conn.recv()
            except (OSError, EOFError):
                os._exit(0)  # the parent closed the connection (it exited, or stopped this worker)
            if message[0] == "run":
                jobs.put(message[1:])
            elif message[0] == "cancel":
                handle = handles.get(message[1])
                if handle is not None:
                    handle.cancel()
            elif message[0] == "stop":
                jobs.put(None)
                return

    threading.Thread(target=read, name="workbench-worker-reader", daemon=True).start()
    send(("ready", os.getpid()))
    while True:
        item = jobs.get()
        if item is None:
            session.workspace.close()
            return 0
        run_id, request, device = item
        handle = handles[run_id] = RunHandle(run_id, request)
        outcome = executor.execute(handle, device, lambda event: send(("event", _picklable(event))))
        handles.pop(run_id, None)
        send(("outcome", run_id, _picklable(outcome)))


def _picklable(obj: Any) -> Any:
    """``obj`` itself, or with its dict fields made JSON-plain when a job put something odd in them."""
    import pickle

    try:
        pickle.dumps(obj)
        return obj
    except Exception:  # noqa: BLE001 - a plugin's result may hold anything
        import dataclasses
        import json

        def plain(value: Any) -> Any:
            return json.loads(json.dumps(value, default=str))

        if dataclasses.is_dataclass(obj):
            fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
            return dataclasses.replace(obj, **{k: plain(v) for k, v in fields.items() if isinstance(v, dict | list)})
        return plain(obj)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    faulthandler.enable()  # a native crash leaves its Python stack in the worker's log
    return serve(connect(argv))


if __name__ == "__main__":
    sys.exit(main())
