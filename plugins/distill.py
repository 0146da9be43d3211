"""The ``distill`` job: a small student learns from a teacher's softened outputs (Hinton et al. 2015)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workbench.plugin import InputError, JobContext, Param, ensure_supported, is_onnx, task_of
from workbench_plugins._distillation import FeatureHints, kd_loss, parse_hints, teacher_logits
from workbench_plugins._lm_distill import distill_language_model, is_lm
from workbench_plugins._training import TrainingJob, TrainLoop, check_fits, check_launched, random_affine


class _DistillLoop(TrainLoop):
    """The shared train loop, plus the teacher's validation accuracy logged every epoch as a reference line."""

    teacher_val_accuracy: float = 0.0

    def _epoch(self, epoch: int) -> tuple[float, float, int]:
        out = super()._epoch(epoch)
        self.ctx.log(step=self.global_step, teacher_accuracy=self.teacher_val_accuracy)
        return out


class DistillJob(TrainingJob):
    name = "distill"
    title = "Distill"
    description = ("Train a small student on the teacher's softened outputs (and optionally its features); "
                   "the teacher is the input variant or an ensemble of variants.")

    student: str = Param("zoo:seed_cnn:width=0.25", help="the student: a zoo spec (zoo:NAME:k=v), a variant id, "
                         "or input (the input variant itself, e.g. a pruned model, learns from the teachers)")
    teachers: list[str] = Param([], help="teacher variant ids (default: the input variant; several = ensemble)")
    temperature: float = Param(2.0, min=0.05, max=100.0, help="softmax temperature T of the soft targets "
                               "(a language model: 1 unless given)")
    alpha: float = Param(0.5, min=0.0, max=1.0, help="weight of the soft-target loss, 1 - alpha for labels "
                         "(a language model: 0.9 unless given)")
    hints: list[str] = Param([], help="feature distillation pairs student_layer:teacher_layer")
    hint_weight: float = Param(1.0, min=0.0, max=1e4, help="weight of the feature-hint loss", advanced=True)
    # a small student gains most from many small steps on soft targets (see docs/DISTILL_FUSE.md)
    batch_size: int = Param(8, min=1, max=65536, help="samples per step (a language model: 32 unless given)")
    lr: float = Param(1e-2, min=0.0, max=1e6, help="learning rate (higher than train's: soft targets are smooth; "
                      "a language model: train's 2e-3 unless given)")

    def run(self, ctx: JobContext) -> nn.Module:
        ensure_supported(self.name, ctx.data.info)
        check_launched(self.processes, ctx)
        teachers = self._teachers(ctx)
        if any(is_lm(t) for t in teachers) or task_of(ctx.data.info).name == "causal_lm":
            return distill_language_model(self, ctx, teachers)  # token-level KL: workbench_plugins._lm_distill
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
            if augment:  # the teacher sees the same augmented batch: it labels new views of the data
                x = random_affine(x)
            target = teacher_logits(teachers, x)
            loss = kd_loss(model(x), target, y, self.temperature, self.alpha)
            if hints is not None and self.hint_weight > 0:
                loss = loss + self.hint_weight * hints.loss()
            return loss

        settings = self.settings()
        augment = self.wants_augment(ctx)
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
        if self.student.strip() == "input":  # the input model is the student: teachers come from the workspace
            return [ctx.variant(t) for t in self.teachers]
        return [ctx.model if t == ctx.variant_id else ctx.variant(t) for t in self.teachers]

    def _student(self, ctx: JobContext) -> nn.Module:
        spec = self.student.strip()
        if not spec:
            raise InputError("distill needs a student: student=zoo:NAME[:k=v] or a variant id")
        if spec == "input":
            if not self.teachers:
                raise InputError("student=input needs teachers=ID,...: the variants the input learns from")
            return ctx.model
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
