"""docs/PLUGINS.md cannot rot: its Python blocks run in order, and the tests they define run with the fixtures."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import workbench.plugin

DOC = Path(__file__).resolve().parents[2] / "docs" / "PLUGINS.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@pytest.fixture(scope="module")
def namespace() -> dict:
    ns: dict = {"__name__": "plugins_doc"}
    blocks = BLOCK.findall(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 5
    for i, block in enumerate(blocks, start=1):
        exec(compile(block, f"{DOC}:block{i}", "exec", dont_inherit=True), ns)  # noqa: S102 - the documentation's own examples
    return ns


def test_every_public_name_is_in_the_reference():
    reference = DOC.read_text(encoding="utf-8").split("## 7. Reference", 1)[1]
    missing = [n for n in workbench.plugin.__all__ if f"`{n}`" not in reference]
    assert not missing


def test_the_examples_define_working_jobs(namespace):
    from workbench.plugin import Job

    jobs = {v.name for v in namespace.values() if isinstance(v, type) and issubclass(v, Job) and v is not Job}
    assert {"scale_weights", "param_demo", "fine_tune", "average_with"} <= jobs


@pytest.mark.parametrize("test_name", ["test_fine_tune_learns", "test_average_with_the_root",
                                       "test_errors_are_reported_not_raised"])
def test_the_documented_tests_pass(namespace, test_name, workbench_run_job):
    namespace[test_name](workbench_run_job)


def test_the_scale_example_runs(namespace, workbench_run_job):
    run = workbench_run_job(namespace["ScaleWeights"], {"factor": 0.0})
    assert run.outcome.status == "ok", run.outcome.error
    assert run.outcome.metrics["nonzero_params"] == 0
