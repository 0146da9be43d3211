"""Language-model training: our train job against a plain PyTorch loop on the same tiny_llama, corpus, batch size,
steps and seed; then decode speed with a KV cache (torch, greedy, batch 1) and the prefill latency through
onnxruntime and torch.

The train job runs the way batch mode and the app run it: in a worker process (``--inline``: in this process).
Each run records when every optimizer step ended (the plain loop with the clock, the job through the time stamp of
its per-step loss event), so two figures come out of the same runs:

- *steady*: tokens per step over the 10%-trimmed mean step time, which drops the bursts this shared 2-core machine
  adds to either loop at random (a single step here spreads 27-44 ms between p10 and p90) but keeps any cost the
  job adds to every step, or to every few steps;
- *whole run*: the job's own tokens/s (what it logs and the app plots: first step to last, the worker's cold start
  included) against the plain loop's, timed the same way.

Runs are paired and interleaved in alternating order (ABBA); the ratio is the median of the per-pair ratios with a
95% bootstrap interval (``workbench.core.variants.timing``, as the Compare screen's speed-ups). Target: >= 0.97.

    .venv/bin/python bench/lm_train.py [STEPS] [BATCH] [RUNS] [--inline]

With the worker process (the default) the plain loop too runs in a fresh process each time; with ``--inline`` both
run in this process (the plain loop warmed up first).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import trim_mean

MODEL = "zoo:tiny_llama:hidden=64,layers=2,heads=4,kv_heads=2"
DATASET = "pydocs:seq_len=64"
TRIM = 0.1  # each tail of the step times that the steady figure drops


@dataclass
class Run:
    """One training run: tokens per optimizer step, the time each step ended, and the rate the run reports."""

    tokens_per_step: int
    step_ends: list[float]
    reported: float  # tokens/s over the whole run

    @property
    def steady(self) -> float:
        """Tokens/s over the trimmed mean of the step times (the first step, with its warm-up, has no interval)."""
        return self.tokens_per_step / float(trim_mean(np.diff(self.step_ends), TRIM))


def plain_loop(data, model, steps: int, batch_size: int, seed: int) -> Run:
    """The loop a practitioner writes: Adam, cross-entropy over every position, one loss read per step."""
    from workbench.core.tasks import task_of

    task = task_of(data.info)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    start, tokens, ends = time.perf_counter(), 0, []
    for x, y in data.loader("train", batch_size=batch_size, seed=seed + 1):
        opt.zero_grad(set_to_none=True)
        loss = task.training_loss(model(x), y)
        loss.backward()
        opt.step()
        loss.item()
        ends.append(time.perf_counter())
        tokens += y.numel()
        if len(ends) == steps:
            break
    return Run(tokens // steps, ends, tokens / (ends[-1] - start))


def plain_loop_in_process(steps: int, batch_size: int, seed: int) -> Run:
    """``plain_loop`` in a fresh Python process, as the train job runs in a fresh worker process: both start cold,
    with their own allocator and thread pools, so the pair differs only in the loops."""
    import json
    import subprocess

    out = subprocess.run([sys.executable, __file__, "--plain", str(steps), str(batch_size), str(seed)],
                         capture_output=True, text=True, check=True).stdout
    fields = json.loads(out.strip().splitlines()[-1])
    return Run(fields["tokens_per_step"], fields["step_ends"], fields["reported"])


def _plain_main(steps: int, batch_size: int, seed: int) -> None:
    import json

    from workbench.core.data import load_dataset
    from workbench.core.models import load_model

    data = load_dataset(DATASET, seed=seed)
    torch.manual_seed(seed)
    run = plain_loop(data, load_model(MODEL, data.info), steps, batch_size, seed)
    print(json.dumps({"tokens_per_step": run.tokens_per_step, "step_ends": run.step_ends, "reported": run.reported}))


def our_loop(steps: int, batch_size: int, seed: int, executor: str, tokens_per_step: int) -> Run:
    """The train job through the runner (epochs 1, max_steps): its own tokens/s and its step events' times."""
    from workbench.core.batch import open_session
    from workbench.core.execution.runner import JobRequest, Runner
    from workbench.core.jobs.events import METRIC
    from workbench.core.pipeline import Pipeline

    ends: list[float] = []

    def on_event(event) -> None:  # one metric event with the step's loss per optimizer step, stamped where it ran
        if event.kind == METRIC and "loss" in event.data["metrics"]:
            ends.append(event.time)

    with tempfile.TemporaryDirectory() as tmp:
        session, root = open_session(Pipeline(model=MODEL, dataset=DATASET, seed=seed, device="cpu", out=tmp))
        runner = Runner(session, executor=executor)
        runner.bus.subscribe(on_event)
        params = {"epochs": 1, "batch_size": batch_size, "max_steps": steps, "augment": "none"}
        outcome = runner.run(JobRequest("train", params, root, "cpu", seed))
        runner.shutdown()
        session.workspace.close()
    if outcome.status != "ok":
        raise SystemExit(f"train job failed: {outcome.error}")
    if len(ends) != steps:
        raise SystemExit(f"expected {steps} step events from the train job, got {len(ends)}")
    rates = [m["tokens_per_s"] for _, m in outcome.history if "tokens_per_s" in m]
    return Run(tokens_per_step, ends, rates[-1])


def decode_and_prefill(data, model) -> None:
    from workbench.core.lm.generate import decode_tokens_per_s
    from workbench.core.lm.onnx_decode import export_decoder_with_cache, onnx_decode_tokens_per_s
    from workbench.core.tasks import task_of
    from workbench.core.variants import measure as m

    task = task_of(data.info)
    prompt = data.example_batch(1)[0, :16].tolist()
    new_tokens = 64
    decode = statistics.median(decode_tokens_per_s(model, prompt, new_tokens, repeats=3) for _ in range(3))
    batch = task.bench_input(data, 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = task.export_onnx(model, batch, f"{tmp}/lm.onnx").path
        ort = m.latency_onnx_ms(path, batch)
        # one decode step with a static KV cache of exactly prompt + continuation slots, verified against torch
        dec = export_decoder_with_cache(model, f"{tmp}/decode.onnx", len(prompt) + new_tokens, verify_prompt=prompt)
        threads = torch.get_num_threads()  # onnxruntime gets the threads torch has, for a like-for-like figure
        decode_ort = statistics.median(onnx_decode_tokens_per_s(dec.path, prompt, new_tokens, repeats=3,
                                                                threads=threads) for _ in range(3))
    torch_ms = m.latency_torch_ms(model, batch)
    seq = batch.shape[1]
    print(f"decode, torch + KV cache:       {decode:8.0f} tokens/s (greedy, batch 1, {new_tokens} new tokens)")
    print(f"decode, onnxruntime + KV cache: {decode_ort:8.0f} tokens/s (static cache of {dec.max_len} slots, "
          f"{threads} thread(s); greedy tokens match torch, max logit diff {dec.max_abs_diff:.1e})")
    print(f"prefill 1x{seq}, onnxruntime: {ort:8.2f} ms ({seq / ort * 1000:.0f} tokens/s)")
    print(f"prefill 1x{seq}, torch:       {torch_ms:8.2f} ms ({seq / torch_ms * 1000:.0f} tokens/s)")


def pair_ratio(name: str, ours: list[float], plain: list[float]) -> float:
    """Print the median per-pair ratio of two rates with its bootstrap interval (a rate is an inverse latency)."""
    from workbench.core.variants.timing import speedup_of

    s = speedup_of(1 / np.asarray(ours), 1 / np.asarray(plain), "plain")
    print(f"ratio ours/plain, {name}: {s.ratio:6.3f}  95% CI [{s.ci[0]:.3f}, {s.ci[1]:.3f}], median of "
          f"{len(ours)} pairs (target >= 0.97)")
    return s.ratio


def main(steps: int = 100, batch_size: int = 16, runs: int = 8, executor: str = "process", seed: int = 0) -> float:
    from workbench.core.data import load_dataset
    from workbench.core.models import load_model

    data = load_dataset(DATASET, seed=seed)
    tokens_per_step = batch_size * data.example_batch(1).shape[-1]

    def fresh():
        torch.manual_seed(seed)
        return load_model(MODEL, data.info)

    def run_plain() -> Run:
        if executor == "process":
            return plain_loop_in_process(steps, batch_size, seed)
        return plain_loop(data, fresh(), steps, batch_size, seed)

    if executor != "process":
        plain_loop(data, fresh(), 5, batch_size, seed)  # warm-up (allocator, thread pools, lazy imports)
    ours: list[Run] = []
    plain: list[Run] = []
    for i in range(runs):  # paired and interleaved in alternating order (ABBA): a noisy neighbour hurts both alike
        pair = [lambda: plain.append(run_plain()),
                lambda: ours.append(our_loop(steps, batch_size, seed, executor, tokens_per_step))]
        for run in pair if i % 2 == 0 else pair[::-1]:
            run()
    where = "a fresh worker process, the plain loop in a fresh process" if executor == "process" else "this process"
    print(f"{MODEL} on {DATASET}, batch {batch_size} ({tokens_per_step} tokens), {steps} steps, {runs} paired runs; "
          f"the train job in {where}; {torch.get_num_threads()} threads")
    for label, key in (("steady", "steady"), ("whole run", "reported")):
        p = [getattr(r, key) for r in plain]
        o = [getattr(r, key) for r in ours]
        print(f"{label:>9}: plain {statistics.median(p):6.0f} tokens/s {[round(r) for r in p]}")
        print(f"{'':>9}  ours  {statistics.median(o):6.0f} tokens/s {[round(r) for r in o]}")
    steady = pair_ratio("steady", [r.steady for r in ours], [r.steady for r in plain])
    pair_ratio("whole run", [r.reported for r in ours], [r.reported for r in plain])
    decode_and_prefill(data, fresh().eval())
    return steady


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if "--plain" in sys.argv:
        _plain_main(*(int(a) for a in args))
        sys.exit(0)
    main(*(int(a) for a in args), executor="inline" if "--inline" in sys.argv else "process")
