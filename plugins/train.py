"""The ``train`` job: supervised training with the options a practitioner expects."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from workbench.plugin import InputError, JobContext, Param, task_of
from workbench_plugins._training import TrainingJob, TrainLoop, check_fits, check_launched, random_affine


class TrainJob(TrainingJob):
    name = "train"
    title = "Train"
    description = ("Train the variant on the dataset's train split (a classifier, or a language model on a corpus); "
                   "validation every epoch, test at the end.")
    needs_torch_model = True

    label_smoothing: float = Param(0.0, min=0.0, max=0.99, help="cross-entropy label smoothing")
    resume: bool = Param(False, help="continue from the last completed epoch of an interrupted run")
    freeze: list[str] = Param([], help="module names to freeze, or all_but_last (transfer learning)")
    adversarial: Literal["none", "fgsm", "pgd"] = Param("none", help="adversarial training (image inputs)")
    epsilon: float = Param(0.1, min=0.0, max=1.0, help="adversarial perturbation size", advanced=True)

    def run(self, ctx: JobContext) -> nn.Module:
        model = ctx.model
        check_launched(self.processes, ctx)
        if self.resume and ctx.parallel is not None:
            raise InputError("resume=true is not supported with processes > 1 (ranks do not checkpoint)")
        check_fits(model, ctx)
        frozen = apply_freeze(model, self.freeze)
        if frozen:
            ctx.info(f"frozen: {frozen} parameter tensors")
        if self.adversarial != "none" and ctx.data.info.input_dtype != "float32":
            raise InputError("adversarial training needs continuous inputs (images or tabular), not token ids")
        self._augment = self.wants_augment(ctx)
        self._task = task_of(ctx.data.info)  # the loss: cross-entropy per sample, or per token for a language model
        loop = TrainLoop(ctx, model, self.settings(), self._loss, checkpoint=self._checkpoint_path(ctx))
        if self.resume and not loop.resume():
            ctx.info("no checkpoint to resume from: starting at epoch 1")
        model = loop.fit()
        if loop.checkpoint is not None:
            loop.checkpoint.unlink(missing_ok=True)
        return model

    def _loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self._augment:
            x = random_affine(x)
        if self.adversarial == "none":
            return self._task.training_loss(model(x), y, self.label_smoothing)
        x_adv = perturb(getattr(model, "module", model), x, y, self.epsilon, steps=1 if self.adversarial == "fgsm" else 5)
        clean = F.cross_entropy(model(x), y, label_smoothing=self.label_smoothing)
        return 0.5 * clean + 0.5 * F.cross_entropy(model(x_adv), y, label_smoothing=self.label_smoothing)

    def _checkpoint_path(self, ctx: JobContext) -> Path:
        """Stable across runs of the same job on the same variant, so ``resume=true`` finds it."""
        root = ctx.workspace_dir / "checkpoints" if ctx.workspace_dir is not None else ctx.workdir
        key = {k: v for k, v in self.values.items() if k != "resume"}
        digest = hashlib.sha1(json.dumps([ctx.variant_id, key], sort_keys=True, default=str).encode()).hexdigest()
        return root / f"train-{ctx.variant_id}-{digest[:10]}.pt"


def apply_freeze(model: nn.Module, names: list[str]) -> int:
    """Freeze the named modules (prefix match), or everything but the last linear layer; returns the count."""
    if not names:
        return 0
    params = dict(model.named_parameters())
    if names == ["all_but_last"]:
        last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        if not last:
            raise InputError("freeze=all_but_last: the model has no linear layer to keep trainable")
        keep = last[-1] + "."
        chosen = [n for n in params if not n.startswith(keep)]
    else:
        modules = dict(model.named_modules())
        unknown = [n for n in names if n not in modules]
        if unknown:
            raise InputError(f"freeze: no module named {unknown[0]!r} in the model")
        chosen = [n for n in params if any(n == f or n.startswith(f + ".") for f in names)]
    for n in chosen:
        params[n].requires_grad_(False)
    return len(chosen)


def perturb(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, steps: int) -> torch.Tensor:
    """FGSM (one step) or PGD (several projected steps) adversarial examples in an L-inf ball."""
    x_adv = x.detach().clone()
    step = epsilon if steps == 1 else epsilon / 4
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + step * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - epsilon), x + epsilon)
    return x_adv.detach()
