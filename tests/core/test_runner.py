"""The runner: worker threads, events, cancel, failures that never take the process down."""

import threading
import time

import torch

from workbench.core.execution.runner import JobRequest
from workbench.core.jobs.events import FINISHED, METRIC, STARTED
from workbench.core.jobs.registry import registry
from workbench.plugin import Job, Param


class SlowJob(Job):
    name = "test_slow"
    steps: int = Param(10_000, min=1)

    def run(self, ctx):
        for i in range(self.steps):
            ctx.check_cancelled()
            ctx.log(step=i, value=float(i))
            time.sleep(0.01)
        return ctx.model


class RaisingJob(Job):
    name = "test_raises"

    def run(self, ctx):
        raise ValueError("boom from a plugin")


class BadReturnJob(Job):
    name = "test_bad_return"

    def run(self, ctx):
        return "not a model"


class WrongShapeJob(Job):
    name = "test_wrong_shape"

    def run(self, ctx):
        return torch.nn.Linear(3, 3)


class ThreadJob(Job):
    name = "test_thread"
    produces_variant = False

    def run(self, ctx):
        ctx.result["thread"] = threading.current_thread().name
        ctx.report_metrics({"accuracy": 1.0})


for cls in (SlowJob, RaisingJob, BadReturnJob, WrongShapeJob, ThreadJob):
    registry().register(cls)


def test_jobs_run_on_the_device_worker_thread(make_session, runner_for):
    session, root = make_session()
    runner = runner_for(session)
    out = runner.submit(JobRequest("test_thread", {}, root, "cpu")).wait()
    assert out.status == "ok" and out.result["thread"] == "workbench-worker-cpu"
    assert out.variant == root and out.metrics == {"accuracy": 1.0}


def test_cancel_takes_effect_within_a_second_and_adds_no_variant(make_session, runner_for):
    session, root = make_session()
    runner = runner_for(session)
    events = []
    runner.bus.subscribe(events.append)
    handle = runner.submit(JobRequest("test_slow", {}, root, "cpu"))
    deadline = time.time() + 30
    while not any(e.kind == METRIC for e in events) and time.time() < deadline:
        time.sleep(0.01)
    t0 = time.perf_counter()
    handle.cancel()
    outcome = handle.wait(10)
    assert time.perf_counter() - t0 < 1.0
    assert outcome.status == "cancelled"
    assert [v.id for v in session.workspace.variants()] == [root]
    assert events[-1].kind == FINISHED and events[-1].data["status"] == "cancelled"


def test_a_raising_plugin_fails_its_job_only(make_session, runner_for):
    session, root = make_session()
    runner = runner_for(session)
    out = runner.run(JobRequest("test_raises", {}, root, "cpu"))
    assert out.status == "failed" and "boom from a plugin" in out.error and "ValueError" in out.traceback
    again = runner.run(JobRequest("test_thread", {}, root, "cpu"))
    assert again.status == "ok"


def test_returned_values_are_checked_before_becoming_variants(make_session, runner_for):
    session, root = make_session()
    runner = runner_for(session)
    bad = runner.run(JobRequest("test_bad_return", {}, root, "cpu"))
    assert bad.status == "failed" and "not a model" in bad.error
    wrong = runner.run(JobRequest("test_wrong_shape", {}, root, "cpu"))
    assert wrong.status == "failed" and "fails on a test batch" in wrong.error
    assert len(session.workspace.variants()) == 1


def test_queue_runs_in_order_and_events_flow(make_session, runner_for):
    session, root = make_session()
    runner = runner_for(session)
    events = []
    runner.bus.subscribe(events.append)
    handles = [runner.submit(JobRequest("test_slow", {"steps": 3}, root, "cpu")) for _ in range(3)]
    outcomes = [h.wait(60) for h in handles]
    assert [o.status for o in outcomes] == ["ok"] * 3
    started = [e.run_id for e in events if e.kind == STARTED]
    assert started == [h.run_id for h in handles]
    assert len(session.workspace.variants()) == 4
    history = session.workspace.metric_history(1)
    assert [v for _, v in history["value"]] == [0.0, 1.0, 2.0]


def test_unknown_job_and_bad_params_fail_as_bad_input(make_session, runner_for):
    session, root = make_session()
    runner = runner_for(session)
    out = runner.run(JobRequest("no_such_job", {}, root, "cpu"))
    assert out.status == "failed" and out.bad_input and "unknown job" in out.error
    out = runner.run(JobRequest("train", {"epochs": "-1"}, root, "cpu"))
    assert out.bad_input and "epochs" in out.error
