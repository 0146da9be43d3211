"""``workbench --new-plugin``: a complete package whose own tests pass with the shipped fixtures."""

from __future__ import annotations

import subprocess
import sys

import pytest
import tomllib

from workbench.core.errors import InputError
from workbench.core.jobs.devplugins import load_plugin_folders
from workbench.core.jobs.registry import Registry
from workbench.core.scaffold import scaffold_plugin, validate_name


@pytest.mark.parametrize("bad", ["", "1abc", "has space", "dots.in.name", "class", "x" * 60, "ünï"])
def test_bad_names_are_refused(bad, tmp_path):
    with pytest.raises(InputError, match="plugin name"):
        scaffold_plugin(bad, tmp_path)
    assert not any(tmp_path.iterdir())


def test_names_are_normalized():
    assert validate_name("My-Pruner") == "my_pruner"


def test_writes_an_installable_package_and_never_overwrites(tmp_path):
    root = scaffold_plugin("my_pruner", tmp_path)
    assert root == tmp_path / "workbench-my-pruner"
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "workbench-my-pruner"
    assert meta["project"]["entry-points"]["workbench.plugins"] == {"my_pruner": "workbench_my_pruner.job:MyPrunerJob"}
    for rel in ("README.md", "workbench_my_pruner/__init__.py", "workbench_my_pruner/job.py",
                "tests/test_my_pruner.py"):
        assert (root / rel).is_file(), rel
    assert "--job my_pruner" in (root / "README.md").read_text()
    before = (root / "workbench_my_pruner/job.py").read_text()
    with pytest.raises(InputError, match="already exists"):
        scaffold_plugin("my_pruner", tmp_path)
    assert (root / "workbench_my_pruner/job.py").read_text() == before


def test_the_job_declares_two_typed_parameters_and_is_lint_clean(tmp_path):
    root = scaffold_plugin("lintme", tmp_path)
    reg = Registry()
    assert load_plugin_folders([root], into=reg) == ["lintme"]
    params = reg.load("lintme").params()
    assert {n: p.kind for n, p in params.items()} == {"amount": "float", "skip_last": "bool"}
    assert all(p.help for p in params.values())
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated", "--line-length",
                           "110", str(root)], capture_output=True, text=True)
    assert lint.returncode == 0 or "No module named ruff" in lint.stderr, lint.stdout


def test_the_generated_tests_pass_with_the_shipped_fixtures(tmp_path):
    root = scaffold_plugin("fixture_user", tmp_path)
    env = {**__import__("os").environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=root,
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 passed" in result.stdout
