"""``prune_sensitivity`` on a language model: a perplexity curve for every block Linear and the head, rising with
the ratio on a trained tiny Llama; heat keyed by the graph view's node names (and coloured there); an allocation
that reaches the target; the model left exactly as it was, also when cancelled; one-line refusals."""

from __future__ import annotations

import json

import pytest
import torch

from tests.core.lm.lm_helpers import make_corpus
from tests.plugins.helpers import Bench, fresh_copy, job_context, trained_tiny_llama
from workbench.core.graph import graph_from_torch
from workbench.core.tasks.causal_lm import CausalLMTask
from workbench.plugin import Cancelled, InputError
from workbench_plugins._pruning import removed_channels
from workbench_plugins.prune_sensitivity import PruneSensitivityJob

SPEC = "zoo:tiny_llama:hidden=64,layers=2,heads=2,kv_heads=1"
PROJ = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
        "mlp.up_proj", "mlp.down_proj")
LINEARS = [f"hf.model.layers.{b}.{p}" for b in range(2) for p in PROJ] + ["hf.lm_head"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two shared cores: torch's own threads fight the other jobs and a tiny forward pass gets 100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    """A tiny Llama trained one epoch on a small corpus (state dict), with its dataset."""
    yield from trained_tiny_llama(tmp_path_factory.mktemp("lmsens"), SPEC)


def _fresh(trained):
    return fresh_copy(SPEC, trained)


def _run(trained, model=None, **params):
    _, data, _, tmp = trained
    model = model if model is not None else _fresh(trained)
    ctx = job_context(model, data, tmp, job_name="prune_sensitivity")
    assert PruneSensitivityJob(**params).run(ctx) is None  # it measures: no variant
    return ctx, model


@pytest.fixture(scope="module")
def wanda(trained):
    ctx, _ = _run(trained)
    return ctx


def test_a_curve_for_every_block_linear_rising_with_the_ratio(wanda, trained):
    result = wanda.result
    curves = result["sensitivity"]
    assert list(curves) == LINEARS
    assert result["ratios"] == ["0.25", "0.5", "0.75"] and result["method"] == "wanda"
    assert "perplexity" in result["metric"]
    base = wanda.reported["val_perplexity"]
    assert base == pytest.approx(CausalLMTask().evaluate(_fresh(trained), trained[1], "val")["perplexity"])
    assert wanda.reported["layers"] == len(LINEARS) and "val_accuracy" not in wanda.reported
    for name, curve in curves.items():
        assert list(curve) == ["0", "0.25", "0.5", "0.75"], name
        assert curve["0"] == pytest.approx(base, rel=1e-5)
        assert curve["0.75"] >= curve["0.25"] - 0.01 * base, (name, curve)  # monotone within noise
    head = curves["hf.lm_head"]
    assert base < head["0.25"] < head["0.5"] < head["0.75"] and head["0.75"] > 1.3 * base, head
    mlp = [curves[f"hf.model.layers.{b}.mlp.down_proj"] for b in range(2)]
    assert all(c["0.75"] > c["0"] for c in mlp), mlp
    plotted = {k for _, m in wanda.history for k in m}
    assert {f"val_perplexity/{n}" for n in LINEARS} <= plotted
    json.dumps(result)  # the result travels from the worker as JSON


def test_heat_names_the_graph_nodes_and_the_most_sensitive_is_one(wanda, trained):
    heat = wanda.result["heat"]
    graph = graph_from_torch(_fresh(trained), trained[1].example_batch(1))
    linear_nodes = {n.name for n in graph.nodes if n.op == "linear"}
    assert set(heat) == linear_nodes == set(LINEARS)
    assert all(0.0 <= v <= 1.0 for v in heat.values())
    assert max(heat.values()) == 1.0
    curves = wanda.result["sensitivity"]
    worst = max(curves, key=lambda n: sum(curves[n].values()))
    assert heat[worst] == 1.0 and worst == "hf.lm_head"


def test_allocation_reaches_the_amount_and_beats_uniform(wanda):
    result = wanda.result
    weights, allocation = result["weights"], result["allocation"]
    assert set(allocation) == set(LINEARS)
    removed = sum(round(weights[n] * r) for n, r in allocation.items())  # what magnitude pruning zeros
    assert abs(removed - sum(removed_channels(w, 0.5) for w in weights.values())) <= len(weights)  # 6-digit ratios
    check = result["allocation_check"]
    assert check["val_perplexity"][check["chosen"]] <= check["val_perplexity"]["uniform"]
    assert allocation["hf.lm_head"] < 0.5, "the most sensitive layer keeps more of its weights"


def test_the_model_is_left_unchanged(trained):
    model = _fresh(trained)
    x = trained[1].example_batch(4)
    with torch.no_grad():
        before = model(x).clone()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ctx, model = _run(trained, model, method="l1_unstructured", ratios=["0.5", "0.9"], amount=0.3)
    assert list(ctx.result["sensitivity"]["hf.lm_head"]) == ["0", "0.5", "0.9"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_block_granularity_colours_every_linear_of_a_block_alike(trained):
    ctx, _ = _run(trained, granularity="block", method="l1_unstructured", ratios=["0.5"], amount=0)
    result = ctx.result
    assert list(result["sensitivity"]) == ["hf.model.layers.0", "hf.model.layers.1", "hf.lm_head"]
    heat = result["heat"]
    assert set(heat) == set(LINEARS)
    for b in range(2):
        assert len({heat[f"hf.model.layers.{b}.{p}"] for p in PROJ}) == 1
    assert result["allocation"] == dict.fromkeys(result["sensitivity"], 0.0)


def test_cancel_stops_and_restores_the_weights(trained):
    _, data, state, tmp = trained
    model = _fresh(trained)
    ctx = job_context(model, data, tmp, job_name="prune_sensitivity")
    seen = []
    original = ctx.progress

    def progress(done, total, text=""):
        seen.append(text)
        original(done, total, text)
        ctx._cancel.set()  # the user presses Stop after the first point

    ctx.progress = progress
    with pytest.raises(Cancelled):
        PruneSensitivityJob().run(ctx)
    assert len(seen) == 1 and seen[0].startswith("hf.model.layers.0.self_attn.q_proj at 0.25")
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_refusals_are_one_clear_line(trained):
    _, data, _, tmp = trained
    cases = [
        (dict(importance="taylor"), "importance=taylor ranks channels of a classifier"),
        (dict(method="wanda", calibration=0), "needs calibration"),
        (dict(ignore=["hf.model.layers.7"]), "no module named 'hf.model.layers.7'"),
        (dict(ratios=["0.5", "1.2"]), "ratios"),
        (dict(ratios=["0.25"], amount=0.5), "amount=0.5 cannot be reached"),
    ]
    for params, message in cases:
        with pytest.raises(InputError, match=message) as err:
            PruneSensitivityJob(**{"method": "l1_unstructured", "val_sequences": 4, **params}).run(
                job_context(_fresh(trained), data, tmp, job_name="prune_sensitivity"))
        assert "\n" not in str(err.value)


def test_ignore_skips_layers_by_module_path(trained):
    ctx, _ = _run(trained, method="l1_unstructured", ratios=["0.5"], amount=0, val_sequences=4,
                  ignore=["lm_head", "hf.model.layers.1"])
    assert list(ctx.result["sensitivity"]) == LINEARS[:7]
    assert ctx.result["val_sequences"] == 4


def test_the_graph_view_colours_a_decoder_by_its_heat(qtbot, wanda, trained):
    """Mirrors tests/ui/test_graph_heat.py for a language model: each block Linear node takes its own value."""
    from workbench.ui.graph_view import GraphView

    view = GraphView()
    qtbot.addWidget(view)
    with qtbot.waitSignal(view.graph_shown, timeout=30_000):
        view.set_graph(graph_from_torch(_fresh(trained), trained[1].example_batch(1)))
    heat = wanda.result["heat"]
    assert view.set_heat_by_name(heat) == len(heat)
    # the decoder opens folded: each layer's block shows its hottest projection
    layers = sorted(g for g in view.collapsed() if g.startswith("g:hf.model.layers."))
    assert layers, view.collapsed()
    blocks = {item.node.name: item.heat for item in view.node_items()}
    for gid in layers:
        name = gid.removeprefix("g:")
        assert blocks[name] == pytest.approx(max(v for n, v in heat.items() if n.startswith(name + ".")))
    for gid in view.collapsed():  # opened, each Linear node takes its own value
        with qtbot.waitSignal(view.graph_shown, timeout=30_000):
            view.expand(gid)
    heats = {item.node.name: item.heat for item in view.node_items()}
    assert all(heats[n] == pytest.approx(v) for n, v in heat.items())
    assert heats["hf.model.embed_tokens"] is None


def test_through_the_runner_on_a_language_model(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    corpus = make_corpus(tmp_path / "corpus.txt", lines=200)
    bench = Bench(tmp_path / "ws", f"text:{corpus}:seq_len=16,vocab=300")
    try:
        bench.session.bench_batch = 1
        root = bench.add("zoo:tiny_llama:hidden=32,layers=1,heads=2,kv_heads=1")
        before = len(bench.session.workspace.variants())
        out = bench.ok("prune_sensitivity", root, method="l1_unstructured", ratios="0.5", amount=0.25)
        assert out.variant == root and len(bench.session.workspace.variants()) == before
        assert set(out.result["heat"]) == {f"hf.model.layers.0.{p}" for p in PROJ} | {"hf.lm_head"}
        assert "val_perplexity" in out.metrics
    finally:
        bench.close()

