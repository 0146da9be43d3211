"""Weight clustering: k-means weight sharing per layer (as ``tfmot.clustering``), as a Workbench job."""

from __future__ import annotations

import zlib
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from torch import nn

from workbench.plugin import InputError, Job, JobContext, Param

CLUSTERED_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
FIT_SAMPLE = 50_000  # weights used to fit the centroids of a large layer; every weight is then assigned


def cluster_tensor(weight: torch.Tensor, clusters: int, init: str = "kmeans++",
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """K-means over the values of one tensor; returns (the clustered tensor, the cluster index of each value).

    A tensor with no more distinct values than ``clusters`` is returned as is (it is already shared).
    """
    values = weight.detach().double().cpu().flatten().numpy()
    uniques = np.unique(values)
    if uniques.size <= clusters:
        labels = np.searchsorted(uniques, values)
        return weight.detach().clone(), torch.from_numpy(labels).to(weight.device)
    rng = np.random.default_rng(seed)
    sample = values if values.size <= FIT_SAMPLE else rng.choice(values, FIT_SAMPLE, replace=False)
    if init == "linear":
        start = np.linspace(values.min(), values.max(), clusters).reshape(-1, 1)
        km = KMeans(n_clusters=clusters, init=start, n_init=1, random_state=seed)
    else:
        km = KMeans(n_clusters=clusters, init="k-means++", n_init=3, random_state=seed)
    km.fit(sample.reshape(-1, 1))
    labels = km.predict(values.reshape(-1, 1))
    centroids = km.cluster_centers_.reshape(-1)
    clustered = torch.from_numpy(centroids[labels]).reshape(weight.shape)
    return clustered.to(weight.dtype).to(weight.device), torch.from_numpy(labels).long().to(weight.device)


def compressed_bytes(tensors: list[torch.Tensor]) -> int:
    """zlib size of the raw float bytes: the compression a shared-weight model gains on disk or in transit."""
    return sum(len(zlib.compress(t.detach().float().cpu().numpy().tobytes(), 6)) for t in tensors)


class WeightClusteringJob(Job):
    name = "weight_clustering"
    title = "Weight clustering"
    description = ("Share weights: k-means per layer, each weight replaced by its cluster's centroid "
                   "(at most `clusters` distinct values per layer).")
    needs_torch_model = True

    clusters: int = Param(16, min=2, max=256, help="distinct weight values per layer")
    layers: list[str] = Param([], help="Linear/Conv module names to cluster (empty: all of them)")
    init: Literal["kmeans++", "linear"] = Param("kmeans++", help="centroid initialization")
    finetune_epochs: int = Param(0, min=0, max=1000, help="epochs of cluster-preserving fine-tuning afterwards")
    lr: float = Param(1e-4, min=0.0, max=1.0, help="fine-tuning learning rate", advanced=True)

    def run(self, ctx: JobContext) -> nn.Module:
        model = ctx.model
        targets = self._select(model)
        before = compressed_bytes([m.weight for _, m in targets])
        labels: dict[str, torch.Tensor] = {}
        summary: dict[str, int] = {}
        with torch.no_grad():
            for step, (name, module) in enumerate(targets, start=1):
                ctx.check_cancelled()
                original = module.weight.detach().clone()
                clustered, labels[name] = cluster_tensor(original, self.clusters, self.init, ctx.seed)
                module.weight.copy_(clustered)
                distinct = int(torch.unique(module.weight).numel())
                summary[name] = distinct
                error = float((clustered - original).norm() / original.norm().clamp_min(1e-12))
                ctx.log(step=step, distinct_values=distinct, relative_error=error)
                ctx.progress(step, len(targets), text=f"clustering {name}")
        if self.finetune_epochs:
            self._finetune(ctx, model, targets, labels)
        after = compressed_bytes([m.weight for _, m in targets])
        ctx.result.update(distinct_values=summary, compressed_bytes={"before": before, "after": after})
        ctx.info(f"{len(targets)} layers clustered to <= {self.clusters} values; "
                 f"compressed weights {before / 1024:.0f} KiB -> {after / 1024:.0f} KiB")
        ctx.mark(f"{self.clusters} clusters/layer")
        return model

    def _select(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        candidates = [(n, m) for n, m in model.named_modules() if isinstance(m, CLUSTERED_TYPES)]
        if not candidates:
            raise InputError("weight_clustering: the model has no Linear or Conv layer")
        if not self.layers:
            return candidates
        known = dict(candidates)
        missing = [n for n in self.layers if n not in known]
        if missing:
            raise InputError(f"weight_clustering: no Linear/Conv layer named {missing[0]!r} "
                             f"(layers: {', '.join(known)})")
        return [(n, known[n]) for n in self.layers]

    def _finetune(self, ctx: JobContext, model: nn.Module, targets: list[tuple[str, nn.Module]],
                  labels: dict[str, torch.Tensor]) -> None:
        """Train, then after each step set every weight of a cluster to the cluster's mean (shared update)."""
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        loader = ctx.data.train
        total = self.finetune_epochs * len(loader)
        done = 0
        for epoch in range(1, self.finetune_epochs + 1):
            model.train()
            running = 0.0
            for x, y in loader:
                ctx.check_cancelled()
                x, y = x.to(ctx.device), y.to(ctx.device)
                optimizer.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    for name, module in targets:
                        _share(module.weight, labels[name], self.clusters)
                running += loss.item()
                done += 1
                ctx.progress(done, total, text=f"fine-tuning epoch {epoch}")
            model.eval()
            val = ctx.accuracy(model)
            ctx.log(step=len(targets) + epoch, finetune_loss=running / max(1, len(loader)), **val)


def _share(weight: torch.Tensor, labels: torch.Tensor, clusters: int) -> None:
    """Replace each weight by the mean of its cluster, in place."""
    flat = weight.view(-1)
    size = int(labels.max()) + 1 if labels.numel() else clusters
    sums = torch.zeros(size, dtype=flat.dtype, device=flat.device).index_add_(0, labels, flat)
    counts = torch.bincount(labels, minlength=size).clamp_min(1).to(flat.dtype)
    flat.copy_((sums / counts)[labels])
