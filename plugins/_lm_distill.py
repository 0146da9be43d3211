"""``distill`` for language models: the student learns the teacher's next-token distributions.

Loss per token, averaged over every position of the batch:
``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, next token)``.
The student is a zoo spec (built on the dataset, so with the teacher's tokenizer), a variant id, or ``input``
(a variant made by ``drop_layers`` or pruning learns from the teachers); it trains through the shared loop, so
``max_steps``, schedules, clipping and AMP behave as in ``train``.

The defaults differ from the classifier's where a language model needs it; a value other than the classifier
default wins:
``lr`` 2e-3 and ``batch_size`` 32 (train's, for a fair comparison at equal steps), ``temperature`` 1 (the
distribution perplexity is measured on) and ``alpha`` 0.9 (the teacher's full distribution carries far more per
token than the one observed next token). ``hints=S:T`` pairs student block S with teacher block T (decoder-block
indices): the MSE between their output hidden states, weighted by ``hint_weight``, through a learned linear
projection where the widths differ.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench.plugin import InputError, JobContext, task_of
from workbench_plugins._distillation import _Capture, kd_loss, teacher_logits
from workbench_plugins._training import TrainLoop, check_fits, check_launched

LM_DEFAULTS = {"lr": 2e-3, "batch_size": 32, "temperature": 1.0, "alpha": 0.9}


def is_lm(model: Any) -> bool:
    """A language model takes the token-level path (its outputs are per-token logits, not class scores)."""
    return bool(getattr(model, "is_causal_lm", False))


def lm_value(job: Any, name: str) -> Any:
    """The value the user chose, else the language-model default. A value equal to the classifier default counts
    as not chosen: the app's form and a distributed rank pass every value, so "given" cannot be told apart."""
    value = getattr(job, name)
    return LM_DEFAULTS[name] if value == type(job).params()[name].default else value


def distill_language_model(job: Any, ctx: JobContext, teachers: list[Any]) -> nn.Module:
    """Train the student on the teachers' token distributions (the LM branch of ``DistillJob.run``)."""
    check_launched(job.processes, ctx)
    for teacher in teachers:
        if not is_lm(teacher):
            raise InputError(f"distill: every teacher must be a language model when one is; got a "
                             f"{type(teacher).__name__}")
        teacher.eval()
        teacher.requires_grad_(False)
    student = job._student(ctx)
    if not is_lm(student):
        raise InputError(f"distill: the student of a language model must be a language model (zoo:tiny_llama:..., a "
                         f"variant or input), not a {type(student).__name__}")
    _check_vocab(student, teachers, ctx)
    check_fits(student, ctx)
    hints = None
    if job.hints:
        if len(teachers) != 1:
            raise InputError("distill: hints need a single teacher (hidden states of an ensemble are not defined)")
        hints = BlockHints(student, teachers[0], parse_block_hints(job.hints), ctx.data.example_batch(1).to(ctx.device))

    temperature, alpha = float(lm_value(job, "temperature")), float(lm_value(job, "alpha"))
    settings = dataclasses.replace(job.settings(), lr=float(lm_value(job, "lr")),
                                   batch_size=int(lm_value(job, "batch_size")))
    task = task_of(ctx.data.info)
    teacher_val = _teacher_metrics(ctx, teachers, "val")
    ctx.info(f"teacher validation perplexity {teacher_val['perplexity']:.2f}; distilling at T={temperature:g}, "
             f"alpha={alpha:g}, lr={settings.lr:g}, batch {settings.batch_size}")

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = teacher_logits(teachers, x)
        logits = model(x)
        loss = kd_loss(logits.flatten(0, 1), target.flatten(0, 1), y.flatten(), temperature, alpha)
        if hints is not None and job.hint_weight > 0:
            loss = loss + job.hint_weight * hints.loss()
        return loss

    extra = list(hints.adapters.parameters()) if hints is not None else None
    loop = _LMDistillLoop(ctx, student, settings, loss_fn, extra_params=extra)
    loop.teacher_val_perplexity = teacher_val["perplexity"]
    try:
        student = loop.fit()
    finally:
        if hints is not None:
            hints.remove()

    teacher_test = _teacher_metrics(ctx, teachers, "test")
    teacher_params = sum(sum(p.numel() for p in t.parameters()) for t in teachers)
    student_params = sum(p.numel() for p in student.parameters())
    ctx.result.update(
        teacher_perplexity=round(teacher_test["perplexity"], 6),
        teacher_val_perplexity=round(teacher_val["perplexity"], 6),
        teacher_params=int(teacher_params), student_params=int(student_params),
        teachers=list(job.teachers or [ctx.variant_id or "input"]),
        temperature=temperature, alpha=alpha, lr=settings.lr, batch_size=settings.batch_size,
        task=task.name,
    )
    if teacher_params:
        ctx.info(f"student has {student_params / teacher_params:.3f}x the teacher's parameters")
    return student


def parse_block_hints(hints: list[str]) -> list[tuple[int, int]]:
    """``student_block:teacher_block`` pairs of decoder-block indices (negative counts from the end)."""
    pairs = []
    for hint in hints:
        s, sep, t = hint.partition(":")
        try:
            if not sep:
                raise ValueError
            pairs.append((int(s), int(t)))
        except ValueError:
            raise InputError(f"distill: a language model's hints are decoder-block indices "
                             f"student_block:teacher_block (e.g. 0:1), got {hint!r}") from None
    return pairs


class BlockHints(nn.Module):
    """Hidden-state hints: the output of a student block regresses onto a teacher block's (MSE).

    Widths that differ get a learned linear projection (student to teacher width), trained with the student and
    dropped afterwards; the hooks are removed by ``remove()`` so the saved student carries none.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, pairs: list[tuple[int, int]],
                 example: torch.Tensor) -> None:
        super().__init__()
        from workbench_plugins.drop_layers import decoder_layers

        s_layers, t_layers = decoder_layers(student), decoder_layers(teacher)
        self.captures: list[tuple[_Capture, _Capture]] = []
        for s, t in pairs:
            for who, idx, layers in (("student", s, s_layers), ("teacher", t, t_layers)):
                if not -len(layers) <= idx < len(layers):
                    raise InputError(f"distill: hints: the {who} has {len(layers)} decoder blocks, no block {idx}")
            self.captures.append((_Capture(s_layers[s]), _Capture(t_layers[t])))
        with torch.no_grad():
            student(example)
            teacher(example)
        widths = [(int(a.value.shape[-1]), int(b.value.shape[-1])) for a, b in self.captures]  # type: ignore[union-attr]
        self.adapters = nn.ModuleList(
            nn.Identity() if sw == tw else nn.Linear(sw, tw, bias=False) for sw, tw in widths
        ).to(example.device)

    def loss(self) -> torch.Tensor:
        total = []
        for adapter, (s, t) in zip(self.adapters, self.captures):
            assert s.value is not None and t.value is not None
            total.append(F.mse_loss(adapter(s.value.float()), t.value.detach().float()))
        return torch.stack(total).mean()

    def remove(self) -> None:
        for s, t in self.captures:
            s.handle.remove()
            t.handle.remove()


class _LMDistillLoop(TrainLoop):
    """The shared loop, plus the teacher's validation perplexity logged every epoch as a reference line."""

    teacher_val_perplexity: float = 0.0

    def _epoch(self, epoch: int) -> tuple[float, float, int]:
        out = super()._epoch(epoch)
        self.ctx.log(step=self.global_step, teacher_perplexity=self.teacher_val_perplexity)
        return out


def _check_vocab(student: Any, teachers: list[Any], ctx: JobContext) -> None:
    """Same vocabulary (and tokenizer, where both carry one): the KL compares distributions over the same ids."""
    x = ctx.data.example_batch(1).to(ctx.device)
    with torch.no_grad():
        s_vocab = int(student(x).shape[-1])
        for teacher in teachers:
            t_vocab = int(teacher(x).shape[-1])
            if t_vocab != s_vocab:
                raise InputError(f"distill: the student's vocabulary has {s_vocab} tokens but the teacher's has "
                                 f"{t_vocab}; distillation needs the same tokenizer (build the student on the "
                                 "teacher's dataset and tokenizer)")
            s_tok, t_tok = getattr(student, "tokenizer", None), getattr(teacher, "tokenizer", None)
            if s_tok is not None and t_tok is not None and s_tok.fingerprint() != t_tok.fingerprint():
                raise InputError("distill: the student's tokenizer differs from the teacher's (same size, other "
                                 "tokens); distillation needs the same tokenizer")


def _teacher_metrics(ctx: JobContext, teachers: list[Any], split: str) -> dict[str, float]:
    task = task_of(ctx.data.info)
    model = teachers[0] if len(teachers) == 1 else _Ensemble(teachers)
    return task.evaluate(model, ctx.data, split, ctx.device, ctx.check_cancelled)


class _Ensemble(nn.Module):
    """Averaged logits of several language models (for the teacher's figures only)."""

    def __init__(self, teachers: list[Any]) -> None:
        super().__init__()
        self.teachers = nn.ModuleList(teachers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return teacher_logits(list(self.teachers), x)
