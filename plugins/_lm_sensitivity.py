"""Per-layer pruning sensitivity of a decoder language model: validation perplexity against sparsity, per Linear.

What ``prune_sensitivity`` does for a language model. Each unit (a Linear of a decoder block, or the lm head) is
pruned alone, in place, to each ratio with one-shot unstructured magnitude or Wanda (the functions of
``_lm_prune``), the validation perplexity is measured, and its weights are put back before the next unit: one
unit's weights are held twice at a time, never a copy of the model.

Granularity. ``linear`` (the default) measures every Linear on its own: q/k/v/o of the attention and gate/up/down
of the MLP of every block, and the head. That is what the graph view shows as nodes inside an expanded decoder
block (named by module path, ``hf.model.layers.0.self_attn.v_proj``), so the heat says which projection is
fragile, not only which block, and the allocation is a per-layer amount as ``prune`` applies it. It costs seven
measurements per block per ratio; ``block`` prunes a block's Linears together (one measurement per block per
ratio, for deeper models) and colours every Linear of the block with the block's value.

Heat is the mean rise of the validation loss (the log of the perplexity ratio) over the measured ratios, scaled
to the most sensitive unit (1). The log keeps one exploding layer at a large ratio from flattening the rest to 0.

Cost. Every point is one pass over ``val_sequences`` validation sequences (the baseline uses the same ones, so
the points are paired); the default grid for a language model is 0.25, 0.5, 0.75. Wanda's input norms come from
one forward pass of ``calibration`` train sequences through the dense model: with one unit pruned at a time, the
other layers' inputs are the dense ones anyway.

Allocation: greedy over the curves (``_pruning.greedy_allocation``, weights in place of channels, the perplexity
rise per weight removed ranking the moves), so the measured units together lose ``amount`` of their weights; the
greedy and the uniform allocation are then both pruned for real on the validation sequences and the lower
perplexity wins, so the allocation never does worse than uniform there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from workbench.plugin import InputError, JobContext, task_of
from workbench_plugins import _lm_prune as LM
from workbench_plugins import _pruning as P

METHODS = ("l1_unstructured", "wanda")
GRANULARITIES = ("linear", "block")
LM_RATIOS = (0.25, 0.5, 0.75)
METRIC = "val_perplexity (lower is better)"


@dataclass(frozen=True)
class Unit:
    """What is pruned at once: one Linear, or the Linears of one block. ``members`` are graph-view node names."""

    name: str
    members: tuple[str, ...]
    weights: int


def linear_targets(model: nn.Module, ignore: list[str], default_ignore: list[str]
                   ) -> tuple[list[list[tuple[str, nn.Linear]]], tuple[str, nn.Linear] | None]:
    """Per block its Linears and the head (None when tied or ignored), named by their path in ``model``, which is
    how the graph view names them (``hf.model.layers.0.mlp.down_proj``, ``hf.lm_head``)."""
    try:
        blocks, head = LM.targets_of(model, prune_head=True)
    except InputError as exc:
        raise InputError(str(exc).replace("prune needs", "prune_sensitivity needs", 1)) from None
    names = {id(m): n for n, m in model.named_modules()}
    hf = getattr(model, "hf", model)
    prefix = next((n + "." for n, m in model.named_modules() if m is hf and n), "")
    known = set(names.values()) | {prefix + n for n, _ in hf.named_modules()}
    wanted = []
    for entry in ignore:
        full = entry if entry in known else prefix + entry
        if full not in known:
            if entry in default_ignore:
                continue
            raise InputError(f"ignore: no module named {entry!r} in the model")
        wanted.append(full)

    def kept(name: str) -> bool:
        return not any(name == w or name.startswith(w + ".") for w in wanted)

    named = [[(names[id(m)], m) for _, m in block if kept(names[id(m)])] for block in blocks]
    head_pair = (names[id(head)], head) if head is not None and kept(names[id(head)]) else None
    return named, head_pair


def make_units(blocks: list[list[tuple[str, nn.Linear]]], head: tuple[str, nn.Linear] | None, granularity: str
               ) -> list[Unit]:
    if granularity not in GRANULARITIES:
        raise InputError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    units: list[Unit] = []
    for named in blocks:
        if not named:
            continue
        if granularity == "linear":
            units += [Unit(n, (n,), m.weight.numel()) for n, m in named]
        else:
            block = named[0][0].rsplit(".", 2)[0]  # hf.model.layers.3.self_attn.q_proj -> hf.model.layers.3
            units.append(Unit(block, tuple(n for n, _ in named), sum(m.weight.numel() for _, m in named)))
    if head is not None:
        units.append(Unit(head[0], (head[0],), head[1].weight.numel()))
    if not units:
        raise InputError("nothing to measure: every Linear of the decoder blocks and the head is ignored")
    return units


class ValSubset:
    """A dataset bundle whose validation split is only its first ``sequences`` sequences; everything else is the
    bundle's own (the tensors are shared, not copied)."""

    def __init__(self, data: Any, sequences: int) -> None:
        self._data = data
        x, y = data.tensors("val")
        self._val = (x[:sequences], y[:sequences])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._data, name)

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self._val if split == "val" else self._data.tensors(split)

    def loader(self, split: str, batch_size: int | None = None, shuffle: bool | None = None, **kwargs: Any) -> Any:
        if split != "val":
            return self._data.loader(split, batch_size, shuffle, **kwargs)
        return DataLoader(TensorDataset(*self._val), batch_size=batch_size or self._data.batch_size, shuffle=False)


def val_subset(data: Any, sequences: int) -> Any:
    """The bundle with only the first ``sequences`` validation sequences (0: all of them)."""
    x, _ = data.tensors("val")
    if len(x) == 0:
        raise InputError("prune_sensitivity: the validation split has no sequences to measure perplexity on")
    if sequences <= 0 or sequences >= len(x):
        return data
    return ValSubset(data, sequences)


def input_norms(ctx: JobContext, model: nn.Module, layers: dict[str, nn.Linear], calibration: int,
                batch: int = 8) -> dict[str, torch.Tensor]:
    """Mean squared input of every channel of each layer over ``calibration`` train sequences (Wanda's ||X_j||^2,
    up to a scale that does not change the ranking), from forward passes of the dense model."""
    sums = {n: torch.zeros(m.in_features, device=m.weight.device) for n, m in layers.items()}
    counts = dict.fromkeys(layers, 0)

    def hook_for(name: str) -> Any:
        def hook(_module: nn.Module, args: tuple, _out: Any) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            sums[name] += (x ** 2).sum(0)
            counts[name] += x.shape[0]
        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in layers.items()]
    seen = 0
    try:
        with torch.no_grad():
            for x, _ in ctx.data.loader("train", batch_size=min(batch, calibration), shuffle=False):
                ctx.check_cancelled()
                x = x[: calibration - seen].to(ctx.device)
                model(x)
                seen += x.shape[0]
                if seen >= calibration:
                    break
    finally:
        for h in handles:
            h.remove()
    if seen == 0:
        raise InputError("prune_sensitivity: the train split has no sequences to calibrate Wanda on")
    return {n: sums[n] / max(counts[n], 1) for n in layers}


@contextmanager
def pruned(layers: dict[str, nn.Linear], ratios: dict[str, float], method: str, norms: dict[str, torch.Tensor],
           head: str | None) -> Iterator[None]:
    """The named layers pruned in place to their ratio for the ``with`` body; their weights restored after it,
    also on cancel or error."""
    saved = {n: layers[n].weight.detach().clone() for n, r in ratios.items() if r > 0}
    try:
        with torch.no_grad():
            for name in saved:
                layer, ratio = layers[name], ratios[name]
                if method == "wanda" and name != head:  # the head goes by magnitude, as prune does it
                    LM.wanda_prune(layer, norms[name], ratio, None)
                else:
                    LM.magnitude_prune(layer, ratio, None)
        yield
    finally:
        with torch.no_grad():
            for name, weight in saved.items():
                layers[name].weight.copy_(weight)


def _score(point: dict[str, float]) -> dict[str, float]:
    """A perplexity point in the form ``_pruning``'s greedy reads (higher "accuracy" is better)."""
    return {"accuracy": -point["perplexity"], "loss": point["loss"]}


def greedy(baseline: dict[str, float], curves: dict[str, dict[float, dict[str, float]]], units: list[Unit],
           amount: float) -> dict[str, float]:
    """Per-unit ratios removing ``amount`` of the units' weights with the least measured perplexity rise."""
    weights = {u.name: u.weights for u in units}
    target = sum(P.removed_channels(w, amount) for w in weights.values())
    largest = max(max(c) for c in curves.values())
    reachable = sum(P.removed_channels(w, max(curves[n])) for n, w in weights.items())
    if target > reachable:
        raise InputError(f"amount={amount:g} cannot be reached: the largest measured ratio is {largest:g} "
                         "(add larger ratios)")
    return P.greedy_allocation(_score(baseline), {n: {r: _score(p) for r, p in c.items()} for n, c in curves.items()},
                               weights, amount)


def heat(baseline: dict[str, float], curves: dict[str, dict[float, dict[str, float]]], units: list[Unit]
         ) -> dict[str, float]:
    """0..1 per graph node (1 = the most sensitive unit): mean loss rise over the curve, scaled to the worst."""
    rise = {u.name: sum(max(0.0, p["loss"] - baseline["loss"]) for p in curves[u.name].values())
            / max(len(curves[u.name]), 1) for u in units}
    worst = max(rise.values(), default=0.0)
    return {m: round(rise[u.name] / worst, 4) if worst > 0 else 0.0 for u in units for m in u.members}


def measure_language_model(ctx: JobContext, model: nn.Module, *, ratios: list[float], amount: float, method: str,
                           granularity: str, calibration: int, val_sequences: int, ignore: list[str],
                           default_ignore: list[str]) -> dict[str, Any]:
    """The sensitivity curves, heat and allocation of a decoder language model; ``model`` is left as it was.

    Returns the job's result: ``sensitivity`` {unit: {ratio: val perplexity}} (ratio "0" the unpruned model),
    ``heat`` {graph node: 0..1}, ``allocation`` {unit: ratio}, ``allocation_check``, ``weights``, and the
    settings; ``baseline`` holds the unpruned perplexity and loss (for the job's metrics).
    """
    if method not in METHODS:
        raise InputError(f"method={method}: a language model's sensitivity is measured with one of "
                         f"{', '.join(METHODS)}")
    LM.check_settings(method, "unstructured", amount, calibration)  # wanda needs calibration sequences
    if amount > max(ratios):  # before the sweep, not after it: every unit is measured on the same grid
        raise InputError(f"amount={amount:g} cannot be reached: the largest measured ratio is {max(ratios):g} "
                         "(add larger ratios)")
    blocks, head = linear_targets(model, ignore, default_ignore)
    units = make_units(blocks, head, granularity)
    layers = {n: m for named in blocks for n, m in named} | ({head[0]: head[1]} if head else {})
    head_name = head[0] if head else None
    val = val_subset(ctx.data, val_sequences)
    task = task_of(ctx.data.info)

    def evaluate() -> dict[str, float]:
        return task.evaluate(model, val, "val", ctx.device, ctx.check_cancelled)

    total = len(units) * len(ratios) + (2 if amount > 0 else 0)
    was_training = model.training
    model.eval()
    try:
        norms = input_norms(ctx, model, layers, calibration) if method == "wanda" else {}
        baseline = evaluate()
        ctx.info(f"prune_sensitivity: {len(units)} units ({granularity}), {method}, ratios "
                 f"{', '.join(f'{r:g}' for r in ratios)}; baseline val perplexity {baseline['perplexity']:.3f} "
                 f"on {len(val.tensors('val')[0])} sequences")
        curves: dict[str, dict[float, dict[str, float]]] = {}
        done = 0
        for unit in units:
            curves[unit.name] = {}
            for ratio in ratios:
                ctx.check_cancelled()
                with pruned(layers, dict.fromkeys(unit.members, ratio), method, norms, head_name):
                    point = evaluate()
                curves[unit.name][ratio] = point
                done += 1
                ctx.progress(done, total, text=f"{unit.name} at {ratio:g}: perplexity {point['perplexity']:.2f}")
                ctx.log(step=round(ratio * 100), **{f"val_perplexity/{unit.name}": point["perplexity"]})
        allocation = {u.name: 0.0 for u in units}
        check: dict[str, Any] = {}
        if amount > 0:
            candidates = {"greedy_perplexity": greedy(baseline, curves, units, amount),
                          "uniform": {u.name: amount for u in units}}
            scores = {}
            for name, chosen in candidates.items():
                ctx.check_cancelled()
                per_layer = {m: chosen[u.name] for u in units for m in u.members}
                with pruned(layers, per_layer, method, norms, head_name):
                    scores[name] = evaluate()
                done += 1
                ctx.progress(done, total, text=f"allocation {name}: perplexity {scores[name]['perplexity']:.2f}")
            best = min(scores, key=lambda n: scores[n]["perplexity"])
            allocation = candidates[best]
            check = {"chosen": best, "val_perplexity": {n: round(s["perplexity"], 4) for n, s in scores.items()}}
    finally:
        model.train(was_training)
    return {
        "sensitivity": {u.name: {"0": round(baseline["perplexity"], 4),
                                 **{f"{r:g}": round(p["perplexity"], 4) for r, p in curves[u.name].items()}}
                        for u in units},
        "heat": heat(baseline, curves, units),
        "allocation": allocation, "allocation_check": check,
        "weights": {u.name: u.weights for u in units},
        "ratios": [f"{r:g}" for r in ratios], "amount": amount, "metric": METRIC, "method": method,
        "granularity": granularity, "val_sequences": len(val.tensors("val")[0]),
        "calibration": calibration if method == "wanda" else 0,
        "baseline": baseline,
    }
