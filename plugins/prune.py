"""The ``prune`` job: structured channel pruning that really shrinks the model, or unstructured sparsity.

``method=structured`` removes whole channels with Torch-Pruning: every coupled layer loses them too, so the result
is a smaller dense model that runs faster everywhere and still reloads from its recipe (the saved per-module
shapes). On a language model it removes whole KV head groups (grouped-query attention respected) and MLP
channels, by hand in ``_lm_structured`` (Torch-Pruning cannot trace transformers' decoders); the smaller model
saves and reloads through its Hugging Face config. The unstructured methods only write zeros into dense weights:
``nonzero_params`` drops, the latency does not, and the variant is marked so.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

from workbench.core.lm import is_language_model
from workbench.plugin import InputError, Job, JobContext, JobFailed, Param, ensure_supported
from workbench_plugins import _lm_prune as LM
from workbench_plugins import _lm_structured as LMS
from workbench_plugins import _pruning as P
from workbench_plugins._training import TrainLoop, TrainSettings, check_fits

SPARSE_MARK = "sparse (no dense speed-up)"
SPARSE_NOTE = ("unstructured sparsity: the zeros stay in dense weight tensors, so dense kernels (onnxruntime, "
               "PyTorch) do not run faster and the ONNX file is not smaller; use method=structured for speed")
DEFAULT_IGNORE = list(P.DEFAULT_IGNORE)
UNSTRUCTURED_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.Embedding)


class PruneJob(Job):
    name = "prune"
    title = "Prune"
    description = ("Remove channels (structured: smaller and faster, reloads with its new shapes) or zero single "
                   "weights (unstructured: sparse, no dense speed-up); optional prune-then-fine-tune cycles.")
    needs_torch_model = True

    method: Literal["structured", "l1_unstructured", "random_unstructured", "global_magnitude", "wanda",
                    "sparsegpt"] = Param(
        "structured", help="structured removes channels; the others zero single weights (no dense speed-up); "
                           "wanda and sparsegpt are one-shot, calibrated, for language models")
    amount: float = Param(0.5, min=0.0, max=0.95, help="fraction of channels (structured) or weights to remove")
    importance: Literal["l1", "l2", "taylor", "bn_scale"] = Param(
        "l1", help="channel ranking: weight norm, loss gradient x weight, or BatchNorm scale (structured)")
    scope: Literal["uniform", "global"] = Param(
        "uniform", help="uniform: the same fraction in every layer; global: rank channels across layers")
    allocation: Literal["uniform", "sensitivity"] = Param(
        "uniform", help="sensitivity: per-layer ratios from measured sensitivity curves (greedy, least loss)")
    ignore: list[str] = Param(list(DEFAULT_IGNORE), help="module names kept at full width (the output layer always is)")
    steps: int = Param(1, min=1, max=100, help="prune in this many steps (iterative pruning)")
    finetune_epochs: int = Param(0, min=0, max=10000, help="train this many epochs after each step (0 = none)")
    lr: float = Param(1e-3, min=0.0, max=1e6, help="fine-tuning learning rate (Adam)", advanced=True)
    batch_size: int = Param(32, min=1, max=65536, help="fine-tuning batch size", advanced=True)
    round_to: int = Param(1, min=1, max=256, help="keep channel counts a multiple of this (structured)",
                          advanced=True)
    ratios: list[str] = Param(list(P.DEFAULT_RATIOS), help="ratios measured for allocation=sensitivity",
                              advanced=True)

    pattern: Literal["unstructured", "2:4", "4:8"] = Param(
        "unstructured", help="language models: N:M zeros N of every M consecutive input weights (amount 0.5)")
    calibration: int = Param(32, min=0, max=100000,
                             help="language models: train-split sequences for wanda/sparsegpt/structured "
                                  "statistics (structured: 0 = weight magnitude)")
    prune_head: bool = Param(True, help="language models: prune lm_head too (embeddings never are)",
                             advanced=True)

    def run(self, ctx: JobContext) -> nn.Module:
        ensure_supported(self.name, ctx.data.info)  # a language model: one line saying why not
        model = ctx.model
        check_fits(model, ctx)
        if self.amount <= 0.0:
            raise InputError("amount must be greater than 0 (the fraction of channels or weights to remove)")
        if is_language_model(model):
            return self._language_model(ctx, model)
        if self.method in ("wanda", "sparsegpt"):
            raise InputError(f"method={self.method} is written for language models (decoder blocks, calibration "
                             "activations); on this model use l1_unstructured or structured")
        if self.pattern != "unstructured":
            raise InputError("pattern N:M is implemented for language models only; on this model use "
                             "pattern=unstructured")
        if self.method == "structured":
            return self._structured(ctx, model)
        return self._unstructured(ctx, model)

    # language models ------------------------------------------------------------------------------------------------
    def _language_model(self, ctx: JobContext, model: nn.Module) -> nn.Module:
        """One-shot, block by block. ``structured``: whole KV head groups (with their query heads) and MLP channels
        removed, the same count in every block so the HF config describes the smaller model
        (plugins/_lm_structured.py); the others: magnitude / Wanda / SparseGPT zeros (plugins/_lm_prune.py)."""
        if self.steps != 1 or self.finetune_epochs:
            raise InputError("prune on a language model is one-shot: steps must be 1 and finetune_epochs 0 "
                             "(fine-tune with a train step afterwards)")
        if self.method == "structured":
            return self._language_model_structured(ctx, model)
        sparsity = LM.prune_language_model(ctx, model, self.method, self.amount, self.pattern, self.calibration,
                                           self.prune_head)
        total = sum(p.numel() for p in model.parameters())
        zeros = total - sum(int(torch.count_nonzero(p)) for p in model.parameters())
        ctx.mark(SPARSE_MARK if self.pattern == "unstructured" else f"{self.pattern} sparse")
        ctx.result.update({
            "method": self.method, "pattern": self.pattern, "calibration": self.calibration,
            "amount": self.amount, "layers": sparsity,
            "layer_sparsity": {n: row["sparsity"] for n, row in sparsity.items()},
            "model_sparsity": round(zeros / max(total, 1), 4), "pruned_tensors": len(sparsity),
            "not_pruned": "input embeddings" + ("" if "lm_head" in sparsity else ", lm_head"),
            "note": SPARSE_NOTE,
        })
        ctx.warn(SPARSE_NOTE)
        return model

    def _language_model_structured(self, ctx: JobContext, model: nn.Module) -> nn.Module:
        """Heads and MLP channels out; every block keeps the same widths (a Hugging Face config has one of each)."""
        if self.pattern != "unstructured":
            raise InputError(f"pattern {self.pattern} is for the sparse methods; method=structured removes whole "
                             "heads and channels (leave pattern=unstructured)")
        if self.scope != "uniform" or self.allocation != "uniform":
            raise InputError("method=structured on a language model removes the same number of heads and MLP "
                             "channels from every block (one config describes them all): scope and allocation "
                             "must be uniform")
        if self.importance not in ("l1", "l2"):
            raise InputError(f"importance={self.importance} is not implemented for language models; structured "
                             "ranks heads and channels by weight norm (l1 or l2) times calibration activations")
        result = LMS.prune_structured(ctx, model, self.amount, self.calibration, self.round_to,
                                      p=1 if self.importance == "l1" else 2)
        ctx.result.update(result)
        ctx.info(f"structured: {result['params_before']} -> {result['params_after']} parameters "
                 f"({result['param_ratio']:.3f}x)")
        return model

    # structured -------------------------------------------------------------------------------------------------
    def _structured(self, ctx: JobContext, model: nn.Module) -> nn.Module:
        example = P.example_input(ctx)
        macs0, params0 = P.size_of(model, example)
        per_layer = None
        if self.allocation == "sensitivity":
            per_layer = self._sensitivity_allocation(ctx, model)
        pruner, layers = P.build_pruner(
            model, example, self.importance, ignore=self.ignore, default_ignore=DEFAULT_IGNORE,
            amount=0.0 if per_layer else self.amount, per_layer=per_layer, scope=self.scope, steps=self.steps,
            round_to=self.round_to)
        names = [layer.name for layer in layers]
        before = P.channels_of(model, names)
        ctx.info(f"pruning {len(layers)} layer groups: {', '.join(names)}")
        offset = 0
        for step in range(1, self.steps + 1):
            ctx.check_cancelled()
            if self.importance == "taylor":
                P.taylor_gradients(model, ctx)
            pruner.step()
            model.zero_grad(set_to_none=True)
            macs, params = P.size_of(model, example)
            val = ctx.accuracy(model, "val")
            ctx.log(step=offset, prune_step=step, params=params, macs=macs, val_accuracy=val["accuracy"])
            ctx.info(f"step {step}/{self.steps}: {params / params0:.2f}x parameters, {macs / max(macs0, 1):.2f}x "
                     f"MACs, val accuracy {val['accuracy']:.4f}")
            offset = self._finetune(ctx, model, offset)
        macs, params = P.size_of(model, example)
        if params >= params0:
            raise JobFailed(f"no channel was removed: importance={self.importance} scored every channel alike "
                            "(e.g. bn_scale on an untrained model's BatchNorm); train first or use importance=l1")
        after = P.channels_of(model, names)
        ctx.result.update({
            "method": "structured", "importance": self.importance,
            "scope": "sensitivity" if per_layer else self.scope,
            "params_before": params0, "params_after": params, "param_ratio": round(params / max(params0, 1), 4),
            "macs_before": macs0, "macs_after": macs, "mac_ratio": round(macs / max(macs0, 1), 4),
            "channels": {n: [before[n], after.get(n, 0)] for n in names},
            "coupled": {layer.name: list(layer.coupled) for layer in layers if layer.coupled},
        })
        return model

    def _sensitivity_allocation(self, ctx: JobContext, model: nn.Module) -> dict[str, float]:
        """Measure the curves (same algorithm as prune_sensitivity) and allocate ``amount`` greedily."""
        ratios = P.parse_ratios(self.ratios)
        if self.scope == "global":
            ctx.info("allocation=sensitivity sets per-layer ratios itself: scope=global is not used")
        ctx.info(f"measuring sensitivity at ratios {', '.join(f'{r:g}' for r in ratios)}")
        sens = P.measure_sensitivity(ctx, model, self.importance, ratios, ignore=self.ignore,
                                     default_ignore=DEFAULT_IGNORE)
        allocation, check = P.choose_allocation(ctx, model, sens, self.amount, self.importance, ignore=self.ignore,
                                                default_ignore=DEFAULT_IGNORE)
        ctx.result.update(sensitivity=P.curves_for_result(sens), allocation=allocation, allocation_check=check)
        ctx.info(f"allocation ({check['chosen']}): " + ", ".join(f"{n} {r:.2f}" for n, r in allocation.items()))
        return allocation

    def _finetune(self, ctx: JobContext, model: nn.Module, offset: int) -> int:
        """Train ``finetune_epochs`` after a pruning step (live metrics); returns the next metric step."""
        if self.finetune_epochs <= 0:
            return offset
        settings = TrainSettings(
            epochs=self.finetune_epochs, batch_size=self.batch_size, lr=self.lr, optimizer="adam", momentum=0.9,
            weight_decay=0.0, schedule="constant", step_size=5, gamma=0.1, patience=0, grad_clip=0.0, amp="off",
            auto_batch=False)
        loop = TrainLoop(ctx, model, settings, _cross_entropy)
        loop.global_step = offset
        loop.fit()
        return loop.global_step

    # unstructured -----------------------------------------------------------------------------------------------
    def _unstructured(self, ctx: JobContext, model: nn.Module) -> nn.Module:
        targets = self._unstructured_targets(model)
        if not targets:
            raise InputError("nothing to prune: every layer with weights is ignored (check the ignore parameter)")
        previous = 0.0
        offset = 0
        for step in range(1, self.steps + 1):
            ctx.check_cancelled()
            wanted = self.amount * step / self.steps
            # torch's pruning containers apply a new amount to the weights still unpruned.
            fraction = (wanted - previous) / (1.0 - previous)
            previous = wanted
            if self.method == "global_magnitude":
                torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured, amount=fraction)
            else:
                for module, pname in targets:
                    if self.method == "l1_unstructured":
                        torch_prune.l1_unstructured(module, pname, amount=fraction)
                    else:
                        torch_prune.random_unstructured(module, pname, amount=fraction)
            val = ctx.accuracy(model, "val")
            ctx.log(step=offset, prune_step=step, sparsity=wanted, val_accuracy=val["accuracy"])
            offset = self._finetune(ctx, model, offset)  # the masks keep pruned weights at zero while training
        for module, pname in targets:
            torch_prune.remove(module, pname)
        total = sum(getattr(m, p).numel() for m, p in targets)
        zeros = sum(int((getattr(m, p) == 0).sum()) for m, p in targets)
        ctx.mark(SPARSE_MARK)
        ctx.result.update({
            "method": self.method, "sparsity": round(zeros / max(total, 1), 4), "pruned_tensors": len(targets),
            "note": SPARSE_NOTE,
        })
        ctx.warn(SPARSE_NOTE)
        return model

    def _unstructured_targets(self, model: nn.Module) -> list[tuple[nn.Module, str]]:
        """(module, weight name) of every conv, linear, embedding and recurrent layer outside ``ignore``."""
        modules = dict(model.named_modules())
        unknown = [n for n in self.ignore if n not in modules and n not in DEFAULT_IGNORE]
        if unknown:
            raise InputError(f"ignore: no module named {unknown[0]!r} in the model")
        skipped = {id(s) for n in self.ignore if n in modules for s in modules[n].modules()}
        targets: list[tuple[nn.Module, str]] = []
        for m in model.modules():
            if id(m) in skipped:
                continue
            if isinstance(m, UNSTRUCTURED_TYPES) and isinstance(getattr(m, "weight", None), torch.Tensor):
                targets.append((m, "weight"))
            elif isinstance(m, P.RECURRENT):
                targets += [(m, name) for name, _ in m.named_parameters(recurse=False) if name.startswith("weight")]
        return targets


def _cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Any:
    return F.cross_entropy(model(x), y)
