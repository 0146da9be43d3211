"""The built-in jobs on a language model, through the runner as the CLI drives them: train (max_steps, tokens/s,
perplexity), evaluate, generate, export; the jobs written for classifiers refuse in one line."""

from __future__ import annotations

import pytest
import torch

from tests.core.lm.lm_helpers import make_corpus
from tests.plugins.helpers import Bench

SPEC = "zoo:tiny_llama:hidden=32,layers=1,heads=2,kv_heads=1"


@pytest.fixture
def bench(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    corpus = make_corpus(tmp_path / "corpus.txt", lines=400)
    b = Bench(tmp_path / "ws", f"text:{corpus}:seq_len=16,vocab=300")
    b.session.bench_batch = 1
    yield b
    b.runner.shutdown()
    b.session.workspace.close()


@pytest.mark.slow
def test_train_stops_at_max_steps_and_lowers_perplexity(bench):
    root = bench.add(SPEC)
    before = bench.session.workspace.variant(root).metrics
    assert before["perplexity"] > 100 and "accuracy" not in before
    assert {"loss", "token_accuracy", "latency_ms", "latency_torch_ms", "decode_tokens_per_s"} <= set(before)
    out = bench.ok("train", root, max_steps=25, batch_size=8, lr=5e-3)
    steps = [s for s, m in out.history if "loss" in m and "train_loss" not in m]
    assert max(steps) == 25  # one loss per optimizer step, then it stopped
    epoch = [m for _, m in out.history if "tokens_per_s" in m]
    assert len(epoch) == 1 and epoch[0]["tokens_per_s"] > 0 and "val_perplexity" in epoch[0]
    assert all("perplexity" in m for _, m in out.history if "loss" in m and "train_loss" not in m)
    after = bench.session.workspace.variant(out.variant).metrics
    assert after["perplexity"] < 0.5 * before["perplexity"]


def test_gradient_accumulation_counts_optimizer_steps(bench):
    root = bench.add(SPEC)
    out = bench.ok("train", root, max_steps=4, accumulate=3, batch_size=4)
    losses = [m for _, m in out.history if "loss" in m and "train_loss" not in m]
    assert len(losses) == 12  # three batches per step
    assert max(s for s, m in out.history if "loss" in m) == 4


def test_bf16_autocast_trains_a_language_model_and_keeps_fp32_weights(bench):
    """amp=bf16 on the CPU: the losses differ from fp32's (autocast really ran), perplexity still falls, and the
    saved variant holds fp32 master weights (it reloads and measures like any other)."""
    root = bench.add(SPEC)
    before = bench.session.workspace.variant(root).metrics["perplexity"]
    runs = {amp: bench.ok("train", root, max_steps=12, batch_size=8, lr=5e-3, amp=amp) for amp in ("off", "bf16")}
    losses = {amp: [m["loss"] for _, m in out.history if "loss" in m and "train_loss" not in m]
              for amp, out in runs.items()}
    assert len(losses["off"]) == len(losses["bf16"]) == 12
    assert losses["off"][0] == pytest.approx(losses["bf16"][0], rel=0.05) and losses["off"] != losses["bf16"]
    after = bench.session.workspace.variant(runs["bf16"].variant).metrics["perplexity"]
    assert after < 0.8 * before, (before, after)
    model = bench.session.load_variant(runs["bf16"].variant, "cpu")
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_optimize_searches_a_language_model_by_perplexity_to_a_size_target(bench):
    """optimize on a language model: the quality is perplexity (a relative rise bounds it), its recipes drop
    blocks and quantize weights; a size target (deterministic, unlike latency) is met within the budget."""
    root = bench.add("zoo:tiny_llama:hidden=32,layers=2,heads=2,kv_heads=1")
    before = bench.session.workspace.variant(root).metrics
    out = bench.ok("optimize", root, target="size", size_ratio=2.0, max_drop=0.05, trials=6, seed=0)
    r = out.result
    assert r["target"]["quality"] == "perplexity" and r["target"]["input_perplexity"] == pytest.approx(
        before["perplexity"], rel=1e-6)
    best = r["best"]
    assert best["met"], r["trials"]
    assert before["size_bytes"] / best["size_bytes"] >= 2.0
    assert best["perplexity"] <= 1.05 * before["perplexity"]
    assert all("accuracy" not in t for t in r["trials"])
    winner = bench.session.workspace.variant(out.variant).metrics
    assert winner["size_bytes"] == best["size_bytes"] and "perplexity" in winner


def test_generate_export_evaluate_work_and_classifier_jobs_refuse(bench, tmp_path):
    root = bench.add(SPEC)
    out = bench.ok("generate", root, prompt="The model", max_new_tokens=6)
    assert out.variant in (None, root)
    assert out.result["prompt"] == "The model" and out.result["new_tokens"] == 6
    assert isinstance(out.result["text"], str) and out.result["tokens_per_s"] > 0
    out = bench.ok("export", root, path=str(tmp_path / "lm.onnx"))
    assert out.result["exporter"] == "dynamo" and (tmp_path / "lm.onnx").is_file()
    assert "perplexity" in out.metrics
    metrics = bench.ok("evaluate", root).metrics
    assert "perplexity" in metrics and "accuracy" not in metrics
    for job in ("quantize", "fuse"):
        out = bench.run(job, root)
        assert out.status == "failed" and out.bad_input, job
        assert "works on classifiers only" in out.error and "\n" not in out.error


def test_generate_refuses_a_classifier(tmp_path):
    b = Bench(tmp_path / "ws", "digits")
    root = b.add("zoo:mlp:hidden=16")
    out = b.run("generate", root, prompt="hi")
    assert out.status == "failed" and "needs a language model" in out.error
    b.runner.shutdown()
