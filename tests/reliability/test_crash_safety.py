"""Crash safety: a real batch run is SIGKILLed at random moments of training, export and quantization, always on
the same workspace. After every kill the workspace opens, SQLite's integrity check passes, every listed variant
has all its files and loads, no temporary folder became a variant, and ``train:resume=true`` continues from the
last completed epoch.
"""

from __future__ import annotations

import json
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.reliability.cases import KILLS
from workbench.core.models.loading import load_variant_folder
from workbench.core.workspace import Workspace

EXE = str(Path(sys.executable).parent / "workbench")
EPOCHS = 30
TRAIN = f"train:epochs={EPOCHS},resume=true"


def _last_run(ws: Path) -> tuple[str, str] | None:
    """(job, status) of the newest run row, read through a read-only connection while the batch writes."""
    db = ws / "workspace.sqlite"
    if not db.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT job, status FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None


def _running(ws: Path, job: str) -> Callable[[], bool]:
    return lambda: _last_run(ws) == (job, "running")


def _checkpoint(ws: Path) -> Path | None:
    found = sorted((ws / "checkpoints").glob("train-*.pt")) if (ws / "checkpoints").exists() else []
    return found[0] if found else None


def _checkpoint_epoch(ws: Path) -> int:
    path = _checkpoint(ws)
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"]) if path else 0


def _epoch_at_least(ws: Path, n: int) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            return _checkpoint_epoch(ws) >= n
        except Exception:  # noqa: BLE001 - atomic writes make this rare; poll again
            return False
    return ready


def _children(pid: int) -> list[int]:
    """The batch's worker processes (Linux /proc), which notice their parent's death and exit on their own."""
    found: list[int] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(stat.parent.name))
    return found


def _wait_gone(pids: list[int], timeout: float = 30.0) -> None:
    """Until every pid has exited (a zombie counts: it no longer writes); fails if a worker outlives its parent."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while True:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
            except (OSError, IndexError):
                break
            if state in ("Z", "X"):
                break
            assert time.monotonic() < deadline, f"worker {pid} still runs {timeout:.0f} s after its batch was killed"
            time.sleep(0.02)


def _run_and_kill(args: list[str], cwd: Path, ready: Callable[[], bool], delay: float) -> bool:
    """Start the batch, wait for ``ready``, sleep ``delay``, SIGKILL. False when it finished before the kill."""
    proc = subprocess.Popen([EXE, *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        while not ready():
            assert proc.poll() is None, f"the batch ended before the kill point: {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "the kill point never came"
            time.sleep(0.05)
        time.sleep(delay)
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read().decode()
            return False
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        _wait_gone(workers)
        return True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def _check_workspace(ws: Path, must_have: list[str]) -> list[str]:
    """Everything the brief promises after a kill; returns the variant ids."""
    workspace = Workspace(ws)
    try:
        assert workspace.integrity_ok()
        variants = workspace.variants()
        ids = [v.id for v in variants]
        assert set(must_have) <= set(ids), (must_have, ids)
        folders = {p.name for p in workspace.variants_dir.iterdir() if not p.name.startswith(".")}
        assert folders == set(ids), (folders, ids)
        assert not list(workspace.variants_dir.glob(".tmp-*"))
        for v in variants:
            assert re.fullmatch(r"v\d{4}", v.id)
            files = {p.name for p in v.path.iterdir()}
            assert {"meta.json", "model.onnx"} <= files, (v.id, files)
            if v.format == "torch":
                assert {"model.safetensors", "recipe.json"} <= files or "model.pt2" in files, (v.id, files)
            assert json.loads((v.path / "meta.json").read_text())["id"] == v.id
            load_variant_folder(v.path)
        return ids
    finally:
        workspace.close()


def _train_history_epochs(ws: Path) -> list[int]:
    workspace = Workspace(ws)
    try:
        run = [r for r in workspace.runs() if r["job"] == "train" and r["status"] == "ok"][-1]
        return sorted({int(v) for _, v in workspace.metric_history(run["id"]).get("epoch", [])})
    finally:
        workspace.close()


@pytest.mark.slow
def test_sigkill_during_train_export_quantize_loses_nothing(tmp_path: Path) -> None:
    assert {c.id for c in KILLS} == {"kill_train_1", "kill_train_2", "kill_train_3", "kill_export",
                                     "kill_quantize_1", "kill_quantize_2", "rerun_after_kills"}
    rng = random.Random()
    ws, cwd = tmp_path / "ws", tmp_path / "cwd"
    cwd.mkdir()
    base = ["--batch", "--device", "cpu", "--quiet", "--dataset", "digits:size=8", "--out", str(ws)]
    kills = 0

    # kill_train_1: the root is saved, training has written its first checkpoints
    args = [*base, "--model", "zoo:mlp:hidden=32", "--job", TRAIN, "--job", "export", "--job", "quantize"]
    kills += _run_and_kill(args, cwd, _epoch_at_least(ws, 3), rng.uniform(0, 0.3))
    (root,) = _check_workspace(ws, [])
    epochs = [_checkpoint_epoch(ws)]
    assert epochs[0] >= 3

    # kill_train_2 and kill_train_3: resumed runs of the same job on the same variant, killed later
    resumed = [*base, "--model", str(ws / "variants" / root), "--job", TRAIN, "--job", "export", "--job", "quantize"]
    for target in (epochs[0] + 3, epochs[0] + 6):
        kills += _run_and_kill(resumed, cwd, _epoch_at_least(ws, target), rng.uniform(0, 0.3))
        _check_workspace(ws, [root])
        epochs.append(_checkpoint_epoch(ws))
        assert epochs[-1] >= epochs[-2]
    assert epochs[-1] < EPOCHS

    # kill_export: training resumes and finishes; the run is killed while exporting
    kills += _run_and_kill(resumed, cwd, _running(ws, "export"), rng.uniform(0, 0.2))
    ids = _check_workspace(ws, [root])
    assert _train_history_epochs(ws) == list(range(epochs[-1] + 1, EPOCHS + 1))
    assert _checkpoint(ws) is None
    trained = [i for i in ids if i != root]
    assert len(trained) == 1

    # kill_quantize_1 and kill_quantize_2: export + quantize of the trained variant
    quant = [*base, "--model", str(ws / "variants" / trained[0]), "--job", "export", "--job", "quantize"]
    for delay in (rng.uniform(0, 0.5), rng.uniform(0.5, 2.0)):
        kills += _run_and_kill(quant, cwd, _running(ws, "quantize"), delay)
        ids = _check_workspace(ws, [root, *trained])
    assert kills >= 5

    # rerun_after_kills: the same run completes on the killed workspace and adds to it
    done = subprocess.run([EXE, *quant], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    final = _check_workspace(ws, ids)
    assert len(final) == len(ids) + 1
    report = json.loads((ws / "report.json").read_text())
    assert [s["status"] for s in report["steps"]] == ["ok", "ok"]
