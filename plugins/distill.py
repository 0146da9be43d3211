"""The ``distill`` job: a small student learns from a teacher's softened outputs (Hinton et al. 2015)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from workbench.plugin import InputError, Job, JobContext, Param, is_onnx
from workbench_plugins._distillation import FeatureHints, kd_loss, parse_hints, teacher_logits
from workbench_plugins._training import TrainLoop, TrainSettings, check_fits, check_launched


class _DistillLoop(TrainLoop):
    """The shared train loop, plus the teacher's validation accuracy logged every epoch as a reference line."""

    teacher_val_accuracy: float = 0.0

    def _epoch(self, epoch: int) -> tuple[float, float, int]:
        out = super()._epoch(epoch)
        self.ctx.log(step=self.global_step, teacher_accuracy=self.teacher_val_accuracy)
        return out


class DistillJob(Job):
    name = "distill"
    title = "Distill"
    description = ("Train a small student on the teacher's softened outputs (and optionally its features); "
                   "the teacher is the input variant or an ensemble of variants.")

    student: str = Param("zoo:seed_cnn:width=0.25", help="the student: a zoo spec (zoo:NAME:k=v) or a variant id")
    teachers: list[str] = Param([], help="teacher variant ids (default: the input variant; several = ensemble)")
    temperature: float = Param(4.0, min=0.05, max=100.0, help="softmax temperature T of the soft targets")
    alpha: float = Param(0.9, min=0.0, max=1.0, help="weight of the soft-target loss (1 - alpha for labels)")
    hints: list[str] = Param([], help="feature distillation pairs student_layer:teacher_layer")
    hint_weight: float = Param(1.0, min=0.0, max=1e4, help="weight of the feature-hint loss", advanced=True)
    epochs: int = Param(10, min=1, max=10000, help="passes over the train split")
    batch_size: int = Param(32, min=1, max=65536, help="samples per step")
    lr: float = Param(1e-2, min=0.0, max=1e6, help="learning rate (higher than train's: soft targets are smooth)")
    optimizer: Literal["adam", "adamw", "sgd"] = Param("adam", help="optimizer")
    momentum: float = Param(0.9, min=0.0, max=1.0, help="SGD momentum (Nesterov when > 0)", advanced=True)
    weight_decay: float = Param(0.0, min=0.0, max=1.0, help="L2 penalty (decoupled for adamw)")
    schedule: Literal["constant", "step", "cosine", "plateau"] = Param("constant", help="learning-rate schedule")
    step_size: int = Param(5, min=1, max=10000, help="epochs between decays (step schedule)", advanced=True)
    gamma: float = Param(0.1, min=0.0, max=1.0, help="decay factor (step and plateau schedules)", advanced=True)
    patience: int = Param(0, min=0, max=1000, help="early stopping: epochs without validation improvement (0 = off)")
    grad_clip: float = Param(0.0, min=0.0, max=1e6, help="clip the gradient norm to this (0 = off)")
    amp: Literal["off", "bf16", "fp16"] = Param("off", help="mixed precision on CUDA")
    auto_batch: bool = Param(False, help="halve the batch size on out-of-memory and go on")
    processes: int = Param(1, min=1, max=1024, help="data-parallel processes (torch.distributed: gloo on CPU, "
                                                    "one per GPU with nccl); the batch size stays the global one")
    strategy: Literal["ddp", "fsdp"] = Param("ddp", help="data parallelism with processes > 1: DDP replicates the "
                                                         "model, FSDP2 shards it", advanced=True)

    def run(self, ctx: JobContext) -> nn.Module:
        check_launched(self.processes, ctx)
        teachers = self._teachers(ctx)
        for teacher in teachers:
            teacher.eval()
            if isinstance(teacher, nn.Module):
                teacher.requires_grad_(False)
        student = self._student(ctx)
        check_fits(student, ctx)
        self._check_teachers(teachers, ctx)
        hints = None
        if self.hints:
            if len(teachers) != 1:
                raise InputError("hints need a single teacher (feature maps of an ensemble are not defined)")
            hints = FeatureHints(student, teachers[0], parse_hints(self.hints), ctx.data.example_batch(2).to(ctx.device))

        teacher_val = _ensemble_accuracy(ctx, teachers, "val")
        ctx.info(f"teacher validation accuracy {teacher_val:.4f}")

        def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            target = teacher_logits(teachers, x)
            loss = kd_loss(model(x), target, y, self.temperature, self.alpha)
            if hints is not None and self.hint_weight > 0:
                loss = loss + self.hint_weight * hints.loss()
            return loss

        settings = TrainSettings(
            self.epochs, self.batch_size, self.lr, self.optimizer, self.momentum, self.weight_decay,
            self.schedule, self.step_size, self.gamma, self.patience, self.grad_clip, self.amp, self.auto_batch,
        )
        extra = list(hints.adapters.parameters()) if hints is not None else None
        loop = _DistillLoop(ctx, student, settings, loss_fn, extra_params=extra)
        loop.teacher_val_accuracy = teacher_val
        try:
            student = loop.fit()
        finally:
            if hints is not None:
                hints.remove()
        teacher_params = sum(sum(p.numel() for p in t.parameters()) for t in teachers)
        student_params = sum(p.numel() for p in student.parameters())
        ctx.result.update(
            teacher_accuracy=round(_ensemble_accuracy(ctx, teachers, "test"), 6),
            teacher_val_accuracy=round(teacher_val, 6),
            teacher_params=int(teacher_params),
            student_params=int(student_params),
            teachers=[t_id for t_id in (self.teachers or [ctx.variant_id or "input"])],
        )
        if teacher_params:
            ctx.info(f"student has {student_params / teacher_params:.3f}x the teacher's parameters")
        return student

    # teachers and student ------------------------------------------------------------------------------------
    def _teachers(self, ctx: JobContext) -> list[Any]:
        if not self.teachers:
            return [ctx.model]
        return [ctx.model if t == ctx.variant_id else ctx.variant(t) for t in self.teachers]

    def _student(self, ctx: JobContext) -> nn.Module:
        spec = self.student.strip()
        if not spec:
            raise InputError("distill needs a student: student=zoo:NAME[:k=v] or a variant id")
        torch.manual_seed(ctx.seed)  # the student's initial weights depend on the run's seed only
        if spec.startswith(("zoo:", "py:")):
            from workbench.core.models.loading import load_model

            student = load_model(spec, ctx.data.info)
        else:
            student = ctx.variant(spec)
            if is_onnx(student):
                raise InputError(f"student {spec} is an ONNX variant: it cannot be trained; give a PyTorch one")
        return student.to(ctx.device)

    def _check_teachers(self, teachers: list[Any], ctx: JobContext) -> None:
        x = ctx.data.example_batch(2).to(ctx.device)
        with torch.no_grad():
            for teacher in teachers:
                out = teacher(x)
                if out.ndim != 2 or out.shape[1] != ctx.data.info.num_classes:
                    raise InputError(f"a teacher outputs {tuple(out.shape[1:])} scores but the dataset has "
                                     f"{ctx.data.info.num_classes} classes")


def _ensemble_accuracy(ctx: JobContext, teachers: list[Any], split: str) -> float:
    """Top-1 accuracy of the (averaged) teacher on a split."""
    correct = total = 0
    for x, y in ctx.data.loader(split, shuffle=False):
        ctx.check_cancelled()
        x, y = x.to(ctx.device), y.to(ctx.device)
        correct += int((teacher_logits(teachers, x).argmax(1) == y).sum())
        total += int(y.numel())
    return correct / max(total, 1)
