"""``prune method=structured`` on a language model: KV head groups (with their query heads) and MLP channels really
go, the config describes the smaller model, the KV cache still agrees with a full forward, save and reload give
the same logits, calibrated importance beats the reversed choice, Qwen2 (q/k/v bias) and Mistral work, the rest is
refused in one line, and cancel stops between blocks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tests.core.lm.lm_helpers import small_config
from tests.plugins.helpers import Bench, fresh_copy, job_context, trained_tiny_llama
from workbench.core.lm.generate import generate_ids
from workbench.core.lm.model import CausalLM, load_language_model, save_language_model
from workbench.core.models import load_model
from workbench.core.tasks.causal_lm import CausalLMTask
from workbench.plugin import Cancelled, InputError
from workbench_plugins import _lm_structured as LMS
from workbench_plugins.prune import PruneJob

SPEC = "zoo:tiny_llama:hidden=64,layers=2,heads=8,kv_heads=4"  # GQA: 2 query heads per KV head, head_dim 8


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny GQA Llama trained one epoch on a small corpus (state dict), with its dataset."""
    yield from trained_tiny_llama(tmp_path_factory.mktemp("lmstructured"), SPEC)


def _fresh(trained):
    return fresh_copy(SPEC, trained)


def _prune(trained, model=None, **params):
    _, data, _, tmp = trained
    model = _fresh(trained) if model is None else model
    ctx = job_context(model, data, tmp, job_name="prune")
    return PruneJob(method="structured", **params).run(ctx), ctx


def _family(arch, data):
    """A small randomly initialised model of ``arch`` (2 blocks, hidden 64, 4 heads / 2 KV heads) on ``data``."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return CausalLM(AutoModelForCausalLM.from_config(small_config(arch, data.info.vocab_size)).float()).eval()


def _check_shapes(model):
    """Every block's Linears match the config; the GQA ratio is whole."""
    cfg = model.hf.config
    heads, kv, d, ffn = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.intermediate_size
    assert heads % kv == 0
    for block in model.hf.model.layers:
        a, m = block.self_attn, block.mlp
        assert a.q_proj.weight.shape == (heads * d, cfg.hidden_size)
        assert a.k_proj.weight.shape == a.v_proj.weight.shape == (kv * d, cfg.hidden_size)
        assert a.o_proj.weight.shape == (cfg.hidden_size, heads * d)
        for proj in (a.q_proj, a.k_proj, a.v_proj):
            assert proj.bias is None or proj.bias.shape == (proj.out_features,)
        assert m.gate_proj.weight.shape == m.up_proj.weight.shape == (ffn, cfg.hidden_size)
        assert m.down_proj.weight.shape == (cfg.hidden_size, ffn)
        assert a.num_key_value_groups == heads // kv


def _cache_matches_full_forward(model, data):
    """Greedy decoding with the KV cache gives the tokens a cache-free forward over the whole sequence picks."""
    prompt = data.example_batch(1)[0, :8].tolist()
    new, _ = generate_ids(model, prompt, 6)
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(6):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert new == ids[len(prompt):]


def _reload_equal(model, data, folder):
    save_language_model(model, folder)
    back = load_language_model(folder)
    x = data.example_batch(2)
    with torch.no_grad():
        a, b = model.eval()(x), back(x)
    assert a.shape == (2, x.shape[1], data.info.vocab_size)
    assert torch.equal(a, b)
    assert back.hf.config.num_attention_heads == model.hf.config.num_attention_heads
    return back


def test_heads_and_channels_really_go_with_their_kv_group(trained):
    before = _fresh(trained)
    model, ctx = _prune(trained, amount=0.25, calibration=8)
    cfg = model.hf.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.intermediate_size) == (6, 3, 8, 144)
    _check_shapes(model)
    r = ctx.result
    assert r["params_after"] == sum(p.numel() for p in model.parameters()) < r["params_before"]
    assert r["param_ratio"] == pytest.approx(r["params_after"] / r["params_before"], abs=1e-4)
    assert r["heads"] == [8, 6] and r["kv_heads"] == [4, 3] and r["intermediate_size"] == [192, 144]
    assert set(r["layers"]) == {"hf.model.layers.0", "hf.model.layers.1"}
    for i, row in enumerate(r["layers"].values()):
        assert (row["heads_before"], row["heads_after"], row["channels_before"], row["channels_after"]) == \
            (8, 6, 192, 144)
        kept = [int(g) for g in row["kv_groups_kept"].split(",")]
        old, new = before.hf.model.layers[i].self_attn, model.hf.model.layers[i].self_attn
        for slot, g in enumerate(kept):  # a kept KV head keeps its own two query heads, in order
            assert torch.equal(new.k_proj.weight[slot * 8:(slot + 1) * 8], old.k_proj.weight[g * 8:(g + 1) * 8])
            assert torch.equal(new.q_proj.weight[slot * 16:(slot + 1) * 16], old.q_proj.weight[g * 16:(g + 1) * 16])
            assert torch.equal(new.o_proj.weight[:, slot * 16:(slot + 1) * 16],
                               old.o_proj.weight[:, g * 16:(g + 1) * 16])
    x = trained[1].example_batch(3)
    with torch.no_grad():
        assert model(x).shape == (3, x.shape[1], trained[1].info.vocab_size)


def test_kv_cache_and_reload_agree(trained, tmp_path):
    model, _ = _prune(trained, amount=0.5, calibration=4)
    assert model.hf.config.num_key_value_heads == 2
    _cache_matches_full_forward(model, trained[1])
    back = _reload_equal(model, trained[1], tmp_path / "v")
    _check_shapes(back)


def test_calibrated_choice_beats_the_reversed_one(trained):
    _, data, _, tmp = trained
    task = CausalLMTask()
    dense = task.evaluate(_fresh(trained), data)["perplexity"]
    ppl = {}
    for name, select in (("importance", LMS.top_k),
                         ("reversed", lambda s, k: torch.sort(torch.topk(s, k, largest=False).indices).values)):
        model = _fresh(trained)
        LMS.prune_structured(job_context(model, data, tmp, job_name="prune"), model, 0.25, 16, select=select)
        ppl[name] = task.evaluate(model, data)["perplexity"]
    magnitude, _ = _prune(trained, amount=0.25, calibration=0)
    ppl["magnitude"] = task.evaluate(magnitude, data)["perplexity"]
    assert all(math.isfinite(v) for v in ppl.values()), ppl
    assert dense < ppl["importance"] < ppl["reversed"], (dense, ppl)
    assert ppl["importance"] < 1.5 * dense, (dense, ppl)


@pytest.mark.parametrize("arch", ["qwen2", "mistral"])
def test_qwen2_and_mistral(trained, tmp_path, arch):
    data = trained[1]
    model, ctx = _prune(trained, model=_family(arch, data), amount=0.5, calibration=4 if arch == "qwen2" else 0)
    cfg = model.hf.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.intermediate_size) == (2, 1, 16, 64)
    _check_shapes(model)
    if arch == "qwen2":
        assert model.hf.model.layers[0].self_attn.q_proj.bias.shape == (32,)
    assert ctx.result["importance"] == ("activation" if arch == "qwen2" else "magnitude")
    _cache_matches_full_forward(model, data)
    _reload_equal(model, data, tmp_path / arch)


def test_refusals_are_one_clear_line(trained):
    _, data, _, tmp = trained
    cases = [
        (dict(amount=0.9), r"amount=0\.9 would remove all 4 KV head groups"),
        (dict(amount=0.001), "removes no KV head group"),
        (dict(pattern="2:4"), "pattern 2:4 is for the sparse methods"),
        (dict(scope="global"), "scope and allocation must be uniform"),
        (dict(importance="taylor"), "importance=taylor is not implemented for language models"),
        (dict(steps=2), "one-shot"),
    ]
    for params, message in cases:
        with pytest.raises(InputError, match=message) as err:
            _prune(trained, **params)
        assert "\n" not in str(err.value)
    for arch, name in (("gpt2", "GPT2LMHeadModel"), ("gpt_neox", "GPTNeoXForCausalLM"), ("phi3", "Phi3ForCausalLM")):
        with pytest.raises(InputError, match=f"{name} is not one") as err:
            _prune(trained, model=_family(arch, data), amount=0.5)
        assert "\n" not in str(err.value)


def test_a_single_kv_head_keeps_attention_and_prunes_the_mlp(trained):
    data = trained[1]
    model = load_model("zoo:tiny_llama:hidden=64,layers=1,heads=2,kv_heads=1", data.info).eval()
    warnings = []
    ctx = job_context(model, data, trained[3], job_name="prune")
    ctx.warn = warnings.append
    PruneJob(method="structured", amount=0.5, calibration=2).run(ctx)
    assert model.hf.config.num_attention_heads == 2 and model.hf.config.intermediate_size == 96
    assert any("one KV head" in w for w in warnings)
    _check_shapes(model)


def test_cancel_stops_between_blocks(trained):
    _, data, _, tmp = trained
    model = _fresh(trained)
    ctx = job_context(model, data, tmp, job_name="prune")
    seen = []
    original = ctx.info

    def info(message):
        seen.append(message)
        original(message)
        if "block 0 pruned" in message:
            ctx._cancel.set()  # the user presses Stop after the first block

    ctx.info = info
    with pytest.raises(Cancelled):
        PruneJob(method="structured", amount=0.5, calibration=4).run(ctx)
    assert any("block 0 pruned" in m for m in seen) and not any("block 1" in m for m in seen)
    assert model.hf.model.layers[1].mlp.down_proj.in_features == 192  # block 1 was never touched


@pytest.mark.slow
def test_through_the_runner_the_variant_is_smaller_and_measured(trained, tmp_path):
    bench = Bench(tmp_path / "ws", trained[0])
    try:
        bench.session.bench_batch = 1
        root = bench.add(SPEC)
        out = bench.ok("prune", root, method="structured", amount=0.5, calibration=4)
        ws = bench.session.workspace
        metrics, base = ws.variant(out.variant).metrics, ws.variant(root).metrics
        assert metrics["params"] < base["params"] and math.isfinite(metrics["perplexity"])
        assert "latency_ms" in metrics
        reloaded = load_model(str(bench.folder(out.variant)), bench.data.info)
        assert reloaded.hf.config.num_key_value_heads == 2
        assert isinstance(reloaded.hf.model.layers[0].mlp.down_proj, nn.Linear)
    finally:
        bench.close()
