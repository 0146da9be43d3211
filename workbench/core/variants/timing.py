"""Latency you can trust: many timed calls, a median with a 95% bootstrap interval, and paired comparisons.

A speed-up is only claimed when it was measured *paired*: the parent and the variant run alternately in the same
measuring session (ABAB...), so a burst of load, a frequency change or a cold cache hits both alike, and the
ratio is the median of the per-pair ratios, with its interval from resampling the pairs
(``scipy.stats.bootstrap``). A ratio whose interval reaches into ``[1/(1+MIN_EFFECT), 1+MIN_EFFECT]`` is reported as not
significant: on a busy laptop a 2% change cannot be told from noise, and the app says "no measurable change".

Measurements hold a machine-wide lock (a file lock in the temp folder), so two workbench processes never time
their models while the other one times its own.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MIN_EFFECT = 0.02          # the smallest relative change called significant
CONFIDENCE = 0.95
N_RESAMPLES = 2000


@dataclass(frozen=True)
class TimingBudget:
    """How long to measure: warm-up, then samples until ``seconds`` have passed (within the sample bounds)."""

    warmup_s: float = 0.3
    seconds: float = 1.5
    min_samples: int = 12
    max_samples: int = 400


DEFAULT_BUDGET = TimingBudget()


@dataclass(frozen=True)
class Latency:
    """A median latency and its 95% interval, in milliseconds."""

    ms: float
    ci: tuple[float, float]
    samples: int

    def metrics(self, key: str = "latency_ms") -> dict[str, Any]:
        return {key: round(self.ms, 6), f"{key}_ci": [round(self.ci[0], 6), round(self.ci[1], 6)]}


@dataclass(frozen=True)
class Speedup:
    """``ratio`` = reference latency / new latency (above 1: the new one is faster), from paired samples."""

    vs: str
    ratio: float
    ci: tuple[float, float]
    significant: bool

    def as_dict(self) -> dict[str, Any]:
        return {"vs": self.vs, "ratio": round(self.ratio, 4), "ci": [round(self.ci[0], 4), round(self.ci[1], 4)],
                "significant": self.significant}


def is_significant(ci: tuple[float, float], min_effect: float = MIN_EFFECT) -> bool:
    """True when the whole interval lies beyond the noise band around 1."""
    return ci[0] > 1 + min_effect or ci[1] < 1 / (1 + min_effect)


@contextlib.contextmanager
def measuring_lock(timeout_s: float = 120.0) -> Iterator[None]:
    """Machine-wide: only one workbench process times a model at a time (no-op where file locks are missing)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks in the standard library; measure without
        yield
        return
    path = Path(tempfile.gettempdir()) / "workbench-measure.lock"
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break  # a stuck peer must not stop this job forever; measure anyway
                time.sleep(0.05)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_UN)


def _warm(runs: list[Callable[[], Any]], budget: TimingBudget) -> None:
    start = time.perf_counter()
    count = 0
    while count < 3 or time.perf_counter() - start < budget.warmup_s:
        for run in runs:
            run()
        count += 1


def _once(run: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    run()
    return (time.perf_counter() - t0) * 1000.0


def sample_latency(run: Callable[[], Any], budget: TimingBudget = DEFAULT_BUDGET,
                   check: Callable[[], None] | None = None) -> np.ndarray:
    """Milliseconds of single calls after warm-up, as many as the budget allows."""
    with measuring_lock():
        _warm([run], budget)
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < budget.min_samples or (
                len(times) < budget.max_samples and time.perf_counter() - start < budget.seconds):
            if check is not None and len(times) % 16 == 0:
                check()
            times.append(_once(run))
    return np.asarray(times)


def sample_paired(run_new: Callable[[], Any], run_ref: Callable[[], Any], budget: TimingBudget = DEFAULT_BUDGET,
                  check: Callable[[], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(new, reference) milliseconds, interleaved ABBA so neither always runs first after the other."""
    with measuring_lock():
        _warm([run_ref, run_new], budget)
        new: list[float] = []
        ref: list[float] = []
        start = time.perf_counter()
        while len(new) < budget.min_samples or (
                len(new) < budget.max_samples and time.perf_counter() - start < 2 * budget.seconds):
            if check is not None and len(new) % 16 == 0:
                check()
            if len(new) % 2 == 0:
                ref.append(_once(run_ref))
                new.append(_once(run_new))
            else:
                new.append(_once(run_new))
                ref.append(_once(run_ref))
    return np.asarray(new), np.asarray(ref)


def _median(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(x, axis=axis)


def _pair_ratio(log_ratios: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.exp(np.median(log_ratios, axis=axis))


def _bootstrap(samples: tuple[np.ndarray, ...], statistic: Callable[..., np.ndarray], paired: bool) -> tuple[float, float]:
    from scipy.stats import bootstrap

    if len(samples[0]) < 2 or all(np.ptp(s) == 0 for s in samples):
        value = float(statistic(*samples))
        return value, value
    result = bootstrap(samples, statistic, paired=paired, vectorized=True, confidence_level=CONFIDENCE,
                       n_resamples=N_RESAMPLES, method="percentile", rng=np.random.default_rng(0))
    low, high = result.confidence_interval
    return float(low), float(high)


def latency_of(samples: np.ndarray) -> Latency:
    """The median of ``samples`` (ms) and its 95% percentile-bootstrap interval."""
    ci = _bootstrap((samples,), _median, paired=False)
    return Latency(float(np.median(samples)), ci, int(len(samples)))


def speedup_of(new: np.ndarray, ref: np.ndarray, vs: str, min_effect: float = MIN_EFFECT) -> Speedup:
    """Reference over new: the median of the per-pair ratios (each pair ran back to back, so load that hits both
    cancels), with its bootstrap interval; significant only beyond ``min_effect`` of change."""
    log_ratios = np.log(ref) - np.log(new)
    ratio = float(_pair_ratio(log_ratios))
    ci = _bootstrap((log_ratios,), _pair_ratio, paired=False)
    return Speedup(vs, ratio, ci, is_significant(ci, min_effect))


def measure(run: Callable[[], Any], budget: TimingBudget = DEFAULT_BUDGET,
            check: Callable[[], None] | None = None) -> Latency:
    """One callable's latency with its interval."""
    return latency_of(sample_latency(run, budget, check))


def compare(run_new: Callable[[], Any], run_ref: Callable[[], Any], vs: str, budget: TimingBudget = DEFAULT_BUDGET,
            check: Callable[[], None] | None = None) -> tuple[Latency, Latency, Speedup]:
    """Both latencies and the speed-up of ``run_new`` over ``run_ref``, measured against each other."""
    new, ref = sample_paired(run_new, run_ref, budget, check)
    return latency_of(new), latency_of(ref), speedup_of(new, ref, vs)


def fixed_threads() -> int:
    """The thread count every measurement uses: all the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)
