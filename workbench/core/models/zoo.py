"""The model zoo: named model factories the app and the CLI (``--model NAME``) can build.

Built-in models live in ``zoo_vision`` and ``zoo_text``; third-party packages add more through the
``workbench.models`` entry point group (name -> factory), loaded only when a name is not built in
or when the whole list is asked for.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

import torch
from torch import nn

from workbench.core.errors import InputError
from workbench.core.models.zoo_lm import tiny_llama
from workbench.core.models.zoo_text import lstm_classifier, transformer_encoder
from workbench.core.models.zoo_vision import lenet5, mlp, mobilenet_v2, resnet8, resnet18, seed_cnn

ENTRY_POINT_GROUP = "workbench.models"

OptionValue = str | int | float | bool


@dataclass(frozen=True)
class ZooEntry:
    """One named model: what it is for, which inputs it takes, and how to build it."""

    name: str
    description: str  # one line for --list-models
    input_kinds: tuple[str, ...]  # ("image",), ("text",) or ("image", "tabular")
    factory: Callable[..., nn.Module]  # factory(input_shape, num_classes, **options) -> nn.Module


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0].strip() if lines else ""


def _builtin(factory: Callable[..., nn.Module], input_kinds: tuple[str, ...]) -> ZooEntry:
    return ZooEntry(factory.__name__, _first_line(factory.__doc__), input_kinds, factory)


_BUILTINS: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        _builtin(seed_cnn, ("image",)),
        _builtin(lenet5, ("image",)),
        _builtin(mlp, ("image", "tabular")),
        _builtin(resnet8, ("image",)),
        _builtin(resnet18, ("image",)),
        _builtin(mobilenet_v2, ("image",)),
        _builtin(lstm_classifier, ("text",)),
        _builtin(transformer_encoder, ("text",)),
        _builtin(tiny_llama, ("tokens",)),  # a causal language model: token sequences in, next-token logits out
    )
}

_plugin_cache: dict[str, ZooEntry] | None = None


def _load_plugins() -> dict[str, ZooEntry]:
    """Load the ``workbench.models`` entry points once; a broken one is skipped with a warning.

    An entry point may name a ``ZooEntry`` or a factory; a factory's docstring gives the description
    and its optional ``input_kinds`` attribute the inputs (default: images).
    """
    global _plugin_cache
    if _plugin_cache is not None:
        return _plugin_cache
    found: dict[str, ZooEntry] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _BUILTINS or ep.name in found:
            warnings.warn(
                f"model plugin '{ep.name}' ({ep.value}) duplicates a known model; skipped", stacklevel=2
            )
            continue
        try:
            obj = ep.load()
            if isinstance(obj, ZooEntry):
                entry = ZooEntry(ep.name, obj.description, tuple(obj.input_kinds), obj.factory)
            elif callable(obj):
                kinds = tuple(getattr(obj, "input_kinds", ("image",)))
                entry = ZooEntry(
                    ep.name, _first_line(obj.__doc__) or f"plugin model from {ep.value}", kinds, obj
                )
            else:
                raise TypeError(f"{type(obj).__name__} is neither a factory nor a ZooEntry")
        except Exception as exc:  # a broken plugin must never stop the app
            warnings.warn(f"model plugin '{ep.name}' ({ep.value}) could not be loaded: {exc}", stacklevel=2)
            continue
        found[ep.name] = entry
    _plugin_cache = found
    return found


def list_models() -> list[ZooEntry]:
    """All models: the built-ins first, in zoo order, then plugin models sorted by name."""
    plugins = _load_plugins()
    return list(_BUILTINS.values()) + [plugins[k] for k in sorted(plugins)]


def _lookup(name: str) -> ZooEntry:
    """Find a model by name, touching the entry points only for names that are not built in."""
    if name in _BUILTINS:
        return _BUILTINS[name]
    plugins = _load_plugins()
    if name in plugins:
        return plugins[name]
    known = ", ".join(e.name for e in list_models())
    raise InputError(f"unknown model '{name}'; known: {known}")


def _factory_options(entry: ZooEntry) -> dict[str, inspect.Parameter]:
    """The keyword options a factory takes beyond ``input_shape`` and ``num_classes``."""
    params = list(inspect.signature(entry.factory).parameters.values())
    return {
        p.name: p
        for p in params[2:]
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(model: str, key: str, value: OptionValue, default: object) -> object:
    """Turn a CLI string (or a number) into the type of the option's default."""
    kind = type(default)
    try:
        if kind is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in _TRUE | _FALSE:
                    return lowered in _TRUE
                raise ValueError(value)
            return bool(value)
        if kind is int:
            if isinstance(value, bool):
                raise ValueError(value)
            number = float(value) if isinstance(value, str) else value
            if float(number) != int(number):
                raise ValueError(value)
            return int(number)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if kind is str:
            return str(value)
    except (TypeError, ValueError):
        raise InputError(
            f"{model}: option '{key}' expects {kind.__name__} (default {default!r}); got {value!r}"
        ) from None
    return value  # no usable default type (None or other): pass through


def _resolve_options(entry: ZooEntry, options: dict[str, OptionValue] | None) -> dict[str, object]:
    accepted = _factory_options(entry)
    resolved: dict[str, object] = {}
    for key, value in (options or {}).items():
        if key not in accepted:
            valid = ", ".join(accepted) or "none"
            raise InputError(f"{entry.name}: unknown option '{key}'; valid options: {valid}")
        default = accepted[key].default
        resolved[key] = (
            value if default is inspect.Parameter.empty else _convert(entry.name, key, value, default)
        )
    return resolved


def _dry_input(entry: ZooEntry, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Zeros shaped like a batch of two; int64 token ids for text-only models."""
    if {"text", "tokens"} & set(entry.input_kinds) and not {"image", "tabular"} & set(entry.input_kinds):
        return torch.zeros(2, *input_shape, dtype=torch.long)
    return torch.zeros(2, *input_shape)


def _check_fit(name: str, model: nn.Module, example: torch.Tensor, num_classes: int, per_token: bool = False) -> None:
    """Run one forward pass in eval mode so shape mismatches surface as one clear InputError; a language model
    (``per_token``) gives one score per vocabulary entry at every position."""
    shape = "x".join(str(d) for d in example.shape[1:])
    was_training = model.training
    model.eval()  # no BatchNorm statistics updates, no dropout
    try:
        with torch.no_grad():
            out = model(example)
    except (RuntimeError, ValueError, IndexError) as exc:
        reason = _first_line(str(exc)) or type(exc).__name__
        raise InputError(f"{name} cannot take inputs of shape {shape}: {reason}") from exc
    finally:
        model.train(was_training)
    expected = (*example.shape[:2], num_classes) if per_token else (example.shape[0], num_classes)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        want = "(N, seq, vocab " if per_token else "(N, "
        raise InputError(
            f"{name} gives outputs of shape {got} on inputs of shape {shape}; expected {want}{num_classes})"
        )


def build_zoo_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    options: dict[str, OptionValue] | None = None,
) -> nn.Module:
    """Build a zoo model for a dataset's sample shape and class count, checked by a dry forward pass.

    ``options`` may hold CLI strings (``{"width": "0.5"}``); they are converted to the types of the
    factory's keyword defaults. Every problem (unknown model or option, bad value, input the model
    cannot take) raises ``InputError`` with one line meant for the user.
    """
    entry = _lookup(name)
    input_shape = tuple(int(d) for d in input_shape)
    if not input_shape or any(d < 1 for d in input_shape):
        raise InputError(f"{name}: input shape must be non-empty and positive; got {input_shape}")
    if num_classes < 1:
        raise InputError(f"{name}: num_classes must be at least 1; got {num_classes}")
    kwargs = _resolve_options(entry, options)
    try:
        model = entry.factory(input_shape, num_classes, **kwargs)
    except InputError:
        raise
    except (RuntimeError, ValueError) as exc:
        raise InputError(
            f"{name} cannot be built for inputs of shape {input_shape}: {_first_line(str(exc))}"
        ) from exc
    _check_fit(name, model, _dry_input(entry, input_shape), num_classes, per_token="tokens" in entry.input_kinds)
    return model
