"""The example pipelines shipped in resources/ must stay valid against the installed jobs."""

from pathlib import Path

import pytest

from workbench.core.pipeline import load_pipeline_file, validate_steps

PIPELINES = sorted((Path(__file__).resolve().parents[2] / "resources" / "pipelines").glob("*.toml"))


@pytest.mark.parametrize("path", PIPELINES, ids=[p.name for p in PIPELINES])
def test_example_pipeline_is_valid(path):
    pipe = load_pipeline_file(path)
    assert pipe.model and pipe.steps
    validate_steps(pipe.steps)
