"""Language-model compression: every method on one trained tiny_llama, then int4 on a 50M-parameter one.

Trains ``zoo:tiny_llama:hidden=128`` on pydocs for 400 steps, runs each compression job on that variant through
the runner (the code batch mode runs), and prints perplexity, size, non-zero weights, the onnxruntime prefill
latency with its paired speed-up over the parent (95% interval, measured back to back), and decode tokens/s
(torch, KV cache, batch 1; ONNX variants have no decode path). Then distillation into a 2-layer student against
the same student trained alone for the same steps, and the 50M model's int4 figures (size and paired prefill
speed-up, the acceptance bars: at least 1.25x faster at most 0.35x the size).

    .venv/bin/python bench/lm_compress.py [--quick]     # --quick: 100 training steps, no 50M model
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

BASE = "zoo:tiny_llama:hidden=128"
BIG = "zoo:tiny_llama:hidden=768,layers=6,heads=12,kv_heads=4"
STUDENT = "zoo:tiny_llama:hidden=128,layers=2"
METHODS: list[tuple[str, str, dict[str, Any]]] = [
    ("int4 RTN g32", "quantize_weights", {"bits": 4, "algorithm": "rtn", "group_size": 32}),
    ("int4 GPTQ g32", "quantize_weights", {"bits": 4, "algorithm": "gptq", "group_size": 32}),
    ("int4 HQQ g32", "quantize_weights", {"bits": 4, "algorithm": "hqq", "group_size": 32}),
    ("int8 RTN g32", "quantize_weights", {"bits": 8, "algorithm": "rtn", "group_size": 32}),
    ("50% magnitude", "prune", {"method": "l1_unstructured", "amount": 0.5}),
    ("50% Wanda", "prune", {"method": "wanda", "amount": 0.5}),
    ("50% SparseGPT", "prune", {"method": "sparsegpt", "amount": 0.5}),
    ("2:4 magnitude", "prune", {"method": "l1_unstructured", "amount": 0.5, "pattern": "2:4"}),
    ("2:4 Wanda", "prune", {"method": "wanda", "amount": 0.5, "pattern": "2:4"}),
    ("2:4 SparseGPT", "prune", {"method": "sparsegpt", "amount": 0.5, "pattern": "2:4"}),
    ("drop 1 block (influence)", "drop_layers", {"count": 1, "criterion": "influence"}),
    ("drop 1 block (last)", "drop_layers", {"count": 1, "criterion": "last"}),
]


def _session(spec: str, out: str) -> tuple[Any, Any, str]:
    from workbench.core.batch import open_session
    from workbench.core.execution.runner import Runner
    from workbench.core.pipeline import Pipeline

    session, root = open_session(Pipeline(model=spec, dataset="pydocs", seed=0, device="cpu", out=out))
    return session, Runner(session), root


def _run(runner: Any, job: str, params: dict[str, Any], variant: str) -> Any:
    from workbench.core.execution.runner import JobRequest

    outcome = runner.run(JobRequest(job, dict(params), variant, "cpu", 0))
    if outcome.status != "ok":
        raise SystemExit(f"{job} {params} failed: {outcome.error}")
    return outcome


def _speedup(metrics: dict[str, Any]) -> str:
    s = metrics.get("speedup")
    if not s:
        return "-"
    return f"{s['ratio']:.2f}x [{s['ci'][0]:.2f}, {s['ci'][1]:.2f}]" + ("" if s["significant"] else " ~")


def _row(name: str, m: dict[str, Any], parent: dict[str, Any]) -> str:
    decode = f"{m['decode_tokens_per_s']:7.0f}" if m.get("decode_tokens_per_s") else "      -"
    return (f"{name:<26} {m['perplexity']:9.3f} {m['size_bytes'] / parent['size_bytes']:6.3f} "
            f"{m['nonzero_params'] / parent['params']:7.3f} {m['latency_ms']:8.2f}  {_speedup(m):<22} {decode}")


def tiny_table(steps: int) -> None:
    with tempfile.TemporaryDirectory() as out:
        session, runner, root = _session(BASE, out)
        try:
            base = _run(runner, "train", {"max_steps": steps}, root)
            parent = base.metrics
            print(f"{BASE} trained {steps} steps on pydocs; latency batch {session.bench_batch} x seq, onnxruntime "
                  "CPU; ratios against that variant")
            print(f"{'method':<26} {'perplex.':>9} {'size':>6} {'nonzero':>7} {'ORT ms':>8}  "
                  f"{'prefill speed-up [95%]':<22} {'decode tok/s':>7}")
            print(_row("fp32 (trained)", parent, parent))
            for name, job, params in METHODS:
                outcome = _run(runner, job, params, base.variant)
                print(_row(name, outcome.metrics, parent), flush=True)
            distilled = _run(runner, "distill", {"student": STUDENT, "max_steps": min(steps, 300)}, base.variant)
            print(_row("distilled 2-layer", distilled.metrics, parent))
        finally:
            runner.shutdown()
            session.workspace.close()
    with tempfile.TemporaryDirectory() as out:
        session, runner, root = _session(STUDENT, out)
        try:
            alone = _run(runner, "train", {"max_steps": min(steps, 300)}, root)
            print(_row("2-layer trained alone", alone.metrics, parent))
        finally:
            runner.shutdown()
            session.workspace.close()
    print("size and nonzero: x the trained fp32 variant; speed-up: paired against the job's input "
          "(~: not distinguishable from 1); decode: torch with KV cache, ONNX variants have none")


def big_model() -> None:
    with tempfile.TemporaryDirectory() as out:
        session, runner, root = _session(BIG, out)
        try:
            fp = session.workspace.variant(root).metrics
            q = _run(runner, "quantize_weights", {"bits": 4}, root)
            m = q.metrics
            s = m["speedup"]
            print(f"{BIG}: {fp['params'] / 1e6:.1f}M parameters, latency batch {session.bench_batch} x seq")
            print(f"fp32 prefill {fp['latency_ms']:.1f} ms, int4 RTN g128 (the default) {m['latency_ms']:.1f} ms: paired speed-up "
                  f"{s['ratio']:.2f}x [{s['ci'][0]:.2f}, {s['ci'][1]:.2f}] (target >= 1.25)")
            print(f"size {m['size_bytes'] / fp['size_bytes']:.3f}x (target <= 0.35), perplexity (untrained) "
                  f"{fp['perplexity']:.1f} -> {m['perplexity']:.1f}; job's verdict: {q.result.get('note', '-')}")
        finally:
            runner.shutdown()
            session.workspace.close()


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    tiny_table(100 if quick else 400)
    if not quick:
        big_model()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main(sys.argv[1:])
