"""Shared fixtures: small sessions on real data, so core tests are quick and need no display."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# latency figures are not what most tests check: a short measuring budget keeps the suite fast (the paired
# comparison's own tests and the benchmarks use the full one)
os.environ.setdefault("WORKBENCH_MEASURE_SECONDS", "0.2")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def make_session(tmp_path):
    """Build a Session on a dataset with a root variant from a model spec; returns (session, root_id)."""
    from workbench.core.batch import open_session
    from workbench.core.pipeline import Pipeline

    sessions = []

    def make(model: str = "zoo:mlp:hidden=32", dataset: str = "digits:size=8", seed: int = 0, out=None):
        pipe = Pipeline(model=model, dataset=dataset, seed=seed, device="cpu", out=str(out or tmp_path / "ws"))
        session, root = open_session(pipe)
        sessions.append(session)
        return session, root

    yield make
    for s in sessions:
        s.workspace.close()


@pytest.fixture
def runner_for():
    from workbench.core.execution.runner import Runner

    runners = []

    def make(session):
        r = Runner(session)
        runners.append(r)
        return r

    yield make
    for r in runners:
        r.shutdown()


def run_cli(*args: str, timeout: int = 300, cwd=None):
    """Run the installed ``workbench`` command; returns the CompletedProcess."""
    import subprocess

    exe = Path(sys.executable).parent / "workbench"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)
