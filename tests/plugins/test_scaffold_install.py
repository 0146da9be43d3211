"""The plugin author's whole path: scaffold, ``pip install -e``, listed, run in batch mode, uninstalled."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import run_cli
from workbench.core.scaffold import scaffold_plugin


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300)


def test_scaffold_install_list_run_uninstall(tmp_path):
    name = f"scaffold_probe{os.getpid()}"
    root = scaffold_plugin(name, tmp_path)
    dist = "workbench-" + name.replace("_", "-")
    try:
        installed = _pip("install", "-q", "-e", str(root), "--no-deps", "--no-build-isolation")
        assert installed.returncode == 0, installed.stderr[-2000:]
        listed = run_cli("--list-plugins")
        assert listed.returncode == 0, listed.stderr
        line = next(line for line in listed.stdout.splitlines() if line.split()[0] == name)
        assert dist in line and "installed" in line
        out = tmp_path / "run"
        run = run_cli("--batch", "--model", "zoo:mlp:hidden=16", "--dataset", "digits:size=8", "--job",
                      f"{name}:amount=0.5,skip_last=false", "--out", str(out), "--quiet")
        assert run.returncode == 0, run.stderr
        step = json.loads((out / "report.json").read_text())["steps"][0]
        assert step["job"] == name and step["status"] == "ok"
        assert step["params"] == {"amount": 0.5, "skip_last": False}
        assert step["metrics"]["nonzero_params"] < step["metrics"]["params"]
    finally:
        removed = _pip("uninstall", "-q", "-y", dist)
    assert removed.returncode == 0, removed.stderr
    assert name not in run_cli("--list-plugins").stdout
