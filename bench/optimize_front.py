"""Draw an optimize step's trials from a batch report: speed-up (paired, with its interval) against test accuracy,
the measured Pareto front, the target box and the winner. docs/OPTIMIZE.md shows one.

    .venv/bin/python bench/optimize_front.py OUT/report.json docs/screenshots/optimize_trials.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(report_path: str, png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = json.loads(Path(report_path).read_text())
    step = next(s for s in reversed(report["steps"]) if s["job"] == "optimize")
    result = step["result"]
    target = result["target"]
    base = target["input_accuracy"]
    ok = [t for t in result["trials"] if t["status"] == "ok"]
    front = {t["trial"] for t in result["front"]}
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for t in ok:
        low, high = t["speedup_ci"]
        on = t["trial"] in front
        ax.errorbar(t["speedup"], t["accuracy"], xerr=[[t["speedup"] - low], [high - t["speedup"]]], fmt="o",
                    color="#E15759" if on else "#4C8BF5", ecolor="#999999", capsize=3, ms=7 if on else 5)
        ax.annotate(f"{t['trial']}: {t['recipe_text']}", (t["speedup"], t["accuracy"]), fontsize=6.5,
                    xytext=(4, 4), textcoords="offset points")
    line = sorted((t["speedup"], t["accuracy"]) for t in ok if t["trial"] in front)
    ax.plot([p[0] for p in line], [p[1] for p in line], "--", color="#E15759", lw=1, label="measured Pareto front")
    ax.axvline(target["speedup"], color="#59A14F", lw=1, label=f"target {target['speedup']:g}x")
    ax.axhline(base - target["max_drop"], color="#59A14F", lw=1, ls=":", label=f"input accuracy - {target['max_drop'] * 100:g} pt")
    ax.axhline(base, color="#777777", lw=0.8, label="input accuracy")
    best = result.get("best") or {}
    if best:
        ax.scatter([best["speedup"]], [best["accuracy"]], s=160, facecolors="none", edgecolors="black",
                   label=f"winner (trial {best['trial']})")
    ax.set_xlabel("speed-up over the input (onnxruntime, paired; bars: 95% interval)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"optimize: {len(result['trials'])} trials in {result['seconds']:.0f} s", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:3])
