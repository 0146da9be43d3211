"""Our train job's loop against a plain PyTorch loop: same model, data, batch size and seed.

Prints samples/s of each (median over epochs, training only: validation and saving are not timed in either) for
paired runs in alternating order, and the median of the per-pair ratios with its 95% bootstrap interval. Target:
ours within 3% of plain PyTorch (ratio >= 0.97).
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


def main(epochs: int = 4, batch_size: int = 32, pairs: int = 6, seed: int = 0) -> float:
    import numpy as np

    from workbench.core.data import load_dataset
    from workbench.core.models import build_zoo_model
    from workbench.core.variants.timing import speedup_of

    data = load_dataset("digits", seed=seed)

    def fresh():
        torch.manual_seed(seed)
        return build_zoo_model("seed_cnn", data.info.input_shape, data.info.num_classes)

    plain_loop(data, fresh(), 1, batch_size, seed)  # warm-up (allocator, thread pools)
    ours, plain = [], []
    for i in range(pairs):  # paired, in alternating order (ABBA): a noisy neighbour hurts both alike
        runs = [lambda: plain.append(statistics.median(plain_loop(data, fresh(), epochs, batch_size, seed))),
                lambda: ours.append(statistics.median(our_loop("zoo:seed_cnn", "digits", epochs, batch_size, seed)))]
        for run in runs if i % 2 == 0 else runs[::-1]:
            run()
    ratio = speedup_of(1 / np.asarray(ours), 1 / np.asarray(plain), "plain")
    print(f"plain PyTorch loop: {statistics.median(plain):8.0f} samples/s {[round(r) for r in plain]}")
    print(f"workbench train:    {statistics.median(ours):8.0f} samples/s {[round(r) for r in ours]}")
    print(f"ratio ours/plain:   {ratio.ratio:8.3f}  95% CI [{ratio.ci[0]:.3f}, {ratio.ci[1]:.3f}], median of {pairs} "
          f"pairs, each the median of {epochs} epochs (target >= 0.97)")
    return ratio.ratio


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
