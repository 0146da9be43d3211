"""What a trial of the ``optimize`` search does: a recipe turned into steps of installed jobs, run with a cache.

A recipe is a small dict of choices (how much to prune and how, how to fine-tune, whether to fuse and quantize).
``plan`` turns it into the list of job steps (name and parameters) that make the model; the same list runs the
trial (through ``ctx.run_job``) and is exported as the pipeline file that reproduces the winner, so the two
cannot drift apart. Every prefix of a plan is cached: two trials that prune alike share the pruned model, two
that also fine-tune alike share the fine-tuned one, and quantizing or fusing a cached model costs only that step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from workbench.plugin import InputError, JobContext, is_onnx

#: sensitivity curves for the search's per-layer allocation: coarse, since they are measured once per search
SENSITIVITY_RATIOS = ("0.25", "0.5", "0.75", "0.9")  # up to above the search's largest amount (0.85)
FINETUNE = {"batch_size": 32, "schedule": "cosine"}
QUANTIZE_CANDIDATES = 2  # the two formats that usually win on x86 (uint8 QDQ, per-channel or not): time is short
DISTILL = {"temperature": 4.0, "alpha": 0.7}


@dataclass(frozen=True)
class Step:
    """One job of a recipe: its name and the parameters it runs with (exactly what the pipeline file says)."""

    job: str
    params: dict[str, Any] = field(default_factory=dict)

    def key(self) -> tuple[Any, ...]:
        return (self.job, tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in self.params.items())))


def recipe_key(recipe: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted(recipe.items()))


def describe(recipe: dict[str, Any]) -> str:
    """``prune 0.55 (uniform) > distill 3 ep > int8`` (``as is`` for a recipe that changes nothing)."""
    parts = []
    if recipe.get("amount", 0) > 0:
        parts.append(f"prune {recipe['amount']:g} ({recipe.get('allocation', 'uniform')})")
    if recipe.get("drop", 0) > 0:
        parts.append(f"drop {recipe['drop']} layers")
    if recipe.get("epochs", 0) > 0:
        parts.append(f"{recipe.get('tune', 'train')} {recipe['epochs']} ep")
    if recipe.get("steps", 0) > 0:
        parts.append(f"train {recipe['steps']} steps")
    if recipe.get("fuse"):
        parts.append("fuse")
    if recipe.get("quantize", "none") != "none":
        parts.append(recipe["quantize"])
    return " > ".join(parts) or "as is"


def plan(recipe: dict[str, Any], *, teacher: str | None, lr: float, max_drop: float, language_model: bool,
         has_batchnorm: bool, round_to: int = 1) -> list[Step]:
    """The job steps of ``recipe`` in order: prune or drop layers, fine-tune (or distill), fuse, quantize.

    ``round_to`` keeps pruned channel counts a multiple of it: onnxruntime's fast CPU convolutions work on
    blocks of 8 or 16 channels (NCHWc), so 57 channels can be slower than 64."""
    steps: list[Step] = []
    if language_model:
        if recipe.get("drop", 0) > 0:
            steps.append(Step("drop_layers", {"count": int(recipe["drop"])}))
        if recipe.get("steps", 0) > 0:
            steps.append(Step("train", {"epochs": 1000, "max_steps": int(recipe["steps"]), "lr": lr}))
        bits = {"int4": 4, "int8": 8}.get(recipe.get("quantize", "none"))
        if bits:
            steps.append(Step("quantize_weights", {"bits": bits}))
        return steps
    if recipe.get("amount", 0) > 0:
        params: dict[str, Any] = {"method": "structured", "amount": float(recipe["amount"])}
        if round_to > 1:
            params["round_to"] = round_to
        if recipe.get("allocation") == "global":
            params["scope"] = "global"
        elif recipe.get("allocation") == "sensitivity":
            params.update(allocation="sensitivity", ratios=list(SENSITIVITY_RATIOS))
        steps.append(Step("prune", params))
    epochs = int(recipe.get("epochs", 0))
    if epochs > 0:
        if recipe.get("tune") == "distill" and teacher is not None:
            steps.append(Step("distill", {"student": "input", "teachers": [teacher], "epochs": epochs, "lr": lr,
                                          **FINETUNE, **DISTILL}))
        else:
            steps.append(Step("train", {"epochs": epochs, "lr": lr, **FINETUNE}))
    if recipe.get("fuse") and has_batchnorm:
        steps.append(Step("fuse", {"method": "conv_bn"}))
    if recipe.get("quantize", "none") == "int8":
        steps.append(Step("quantize", {"max_accuracy_drop": max_drop, "max_candidates": QUANTIZE_CANDIDATES}))
    return steps


class _Quiet:
    """The job's context with its live channels muted: a helper's per-layer curves and progress must not land in
    the search's own plot and progress bar (``ctx.run_job`` gives sub-jobs the same treatment)."""

    def __init__(self, ctx: JobContext) -> None:
        self._ctx = ctx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def log(self, *args: Any, **kwargs: Any) -> None:
        pass

    def progress(self, *args: Any, **kwargs: Any) -> None:
        pass

    def info(self, *args: Any, **kwargs: Any) -> None:
        pass


class Stages:
    """Runs plans on the search's input model, caching the model after every prefix of a plan."""

    def __init__(self, ctx: JobContext, model: Any, seed: int) -> None:
        self.ctx, self.model, self.seed = ctx, model, seed
        self.cache: dict[tuple[Any, ...], Any] = {(): model}
        self._sensitivity: dict[str, Any] | None = None
        self.runs = 0  # job steps actually run (the rest came from the cache)

    def build(self, steps: list[Step], on_step: Callable[[Step], None] | None = None) -> Any:
        """The model ``steps`` make, from the longest cached prefix on."""
        key: tuple[Any, ...] = ()
        keys = []
        for step in steps:
            key = key + (step.key(),)
            keys.append(key)
        start = 0
        for i in range(len(keys), 0, -1):
            if keys[i - 1] in self.cache:
                start = i
                break
        model = self.cache[keys[start - 1]] if start else self.model
        for step, k in zip(steps[start:], keys[start:]):
            self.ctx.check_cancelled()
            if on_step is not None:
                on_step(step)
            model = self._run(step, model)
            self.cache[k] = model
            self.runs += 1
        return model

    def _run(self, step: Step, model: Any) -> Any:
        torch.manual_seed(self.seed)  # each step starts from the same random state, whichever trial runs it
        work = model if is_onnx(model) else copy.deepcopy(model)  # the cached model stays as it was
        if step.job == "prune" and step.params.get("allocation") == "sensitivity":
            return self._prune_by_sensitivity(work, float(step.params["amount"]), int(step.params.get("round_to", 1)))
        sub = self.ctx.run_job(step.job, work, **step.params)
        if sub.model is None:
            raise InputError(f"job {step.job} made no model")
        return sub.model

    def _prune_by_sensitivity(self, model: nn.Module, amount: float, round_to: int) -> nn.Module:
        """What ``prune:allocation=sensitivity`` does, with the curves measured once for the whole search."""
        from workbench_plugins import _pruning as P

        quiet: Any = _Quiet(self.ctx)
        ignore = list(P.DEFAULT_IGNORE)
        if self._sensitivity is None:
            ratios = P.parse_ratios(list(SENSITIVITY_RATIOS))
            self._sensitivity = P.measure_sensitivity(quiet, copy.deepcopy(self.model), "l1", ratios, ignore=ignore,
                                                      default_ignore=ignore)
        allocation, _ = P.choose_allocation(quiet, model, self._sensitivity, amount, "l1", ignore=ignore,
                                            default_ignore=ignore)
        pruner, _ = P.build_pruner(model, P.example_input(quiet), "l1", ignore=ignore, default_ignore=ignore,
                                   per_layer=allocation, round_to=round_to)
        pruner.step()
        model.zero_grad(set_to_none=True)
        return model

    def forget(self, keep: Callable[[tuple[Any, ...]], bool]) -> None:
        """Drop cached models ``keep`` rejects (memory on long searches); the input model always stays."""
        for key in [k for k in self.cache if k and not keep(k)]:
            del self.cache[key]


def has_batchnorm(model: Any) -> bool:
    return isinstance(model, nn.Module) and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                                 for m in model.modules())


def pipeline_text(steps: list[Step], *, model: str, dataset: str, seed: int, out: str | None,
                  comment: str) -> str:
    """The winner's recipe as a TOML pipeline (``workbench --batch --pipeline FILE``) on the search's input."""
    from workbench.core.pipeline import Pipeline, to_toml
    from workbench.core.pipeline import Step as PipelineStep

    text = to_toml(Pipeline(model=model, dataset=dataset, seed=seed,
                            steps=[PipelineStep(s.job, dict(s.params)) for s in steps]))
    if out:  # reopen the same workspace, so the input variant (and a distillation teacher) keep their ids
        lines = text.splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith("seed = ")) + 1
        lines.insert(at, f"out = {_quoted(out)}")
        text = "\n".join(lines) + "\n"
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    return header + text


def _quoted(value: str) -> str:
    import json

    return json.dumps(value)
