"""``prune`` on a language model: Wanda and SparseGPT beat magnitude on a trained tiny Llama, the N:M pattern holds
in every pruned layer, the zeros survive save and reload and show in nonzero_params, cancel stops it, and every
refusal is one clear line."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.plugins.helpers import Bench, fresh_copy, job_context, trained_tiny_llama
from workbench.core.data import load_dataset
from workbench.core.models import load_model
from workbench.core.tasks.causal_lm import CausalLMTask
from workbench.plugin import Cancelled, InputError
from workbench_plugins.prune import PruneJob

SPEC = "zoo:tiny_llama:hidden=64,layers=2,heads=2,kv_heads=1"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny Llama trained briefly on a small corpus (state dict), with its dataset."""
    yield from trained_tiny_llama(tmp_path_factory.mktemp("lmprune"), SPEC)


def _fresh(trained):
    return fresh_copy(SPEC, trained)


def _prune(trained, **params):
    _, data, _, tmp = trained
    model = _fresh(trained)
    ctx = job_context(model, data, tmp, job_name="prune")
    return PruneJob(**params).run(ctx), ctx


def _linears(model):
    return [(n, m) for n, m in model.hf.named_modules() if isinstance(m, nn.Linear)]


def test_calibrated_methods_beat_magnitude_at_half_sparsity(trained):
    data = trained[1]
    task = CausalLMTask()
    ppl = {}
    for method in ("l1_unstructured", "wanda", "sparsegpt"):
        model, ctx = _prune(trained, method=method, amount=0.5, calibration=16)
        ppl[method] = task.evaluate(model, data)["perplexity"]
        for name, layer in _linears(model):  # every block Linear and the head at 50%
            assert abs(float((layer.weight == 0).float().mean()) - 0.5) < 0.01, (method, name)
        assert model.hf.get_input_embeddings().weight.count_nonzero() == model.hf.get_input_embeddings().weight.numel()
        assert len(ctx.result["layer_sparsity"]) == len(_linears(model))
        rows = ctx.result["layers"]  # layer -> {sparsity, rel_error}: a table in the Details tab
        assert all(abs(r["sparsity"] - 0.5) < 0.01 for r in rows.values())
        if method == "sparsegpt":
            assert all(0.0 <= r["rel_error"] < 1.0 for r in rows.values()), rows
    dense = task.evaluate(_fresh(trained), data)["perplexity"]
    assert dense < ppl["sparsegpt"] < 0.95 * ppl["l1_unstructured"], ppl
    assert ppl["wanda"] < ppl["l1_unstructured"], ppl  # the head by magnitude in both: the blocks decide


@pytest.mark.parametrize("method,pattern", [("sparsegpt", "2:4"), ("wanda", "2:4"), ("l1_unstructured", "4:8")])
def test_nm_pattern_holds_in_every_pruned_layer(trained, method, pattern):
    n, m = (int(v) for v in pattern.split(":"))
    model, ctx = _prune(trained, method=method, pattern=pattern, calibration=8)
    for name, layer in _linears(model):
        groups = layer.weight.detach().reshape(layer.out_features, -1, m)
        zeros = (groups == 0).sum(-1)
        assert bool((zeros >= n).all()), f"{name}: a group of {m} has fewer than {n} zeros"
    assert ctx.result["pattern"] == pattern


def test_saved_variant_reloads_equal_and_reports_nonzero_params(trained, tmp_path):
    spec = trained[0]
    bench = Bench(tmp_path / "ws", spec)
    try:
        bench.session.bench_batch = 1
        root = bench.add(SPEC)
        out = bench.ok("prune", root, method="wanda", amount=0.5, calibration=4)
        metrics = bench.session.workspace.variant(out.variant).metrics
        assert metrics["nonzero_params"] / metrics["params"] < 0.75
        assert "perplexity" in metrics
        reloaded = load_model(str(bench.folder(out.variant)), bench.data.info).eval()
        expected = load_model(str(bench.folder(root)), bench.data.info).eval()
        PruneJob(method="wanda", amount=0.5, calibration=4).run(
            job_context(expected, bench.data, tmp_path, job_name="prune"))
        for (name, a), b in zip(reloaded.state_dict().items(), expected.state_dict().values()):
            assert torch.allclose(a, b, atol=1e-6), name
    finally:
        bench.runner.shutdown()
        bench.session.workspace.close()


def test_cancel_stops_between_blocks(trained):
    _, data, _, tmp = trained
    model = _fresh(trained)
    ctx = job_context(model, data, tmp, job_name="prune")
    seen = []
    original = ctx.info

    def info(message):
        seen.append(message)
        original(message)
        ctx._cancel.set()  # the user presses Stop after the first block

    ctx.info = info
    with pytest.raises(Cancelled):
        PruneJob(method="sparsegpt", amount=0.5, calibration=4).run(ctx)
    assert len(seen) == 1 and "block 0" in seen[0]
    block1 = model.hf.model.layers[1].mlp.down_proj.weight
    assert int(block1.count_nonzero()) == block1.numel()  # block 1 was never touched


def test_refusals_are_one_clear_line(trained, tmp_path):
    _, data, _, tmp = trained
    cases = [
        (dict(method="wanda", calibration=0), "needs calibration"),
        (dict(method="sparsegpt", pattern="2:4", amount=0.3), "amount=0.3 does not match"),
        (dict(method="random_unstructured"), "does not take a language model"),
    ]
    for params, message in cases:
        with pytest.raises(InputError, match=message) as err:
            PruneJob(**params).run(job_context(_fresh(trained), data, tmp, job_name="prune"))
        assert "\n" not in str(err.value)
    odd = load_model("zoo:tiny_llama:hidden=34,layers=1,heads=1,kv_heads=1", data.info)
    with pytest.raises(InputError, match=r"layer model\.layers\.0\.self_attn\.q_proj has 34 inputs"):
        PruneJob(method="sparsegpt", pattern="2:4").run(job_context(odd, data, tmp, job_name="prune"))
    digits = load_dataset("digits", seed=0)
    mlp = load_model("zoo:mlp:hidden=16", digits.info)
    with pytest.raises(InputError, match="written for language models"):
        PruneJob(method="wanda").run(job_context(mlp, digits, tmp_path, job_name="prune"))
