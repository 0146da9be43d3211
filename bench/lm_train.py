"""Language-model training: our train job's loop against a plain PyTorch loop on the same tiny_llama, corpus, batch
size, steps and seed; then decode speed with a KV cache (torch, greedy, batch 1) and the prefill latency through
onnxruntime and torch.

Prints tokens/s of each loop (training only: validation and saving are timed in neither; runs paired and
interleaved in alternating order) and the median of the per-pair ratios (target >= 0.97), then decode tokens/s with
a KV cache in torch and in onnxruntime (the static-cache decode graph of workbench.core.lm.onnx_decode) and the
prefill latency in both.

    .venv/bin/python bench/lm_train.py [STEPS] [BATCH] [RUNS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

import torch

MODEL = "zoo:tiny_llama:hidden=64,layers=2,heads=4,kv_heads=2"
DATASET = "pydocs:seq_len=64"


def plain_loop(data, model, steps: int, batch_size: int, seed: int) -> float:
    """The loop a practitioner writes: Adam, cross-entropy over every position, one loss read per step."""
    from workbench.core.tasks import task_of

    task = task_of(data.info)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    start, tokens, done = time.perf_counter(), 0, 0
    for x, y in data.loader("train", batch_size=batch_size, seed=seed + 1):
        opt.zero_grad(set_to_none=True)
        loss = task.training_loss(model(x), y)
        loss.backward()
        opt.step()
        loss.item()
        tokens += y.numel()
        done += 1
        if done == steps:
            break
    return tokens / (time.perf_counter() - start)


def our_loop(steps: int, batch_size: int, seed: int) -> float:
    """The train job through the runner in this process (epochs 1, max_steps): its own tokens/s figure."""
    from workbench.core.batch import open_session
    from workbench.core.execution.runner import JobRequest, Runner
    from workbench.core.pipeline import Pipeline

    with tempfile.TemporaryDirectory() as tmp:
        session, root = open_session(Pipeline(model=MODEL, dataset=DATASET, seed=seed, device="cpu", out=tmp))
        runner = Runner(session)
        params = {"epochs": 1, "batch_size": batch_size, "max_steps": steps, "augment": "none"}
        outcome = runner.run(JobRequest("train", params, root, "cpu", seed))
        runner.shutdown()
        session.workspace.close()
    if outcome.status != "ok":
        raise SystemExit(f"train job failed: {outcome.error}")
    rates = [m["tokens_per_s"] for _, m in outcome.history if "tokens_per_s" in m]
    return rates[-1]


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


def main(steps: int = 40, batch_size: int = 16, runs: int = 6, seed: int = 0) -> float:
    from workbench.core.data import load_dataset
    from workbench.core.models import load_model

    data = load_dataset(DATASET, seed=seed)

    def fresh():
        torch.manual_seed(seed)
        return load_model(MODEL, data.info)

    plain_loop(data, fresh(), 5, batch_size, seed)  # warm-up (allocator, thread pools, lazy imports)
    ours, plain = [], []
    for i in range(runs):  # paired and interleaved in alternating order (ABBA): a noisy neighbour hurts both alike
        pair = [lambda: plain.append(plain_loop(data, fresh(), steps, batch_size, seed)),
                lambda: ours.append(our_loop(steps, batch_size, seed))]
        for run in pair if i % 2 == 0 else pair[::-1]:
            run()
    p, o = statistics.median(plain), statistics.median(ours)
    ratios = [a / b for a, b in zip(ours, plain)]
    ratio = statistics.median(ratios)
    print(f"{MODEL} on {DATASET}, batch {batch_size}, {steps} steps, {runs} paired runs")
    print(f"plain PyTorch loop: {p:8.0f} tokens/s  {[round(r) for r in plain]}")
    print(f"workbench train:    {o:8.0f} tokens/s  {[round(r) for r in ours]}")
    print(f"ratio ours/plain:   {ratio:8.3f}  median of the pairs, range {min(ratios):.2f}-{max(ratios):.2f} "
          "(target >= 0.97)")
    decode_and_prefill(data, fresh().eval())
    return ratio


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
