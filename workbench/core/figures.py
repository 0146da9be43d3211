"""How measured figures are told to a user: latencies with their interval, speed-ups that tell change from noise.

One Qt-free place, so the variants table, the Details tab and the batch report say the same thing. A speed-up is
claimed only when it is known to be beyond noise: a paired measurement (``metrics["speedup"]``, contract
section 8) marked significant, or, for variants measured before paired timing existed, two latencies whose 95%
intervals do not overlap. Anything else reads "no measurable change"; a ratio of two latencies without intervals
is shown with "~" and said to be unpaired.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

NO_CHANGE = "no measurable change"
LATENCY_NAMES = {"latency_ms": "onnxruntime", "latency_torch_ms": "PyTorch"}


@dataclass(frozen=True)
class Readout:
    """A figure's cell text, its tooltip, and the number to sort it by (None when there is none)."""

    text: str
    tooltip: str = ""
    sort: float | None = None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def interval(value: Any) -> tuple[float, float] | None:
    """A ``[low, high]`` pair of finite numbers with low <= high, else None (malformed or missing)."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    low, high = _number(value[0]), _number(value[1])
    if low is None or high is None or low > high:
        return None
    return low, high


def paired_speedup(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """``metrics["speedup"]`` when it is well formed (a numeric ratio); its ``ci`` may be missing."""
    sp = metrics.get("speedup")
    if not isinstance(sp, dict) or _number(sp.get("ratio")) is None or _number(sp.get("ratio")) <= 0:
        return None
    return sp


def _decimals(half_width: float) -> int:
    """Decimals that show the first significant digit of the interval's half-width (0.4 -> 1, 0.04 -> 2)."""
    half_width = float(f"{half_width:.9g}")  # (8.1 - 7.9) / 2 is 0.0999...: still one decimal
    if half_width <= 0:
        return 3
    return max(0, min(4, -math.floor(math.log10(half_width))))


def latency_text(ms: float, ci: tuple[float, float] | None, unit: str = " ms") -> str:
    """``12.3 ±0.4 ms`` with an interval (its half-width, digits to match), ``12.345 ms`` without."""
    if ci is None:
        return f"{ms:.3f}{unit}"
    half = (ci[1] - ci[0]) / 2
    d = _decimals(half)
    return f"{ms:.{d}f} ±{half:.{d}f}{unit}"


def latency_readout(metrics: dict[str, Any], key: str = "latency_ms") -> Readout:
    """The latency cell: value ± half the 95% interval; the tooltip gives the interval of every latency."""
    ms = _number(metrics.get(key))
    if ms is None:
        return Readout("-")
    lines = []
    for name, engine in LATENCY_NAMES.items():
        value = _number(metrics.get(name))
        if value is None:
            continue
        ci = interval(metrics.get(f"{name}_ci"))
        line = f"latency ({engine}): {value:.3f} ms"
        line += f", 95% interval {ci[0]:.3f}–{ci[1]:.3f} ms" if ci else " (no interval: measured once, before intervals)"
        lines.append(line)
    return Readout(latency_text(ms, interval(metrics.get(f"{key}_ci"))), "\n".join(lines), ms)


def ratio_text(ratio: float, ci: tuple[float, float] | None) -> str:
    """``1.52x (1.45–1.60)``."""
    return f"{ratio:.2f}x" + (f" ({ci[0]:.2f}–{ci[1]:.2f})" if ci else "")


def speedup_readout(metrics: dict[str, Any], reference: dict[str, Any] | None = None,
                    reference_id: str | None = None, is_reference: bool = False) -> Readout:
    """The speed-up of a variant: its paired measurement when it has one, else against ``reference``'s latency.

    ``reference`` is the variant compared with in the fallback (the table uses the root of the lineage); a
    ratio is then claimed only if both latencies have intervals that do not overlap. ``is_reference``: this
    variant is that reference itself (the root), shown as 1.00x.
    """
    sp = paired_speedup(metrics)
    if sp is not None:
        ratio, ci, vs = float(sp["ratio"]), interval(sp.get("ci")), sp.get("vs") or "its parent"
        where = f"measured paired with {vs} (alternating runs in one session)"
        if sp.get("significant"):
            faster = "faster" if ratio > 1 else "slower"
            span = f", 95% interval {ci[0]:.2f}–{ci[1]:.2f}" if ci else ""
            return Readout(ratio_text(ratio, ci), f"{ratio:.2f}x {faster} than {vs}{span}; {where}", ratio)
        span = f" (95% interval {ci[0]:.2f}–{ci[1]:.2f})" if ci else ""
        return Readout(NO_CHANGE, f"{ratio:.2f}x{span} against {vs} is within noise; {where}", 1.0)
    if is_reference and _number(metrics.get("latency_ms")):
        return Readout("1.00x", "the reference: the other variants of its lineage are compared with it", 1.0)
    if reference is None:
        return Readout("-")
    ms, ref_ms = _number(metrics.get("latency_ms")), _number(reference.get("latency_ms"))
    if not ms or not ref_ms:
        return Readout("-")
    ratio, name = ref_ms / ms, reference_id or "the reference"
    ci, ref_ci = interval(metrics.get("latency_ms_ci")), interval(reference.get("latency_ms_ci"))
    if ci and ref_ci:
        both = f"this {ci[0]:.3f}–{ci[1]:.3f} ms, {name} {ref_ci[0]:.3f}–{ref_ci[1]:.3f} ms"
        if ci[0] <= ref_ci[1] and ref_ci[0] <= ci[1]:
            return Readout(NO_CHANGE, f"{ratio:.2f}x against {name}, but the latencies' 95% intervals overlap "
                                      f"({both}); not measured paired", 1.0)
        bounds = (ref_ci[0] / ci[1], ref_ci[1] / ci[0]) if ci[0] > 0 else None
        return Readout(ratio_text(ratio, bounds), f"{ratio:.2f}x against {name}, from two separate measurements "
                                                  f"whose 95% intervals do not overlap ({both}); not measured "
                                                  "paired", ratio)
    return Readout(f"~{ratio:.2f}x", f"{ratio:.2f}x against {name}: not measured paired, from two separate runs "
                                     "without intervals, so the difference may be noise (re-measure to compare)",
                   ratio)
