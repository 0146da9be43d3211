"""WORKBENCH_PLUGIN_PATH does what --plugin-path does (batch mode, --list-plugins), and reaches child processes."""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import run_cli
from workbench.core.errors import InputError
from workbench.core.jobs import devplugins
from workbench.core.jobs.registry import Registry

ENV = devplugins.ENV_VAR
PLUGIN = ("from workbench.plugin import Job, Param\n\n\nclass EnvScale(Job):\n    name = 'env_scale'\n"
          "    factor: float = Param(2.0, min=0.0, max=10.0, help='weight multiplier')\n\n"
          "    def run(self, ctx):\n        import torch\n\n        with torch.no_grad():\n"
          "            for p in ctx.model.parameters():\n                p.mul_(self.factor)\n"
          "        ctx.result = {'scaled_by': self.factor}\n        return ctx.model\n")


@pytest.fixture
def folder(tmp_path) -> Path:
    path = tmp_path / "envplug"
    path.mkdir()
    (path / "env_scale.py").write_text(PLUGIN)
    return path


def test_env_folders_are_split_and_exported_once(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    env = {ENV: os.pathsep.join([str(a), "", str(b)])}
    assert devplugins.env_plugin_folders(env) == [a, b]
    devplugins.export_plugin_folders([b, tmp_path / "c", tmp_path / "c"], environ=env)
    assert env[ENV].split(os.pathsep) == [str(a), str(b), str((tmp_path / "c").resolve())]
    assert devplugins.env_plugin_folders({}) == []


def test_load_from_env_registers_the_jobs(folder):
    reg = Registry()
    names = devplugins.load_plugin_path_from_env(into=reg, environ={ENV: str(folder)})
    assert names == ["env_scale"]
    info = next(p for p in reg.plugins() if p.job == "env_scale")
    assert info.origin == str(folder.resolve()) and "env_scale" in reg.job_names()


def test_a_missing_env_folder_is_a_user_error_naming_the_variable(tmp_path):
    with pytest.raises(InputError, match=f"{ENV} .*nowhere: not a folder"):
        devplugins.load_plugin_path_from_env(into=Registry(), environ={ENV: str(tmp_path / "nowhere")})


def _jobs_seen_by_a_spawned_child() -> list[str]:
    reg = Registry()
    devplugins.load_plugin_path_from_env(into=reg)
    return sorted(p.job for p in reg.plugins() if p.origin not in ("built-in",) and p.job.startswith("env_"))


def test_plugin_path_folders_reach_a_spawned_child(folder, monkeypatch):
    monkeypatch.setenv(ENV, "")  # restored (unset) after the test, the export included
    names = devplugins.load_plugin_path([folder], into=Registry())
    assert names == ["env_scale"]
    assert os.environ[ENV] == str(folder.resolve())  # exported for the worker processes
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert pool.submit(_jobs_seen_by_a_spawned_child).result(timeout=120) == ["env_scale"]


@pytest.mark.slow  # a batch run with its worker process: about 25 s on 2 busy cores
def test_cli_lists_and_runs_a_job_from_the_env_folder(folder, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, str(folder))
    listed = run_cli("--list-plugins")
    assert listed.returncode == 0, listed.stderr
    line = next((ln for ln in listed.stdout.splitlines() if ln.split()[:1] == ["env_scale"]), "")
    assert str(folder.resolve()) in line and "failed" not in line
    out = tmp_path / "run"
    run = run_cli("--batch", "--model", "zoo:mlp:hidden=16", "--dataset", "digits:size=8", "--job",
                  "env_scale:factor=0.5", "--out", str(out), "--quiet")
    assert run.returncode == 0, run.stderr
    step = json.loads((out / "report.json").read_text())["steps"][-1]
    assert step["job"] == "env_scale" and step["status"] == "ok" and step["result"] == {"scaled_by": 0.5}


def test_cli_missing_env_folder_exits_2_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, str(tmp_path / "nowhere"))
    run = run_cli("--list-plugins")
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [f"error: {ENV} {tmp_path / 'nowhere'}: not a folder"]
