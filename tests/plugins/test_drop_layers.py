"""``drop_layers``: block influence picks the block that changes its input least, the model shrinks, generates with a
KV cache, saves and reloads; the refusals are one line."""

from __future__ import annotations

import pytest
import torch

from tests.core.lm.lm_helpers import make_corpus
from tests.plugins.helpers import Bench, job_context
from workbench.core.data import load_dataset
from workbench.core.models import load_model
from workbench.plugin import InputError
from workbench_plugins.drop_layers import DropLayersJob, remove_blocks

SPEC = "zoo:tiny_llama:hidden=32,layers=3,heads=2,kv_heads=1"


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return f"text:{make_corpus(tmp_path / 'corpus.txt', lines=300)}:seq_len=16,vocab=300"


def _identity_like(model, block: int) -> None:
    """Zero the block's attention output and MLP down projection: its output is exactly its input."""
    layer = model.hf.model.layers[block]
    with torch.no_grad():
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()


def test_influence_drops_the_identity_like_block_and_generation_still_works(corpus, tmp_path):
    data = load_dataset(corpus, seed=0)
    torch.manual_seed(0)
    model = load_model(SPEC, data.info).eval()
    _identity_like(model, 1)
    before = sum(p.numel() for p in model.parameters())
    ctx = job_context(model, data, tmp_path, job_name="drop_layers")
    out = DropLayersJob(count=1, calibration=4).run(ctx)
    blocks = ctx.result["blocks"]
    assert list(blocks) == ["hf.model.layers.0", "hf.model.layers.1", "hf.model.layers.2"]
    assert blocks["hf.model.layers.1"] == {"influence": 0.0, "dropped": True}
    assert all(blocks[f"hf.model.layers.{i}"]["influence"] > 0 and not blocks[f"hf.model.layers.{i}"]["dropped"]
               for i in (0, 2))
    assert len(out.hf.model.layers) == 2 and out.hf.config.num_hidden_layers == 2
    assert [layer.self_attn.layer_idx for layer in out.hf.model.layers] == [0, 1]
    assert sum(p.numel() for p in out.parameters()) < before
    ids = data.example_batch(1)[:, :6]
    with torch.no_grad():
        cached = out.hf.generate(input_ids=ids, max_new_tokens=5, do_sample=False, use_cache=True)
        plain = out.hf.generate(input_ids=ids, max_new_tokens=5, do_sample=False, use_cache=False)
    assert cached.shape == (1, 11) and torch.equal(cached, plain)


def test_drop_through_the_runner_shrinks_saves_and_reloads(corpus, tmp_path):
    bench = Bench(tmp_path / "ws", corpus)
    try:
        bench.session.bench_batch = 1
        root = bench.add(SPEC)
        out = bench.ok("drop_layers", root, count=2, criterion="last")
        assert out.result["dropped"] == ["hf.model.layers.1", "hf.model.layers.2"]
        assert out.result["blocks"]["hf.model.layers.0"] == {"influence": None, "dropped": False}
        workspace = bench.session.workspace
        assert workspace.variant(out.variant).metrics["params"] < workspace.variant(root).metrics["params"]
        reloaded = load_model(str(bench.folder(out.variant)), bench.data.info).eval()
        assert reloaded.hf.config.num_hidden_layers == 1 and len(reloaded.hf.model.layers) == 1
        expected = load_model(str(bench.folder(root)), bench.data.info).eval()
        remove_blocks(expected, [1, 2])  # the same cut by hand on the saved input variant
        x = bench.data.example_batch(2)
        with torch.no_grad():
            assert torch.allclose(reloaded(x), expected(x), atol=1e-6)
        generated = bench.ok("generate", out.variant, prompt="The model", max_new_tokens=4)
        assert generated.result["new_tokens"] == 4
    finally:
        bench.close()


def test_refusals(corpus, tmp_path):
    with pytest.raises(InputError, match="below the minimum"):
        DropLayersJob(count=0)
    data = load_dataset(corpus, seed=0)
    model = load_model(SPEC, data.info)
    with pytest.raises(InputError, match="count=3 would leave no block") as err:
        DropLayersJob(count=3).run(job_context(model, data, tmp_path, job_name="drop_layers"))
    assert "\n" not in str(err.value)
    digits = load_dataset("digits", seed=0)
    mlp = load_model("zoo:mlp:hidden=16", digits.info)
    with pytest.raises(InputError, match="needs a decoder language model"):
        DropLayersJob().run(job_context(mlp, digits, tmp_path, job_name="drop_layers"))


def test_shipped_drop_then_distill_pipeline_is_valid():
    """The Minitron-style pipeline file parses and every step's parameters are valid for its job (the whole
    pipeline was run by hand on a tiny model: see /work/notes/drop_distill.md)."""
    from pathlib import Path

    from workbench.core.pipeline import load_pipeline_file, validate_steps

    pipe = load_pipeline_file(Path(__file__).parents[2] / "resources/pipelines/llm_drop_then_distill.toml")
    assert [s.job for s in pipe.steps] == ["train", "drop_layers", "distill"]
    typed = validate_steps(pipe.steps)
    assert typed[1]["criterion"] == "influence" and typed[2]["student"] == "input" and typed[2]["teachers"] == ["v0002"]
