"""Structured-pruning helpers shared by the ``prune`` and ``prune_sensitivity`` jobs.

Torch-Pruning's dependency graph finds the coupled layers (residual adds, depthwise convolutions, concatenations,
BatchNorm, the first linear after a flatten), so removing a channel removes it everywhere it is used. This module
adds what the jobs need around it: importance criteria by name, the layers that must not be pruned (the output
layer, recurrent layers), per-layer sensitivity curves and a greedy per-layer allocation over those curves.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from workbench.plugin import InputError, JobContext

IMPORTANCES = ("l1", "l2", "taylor", "bn_scale")
RECURRENT = (nn.LSTM, nn.GRU, nn.RNN)
ROOT_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
DEFAULT_IGNORE = ("classifier",)  # what every zoo model calls its output layer
DEFAULT_RATIOS = ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9")

Score = Callable[[nn.Module], dict[str, float]]


@dataclass(frozen=True)
class PrunableLayer:
    """One pruning group, named by its root layer; ``channels`` is its current output width."""

    name: str
    channels: int
    coupled: tuple[str, ...]  # the other layers whose weights lose channels with it


def make_importance(name: str) -> tp.importance.Importance:
    """The Torch-Pruning criterion for ``importance=``; taylor needs gradients (see ``taylor_gradients``)."""
    if name == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    if name == "bn_scale":
        return tp.importance.BNScaleImportance()
    raise InputError(f"importance {name!r}: expected one of {', '.join(IMPORTANCES)}")


def example_input(ctx: JobContext, n: int = 2) -> torch.Tensor:
    return ctx.data.example_batch(n).to(ctx.device)


def output_layers(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The layers whose output is the model's output: pruning them would change the number of classes."""
    produced: dict[int, nn.Module] = {}

    def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            produced[id(output)] = module

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    outs = out if isinstance(out, tuple | list) else (out,)
    return [produced[id(o)] for o in outs if id(o) in produced]


def resolve_ignored(model: nn.Module, names: list[str], example: torch.Tensor, defaults: list[str]) -> list[nn.Module]:
    """Modules kept at full width: the named ones, the output layer(s) and every recurrent layer.

    A name from ``defaults`` that the model lacks (a user's model without a ``classifier``) is skipped; any
    other unknown name is the user's mistake.
    """
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules and n not in defaults]
    if unknown:
        raise InputError(f"ignore: no module named {unknown[0]!r} in the model")
    chosen = [modules[n] for n in names if n in modules]
    chosen += output_layers(model, example)
    chosen += [m for m in model.modules() if isinstance(m, RECURRENT)]
    return list({id(m): m for m in chosen}.values())


def _graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    return tp.DependencyGraph().build_dependency(model, example_inputs=example)


def prunable_layers(model: nn.Module, example: torch.Tensor, ignored: list[nn.Module],
                    graph: tp.DependencyGraph | None = None) -> tuple[list[PrunableLayer], list[nn.Module]]:
    """The pruning groups Torch-Pruning finds, and the roots to block (groups touching a recurrent layer)."""
    graph = graph or _graph(model, example)
    names = {m: n for n, m in model.named_modules()}
    blocked: list[nn.Module] = []
    layers: list[PrunableLayer] = []
    expanded = [s for m in ignored for s in m.modules()]
    for group in graph.get_all_groups(ignored_layers=expanded, root_module_types=ROOT_TYPES):
        root = group[0].dep.target.module
        targets = [dep.target.module for dep, _ in group]
        if any(isinstance(t, RECURRENT) for t in targets):
            blocked.append(root)
            continue
        coupled = tuple(dict.fromkeys(names[t] for t in targets
                                      if isinstance(t, nn.Module) and t is not root and t in names
                                      and any(True for _ in t.parameters(recurse=False))))
        layers.append(PrunableLayer(names[root], int(graph.get_out_channels(root)), coupled))
    order = {n: i for i, n in enumerate(names.values())}
    return sorted(layers, key=lambda layer: order[layer.name]), blocked


def nothing_to_prune(model: nn.Module) -> InputError:
    """A clear message for models whose every layer is ignored or cannot be pruned structurally."""
    recurrent = sorted({type(m).__name__ for m in model.modules() if isinstance(m, RECURRENT)})
    if recurrent:
        return InputError(
            f"nothing to prune structurally: {'/'.join(recurrent)} hidden units cannot be removed (their gates are "
            "coupled) and the remaining layers are ignored; use method=l1_unstructured or the quantize job")
    return InputError("nothing to prune structurally: every convolution and linear layer is ignored "
                      "(check the ignore parameter)")


def check_importance(model: nn.Module, importance: str) -> None:
    if importance == "bn_scale" and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise InputError("importance=bn_scale needs BatchNorm layers and this model has none: use l1, l2 or taylor")


def build_pruner(model: nn.Module, example: torch.Tensor, importance: str, *, ignore: list[str],
                 default_ignore: list[str], amount: float = 0.0, per_layer: dict[str, float] | None = None,
                 scope: str = "uniform", steps: int = 1, round_to: int = 1) -> tuple[Any, list[PrunableLayer]]:
    """A Torch-Pruning ``MetaPruner`` for ``model`` and the layers it may prune.

    ``amount`` is the fraction of channels removed per layer (``scope=uniform``) or overall, ranked across layers
    (``scope=global``); ``per_layer`` overrides it by root layer name (pruning ratio per group).
    """
    check_importance(model, importance)
    was_training = model.training
    model.eval()  # tracing runs the model: BatchNorm statistics must not move
    try:
        ignored = resolve_ignored(model, ignore, example, default_ignore)
        graph = _graph(model, example)
        layers, blocked = prunable_layers(model, example, ignored, graph)
        if not layers:
            raise nothing_to_prune(model)
        modules = dict(model.named_modules())
        # A hair below the ratio, so that r = k / C removes exactly k channels despite float rounding.
        ratio_dict = {modules[name]: max(0.0, float(r) - 1e-6) for name, r in (per_layer or {}).items() if r > 0}
        pruner = tp.pruner.MetaPruner(
            model, example, importance=make_importance(importance), global_pruning=scope == "global",
            pruning_ratio=max(0.0, amount - 1e-6), pruning_ratio_dict=ratio_dict or None,
            max_pruning_ratio=max(0.9, amount, *(ratio_dict.values() or [0.0])), iterative_steps=steps,
            ignored_layers=ignored + blocked, round_to=round_to if round_to > 1 else None,
            root_module_types=list(ROOT_TYPES),
        )
    finally:
        model.train(was_training)
    return pruner, layers


def taylor_gradients(model: nn.Module, ctx: JobContext, batches: int = 8) -> None:
    """Fill ``.grad`` with the loss gradient over a few train batches (Taylor importance reads it)."""
    was_training = model.training
    model.eval()  # BatchNorm statistics must not move
    model.zero_grad(set_to_none=True)
    loader = ctx.data.loader("train", batch_size=64, seed=ctx.seed)
    try:
        with torch.enable_grad():
            for i, (x, y) in enumerate(loader):
                if i >= batches:
                    break
                ctx.check_cancelled()
                F.cross_entropy(model(x.to(ctx.device)), y.to(ctx.device)).backward()
    finally:
        model.train(was_training)


def size_of(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(MACs per sample, parameters), counted by Torch-Pruning on a copy of the model."""
    macs, params = tp.utils.count_ops_and_params(model, example[:1])
    return int(macs), int(params)


def channels_of(model: nn.Module, names: list[str]) -> dict[str, int]:
    """Output width of each named layer (Conv/Linear), read from its weight."""
    modules = dict(model.named_modules())
    return {n: int(modules[n].weight.shape[0]) for n in names if n in modules and hasattr(modules[n], "weight")}


def parse_ratios(values: list[str]) -> list[float]:
    """The sensitivity grid: sorted, unique, each in (0, 1)."""
    try:
        ratios = sorted({round(float(v), 4) for v in values})
    except ValueError:
        raise InputError(f"ratios: {values!r} are not numbers") from None
    if not ratios or ratios[0] <= 0.0 or ratios[-1] >= 1.0:
        raise InputError("ratios: give one or more fractions between 0 and 1 (exclusive), e.g. 0.25,0.5,0.75")
    return ratios


def measure_sensitivity(ctx: JobContext, model: nn.Module, importance: str, ratios: list[float], *,
                        ignore: list[str], default_ignore: list[str]) -> dict[str, Any]:
    """Validation accuracy and loss with one layer at a time pruned to each ratio (no fine-tuning).

    Each point prunes a copy of ``model`` physically, so coupled layers shrink too, exactly as a real prune would.
    Returns ``{"baseline": {...}, "curves": {layer: {ratio: {accuracy, loss}}}, "layers": [PrunableLayer]}``.
    """
    example = example_input(ctx)
    check_importance(model, importance)
    ignored = resolve_ignored(model, ignore, example, default_ignore)
    layers, _ = prunable_layers(model, example, ignored)
    if not layers:
        raise nothing_to_prune(model)
    if importance == "taylor":
        taylor_gradients(model, ctx)
    baseline = ctx.accuracy(model, "val")
    curves: dict[str, dict[float, dict[str, float]]] = {}
    total, done = len(layers) * len(ratios), 0
    for layer in layers:
        curves[layer.name] = {}
        for ratio in ratios:
            ctx.check_cancelled()
            trial = _pruned_copy(model, example, importance, {layer.name: ratio}, ignore, default_ignore)
            curves[layer.name][ratio] = ctx.accuracy(trial, "val")
            done += 1
            ctx.progress(done, total, text=f"{layer.name} at {ratio:g}")
            ctx.log(step=round(ratio * 100), **{f"val_accuracy/{layer.name}": curves[layer.name][ratio]["accuracy"]})
    return {"baseline": baseline, "curves": curves, "layers": layers}


def _pruned_copy(model: nn.Module, example: torch.Tensor, importance: str, per_layer: dict[str, float],
                 ignore: list[str], default_ignore: list[str]) -> nn.Module:
    """A physically pruned copy of ``model``; the original is left as it is (gradients included)."""
    trial = copy.deepcopy(model)
    if importance == "taylor":  # deepcopy leaves the gradients behind
        for src, dst in zip(model.parameters(), trial.parameters()):
            dst.grad = None if src.grad is None else src.grad.clone()
    pruner, _ = build_pruner(trial, example, importance, ignore=ignore, default_ignore=default_ignore,
                             per_layer=per_layer)
    pruner.step()
    return trial


def choose_allocation(ctx: JobContext, model: nn.Module, sens: dict[str, Any], amount: float, importance: str, *,
                      ignore: list[str], default_ignore: list[str]) -> tuple[dict[str, float], dict[str, Any]]:
    """The per-layer ratios for ``amount``: greedy over the curves, checked on the validation split.

    Single-layer curves do not add up exactly when several layers are pruned together, so the greedy allocations
    (ranked by accuracy, and by loss) are pruned for real beside the uniform one, and the best validation accuracy
    wins (then the lower loss; then the first). So the result never does worse than uniform on validation.
    Returns (allocation, {"chosen": name, "val_accuracy": {name: accuracy}}).
    """
    channels = {layer.name: layer.channels for layer in sens["layers"]}
    candidates = {
        "greedy_accuracy": greedy_allocation(sens["baseline"], sens["curves"], channels, amount),
        "greedy_loss": greedy_allocation(sens["baseline"], sens["curves"], channels, amount, primary="loss"),
        "uniform": {n: round(removed_channels(c, amount) / c, 6) for n, c in channels.items()},
    }
    example = example_input(ctx)
    scores: dict[str, dict[str, float]] = {}
    for name, allocation in candidates.items():
        ctx.check_cancelled()
        same = next((scores[n] for n in scores if candidates[n] == allocation), None)
        scores[name] = same or ctx.accuracy(
            _pruned_copy(model, example, importance, allocation, ignore, default_ignore), "val")
    model.zero_grad(set_to_none=True)
    best = max(scores, key=lambda n: (scores[n]["accuracy"], -scores[n].get("loss", 0.0)))
    return candidates[best], {"chosen": best, "val_accuracy": {n: round(v["accuracy"], 6) for n, v in scores.items()}}


def removed_channels(channels: int, ratio: float) -> int:
    """Channels Torch-Pruning removes from a layer of ``channels`` at ``ratio`` (it keeps ``int(C * (1 - r))``)."""
    return channels - int(channels * (1.0 - ratio) + 1e-6)


def _drops(base: dict[str, float], curve: dict[float, dict[str, float]], channels: int) -> list[tuple[int, float, float]]:
    """(channels removed, accuracy drop, loss rise) from 0 on, made non-decreasing so noise is not exploited."""
    points = [(0, 0.0, 0.0)]
    worst_acc = worst_loss = 0.0
    for r in sorted(curve):
        worst_acc = max(worst_acc, base["accuracy"] - curve[r]["accuracy"])
        worst_loss = max(worst_loss, curve[r].get("loss", 0.0) - base.get("loss", 0.0))
        points.append((removed_channels(channels, r), worst_acc, worst_loss))
    return points


def greedy_allocation(baseline: dict[str, float], curves: dict[str, dict[float, dict[str, float]]],
                      channels: dict[str, int], amount: float, primary: str = "accuracy") -> dict[str, float]:
    """Per-layer ratios that remove as many channels as ``scope=uniform`` at ``amount``, with the least loss.

    Greedy over the measured curves: at each step the move (one layer to a larger measured ratio) with the least
    accuracy drop per channel removed wins; validation loss breaks ties (accuracy on a small split moves in steps).
    ``primary="loss"`` ranks by the loss rise first instead.
    The last move stops part-way, so the total number of channels removed equals the uniform pruning's exactly.
    Ratios are ``removed / channels``, which Torch-Pruning turns back into the same channel counts.
    """
    points = {name: _drops(baseline, curve, channels[name]) for name, curve in curves.items()}
    target = sum(removed_channels(channels[n], amount) for n in points)
    reachable = sum(points[n][-1][0] for n in points)
    if target > reachable:
        total = sum(channels[n] for n in points)
        raise InputError(f"amount={amount:g} cannot be reached: the largest measured ratio removes "
                         f"{reachable / max(total, 1):.2f} of the channels (add larger ratios)")
    position = {n: 0 for n in points}
    removed = {n: 0 for n in points}
    while sum(removed.values()) < target:
        best: tuple[tuple[float, float], str, int] | None = None
        for name, pts in points.items():
            k0, a0, l0 = pts[position[name]]
            for j in range(position[name] + 1, len(pts)):
                k1, a1, l1 = pts[j]
                if k1 <= k0:
                    continue
                key = ((a1 - a0) / (k1 - k0), (l1 - l0) / (k1 - k0))
                if primary == "loss":
                    key = key[::-1]
                if best is None or key < best[0]:
                    best = (key, name, j)
        if best is None:
            break
        _, name, j = best
        position[name] = j
        removed[name] = min(points[name][j][0], removed[name] + target - sum(removed.values()))
    return {n: round(removed[n] / channels[n], 6) for n in points}


def curves_for_result(sens: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{layer: {ratio: val_accuracy}}`` with JSON-ready keys, ratio 0 being the unpruned model."""
    base = sens["baseline"]["accuracy"]
    return {name: {"0": round(base, 6), **{f"{r:g}": round(p["accuracy"], 6) for r, p in curve.items()}}
            for name, curve in sens["curves"].items()}


def heat_of(sens: dict[str, Any]) -> dict[str, float]:
    """0..1 per layer (1 = the most sensitive): mean accuracy drop over the curve, scaled to the worst layer."""
    base = sens["baseline"]["accuracy"]
    mean_drop = {n: sum(max(0.0, base - p["accuracy"]) for p in c.values()) / max(len(c), 1)
                 for n, c in sens["curves"].items()}
    worst = max(mean_drop.values(), default=0.0)
    return {n: round(d / worst, 4) if worst > 0 else 0.0 for n, d in mean_drop.items()}
