"""Broken plugins are listed as failed with their name and error; the runner, the workspace and every other
job carry on (development folders and installed entry points alike)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from workbench.core.errors import InputError
from workbench.core.execution.runner import JobRequest, Runner
from workbench.core.jobs.devplugins import load_plugin_folders
from workbench.core.jobs.registry import Registry

GOOD = '''
from workbench.plugin import Job, Param

class Scale(Job):
    name = "iso_scale"
    factor: float = Param(0.5, min=0.0, max=2.0, help="multiply every weight by this")

    def run(self, ctx):
        for p in ctx.model.parameters():
            p.data.mul_(self.factor)
        ctx.log(step=1, factor=self.factor)
        return ctx.model
'''
FILES = {
    "good.py": GOOD,
    "broken_import.py": "import no_such_module_for_workbench\n",
    "syntax_error.py": "def oops(:\n",
    "no_annotation.py": "from workbench.plugin import Job, Param\n\nclass A(Job):\n    name = 'iso_a'\n"
                        "    x = Param(1)\n",
    "bad_type.py": "from workbench.plugin import Job, Param\n\nclass B(Job):\n    name = 'iso_b'\n"
                   "    x: dict = Param({})\n",
    "raises.py": "from workbench.plugin import Job\n\nclass R(Job):\n    name = 'iso_raises'\n\n"
                 "    def run(self, ctx):\n        raise RuntimeError('kaboom in run')\n",
    "not_a_model.py": "from workbench.plugin import Job\n\nclass N(Job):\n    name = 'iso_not_model'\n\n"
                      "    def run(self, ctx):\n        return {'weights': 1}\n",
    "_helper.py": "raise RuntimeError('private modules are not plugins')\n",
}
FAILED = {"broken_import.py": "No module named 'no_such_module_for_workbench'", "syntax_error.py": "SyntaxError",
          "no_annotation.py": "needs a type annotation", "bad_type.py": "unsupported type"}


@pytest.fixture
def dev_folder(tmp_path) -> Path:
    folder = tmp_path / "devplugins"
    folder.mkdir()
    for name, text in FILES.items():
        (folder / name).write_text(text)
    return folder


def test_broken_files_are_listed_as_failed_and_the_rest_loads(dev_folder):
    reg = Registry()
    names = load_plugin_folders([dev_folder], into=reg)
    assert sorted(names) == ["iso_not_model", "iso_raises", "iso_scale"]
    by_name = {p.job: p for p in reg.plugins()}
    for file, message in FAILED.items():
        assert by_name[file].status == "failed" and message in by_name[file].error, by_name[file]
        assert by_name[file].origin == str(dev_folder) and "Traceback" in by_name[file].details
        with pytest.raises(InputError, match=file):
            reg.load(file)
    assert "_helper.py" not in by_name
    assert {"train", "evaluate", "iso_scale"} <= set(reg.job_names())
    assert not set(FAILED) & set(reg.job_names())


def test_reload_picks_up_fixes_and_edits(dev_folder):
    reg = Registry()
    load_plugin_folders([dev_folder], into=reg)
    (dev_folder / "broken_import.py").write_text(GOOD.replace("iso_scale", "iso_fixed"))
    (dev_folder / "good.py").write_text(GOOD.replace("0.5", "0.25"))
    (dev_folder / "raises.py").unlink()
    load_plugin_folders([dev_folder], into=reg)
    by_name = {p.job: p for p in reg.plugins()}
    assert by_name["iso_fixed"].status == "loaded" and "broken_import.py" not in by_name
    assert "iso_raises" not in by_name
    assert reg.load("iso_scale").params()["factor"].default == 0.25


def test_a_dev_plugin_cannot_take_a_built_in_name(tmp_path):
    folder = tmp_path / "clash"
    folder.mkdir()
    (folder / "mytrain.py").write_text(GOOD.replace("iso_scale", "train"))
    reg = Registry()
    load_plugin_folders([folder], into=reg)
    by_name = {p.job: p for p in reg.plugins()}
    assert by_name["train"].origin == "built-in"
    assert by_name["mytrain.py"].status == "failed" and "already taken" in by_name["mytrain.py"].error


def test_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(InputError, match="not a folder"):
        load_plugin_folders([tmp_path / "nope"], into=Registry())


def test_failing_jobs_fail_alone_and_leave_the_workspace_intact(dev_folder, make_session):
    reg = Registry()
    load_plugin_folders([dev_folder], into=reg)
    session, root = make_session(model="zoo:mlp:hidden=16")
    runner = Runner(session, plugins=reg)
    try:
        ok = runner.run(JobRequest("iso_scale", {}, root, "cpu"))
        assert ok.status == "ok" and ok.variant != root
        raised = runner.run(JobRequest("iso_raises", {}, ok.variant, "cpu"))
        assert raised.status == "failed" and "iso_raises" in raised.error and "kaboom in run" in raised.error
        bad = runner.run(JobRequest("iso_not_model", {}, ok.variant, "cpu"))
        assert bad.status == "failed" and "not a model" in bad.error
        broken = runner.run(JobRequest("broken_import.py", {}, ok.variant, "cpu"))
        assert broken.status == "failed" and "failed to load" in broken.error
        again = runner.run(JobRequest("iso_scale", {"factor": 1.0}, ok.variant, "cpu"))
        assert again.status == "ok"
    finally:
        runner.shutdown()
    assert [v.id for v in session.workspace.variants()] == [root, ok.variant, again.variant]
    runs = [(r["job"], r["status"]) for r in session.workspace.runs()]
    assert runs == [("iso_scale", "ok"), ("iso_raises", "failed"), ("iso_not_model", "failed"), ("iso_scale", "ok")]


def _fake_installed_plugin(root: Path) -> Path:
    """A distribution on sys.path (dist-info + module) whose entry point fails to import."""
    dist = root / "wb_broken_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: wb-broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[workbench.plugins]\niso_broken_installed = wb_broken_plugin_mod:Broken\n")
    (root / "wb_broken_plugin_mod.py").write_text("raise ImportError('this plugin is broken on purpose')\n")
    return root


def test_a_broken_installed_plugin_is_failed_on_first_use(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(_fake_installed_plugin(tmp_path / "site")))
    reg = Registry()
    info = next(p for p in reg.plugins() if p.job == "iso_broken_installed")
    assert info.status == "not loaded" and info.distribution == "wb-broken-plugin" and info.origin == "installed"
    reg.load_all()
    info = next(p for p in reg.plugins() if p.job == "iso_broken_installed")
    assert info.status == "failed" and "broken on purpose" in info.error
    assert "iso_broken_installed" not in reg.job_names() and reg.load("evaluate").name == "evaluate"


def test_cli_lists_failed_plugins_and_runs_the_others(dev_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(_fake_installed_plugin(tmp_path / "site")))
    listed = run_cli("--plugin-path", str(dev_folder), "--list-plugins")
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines() if line.strip()}
    for file, message in FAILED.items():
        assert "failed" in lines[file] and message in lines[file]
    assert "iso_broken_installed" in lines and "iso_scale" in lines and "train" in lines
    out = tmp_path / "run"
    run = run_cli("--plugin-path", str(dev_folder), "--batch", "--model", "zoo:mlp:hidden=16", "--dataset",
                  "digits:size=8", "--job", "iso_scale", "--job", "iso_raises", "--out", str(out), "--quiet")
    assert run.returncode == 1, run.stderr
    steps = json.loads((out / "report.json").read_text())["steps"]
    assert [s["status"] for s in steps[:2]] == ["ok", "failed"]
    assert "kaboom in run" in steps[1]["error"] and "Traceback" not in run.stderr
    broken = run_cli("--batch", "--model", "zoo:mlp:hidden=16", "--dataset", "digits:size=8",
                     "--job", "iso_broken_installed", "--out", str(tmp_path / "run2"))
    assert broken.returncode == 2 and "iso_broken_installed" in broken.stderr
    assert "broken on purpose" in broken.stderr and len(broken.stderr.strip().splitlines()) == 1
