"""Saving PyTorch variants: safetensors weights + an architecture recipe (``loading.load_torch_model`` reads
them back).

A recipe rebuilds the original architecture; the saved per-module attributes (channel counts, features,
groups) then reshape it, so structurally pruned models reload with their new shapes and stay trainable.
Models no recipe can rebuild (ensembles, a plugin's own classes) are saved with torch.export as ``model.pt2``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.core.errors import InputError
from workbench.core.models.recipe import RECIPE_ATTR, recipe_of, set_recipe
from workbench.core.workspace.atomic import atomic_write_bytes, atomic_write_text

__all__ = ["RECIPE_ATTR", "apply_shapes", "module_shapes", "recipe_of", "save_exported", "save_torch_model",
           "set_recipe"]

RECIPE_KINDS = ("zoo", "py", "stack", "keras")  # the kinds loading.build_from_recipe rebuilds
_SHAPE_ATTRS = (
    "in_channels", "out_channels", "groups", "in_features", "out_features", "num_features",
    "normalized_shape", "num_embeddings", "embedding_dim", "input_size", "hidden_size", "embed_dim",
    "num_heads", "head_dim", "kdim", "vdim", "d_model",
)


def module_shapes(model: nn.Module) -> dict[str, dict[str, Any]]:
    """The shape-defining attributes of every submodule, JSON-ready."""
    out: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        attrs = {}
        for attr in _SHAPE_ATTRS:
            value = getattr(module, attr, None)
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, int) or (isinstance(value, tuple) and all(isinstance(v, int) for v in value)):
                attrs[attr] = list(value) if isinstance(value, tuple) else value
        if name and isinstance(module, nn.Identity):
            attrs["identity"] = True  # a layer removed by a job (e.g. a BatchNorm folded into its conv)
        if attrs:
            out[name] = attrs
    return out


def apply_shapes(model: nn.Module, shapes: dict[str, dict[str, Any]], state: dict[str, torch.Tensor]) -> None:
    for name, attrs in shapes.items():
        if attrs.get("identity") and name:
            try:
                if not isinstance(model.get_submodule(name), nn.Identity):
                    parent, _, leaf = name.rpartition(".")
                    setattr(model.get_submodule(parent) if parent else model, leaf, nn.Identity())
            except AttributeError:
                pass
    modules = dict(model.named_modules())
    for name, attrs in shapes.items():
        module = modules.get(name)
        if module is None:
            continue
        for attr, value in attrs.items():
            if attr == "identity":
                continue
            current = getattr(module, attr, None)
            new = tuple(value) if isinstance(value, list) else value
            if current != new:
                try:
                    setattr(module, attr, new)
                except (AttributeError, TypeError):
                    pass
    for key, tensor in state.items():
        owner_name, _, leaf = key.rpartition(".")
        owner = modules.get(owner_name)
        if owner is None:
            continue
        current = getattr(owner, leaf, None)
        if current is None and leaf in owner._parameters:  # e.g. a conv bias added by BatchNorm folding
            owner.register_parameter(leaf, nn.Parameter(torch.empty(tensor.shape, dtype=tensor.dtype)))
        elif isinstance(current, torch.Tensor) and current.shape != tensor.shape:
            empty = torch.empty(tensor.shape, dtype=tensor.dtype)
            if isinstance(current, nn.Parameter):
                setattr(owner, leaf, nn.Parameter(empty, requires_grad=current.requires_grad))
            else:
                owner.register_buffer(leaf, empty)


def save_torch_model(model: nn.Module, folder: Path, recipe: dict[str, Any] | None) -> str:
    """Write the model into ``folder``; returns the format used ("safetensors" or "pt2")."""
    from safetensors.torch import save

    model = model.eval()
    if getattr(model, "is_causal_lm", False):  # a Hugging Face folder: config.json + safetensors + tokenizer
        from workbench.core.lm.model import save_language_model

        return save_language_model(model, folder)
    if recipe is not None and recipe.get("kind") in RECIPE_KINDS:
        state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        data = save(state)
        atomic_write_bytes(folder / "model.safetensors", data)
        payload = {"recipe": recipe, "shapes": module_shapes(model)}
        atomic_write_text(folder / "recipe.json", json.dumps(payload, indent=1))
        return "safetensors"
    raise InputError("model has no architecture recipe")


def save_exported(model: nn.Module, folder: Path, example: torch.Tensor) -> str:
    """Fallback for models without a recipe: a torch.export program, loadable without unpickling code."""
    import io

    model = model.eval().cpu()
    try:  # a dynamic batch dimension, so the reloaded program runs on any batch size
        program = torch.export.export(model, (example.cpu(),), strict=False,
                                      dynamic_shapes=({0: torch.export.Dim.AUTO},))
    except Exception:  # noqa: BLE001 - models that need a fixed batch are exported as they are
        program = torch.export.export(model, (example.cpu(),), strict=False)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    atomic_write_bytes(folder / "model.pt2", buffer.getvalue())
    return "pt2"
