"""Distillation gain on digits: teacher vs the same student trained alone vs distilled (same epochs and seed).

    .venv/bin/python bench/distill_gain.py [--teacher zoo:resnet18:width=0.5] [--teacher-epochs 4]
        [--student zoo:seed_cnn:width=0.25] [--epochs 10] [--lr 0.01] [--seed 0] [--dataset digits]

The student alone and the distilled student use the same optimizer, learning rate, epochs and seed, so the
difference is the teacher's soft targets only. Accuracies are on the test split.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from workbench.core.batch import open_session
from workbench.core.execution.runner import JobRequest, Runner
from workbench.core.models.loading import load_model
from workbench.core.pipeline import Pipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="zoo:resnet18:width=0.5")
    ap.add_argument("--teacher-epochs", type=int, default=4)
    ap.add_argument("--student", default="zoo:seed_cnn:width=0.25")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", default="digits")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for name, model in (("teacher", args.teacher), ("alone", args.student)):
            pipe = Pipeline(model=model, dataset=args.dataset, seed=args.seed, device="cpu", out=str(Path(tmp) / name))
            session, root = open_session(pipe)
            runner = Runner(session)
            try:
                if name == "teacher":
                    teacher = runner.run(JobRequest("train", {"epochs": args.teacher_epochs}, root, "cpu", args.seed))
                    distilled = runner.run(JobRequest(
                        "distill", {"student": args.student, "epochs": args.epochs, "lr": args.lr},
                        teacher.variant, "cpu", args.seed))
                    results["teacher"], results["distilled"] = teacher, distilled
                else:
                    # the same architecture, initial weights, data order and learning rate as the distilled one
                    torch.manual_seed(args.seed)
                    student = load_model(args.student, session.data.info)
                    start = session.add_root(student, args.student).id
                    results["alone"] = runner.run(JobRequest(
                        "train", {"epochs": args.epochs, "lr": args.lr}, start, "cpu", args.seed))
            finally:
                runner.shutdown()
                session.workspace.close()
        for key, out in results.items():
            if out.status != "ok":
                raise SystemExit(f"{key} failed: {out.error}")
        t, a, d = (results[k].metrics for k in ("teacher", "alone", "distilled"))
        print(f"teacher   {t['accuracy']:.4f}  params {t['params']:,}")
        print(f"alone     {a['accuracy']:.4f}  params {a['params']:,}  (lr {args.lr:g}, {args.epochs} epochs)")
        print(f"distilled {d['accuracy']:.4f}  params {d['params']:,}  ({d['params'] / t['params']:.3f}x teacher)")
        print(f"gain over alone {100 * (d['accuracy'] - a['accuracy']):+.1f} points; "
              f"gap to teacher {100 * (d['accuracy'] - t['accuracy']):+.1f} points")


if __name__ == "__main__":
    main()
