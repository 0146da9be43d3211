"""The dataset when none is named: a reopened workspace keeps its own, a language model learns pydocs, anything
else the demo's digits (it was digits for everything, so `--model zoo:tiny_llama` alone failed)."""

from __future__ import annotations

import json

import pytest

from workbench.core.batch import default_dataset
from workbench.core.models.loading import is_language_model_spec
from workbench.core.pipeline import Pipeline
from workbench.core.workspace import Workspace


@pytest.fixture
def hf_dir(tmp_path):
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return folder


def test_which_specs_name_a_language_model(hf_dir, tmp_path):
    assert is_language_model_spec("zoo:tiny_llama") and is_language_model_spec("zoo:tiny_llama:hidden=64")
    assert is_language_model_spec(str(hf_dir)) and is_language_model_spec(f"hf:{hf_dir}")
    for spec in ("zoo:mlp", "zoo:seed_cnn:width=0.5", "zoo:nope", str(tmp_path / "model.onnx"), "py:m.py:Net",
                 str(tmp_path)):
        assert not is_language_model_spec(spec), spec


def test_the_default_follows_the_model_then_the_workspace(hf_dir, tmp_path):
    assert default_dataset(Pipeline(model="zoo:tiny_llama")) == "pydocs"
    assert default_dataset(Pipeline(model=str(hf_dir))) == "pydocs"
    assert default_dataset(Pipeline(model="zoo:mlp")) == "digits"
    ws = Workspace(tmp_path / "ws")
    ws.set_info("dataset", "text:/data/corpus.txt:seq_len=64")
    ws.close()
    # reopening a corpus workspace without --dataset keeps its corpus, whatever the new model
    assert default_dataset(Pipeline(model="zoo:mlp", out=str(tmp_path / "ws"))) == "text:/data/corpus.txt:seq_len=64"
    assert default_dataset(Pipeline(out=str(tmp_path / "ws"))) == "text:/data/corpus.txt:seq_len=64"


def test_a_relative_dataset_path_is_stored_absolute(tmp_path, monkeypatch):
    """A workspace stores its dataset spec and a saved pipeline replays it: `text:c.txt` must still name the same
    file when reopened from another folder."""
    from workbench.core.data.specs import with_absolute_path

    (tmp_path / "c.txt").write_text("some text\n")
    monkeypatch.chdir(tmp_path)
    assert with_absolute_path("text:c.txt:seq_len=32") == f"text:{tmp_path / 'c.txt'}:seq_len=32"
    assert with_absolute_path("text:c.txt") == f"text:{tmp_path / 'c.txt'}"
    for unchanged in ("digits:size=8", "pydocs", "text:missing.txt", f"csv:{tmp_path / 'c.txt'}", "bad spec!"):
        assert with_absolute_path(unchanged) == unchanged
