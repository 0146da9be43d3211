"""Knowledge-distillation pieces used by the ``distill`` job: the soft-target loss, ensemble teachers and
feature hints (FitNets-style, Romero et al. 2015) read through forward hooks and matched by a learned adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench.plugin import InputError


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
            temperature: float, alpha: float) -> torch.Tensor:
    """Hinton et al. (2015): ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, y)``.

    The T^2 factor keeps the soft-target gradients on the same scale as the hard-target ones when T changes.
    """
    t = float(temperature)
    soft = F.kl_div(F.log_softmax(student_logits.float() / t, dim=1), F.log_softmax(teacher_logits.float() / t, dim=1),
                    reduction="batchmean", log_target=True)
    loss = alpha * t * t * soft
    if alpha < 1.0:
        loss = loss + (1.0 - alpha) * F.cross_entropy(student_logits.float(), targets)
    return loss


def teacher_logits(teachers: Sequence[Any], x: torch.Tensor) -> torch.Tensor:
    """The teachers' logits on ``x``; several teachers are an ensemble whose logits are averaged."""
    with torch.no_grad():
        outs = [t(x).float() for t in teachers]
    return outs[0] if len(outs) == 1 else torch.stack(outs).mean(0)


def parse_hints(hints: Sequence[str]) -> list[tuple[str, str]]:
    """``student_layer:teacher_layer`` pairs."""
    pairs = []
    for hint in hints:
        student, sep, teacher = hint.partition(":")
        if not sep or not student.strip() or not teacher.strip():
            raise InputError(f"hints: expected student_layer:teacher_layer, got {hint!r}")
        pairs.append((student.strip(), teacher.strip()))
    return pairs


class _Capture:
    """A forward hook that keeps the latest output of one module."""

    def __init__(self, module: nn.Module) -> None:
        self.value: torch.Tensor | None = None
        self.handle = module.register_forward_hook(self)

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.value = output[0] if isinstance(output, (tuple, list)) else output


def _adapter(student_shape: torch.Size, teacher_shape: torch.Size) -> nn.Module:
    """A 1x1 convolution (feature maps) or a linear layer (vectors) from student to teacher channels."""
    if len(student_shape) == 4 and len(teacher_shape) == 4:
        return nn.Conv2d(student_shape[1], teacher_shape[1], 1, bias=False)
    if len(student_shape) == 2 and len(teacher_shape) == 2:
        return nn.Linear(student_shape[1], teacher_shape[1], bias=False)
    raise InputError(f"hints: cannot match a student feature of shape {tuple(student_shape[1:])} to a teacher "
                     f"feature of shape {tuple(teacher_shape[1:])} (both must be maps or both vectors)")


class FeatureHints(nn.Module):
    """Hooks on student and teacher layers plus one learned adapter per pair; ``loss()`` is the mean MSE.

    Student maps are projected to the teacher's channels by the adapter and pooled (or upsampled) to the
    teacher's spatial size, so layers of different resolutions can be paired.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, pairs: list[tuple[str, str]],
                 example: torch.Tensor) -> None:
        super().__init__()
        if not isinstance(teacher, nn.Module):
            raise InputError("hints need a PyTorch teacher (the teacher is an ONNX variant)")
        s_modules, t_modules = dict(student.named_modules()), dict(teacher.named_modules())
        self.captures: list[tuple[_Capture, _Capture]] = []
        for s_name, t_name in pairs:
            if s_name not in s_modules:
                raise InputError(f"hints: no layer {s_name!r} in the student (layers: {_some(s_modules)})")
            if t_name not in t_modules:
                raise InputError(f"hints: no layer {t_name!r} in the teacher (layers: {_some(t_modules)})")
            self.captures.append((_Capture(s_modules[s_name]), _Capture(t_modules[t_name])))
        was = student.training
        student.eval()
        with torch.no_grad():
            student(example)
            teacher(example)
        student.train(was)
        self.adapters = nn.ModuleList(
            _adapter(s.value.shape, t.value.shape) for s, t in self.captures  # type: ignore[union-attr]
        ).to(example.device)

    def loss(self) -> torch.Tensor:
        total = []
        for adapter, (s, t) in zip(self.adapters, self.captures):
            assert s.value is not None and t.value is not None
            projected = adapter(s.value.float())
            target = t.value.detach().float()
            if projected.ndim == 4 and projected.shape[-2:] != target.shape[-2:]:
                projected = F.adaptive_avg_pool2d(projected, target.shape[-2:]) \
                    if projected.shape[-1] >= target.shape[-1] else F.interpolate(projected, target.shape[-2:])
            total.append(F.mse_loss(projected, target))
        return torch.stack(total).mean()

    def remove(self) -> None:
        """Detach the hooks so the saved student carries none."""
        for s, t in self.captures:
            s.handle.remove()
            t.handle.remove()


def _some(modules: dict[str, nn.Module]) -> str:
    names = [n for n in modules if n]
    return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
