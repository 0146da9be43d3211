"""Our train job's loop against a plain PyTorch loop: same model, data, batch size and seed, one run.

Prints samples/s of each (median over epochs, training only: validation and saving are not timed in either)
and their ratio. Target: ours within 3% of plain PyTorch (ratio >= 0.97).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F


def plain_loop(data, model, epochs: int, batch_size: int, seed: int) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rates = []
    for epoch in range(1, epochs + 1):
        model.train()
        start, count = time.perf_counter(), 0
        for x, y in data.loader("train", batch_size=batch_size, seed=seed + epoch):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.item()
            loss.backward()
            opt.step()
            count += y.shape[0]
        rates.append(count / (time.perf_counter() - start))
    return rates


def our_loop(model_spec: str, dataset: str, epochs: int, batch_size: int, seed: int) -> list[float]:
    from workbench.core.batch import open_session
    from workbench.core.execution.runner import JobRequest, Runner
    from workbench.core.pipeline import Pipeline

    with tempfile.TemporaryDirectory() as tmp:
        session, root = open_session(Pipeline(model=model_spec, dataset=dataset, seed=seed, device="cpu", out=tmp))
        runner = Runner(session)
        params = {"epochs": epochs, "batch_size": batch_size, "augment": "none"}
        outcome = runner.run(JobRequest("train", params, root, "cpu", seed))  # in this process, on this thread
        runner.shutdown()
        session.workspace.close()
    if outcome.status != "ok":
        raise SystemExit(f"train job failed: {outcome.error}")
    return [m["samples_per_s"] for _, m in outcome.history if "samples_per_s" in m]


def main(epochs: int = 4, batch_size: int = 32, seed: int = 0) -> float:
    from workbench.core.data import load_dataset
    from workbench.core.models import build_zoo_model

    data = load_dataset("digits", seed=seed)
    torch.manual_seed(seed)
    model = build_zoo_model("seed_cnn", data.info.input_shape, data.info.num_classes)
    plain_loop(data, model, 1, batch_size, seed)  # warm-up (allocator, thread pools)
    ours, plain = [], []
    for _ in range(2):  # interleave so a noisy neighbour hurts both alike
        torch.manual_seed(seed)
        model = build_zoo_model("seed_cnn", data.info.input_shape, data.info.num_classes)
        plain += plain_loop(data, model, epochs, batch_size, seed)
        ours += our_loop("zoo:seed_cnn", "digits", epochs, batch_size, seed)
    p, o = statistics.median(plain), statistics.median(ours)
    print(f"plain PyTorch loop: {p:8.0f} samples/s (median of {len(plain)} epochs)")
    print(f"workbench train:    {o:8.0f} samples/s (median of {len(ours)} epochs)")
    print(f"ratio ours/plain:   {o / p:8.3f}  (target >= 0.97)")
    return o / p


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
