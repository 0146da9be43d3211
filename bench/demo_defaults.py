"""The demo's first Run: the train job's general defaults against the app's demo preset (workbench.app.DEMO_PRESETS)
on zoo:seed_cnn + digits, over a few seeds: test accuracy and seconds (training plus measuring the new variant).

    python bench/demo_defaults.py [--seeds 0,1,2] [--threads N]

The app runs jobs in a worker process that uses every core, so the default is torch's own thread count. Measured
with one thread on 2 cores shared with other work: the defaults gave 0.964-0.969 in 10-12 s (seeds 0, 1), the preset
0.983-0.989 in 18-22 s (seeds 0-2; 47 s once the machine was busy).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time


def run(params: dict, seed: int) -> tuple[float, float]:
    """Test accuracy and seconds of one train job with ``params`` on a freshly opened demo model."""
    from workbench.core.batch import open_session
    from workbench.core.execution.runner import JobRequest, Runner
    from workbench.core.jobs.registry import Registry, registry
    from workbench.core.pipeline import Pipeline

    with tempfile.TemporaryDirectory() as out:
        session, root = open_session(Pipeline(model="zoo:seed_cnn", dataset="digits", seed=seed, device="cpu",
                                              out=out))
        runner = Runner(session, plugins=Registry())
        runner.plugins.register(registry().load("train"), origin="bench")
        try:
            started = time.perf_counter()
            outcome = runner.submit(JobRequest("train", dict(params), root, "cpu", seed)).wait(900)
            seconds = time.perf_counter() - started
        finally:
            runner.shutdown()
            session.workspace.close()
    if outcome is None or outcome.status != "ok":
        raise SystemExit(f"train {params} seed {seed}: {getattr(outcome, 'error', 'timed out')}")
    return float(outcome.metrics["accuracy"]), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    import torch

    from workbench.app import DEMO_PRESETS

    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for label, params in (("train defaults", {}), ("demo preset", DEMO_PRESETS["train"])):
        for seed in seeds:
            accuracy, seconds = run(params, seed)
            rows.append({"what": label, "params": params, "seed": seed, "accuracy": accuracy,
                         "seconds": round(seconds, 1)})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'':16s} {'accuracy':>18s} {'seconds':>12s}  ({torch.get_num_threads()} threads)")
    for label in ("train defaults", "demo preset"):
        accs = [r["accuracy"] for r in rows if r["what"] == label]
        secs = [r["seconds"] for r in rows if r["what"] == label]
        print(f"{label:16s} {min(accs):8.3f} - {max(accs):.3f} {min(secs):5.1f} - {max(secs):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
