"""The example third-party plugin (plugins/examples/weight_clustering): real k-means weight sharing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from workbench.core.jobs.devplugins import load_plugin_folders
from workbench.core.jobs.registry import Registry

EXAMPLE = Path(__file__).resolve().parents[2] / "plugins" / "examples" / "weight_clustering"


@pytest.fixture
def clustering(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import workbench_weight_clustering

    return workbench_weight_clustering


def _distinct_per_layer(model: nn.Module) -> dict[str, int]:
    return {n: int(torch.unique(m.weight).numel()) for n, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d))}


def test_cluster_tensor_keeps_at_most_k_values_close_to_the_original(clustering):
    w = torch.randn(64, 32)
    clustered, labels = clustering.cluster_tensor(w, 8, seed=0)
    assert clustered.shape == w.shape and labels.shape == (w.numel(),)
    assert torch.unique(clustered).numel() == 8
    assert float((clustered - w).norm() / w.norm()) < 0.2
    linear, _ = clustering.cluster_tensor(w, 8, init="linear", seed=0)
    assert torch.unique(linear).numel() <= 8


def test_the_example_loads_from_a_development_folder():
    reg = Registry()
    assert load_plugin_folders([EXAMPLE], into=reg) == ["weight_clustering"]
    info = next(p for p in reg.plugins() if p.job == "weight_clustering")
    assert info.status == "loaded" and info.origin == str(EXAMPLE)


def test_selected_layers_only_and_unknown_layers_refused(clustering, workbench_run_job):
    root = workbench_run_job("evaluate")
    first = next(iter(_distinct_per_layer(root.model())))
    run = workbench_run_job(clustering.WeightClusteringJob, {"clusters": 4, "layers": first}, after=root)
    assert run.outcome.status == "ok", run.outcome.error
    distinct = _distinct_per_layer(run.model())
    assert distinct.pop(first) <= 4 and all(v > 4 for v in distinct.values())
    assert run.outcome.result["distinct_values"] == {first: 4}
    bad = workbench_run_job(clustering.WeightClusteringJob, {"layers": "nope"}, after=run)
    assert bad.outcome.status == "failed" and bad.outcome.bad_input and "nope" in bad.outcome.error


@pytest.mark.slow
def test_16_clusters_keep_seed_cnn_accuracy_within_a_point(clustering, workbench_run_job):
    trained = workbench_run_job("train", {"epochs": 12}, model="zoo:seed_cnn", dataset="digits")
    assert trained.outcome.status == "ok", trained.outcome.error
    run = workbench_run_job(clustering.WeightClusteringJob, {"clusters": 16}, after=trained)
    assert run.outcome.status == "ok", run.outcome.error
    distinct = _distinct_per_layer(run.model())
    assert distinct and all(v <= 16 for v in distinct.values()), distinct
    before, after = trained.metrics["accuracy"], run.metrics["accuracy"]
    assert before > 0.9 and after >= before - 0.01, (before, after)
    sizes = run.outcome.result["compressed_bytes"]
    assert sizes["after"] < sizes["before"] / 2
    assert [e.data["metrics"]["distinct_values"] for e in run.events_of("metric")] == list(distinct.values())
