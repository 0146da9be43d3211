"""Fusion helpers for the ``fuse`` job: BatchNorm folding, ONNX graph optimization, weight averaging, ensembles."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from workbench.plugin import InputError, JobFailed

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_FOLDABLE = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d, nn.Linear: nn.BatchNorm1d}


# BatchNorm folding ------------------------------------------------------------------------------------------------
def _pairs_from_fx(model: nn.Module) -> list[tuple[str, str]]:
    """(layer, bn) module names where the BN's only input is the layer's output, from a torch.fx trace."""
    import torch.fx as fx

    graph = fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), _BN) or not node.args:
            continue
        prev = node.args[0]
        if not isinstance(prev, fx.Node) or prev.op != "call_module" or len(prev.users) != 1:
            continue
        layer = modules.get(prev.target)
        if type(layer) in _FOLDABLE and isinstance(modules[node.target], _FOLDABLE[type(layer)]) \
                and calls[prev.target] == 1 and calls[node.target] == 1:
            pairs.append((str(prev.target), str(node.target)))
    return pairs


def _pairs_from_sequentials(model: nn.Module) -> list[tuple[str, str]]:
    """Fallback for models fx cannot trace: adjacent (layer, BN) children of nn.Sequential containers."""
    pairs = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (a_name, a), (b_name, b) in zip(children, children[1:]):
            if type(a) in _FOLDABLE and isinstance(b, _FOLDABLE[type(a)]):
                prefix = f"{name}." if name else ""
                pairs.append((prefix + a_name, prefix + b_name))
    return pairs


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, new)


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, int, str]:
    """A copy of ``model`` with every foldable BatchNorm merged into the conv/linear before it.

    The module tree and class are kept (folded BNs become ``nn.Identity``), so the result is an ordinary,
    trainable module. Returns (model, number of BNs folded, how the pairs were found).
    """
    fused = copy.deepcopy(model).eval()
    try:
        pairs, how = _pairs_from_fx(fused), "fx"
    except Exception:  # noqa: BLE001 - data-dependent control flow: fall back to Sequential patterns
        pairs, how = _pairs_from_sequentials(fused), "sequential"
    for layer_name, bn_name in pairs:
        layer, bn = fused.get_submodule(layer_name), fused.get_submodule(bn_name)
        if not bn.track_running_stats or bn.running_mean is None:
            continue
        folded = fuse_conv_bn_eval(layer, bn) if isinstance(layer, nn.modules.conv._ConvNd) \
            else fuse_linear_bn_eval(layer, bn)
        for p in folded.parameters():
            p.requires_grad_(True)
        _set_module(fused, layer_name, folded)
        _set_module(fused, bn_name, nn.Identity())
    return fused, len(pairs), how


def count_batchnorm(model: nn.Module) -> int:
    return sum(isinstance(m, _BN) for m in model.modules())


# ONNX graph optimization ------------------------------------------------------------------------------------------
ORT_LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def optimize_onnx(source: Path, target: Path, level: str) -> None:
    """onnxruntime's offline optimization: the optimized graph is written to ``target`` (CPU provider)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_LEVELS[level])
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    try:
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise JobFailed(f"onnxruntime could not optimize the graph: {str(exc).splitlines()[0][:200]}") from None
    if not target.exists():
        raise JobFailed("onnxruntime wrote no optimized model")


# weight averaging (model soups) -----------------------------------------------------------------------------------
def check_same_architecture(models: Sequence[nn.Module], ids: Sequence[str]) -> None:
    """Soups need identical parameter names and shapes."""
    ref = {k: tuple(v.shape) for k, v in models[0].state_dict().items()}
    for model, vid in zip(models[1:], ids[1:]):
        other = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if other != ref:
            diff = sorted(set(ref.items()) ^ set(other.items()))
            where = diff[0][0] if diff else "?"
            raise InputError(f"average: {vid} does not have the architecture of {ids[0]} (differs at {where!r})")


def average_states(models: Sequence[nn.Module]) -> dict[str, torch.Tensor]:
    """The element-wise mean of floating-point entries (weights and BN statistics); integers from the first."""
    states = [m.state_dict() for m in models]
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = torch.stack([s[key].detach().float() for s in states]).mean(0).to(first.dtype)
        else:
            out[key] = first.clone()
    return out


def soup(models: Sequence[nn.Module]) -> nn.Module:
    """A copy of the first model holding the average of all the models' weights."""
    result = copy.deepcopy(models[0])
    result.load_state_dict(average_states(models))
    return result


# ensembles --------------------------------------------------------------------------------------------------------
class Ensemble(nn.Module):
    """Several classifiers as one module: the mean of their logits, or the log of their mean probabilities.

    Returning log-probabilities keeps the output a valid logit vector (softmax of it is the averaged
    distribution), so accuracy and cross-entropy are measured like any model's.
    """

    def __init__(self, members: Sequence[nn.Module], combine: str = "logits") -> None:
        super().__init__()
        if combine not in ("logits", "probs"):
            raise InputError(f"ensemble: combine must be logits or probs, not {combine!r}")
        self.members = nn.ModuleList(members)
        self.combine = combine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = torch.stack([m(x) for m in self.members])
        if self.combine == "logits":
            return outs.mean(0)
        return torch.log(F.softmax(outs, dim=-1).mean(0).clamp_min(1e-12))
