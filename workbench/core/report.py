"""The batch report: ``report.json`` (contract section 2), ``report.md`` and PNG plots.

``report.md`` shows latencies as value ± half their 95% interval and each step's speed-up as measured paired
against its parent, "no measurable change" when within noise (wording shared with the app, ``core.figures``);
the Pareto PNG of latency draws each variant's interval as a horizontal error bar.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from workbench.core.figures import interval, latency_text, speedup_readout
from workbench.core.workspace.atomic import atomic_write_text
from workbench.core.workspace.store import Variant

COLUMNS = ("accuracy", "loss", "params", "nonzero_params", "size_bytes", "macs", "latency_ms", "latency_torch_ms")


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both (higher accuracy, lower cost)."""
    front = []
    for i, (acc, cost) in enumerate(points):
        dominated = any(
            (a >= acc and c <= cost) and (a > acc or c < cost) for j, (a, c) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return front


def write_report(out: Path, header: dict[str, Any], steps: list[dict[str, Any]], variants: list[Variant],
                 histories: dict[int, dict[str, list[tuple[int, float]]]]) -> dict[str, Any]:
    report = {**header, "steps": steps,
              "variants": [{"id": v.id, "parent": v.parent, "job": v.job, "metrics": v.metrics, "marks": v.marks}
                           for v in variants]}
    atomic_write_text(out / "report.json", json.dumps(report, indent=1, default=str))
    atomic_write_text(out / "report.md", render_markdown(report))
    write_plots(out, steps, variants, histories, header.get("task"))
    return report


def _fmt(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key in ("accuracy", "token_accuracy"):
        return f"{value:.4f}"
    if key in ("perplexity", "decode_tokens_per_s"):
        return f"{value:.2f}"
    if key in ("latency_ms", "latency_torch_ms", "loss"):
        return f"{value:.3f}"
    if key == "size_bytes":
        return f"{value / 1024:.1f} KiB"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _cell(key: str, metrics: dict[str, Any]) -> str:
    """A table cell; a latency (or decode speed) with an interval reads ``12.3 ±0.4``."""
    ci = interval(metrics.get(f"{key}_ci")) if key in ("latency_ms", "latency_torch_ms", "decode_tokens_per_s") \
        else None
    if ci is not None and isinstance(metrics.get(key), int | float):
        return latency_text(float(metrics[key]), ci, unit="")
    return _fmt(key, metrics.get(key))


def _speedup_cell(step: dict[str, Any], metrics_of: dict[str, dict[str, Any]]) -> str:
    """The step's paired speed-up against its parent; for a report without one, the parent's latency is compared,
    claiming a change only where the two intervals do not overlap."""
    m = {**step.get("metrics", {})}
    if step.get("speedup") is not None:
        m["speedup"] = step["speedup"]
    if not step.get("variant") or step.get("variant") == step.get("parent"):
        return "-"
    parent = step.get("parent")
    return speedup_readout(m, metrics_of.get(parent) if parent else None, parent).text


def columns_for(task: str | None) -> tuple[str, ...]:
    """The table's figures: a language model's headline is perplexity (with decode speed), not accuracy."""
    if task == "causal_lm":
        return ("perplexity", "token_accuracy", *COLUMNS[1:], "decode_tokens_per_s")
    return COLUMNS


def generated_texts(report: dict[str, Any]) -> list[tuple[int, dict[str, Any], str, str]]:
    """(step number, step, prompt, continuation) of each step that wrote text (``generate:prompt=...``): the
    text is what the user ran the step for, so the report and the console show it, not only report.json."""
    out = []
    for number, step in enumerate(report.get("steps", []), 1):
        result = step.get("result") or {}
        if isinstance(result.get("text"), str):
            out.append((number, step, str(result.get("prompt") or ""), result["text"]))
    return out


def render_markdown(report: dict[str, Any]) -> str:
    columns = columns_for(report.get("task"))
    lines = ["# Workbench report", "", f"- model: `{report.get('model')}`", f"- dataset: `{report.get('dataset')}`",
             f"- device: `{report.get('device')}`", "", "## Steps", "",
             "| # | job | variant | parent | status | seconds | " + " | ".join(columns) + " | speed-up vs parent |",
             "|" + "---|" * (7 + len(columns))]
    metrics_of = {v["id"]: v.get("metrics", {}) for v in report.get("variants", [])}
    for i, s in enumerate(report["steps"], 1):
        m = s.get("metrics", {})
        cells = [str(i), s["job"], str(s.get("variant") or "-"), str(s.get("parent") or "-"), s["status"],
                 f"{s.get('seconds', 0):.1f}"] + [_cell(k, m) for k in columns] + [_speedup_cell(s, metrics_of)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Latencies in ms, ± half their 95% interval. Speed-up: the parent's latency over the variant's, "
                  "measured paired (alternating runs), with its 95% interval; \"no measurable change\" when within "
                  "noise, \"~\" when not measured paired."]
    failed = [s for s in report["steps"] if s.get("error")]
    if failed:
        lines += ["", "## Errors", ""] + [f"- {s['job']}: {s['error']}" for s in failed]
    notes = [(s["job"], mark) for s in report["steps"] for mark in s.get("marks", [])]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {job}: {mark}" for job, mark in notes]
    texts = generated_texts(report)
    if texts:
        lines += ["", "## Generated text", ""]
        for number, step, prompt, text in texts:
            lines += [f"Step {number} ({step['job']} on {step.get('variant') or step.get('parent')}), "
                      f"prompt {prompt!r}:", "", "```text", (prompt + text).rstrip(), "```", ""]
    quality = _quality(report.get("task"))
    lines += ["", "## Plots", "", "![training curves](training_curves.png)", "",
              f"![{quality} vs latency](pareto_latency.png)", "", f"![{quality} vs size](pareto_size.png)", ""]
    return "\n".join(lines)


def write_plots(out: Path, steps: list[dict[str, Any]], variants: list[Variant],
                histories: dict[int, dict[str, list[tuple[int, float]]]], task: str | None = None) -> None:
    """Training curves and the two Pareto plots; a language model's are of perplexity (log axis, lower is
    better), where a classifier's are of accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quality = _quality(task)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for index, history in histories.items():
        job = steps[index]["job"] if index < len(steps) else "?"
        for name, ax in (("loss", axes[0]), (f"val_{quality}", axes[1])):
            points = history.get(name, [])
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], lw=1, label=f"step {index + 1}: {job}")
    axes[0].set_title("training loss")
    axes[1].set_title(f"validation {quality}")
    if quality == "perplexity" and axes[1].lines:
        _log_y(axes[1])
    for ax in axes:
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, out / "training_curves.png")
    plt.close(fig)
    for index, history in histories.items():
        if history and index < len(steps):
            _step_plot(out / "plots" / f"step{index + 1}_{steps[index]['job']}.png", history, steps[index]["job"])
    measured = [v for v in variants if quality in v.metrics and "latency_ms" in v.metrics]
    for key, label, name in (("latency_ms", "latency (ms, onnxruntime, batch; bars: 95% interval)",
                              "pareto_latency.png"),
                             ("size_bytes", "ONNX size (KiB)", "pareto_size.png")):
        fig = pareto_figure(measured, key, label, quality)
        _save(fig, out / name)
        plt.close(fig)


def _log_y(ax: Any) -> None:
    """A log y axis whose ticks read as plain numbers (120, 4000), not 1.2x10^2."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_yscale("log")
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 3.0, 5.0)))
    plain = FuncFormatter(lambda value, _pos: f"{value:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)


def _quality(task: str | None) -> str:
    return "perplexity" if task == "causal_lm" else "accuracy"


def pareto_figure(measured: list[Variant], key: str, label: str, quality: str = "accuracy") -> Any:
    """``quality`` (accuracy, or perplexity on a log axis) against ``key`` with the Pareto front; latencies get
    horizontal error bars (``{key}_ci``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    scale = 1024 if key == "size_bytes" else 1
    measured = [v for v in measured if v.metrics.get(key) is not None and v.metrics.get(quality) is not None]
    pts = [(v.metrics[quality], v.metrics[key] / scale) for v in measured]
    lower_is_better = quality == "perplexity"
    front = set(pareto_front([(-q if lower_is_better else q, c) for q, c in pts]))
    bars = [(cost, acc, ci) for v, (acc, cost) in zip(measured, pts)
            if key.startswith("latency") and (ci := interval(v.metrics.get(f"{key}_ci"))) is not None]
    if bars:
        ax.errorbar([b[0] for b in bars], [b[1] for b in bars], fmt="none", ecolor="#7f7f7f", elinewidth=1,
                    capsize=3, zorder=2, xerr=[[max(b[0] - b[2][0], 0.0) for b in bars],
                                               [max(b[2][1] - b[0], 0.0) for b in bars]])
    for i, (v, (acc, cost)) in enumerate(zip(measured, pts)):
        ax.scatter(cost, acc, s=40, c="#d62728" if i in front else "#1f77b4", zorder=3)
        ax.annotate(v.id, (cost, acc), fontsize=7, xytext=(4, 3), textcoords="offset points")
    if front:
        ordered = sorted((pts[i] for i in front), key=lambda p: p[1])
        ax.plot([p[1] for p in ordered], [p[0] for p in ordered], "--", c="#d62728", lw=1, label="Pareto front")
        ax.legend(fontsize=7)
    ax.set_xlabel(label)
    if lower_is_better:
        if pts:
            _log_y(ax)
        ax.set_ylabel("test perplexity (lower is better)")
    else:
        ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _step_plot(path: Path, history: dict[str, list[tuple[int, float]]], job: str) -> None:
    """One figure per step: every metric the job logged, against its step."""
    import matplotlib.pyplot as plt

    names = [n for n in history if n not in ("epoch",)][:6]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), squeeze=False)
    for ax, name in zip(axes[0], names):
        points = history[name]
        ax.plot([p[0] for p in points], [p[1] for p in points], lw=1, marker="." if len(points) < 50 else None)
        ax.set_title(f"{job}: {name}", fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _save(fig: Any, path: Path) -> None:
    import io

    from workbench.core.workspace.atomic import atomic_write_bytes

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue())
