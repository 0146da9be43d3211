"""Paired latency: identical work is told apart from twice the work, with intervals that say how sure we are."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.core.variants import timing
from workbench.core.variants.timing import TimingBudget, is_significant, latency_of, speedup_of

BUDGET = TimingBudget(warmup_s=0.1, seconds=0.6, min_samples=20, max_samples=300)


def _work(repeats: int):
    a = np.random.default_rng(0).standard_normal((160, 160))

    def run() -> None:
        for _ in range(repeats):
            a @ a

    return run


def test_identical_work_is_no_measurable_change():
    new, ref, speedup = timing.compare(_work(4), _work(4), "v0001", BUDGET)
    assert not speedup.significant, speedup
    assert 0.9 <= speedup.ratio <= 1.1
    assert speedup.ci[0] <= 1.0 <= speedup.ci[1] or not is_significant(speedup.ci)
    assert new.ci[0] <= new.ms <= new.ci[1] and ref.ci[0] <= ref.ms <= ref.ci[1]


def test_twice_the_work_is_a_significant_slow_down_and_half_is_a_speed_up():
    _, _, slower = timing.compare(_work(8), _work(4), "v0001", BUDGET)
    assert slower.significant and slower.ci[1] < 1.0
    assert 0.35 <= slower.ratio <= 0.7, slower
    _, _, faster = timing.compare(_work(4), _work(8), "v0001", BUDGET)
    assert faster.significant and faster.ci[0] > 1.0
    assert 1.4 <= faster.ratio <= 2.9, faster
    assert faster.as_dict()["vs"] == "v0001" and set(faster.as_dict()) == {"vs", "ratio", "ci", "significant"}


def test_the_interval_of_a_median_comes_from_the_bootstrap():
    rng = np.random.default_rng(1)
    samples = 10.0 + rng.exponential(1.0, 400)
    lat = latency_of(samples)
    assert lat.ci[0] < lat.ms < lat.ci[1]
    assert lat.ci[1] - lat.ci[0] < 0.5  # 400 samples: a tight interval
    few = latency_of(samples[:12])
    assert few.ci[1] - few.ci[0] > lat.ci[1] - lat.ci[0]  # fewer samples, wider interval
    assert lat.metrics() == {"latency_ms": round(lat.ms, 6), "latency_ms_ci": [round(lat.ci[0], 6),
                                                                               round(lat.ci[1], 6)]}


def test_a_ratio_is_significant_only_beyond_the_noise_band():
    assert is_significant((1.05, 1.2)) and is_significant((0.5, 0.9))
    assert not is_significant((0.99, 1.3)) and not is_significant((1.005, 1.015))


def test_paired_resampling_keeps_pairs_together():
    """A common burst of load in both series cancels in the paired ratio."""
    rng = np.random.default_rng(2)
    load = rng.choice([1.0, 3.0], size=200)  # half the pairs measured while the machine was busy
    ref = 10.0 * load * (1 + 0.01 * rng.standard_normal(200))
    new = 5.0 * load * (1 + 0.01 * rng.standard_normal(200))
    speedup = speedup_of(new, ref, "v0001")
    assert speedup.significant and speedup.ratio == pytest.approx(2.0, rel=0.05)
    assert speedup.ci[0] > 1.8 and speedup.ci[1] < 2.2


def test_constant_samples_give_a_zero_width_interval():
    lat = latency_of(np.full(20, 3.0))
    assert lat.ci == (3.0, 3.0)


def test_a_variant_saved_from_the_same_model_shows_no_measurable_change(make_session):
    """Through the real lifecycle: onnxruntime, the parent's ONNX file, the paired run, the stored figures."""
    from workbench.core.variants.lifecycle import Measuring, save_variant

    session, root = make_session(model="zoo:mlp:hidden=64")
    how = Measuring(session.data, "cpu", 64, BUDGET)
    model = session.load_variant(root)
    child = save_variant(session.workspace, model, how, parent=root, job="copy", params={}, source="test")
    speedup = child.metrics["speedup"]
    assert speedup["vs"] == root and not speedup["significant"], speedup
    assert 0.9 <= speedup["ratio"] <= 1.1
    low, high = child.metrics["latency_ms_ci"]
    assert low <= child.metrics["latency_ms"] <= high
    assert session.workspace.variant(child.id).metrics["speedup"] == speedup
