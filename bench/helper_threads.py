"""Why the app's background work runs on a thread per task: training on the job worker after a helper thread
has run PyTorch (as opening a model and measuring it does), with the helper kept alive (a thread pool) against
the helper gone (``workbench.ui.threads.ThreadPerTask``), and against no helper at all.

A thread that ran a parallel PyTorch operation keeps its OpenMP pool while it lives; with more pool threads than
cores, OpenMP stops spinning between parallel regions and every region pays a wake-up. Both runs use PyTorch's
default thread count (the app limits jobs to one core fewer than the machine has; on 2 cores that is one thread
and no pool forms, so the effect shows on larger machines, and here only at the default count). Target: the
worker after a ThreadPerTask helper within 10% of the no-helper baseline.
"""

from __future__ import annotations

import concurrent.futures
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from workbench.ui.threads import ThreadPerTask  # noqa: E402 - Qt-free module of the UI package

STEPS = 120


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(64 * 11 * 11, 10))


def measure_like_opening() -> None:
    """What a helper does when the app opens a model: passes with PyTorch's parallel kernels."""
    model = _model()
    for _ in range(20):
        model(torch.randn(64, 1, 28, 28)).sum().backward()


def train_rate() -> float:
    model, x, y = _model(), torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    opt = torch.optim.Adam(model.parameters())
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(STEPS):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        rates.append(STEPS * 32 / (time.perf_counter() - start))
    return statistics.median(rates)


def on_worker() -> float:
    result: list[float] = []
    worker = threading.Thread(target=lambda: result.append(train_rate()), name="job-worker")
    worker.start()
    worker.join()
    return result[0]


def after_helper(kind: str) -> float:
    """Training speed on a fresh worker thread after a helper of ``kind`` ran PyTorch work."""
    if kind == "none":
        return on_worker()
    executor = concurrent.futures.ThreadPoolExecutor(1) if kind == "pool" else ThreadPerTask(1, name="helper")
    executor.submit(measure_like_opening).result()
    if kind == "pool":
        rate = on_worker()  # the pool's thread, and its OpenMP pool, are still alive here
        executor.shutdown()
        return rate
    executor.shutdown(wait=True)
    return on_worker()


def main() -> int:
    on_worker()  # warm-up: first-use costs must not land on one of the compared runs
    runs: dict[str, list[float]] = {"none": [], "pool": [], "per_task": []}
    for _ in range(2):
        for kind in runs:
            runs[kind].append(after_helper(kind))
    rate = {kind: statistics.median(values) for kind, values in runs.items()}
    print(f"torch threads {torch.get_num_threads()}; job-worker training, samples/s (median of 2 rounds, "
          f"each the median of 3 x {STEPS} steps)")
    print(f"no helper thread before:           {rate['none']:8.0f}")
    print(f"helper kept alive (thread pool):   {rate['pool']:8.0f}  ratio {rate['pool'] / rate['none']:.2f}")
    print(f"helper ended (ThreadPerTask):      {rate['per_task']:8.0f}  ratio {rate['per_task'] / rate['none']:.2f}")
    ok = rate["per_task"] / rate["none"] >= 0.9
    print(f"helper_threads: after a ThreadPerTask helper {rate['per_task'] / rate['pool']:.2f}x as fast as after a "
          f"pooled one; {rate['per_task'] / rate['none']:.2f} of no helper (target >= 0.9): "
          f"{'OK' if ok else 'UNDER TARGET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
