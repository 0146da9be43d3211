"""Jobs in a worker process: a crash, a kill, a hang or an out-of-memory fails that job only, the workspace stays
sound, the worker comes back for the next job, and events still stream to the parent."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time

import pytest

from workbench.core.execution.process import describe_exit
from workbench.core.execution.runner import JobRequest, Runner
from workbench.core.jobs.devplugins import load_plugin_folders
from workbench.core.jobs.events import FINISHED, METRIC
from workbench.core.jobs.registry import registry

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="signals and socket pairs are POSIX here")

PLUGINS = '''
import ctypes
import os
import time

import torch
from torch import nn

from workbench.plugin import Job, Param


class Crash(Job):
    name = "wp_crash"
    produces_variant = False
    how: str = Param("segfault", help="segfault | exit")

    def run(self, ctx):
        ctx.log(step=1, before_crash=1.0)
        time.sleep(0.2)
        if self.how == "exit":
            os._exit(3)
        ctypes.string_at(0)


class Sleep(Job):
    name = "wp_sleep"
    produces_variant = False
    seconds: float = Param(600.0, min=0.0, max=1e6)
    cooperative: bool = Param(False)

    def run(self, ctx):
        ctx.log(step=1, pid=float(os.getpid()))
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            if self.cooperative:
                ctx.check_cancelled()
            time.sleep(0.02)


class SlowForward(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        time.sleep(0.05)
        return self.inner(x)


class SlowSave(Job):
    name = "wp_slow_save"

    def run(self, ctx):
        return SlowForward(ctx.model)


class Hog(Job):
    name = "wp_hog"
    produces_variant = False
    kind: str = Param("python", help="python | torch")

    def run(self, ctx):
        if self.kind == "torch":
            torch.empty(1 << 50, dtype=torch.uint8)
        bytearray(1 << 50)


class Steps(Job):
    name = "wp_steps"

    def run(self, ctx):
        for i in range(5):
            ctx.log(step=i, value=float(i), pid=float(os.getpid()))
        return ctx.model
'''


@pytest.fixture
def worker_runner(make_session, tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "worker_jobs.py").write_text(textwrap.dedent(PLUGINS))
    load_plugin_folders([folder])
    session, root = make_session(model="zoo:mlp:hidden=16")
    runner = Runner(session, executor="process")
    events = []
    runner.bus.subscribe(events.append)
    yield runner, session, root, events
    runner.shutdown()
    for name in ("wp_crash", "wp_sleep", "wp_slow_save", "wp_hog", "wp_steps"):
        registry().unregister(name)


def _sound(session, variants_before: int) -> None:
    ws = session.workspace
    assert ws.integrity_ok()
    assert len(ws.variants()) == variants_before
    assert not list(ws.variants_dir.glob(".tmp-*")), "a half-written variant was left behind"


def test_jobs_run_in_another_process_and_stream_their_events(worker_runner):
    runner, session, root, events = worker_runner
    outcome = runner.run(JobRequest("wp_steps", {}, root, "cpu"))
    assert outcome.status == "ok", outcome.error
    metrics = [e.data["metrics"] for e in events if e.kind == METRIC]
    assert [m["value"] for m in metrics] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert {m["pid"] for m in metrics} != {float(os.getpid())}, "the job ran in the parent process"
    assert outcome.variant == "v0002" and "latency_ms_ci" in outcome.metrics
    assert outcome.metrics["speedup"]["vs"] == root


def test_a_segfault_fails_only_its_job_and_the_worker_comes_back(worker_runner):
    runner, session, root, events = worker_runner
    outcome = runner.run(JobRequest("wp_crash", {}, root, "cpu"))
    assert outcome.status == "failed"
    assert "killed by signal 11 (SIGSEGV)" in outcome.error
    assert [e for e in events if e.kind == FINISHED][-1].data["status"] == "failed"
    assert outcome.history and outcome.history[0][1]["before_crash"] == 1.0
    run = session.workspace.runs()[-1]
    assert run["status"] == "failed" and "SIGSEGV" in run["error"]
    _sound(session, 1)
    again = runner.run(JobRequest("wp_steps", {}, root, "cpu"))
    assert again.status == "ok", again.error


def test_an_exit_call_is_named_with_its_code(worker_runner):
    runner, session, root, _ = worker_runner
    outcome = runner.run(JobRequest("wp_crash", {"how": "exit"}, root, "cpu"))
    assert outcome.status == "failed" and "exited with code 3" in outcome.error


def _worker_pid(events, timeout: float = 60.0) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for e in list(events):
            if e.kind == METRIC and "pid" in e.data["metrics"]:
                return int(e.data["metrics"]["pid"])
        time.sleep(0.02)
    raise AssertionError("the job never reported its pid")


def test_a_worker_killed_mid_job(worker_runner):
    runner, session, root, events = worker_runner
    handle = runner.submit(JobRequest("wp_sleep", {}, root, "cpu"))
    os.kill(_worker_pid(events), signal.SIGKILL)
    outcome = handle.wait(30)
    assert outcome is not None and outcome.status == "failed"
    assert "signal 9 (SIGKILL)" in outcome.error and "out of memory" in outcome.error
    _sound(session, 1)
    assert runner.run(JobRequest("wp_steps", {}, root, "cpu")).status == "ok"


def test_a_worker_killed_mid_save_leaves_no_half_variant(worker_runner):
    runner, session, root, events = worker_runner
    assert runner.run(JobRequest("wp_steps", {}, root, "cpu")).status == "ok"  # the worker is up; its pid known
    pid = _worker_pid(events)
    handle = runner.submit(JobRequest("wp_slow_save", {}, "v0002", "cpu"))
    variants_dir = session.workspace.variants_dir
    end = time.monotonic() + 120
    while not list(variants_dir.glob(".tmp-*")) and time.monotonic() < end:
        time.sleep(0.01)
    assert list(variants_dir.glob(".tmp-*")), "the save never started"
    os.kill(pid, signal.SIGKILL)
    outcome = handle.wait(30)
    assert outcome is not None and outcome.status == "failed" and "SIGKILL" in outcome.error
    _sound(session, 2)
    from workbench.core.workspace import Workspace

    reopened = Workspace(session.workspace.root)  # and it opens again with everything saved before
    assert [v.id for v in reopened.variants()] == [root, "v0002"]
    reopened.close()


def test_a_hanging_job_is_stopped_within_a_second_or_two_of_cancel(worker_runner):
    runner, session, root, events = worker_runner
    handle = runner.submit(JobRequest("wp_sleep", {}, root, "cpu"))
    _worker_pid(events)
    start = time.monotonic()
    handle.cancel()
    outcome = handle.wait(30)
    assert outcome is not None and outcome.status == "cancelled"
    assert time.monotonic() - start < 3.0
    assert "did not stop" in outcome.error
    _sound(session, 1)
    assert runner.run(JobRequest("wp_steps", {}, root, "cpu")).status == "ok"


def test_a_cooperative_job_is_cancelled_without_killing_its_worker(worker_runner):
    runner, session, root, events = worker_runner
    handle = runner.submit(JobRequest("wp_sleep", {"cooperative": True}, root, "cpu"))
    pid = _worker_pid(events)
    start = time.monotonic()
    handle.cancel()
    outcome = handle.wait(30)
    assert outcome.status == "cancelled" and time.monotonic() - start < 1.0
    events.clear()
    runner.run(JobRequest("wp_sleep", {"seconds": 0.0}, root, "cpu"))
    assert _worker_pid(events) == pid, "the worker was restarted although the job stopped by itself"


@pytest.mark.parametrize("kind", ["python", "torch"])
def test_an_out_of_memory_job_fails_with_that_message(worker_runner, kind):
    runner, session, root, _ = worker_runner
    outcome = runner.run(JobRequest("wp_hog", {"kind": kind}, root, "cpu"))
    assert outcome.status == "failed" and "out of memory" in outcome.error
    _sound(session, 1)


def test_describe_exit_names_signals_and_codes():
    assert describe_exit(-11) == "the job's process was killed by signal 11 (SIGSEGV)"
    assert describe_exit(-9).startswith("the job's process was killed by signal 9 (SIGKILL)")
    assert describe_exit(2) == "the job's process exited with code 2"


def test_a_job_registered_by_hand_runs_in_the_worker(make_session):
    """Jobs registered in the parent (an importable class) are registered in the worker too."""
    from workbench_plugins.evaluate import EvaluateJob

    class Renamed(EvaluateJob):  # defined in a function: not importable, so the worker cannot have it
        name = "wp_local_only"

    registry().register(Renamed)
    session, root = make_session(model="zoo:mlp:hidden=16")
    runner = Runner(session, executor="process")
    try:
        outcome = runner.run(JobRequest("wp_local_only", {}, root, "cpu"))
    finally:
        runner.shutdown()
        registry().unregister("wp_local_only")
    assert outcome.status == "failed" and outcome.bad_input
    assert "wp_local_only" in outcome.error and "--inline" in outcome.error
