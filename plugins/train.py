"""The ``train`` job: supervised training with the options a practitioner expects."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from workbench.plugin import InputError, Job, JobContext, Param
from workbench_plugins._training import TrainLoop, TrainSettings, check_fits, check_launched


class TrainJob(Job):
    name = "train"
    title = "Train"
    description = "Train the variant on the dataset's train split; validation every epoch, test at the end."
    needs_torch_model = True

    epochs: int = Param(10, min=1, max=10000, help="passes over the train split")
    batch_size: int = Param(32, min=1, max=65536, help="samples per step")
    lr: float = Param(2e-3, min=0.0, max=1e6, help="learning rate")
    optimizer: Literal["adam", "adamw", "sgd"] = Param("adam", help="optimizer")
    momentum: float = Param(0.9, min=0.0, max=1.0, help="SGD momentum (Nesterov when > 0)", advanced=True)
    weight_decay: float = Param(0.0, min=0.0, max=1.0, help="L2 penalty (decoupled for adamw)")
    schedule: Literal["constant", "step", "cosine", "plateau"] = Param("cosine", help="learning-rate schedule")
    step_size: int = Param(5, min=1, max=10000, help="epochs between decays (step schedule)", advanced=True)
    gamma: float = Param(0.1, min=0.0, max=1.0, help="decay factor (step and plateau schedules)", advanced=True)
    label_smoothing: float = Param(0.0, min=0.0, max=0.99, help="cross-entropy label smoothing")
    patience: int = Param(0, min=0, max=1000, help="early stopping: epochs without validation improvement (0 = off)")
    grad_clip: float = Param(0.0, min=0.0, max=1e6, help="clip the gradient norm to this (0 = off)")
    amp: Literal["off", "bf16", "fp16"] = Param("off", help="mixed precision on CUDA")
    resume: bool = Param(False, help="continue from the last completed epoch of an interrupted run")
    freeze: list[str] = Param([], help="module names to freeze, or all_but_last (transfer learning)")
    adversarial: Literal["none", "fgsm", "pgd"] = Param("none", help="adversarial training (image inputs)")
    epsilon: float = Param(0.1, min=0.0, max=1.0, help="adversarial perturbation size", advanced=True)
    auto_batch: bool = Param(False, help="halve the batch size on out-of-memory and go on")
    augment: Literal["auto", "none", "affine"] = Param(
        "auto", help="random small rotations, scalings and shifts of images (auto: on for images of 16x16 and more)")
    processes: int = Param(1, min=1, max=1024, help="data-parallel processes (torch.distributed: gloo on CPU, "
                                                    "one per GPU with nccl); the batch size stays the global one")
    strategy: Literal["ddp", "fsdp"] = Param("ddp", help="data parallelism with processes > 1: DDP replicates the "
                                                         "model, FSDP2 shards it", advanced=True)

    def run(self, ctx: JobContext) -> nn.Module:
        model = ctx.model
        check_launched(self.processes, ctx)
        if self.resume and getattr(ctx, "distributed", None) is not None:
            raise InputError("resume=true is not supported with processes > 1 (ranks do not checkpoint)")
        check_fits(model, ctx)
        frozen = apply_freeze(model, self.freeze)
        if frozen:
            ctx.info(f"frozen: {frozen} parameter tensors")
        if self.adversarial != "none" and ctx.data.info.input_dtype != "float32":
            raise InputError("adversarial training needs continuous inputs (images or tabular), not token ids")
        shape = ctx.data.info.input_shape
        large_images = ctx.data.info.kind == "image" and len(shape) == 3 and min(shape[1:]) >= 16
        self._augment = self.augment == "affine" or (self.augment == "auto" and large_images)
        settings = TrainSettings(
            self.epochs, self.batch_size, self.lr, self.optimizer, self.momentum, self.weight_decay,
            self.schedule, self.step_size, self.gamma, self.patience, self.grad_clip, self.amp, self.auto_batch,
        )
        loop = TrainLoop(ctx, model, settings, self._loss, checkpoint=self._checkpoint_path(ctx))
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
            return F.cross_entropy(model(x), y, label_smoothing=self.label_smoothing)
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


def random_affine(x: torch.Tensor, rotate: float = 0.15, scale: float = 0.1, shift: float = 0.1) -> torch.Tensor:
    """Light per-sample augmentation (radians, relative scale, fraction of the image) for small image datasets."""
    n = x.shape[0]
    angle = (torch.rand(n, device=x.device) - 0.5) * 2 * rotate
    factor = 1 + (torch.rand(n, device=x.device) - 0.5) * 2 * scale
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = factor * torch.cos(angle)
    theta[:, 0, 1] = -factor * torch.sin(angle)
    theta[:, 1, 0] = factor * torch.sin(angle)
    theta[:, 1, 1] = factor * torch.cos(angle)
    theta[:, :, 2] = (torch.rand(n, 2, device=x.device) - 0.5) * 2 * shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


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
