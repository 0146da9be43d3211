"""Faults injected into jobs through test hooks: each fails (or recovers) one step, clearly, and the runner, the
workspace and every saved variant survive it. One test per case of ``cases.FAULTS``.
"""

from __future__ import annotations

import errno
import re
import time

import pytest
import torch

from tests.reliability.cases import FAULTS
from workbench.core.execution.runner import JobRequest
from workbench.core.jobs.events import LOG, STARTED
from workbench.core.jobs.registry import registry
from workbench.plugin import Job


class _Raises(Job):
    name = "rel_raises"

    def run(self, ctx):
        raise ValueError("boom")


class _ReturnsText(Job):
    name = "rel_returns_text"

    def run(self, ctx):
        return "not a model"


class _WrongShape(Job):
    name = "rel_wrong_shape"

    def run(self, ctx):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))


class _CudaOom(Job):
    name = "rel_cuda_oom"

    def run(self, ctx):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


class _HostOom(Job):
    name = "rel_host_oom"

    def run(self, ctx):
        raise MemoryError()


class _Hangs(Job):
    name = "rel_hangs"

    def run(self, ctx):
        while True:
            ctx.check_cancelled()
            time.sleep(0.01)


class _Ok(Job):
    name = "rel_ok"
    produces_variant = False

    def run(self, ctx):
        ctx.report_metrics({"accuracy": 1.0})


for _cls in (_Raises, _ReturnsText, _WrongShape, _CudaOom, _HostOom, _Hangs, _Ok):
    registry().register(_cls)


@pytest.fixture
def env(make_session, runner_for):
    """A session on digits 8x8 with a root MLP, its runner, and a check that nothing saved was lost."""
    session, root = make_session()
    runner = runner_for(session)

    def intact(expected_ids: list[str]) -> None:
        ws = session.workspace
        assert [v.id for v in ws.variants()] == expected_ids
        assert not list(ws.variants_dir.glob(".tmp-*"))
        assert ws.integrity_ok()
        for vid in expected_ids:
            model = session.load_variant(vid)
            assert model(session.data.example_batch(2)).shape == (2, 10)
        assert runner.run(JobRequest("rel_ok", {}, root, "cpu")).status == "ok"  # the runner still works

    return session, runner, root, intact


def _fails(runner, job: str, root: str, params=None, pattern: str = "") -> str:
    outcome = runner.run(JobRequest(job, params or {}, root, "cpu"))
    assert outcome.status == "failed", outcome
    assert "\n" not in outcome.error
    assert re.search(pattern, outcome.error), outcome.error
    return outcome.error


def test_every_fault_has_a_test():
    assert all(f"test_fault_{c.id}" in globals() for c in FAULTS)


def test_fault_job_raises(env):
    session, runner, root, intact = env
    _fails(runner, "rel_raises", root, pattern=r"job rel_raises raised ValueError: boom")
    intact([root])


def test_fault_nan_loss(env):
    session, runner, root, intact = env
    _fails(runner, "train", root, {"lr": 1e6, "optimizer": "sgd", "epochs": 2, "diverge_factor": 0},
           r"non-finite loss \(\S+\) at epoch 1, step \d+")
    intact([root])


def test_fault_diverging_loss(env):
    session, runner, root, intact = env
    _fails(runner, "train", root, {"lr": 1e6, "epochs": 2},
           r"the loss diverged at epoch 1, step \d+: smoothed \S+, over 100x its start")
    intact([root])


def test_fault_non_model_return(env):
    session, runner, root, intact = env
    _fails(runner, "rel_returns_text", root, pattern=r"returned a str, not a model")
    intact([root])


def test_fault_wrong_shape_return(env):
    session, runner, root, intact = env
    _fails(runner, "rel_wrong_shape", root, pattern=r"output is \(4, 3\), expected \(4, 10\)")
    intact([root])


def test_fault_cuda_oom(env):
    session, runner, root, intact = env
    _fails(runner, "rel_cuda_oom", root, pattern=r"out of GPU memory \(try a smaller batch_size or auto_batch=true\)")
    intact([root])


def test_fault_host_oom(env):
    session, runner, root, intact = env
    _fails(runner, "rel_host_oom", root, pattern=r"job rel_host_oom: out of memory")
    intact([root])


def test_fault_oom_auto_batch(env, monkeypatch):
    """The first batch of 32 runs out of memory; auto_batch halves it and the epoch restarts."""
    from workbench_plugins.train import TrainJob

    session, runner, root, intact = env
    original, sizes = TrainJob._loss, []

    def loss(self, model, x, y):
        sizes.append(x.shape[0])
        if x.shape[0] > 16:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, model, x, y)

    monkeypatch.setattr(TrainJob, "_loss", loss)
    warnings = []
    runner.bus.subscribe(lambda e: warnings.append(e.data["message"])
                         if e.kind == LOG and e.data.get("level") == "warning" else None)
    outcome = runner.run(JobRequest("train", {"epochs": 1, "batch_size": 32, "auto_batch": True}, root, "cpu"))
    assert outcome.status == "ok", outcome.error
    assert sizes[0] == 32 and max(sizes[1:]) == 16
    assert any("batch size halved to 16" in w for w in warnings), warnings
    intact([root, outcome.variant])


def test_fault_disk_full_on_save(env, monkeypatch):
    from workbench.core.workspace import store

    session, runner, root, intact = env
    first = runner.run(JobRequest("train", {"epochs": 1}, root, "cpu"))
    assert first.status == "ok"

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(store, "atomic_write_text", full)
        _fails(runner, "train", first.variant, {"epochs": 1}, r"No space left on device")
    intact([root, first.variant])


def test_fault_readonly_on_save(env, monkeypatch):
    from workbench.core.models import serialize

    session, runner, root, intact = env

    def readonly(path, data):
        if path.name == "model.safetensors":
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return original(path, data)

    original = serialize.atomic_write_bytes
    with monkeypatch.context() as m:
        m.setattr(serialize, "atomic_write_bytes", readonly)
        _fails(runner, "train", root, {"epochs": 1}, r"Read-only file system")
    intact([root])


def test_fault_hang_cancel(env):
    session, runner, root, intact = env
    started = []
    runner.bus.subscribe(lambda e: started.append(e.run_id) if e.kind == STARTED else None)
    handle = runner.submit(JobRequest("rel_hangs", {}, root, "cpu"))
    deadline = time.monotonic() + 60
    while handle.run_id not in started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert handle.run_id in started
    assert not handle.done_event.is_set()
    handle.cancel()
    outcome = handle.wait(timeout=30)
    assert outcome is not None and outcome.status == "cancelled"
    intact([root])
