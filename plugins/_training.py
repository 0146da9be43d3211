"""The training loop shared by the built-in ``train`` and ``distill`` jobs.

The loop is a plain PyTorch loop with the bookkeeping a practitioner expects (schedules, clipping, AMP, early
stopping, checkpoints, non-finite loss detection); per step it adds only a cancel check and one metric event.
Inside a data-parallel rank (``ctx.parallel``, set by ``workbench.core.execution.distributed_rank``) the model is
wrapped (DDP or FSDP2), each rank takes its DistributedSampler share of every global batch, and epoch metrics are
reduced over the ranks, so every rank takes the same early-stopping and schedule decisions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from workbench.plugin import InputError, Job, JobContext, JobFailed, Param, task_of

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
READ_LOSSES_EVERY = 16  # steps whose losses are read in one transfer on a GPU
DIVERGE_FACTOR = 100.0  # a smoothed loss 100x its start: no schedule recovers from that


@dataclass
class TrainSettings:
    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    momentum: float
    weight_decay: float
    schedule: str
    step_size: int
    gamma: float
    patience: int
    grad_clip: float
    amp: str
    auto_batch: bool
    log_every: int = 1
    diverge_factor: float = DIVERGE_FACTOR
    max_steps: int = 0  # stop after this many optimizer steps (0: epochs decide)
    accumulate: int = 1  # batches whose gradients add up to one optimizer step


class TrainingJob(Job):
    """The parameters every job that trains shares (train, distill): one declaration, one form section."""

    data_parallel = True  # processes > 1 runs the job in torch.distributed ranks (ctx.parallel inside them)

    epochs: int = Param(10, min=1, max=10000, help="passes over the train split")
    batch_size: int = Param(32, min=1, max=65536, help="samples per step")
    lr: float = Param(2e-3, min=0.0, max=1e6, help="learning rate")
    optimizer: Literal["adam", "adamw", "sgd"] = Param("adam", help="optimizer")
    momentum: float = Param(0.9, min=0.0, max=1.0, help="SGD momentum (Nesterov when > 0)", advanced=True)
    weight_decay: float = Param(0.0, min=0.0, max=1.0, help="L2 penalty (decoupled for adamw)")
    schedule: Literal["constant", "step", "cosine", "plateau"] = Param("cosine", help="learning-rate schedule")
    step_size: int = Param(5, min=1, max=10000, help="epochs between decays (step schedule)", advanced=True)
    gamma: float = Param(0.1, min=0.0, max=1.0, help="decay factor (step and plateau schedules)", advanced=True)
    patience: int = Param(0, min=0, max=1000, help="early stopping: epochs without validation improvement (0 = off)")
    grad_clip: float = Param(0.0, min=0.0, max=1e6, help="clip the gradient norm to this (0 = off)")
    max_steps: int = Param(0, min=0, max=1_000_000_000,
                           help="stop after this many optimizer steps (0 = no limit; epochs still bound the run)")
    accumulate: int = Param(1, min=1, max=4096, help="gradient accumulation: batches per optimizer step "
                                                     "(an effective batch of batch_size x accumulate)")
    diverge_factor: float = Param(
        DIVERGE_FACTOR, min=0.0, max=1e12, advanced=True,
        help="fail when the smoothed loss grows past this multiple of its start (at least 1.0); 0 = never")
    amp: Literal["off", "bf16", "fp16"] = Param(
        "off", help="mixed precision through autocast: on CUDA, and on CPUs with bf16 units (AVX512-BF16, AMX)")
    auto_batch: bool = Param(False, help="halve the batch size on out-of-memory and go on")
    augment: Literal["auto", "none", "affine"] = Param(
        "auto", help="random small rotations, scalings and shifts of images (auto: on for images of 16x16 and more)")
    processes: int = Param(1, min=1, max=1024, help="data-parallel processes (torch.distributed: gloo on CPU, "
                                                    "one per GPU with nccl); the batch size stays the global one")
    strategy: Literal["ddp", "fsdp"] = Param("ddp", help="data parallelism with processes > 1: DDP replicates the "
                                                         "model, FSDP2 shards it", advanced=True)


    def settings(self) -> TrainSettings:
        return TrainSettings(
            self.epochs, self.batch_size, self.lr, self.optimizer, self.momentum, self.weight_decay,
            self.schedule, self.step_size, self.gamma, self.patience, self.grad_clip, self.amp, self.auto_batch,
            diverge_factor=self.diverge_factor, max_steps=self.max_steps, accumulate=self.accumulate,
        )

    def wants_augment(self, ctx: JobContext) -> bool:
        shape = ctx.data.info.input_shape
        large_images = ctx.data.info.kind == "image" and len(shape) == 3 and min(shape[1:]) >= 16
        return self.augment == "affine" or (self.augment == "auto" and large_images)


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



def build_optimizer(params: Any, s: TrainSettings) -> torch.optim.Optimizer:
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay, nesterov=s.momentum > 0)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, s: TrainSettings) -> Any:
    if s.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, s.step_size), gamma=s.gamma)
    if s.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, s.epochs))
    if s.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=s.gamma, patience=max(1, s.patience // 2))
    return None


def check_fits(model: nn.Module, ctx: JobContext) -> None:
    """The model must give one score per class of this dataset (also catches online learning mismatches); for
    another task (a language model's next-token logits), the task's own output check."""
    task = task_of(ctx.data.info)
    if task.name != "classification":
        try:
            task.check_output(model, ctx.data, ctx.device, ctx.job_name)
        except JobFailed as exc:
            raise InputError(str(exc).replace(f"job {ctx.job_name} returned a model whose", "the model's")) from None
        return
    x = ctx.data.example_batch(2).to(ctx.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # noqa: BLE001 - the user's model may raise anything on the wrong input
        raise InputError(f"the model does not accept this dataset's inputs {tuple(x.shape[1:])}: "
                         f"{type(exc).__name__}: {str(exc)[:150]}") from None
    finally:
        model.train(was_training)
    if out.ndim != 2 or out.shape[1] != ctx.data.info.num_classes:
        raise InputError(f"the model outputs {tuple(out.shape[1:])} scores but the dataset has "
                         f"{ctx.data.info.num_classes} classes")


def check_launched(processes: int, ctx: JobContext) -> None:
    """``processes > 1`` is honoured by the runner's distributed executor, which runs the job inside ranks."""
    if processes > 1 and ctx.parallel is None:
        raise InputError(f"processes={processes} needs the distributed launcher: run it from the app, or with "
                         "workbench --batch (--nproc-per-node N)")


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def amp_dtype(ctx: JobContext, amp: str) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on the job's device, or None (fp32) with a warning where autocast cannot."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    if dtype is None:
        return None
    device = ctx.device.type
    if not torch.amp.is_autocast_available(device):
        ctx.warn(f"amp={amp}: autocast is not available on {ctx.device}; training in fp32")
        return None
    if device == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        ctx.warn(f"amp=bf16: {torch.cuda.get_device_name(ctx.device)} has no bf16; training in fp16 with loss scaling")
        return torch.float16
    if device == "cpu":
        ctx.info(f"amp={amp} on the CPU: faster only where the CPU has {'bf16' if amp == 'bf16' else 'fp16'} units "
                 "(AVX512-BF16, AMX); the plain fp32 loop is usually the fastest elsewhere")
    return dtype


class DivergenceGuard:
    """Catches a loss that explodes but stays finite (Adam at a huge learning rate): an exponential average of
    the step losses compared with the loss the run started from, floored at 1.0 so that fine-tuning from a
    near-zero loss does not trip on ordinary noise."""

    def __init__(self, factor: float, smoothing: float = 0.9) -> None:
        self.factor, self.smoothing = factor, smoothing
        self.start: float | None = None
        self.smoothed = math.nan

    def diverged(self, loss: float) -> bool:
        if self.factor <= 0:
            return False
        if self.start is None:
            self.start, self.smoothed = loss, loss
            return False
        self.smoothed = self.smoothing * self.smoothed + (1 - self.smoothing) * loss
        return self.smoothed > self.factor * max(abs(self.start), 1.0)


class TrainLoop:
    """Runs epochs of ``loss_fn`` over the train split with validation, checkpoints and early stopping."""

    def __init__(self, ctx: JobContext, model: nn.Module, settings: TrainSettings, loss_fn: LossFn,
                 checkpoint: Path | None = None, extra_params: list[nn.Parameter] | None = None) -> None:
        self.ctx, self.model, self.s, self.loss_fn = ctx, model, settings, loss_fn
        self.task = task_of(ctx.data.info)
        self.unit = self.task.throughput_unit(ctx.data)  # samples, or tokens for a language model
        self.items = 0  # samples (tokens) of the last epoch, for the throughput figure
        self.reached_max_steps = False
        self.dist = ctx.parallel
        self.extra = list(extra_params or [])
        if not any(p.requires_grad for p in model.parameters()) and not self.extra:
            raise InputError("nothing to train: every parameter is frozen")
        self.net = model  # what the loss runs: the model itself, or its DDP/FSDP wrapper in a rank
        if self.dist is not None:
            self.net = self.dist.wrap(model)  # before the optimizer: FSDP replaces the parameters
            self.dist.broadcast(self.extra)
            checkpoint = None  # ranks do not checkpoint: a distributed run is not resumable
        trainable = [p for p in model.parameters() if p.requires_grad] + self.extra
        self.trainable = trainable
        self.optimizer = build_optimizer(trainable, settings)
        self.scheduler = build_scheduler(self.optimizer, settings)
        self.checkpoint = checkpoint
        self.batch_size = settings.batch_size
        self.amp_dtype = amp_dtype(ctx, settings.amp)
        # fp16 has too few exponent bits for small gradients: scale the loss (bf16 has fp32's range, no need)
        self.scaler = torch.amp.GradScaler(ctx.device.type) if self.amp_dtype == torch.float16 else None
        self.divergence = DivergenceGuard(settings.diverge_factor)
        # reading a loss waits for the GPU: on CUDA read them in groups, so the CPU queues steps ahead
        self.read_every = 1 if ctx.device.type == "cpu" else READ_LOSSES_EVERY
        self.start_epoch = 1
        self.best_val = math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stale = 0
        self.global_step = 0
        self.last_val_accuracy: float | None = None

    # checkpoints ----------------------------------------------------------------------------------------------
    def resume(self) -> bool:
        if self.checkpoint is None or not self.checkpoint.exists():
            return False
        state = torch.load(self.checkpoint, map_location=self.ctx.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        self.start_epoch = int(state["epoch"]) + 1
        self.global_step = int(state.get("global_step", 0))
        self.best_val = float(state.get("best_val", math.inf))
        self.ctx.info(f"resumed from the checkpoint of epoch {state['epoch']}")
        return True

    def _save_checkpoint(self, epoch: int) -> None:
        if self.checkpoint is None:
            return
        import io

        from workbench.core.workspace.atomic import atomic_write_bytes

        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
                 "epoch": epoch, "global_step": self.global_step, "best_val": self.best_val}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.checkpoint, buffer.getvalue())

    # the loop -------------------------------------------------------------------------------------------------
    def fit(self) -> nn.Module:
        ctx, s = self.ctx, self.s
        epoch = self.start_epoch
        while epoch <= s.epochs:
            try:
                train_loss, seconds, samples = self._epoch(epoch)
            except RuntimeError as exc:
                if s.auto_batch and _is_oom(exc) and self.batch_size > 1 and self.dist is None:
                    self.batch_size //= 2
                    if ctx.device.type == "cuda":
                        torch.cuda.empty_cache()
                    ctx.warn(f"out of memory: batch size halved to {self.batch_size}; epoch {epoch} restarts")
                    continue
                raise
            if self.task.name == "classification":
                val = ctx.accuracy(self.net, "val")
            else:  # every rank scores the whole split: the task's metrics, no classifier sharding
                val = self.task.evaluate(self.net, ctx.data, "val", ctx.device, ctx.check_cancelled)
            self.last_val_accuracy = val.get("accuracy")
            lr = self.optimizer.param_groups[0]["lr"]
            rate = self.items / max(seconds, 1e-9)
            quality = {f"val_{k}": v for k, v in val.items() if k != "loss"} or {"val_accuracy": math.nan}
            ctx.log(step=self.global_step, epoch=epoch, train_loss=train_loss, val_loss=val.get("loss", math.nan),
                    **quality, lr=lr, **{f"{self.unit}_per_s": rate})
            shown = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in quality.items())
            ctx.info(f"epoch {epoch}/{s.epochs}: loss {train_loss:.4f}, val loss {val.get('loss', math.nan):.4f}, "
                     f"{shown}, {rate:.0f} {self.unit}/s")
            if self.scheduler is not None:
                if s.schedule == "plateau":
                    self.scheduler.step(val.get("loss", train_loss))
                else:
                    self.scheduler.step()
            if self._early_stop(val.get("loss", train_loss)):
                ctx.info(f"early stopping after epoch {epoch}: no validation improvement in {s.patience} epochs")
                break
            self._save_checkpoint(epoch)
            if self.reached_max_steps:
                ctx.info(f"stopped after max_steps={s.max_steps} optimizer steps (epoch {epoch})")
                break
            epoch += 1
        if s.patience > 0 and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self._flag_chance_level()
        return self.dist.unwrap(self.model) if self.dist is not None else self.model

    def _flag_chance_level(self) -> None:
        """A run can end "ok" with a model that learned nothing (every ReLU dead after a too-large step): say so
        and mark the variant, rather than let it pass for a result."""
        classes = self.ctx.data.info.num_classes or 0
        accuracy = self.last_val_accuracy
        if classes < 2 or accuracy is None or not math.isfinite(accuracy) or accuracy > 1.5 / classes:
            return
        self.ctx.warn(f"validation accuracy {accuracy:.3f} is at chance level for {classes} classes: the model did "
                      f"not learn; try a lower learning rate (lr={self.s.lr:g}) or more epochs")
        self.ctx.mark("at chance level")

    def _early_stop(self, val_loss: float) -> bool:
        if self.s.patience <= 0:
            return False
        if val_loss < self.best_val - 1e-6:
            self.best_val, self.stale = val_loss, 0
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            return False
        self.stale += 1
        return self.stale >= self.s.patience

    def _epoch(self, epoch: int) -> tuple[float, float, int]:
        ctx, s = self.ctx, self.s
        self.net.train()
        # augmentation and dropout draw from the seed and the epoch, like the shuffling: what ran before (a model
        # built then loaded, another job of a search) does not change the result, so a pipeline replays a run
        torch.manual_seed(ctx.seed + epoch)
        if self.dist is not None:
            loader = self.dist.train_loader(ctx.data, self.batch_size, ctx.seed, epoch)
        else:
            loader = ctx.data.loader("train", batch_size=self.batch_size, seed=ctx.seed + epoch)
        total_batches = len(loader)
        loss_sum, count, start = 0.0, 0, time.perf_counter()
        pending: list[tuple[int, int, torch.Tensor, int]] = []  # (batch index, global step, loss, samples)
        device = ctx.device
        accumulate = max(1, s.accumulate)
        planned = s.epochs * total_batches
        if s.max_steps:
            planned = min(planned, s.max_steps * accumulate)
        self.items = 0
        for i, (x, y) in enumerate(loader, 1):
            ctx.check_cancelled()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            last = i % accumulate == 0 or i == total_batches  # this batch ends an optimizer step
            if (i - 1) % accumulate == 0:
                self.optimizer.zero_grad(set_to_none=True)
            if self.amp_dtype is not None:
                with torch.autocast(device.type, dtype=self.amp_dtype):
                    loss = self.loss_fn(self.net, x, y)
            else:
                loss = self.loss_fn(self.net, x, y)
            scaled = loss / accumulate if accumulate > 1 else loss
            if self.scaler is not None:
                self.scaler.scale(scaled).backward()
                if last:
                    self._sync_extra()
                    if s.grad_clip > 0:
                        self.scaler.unscale_(self.optimizer)
                        torch.nn.utils.clip_grad_norm_(self.trainable, s.grad_clip)
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
            else:
                scaled.backward()
                if last:
                    self._sync_extra()
                    if s.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(self.trainable, s.grad_clip)
                    self.optimizer.step()
            if last:
                self.global_step += 1
            self.items += self.task.items_in(y)
            stop = last and s.max_steps > 0 and self.global_step >= s.max_steps
            pending.append((i, self.global_step, loss.detach(), y.shape[0]))
            if len(pending) >= self.read_every or i == total_batches or stop:
                group_sum, group_count = self._read_losses(pending, epoch)
                loss_sum, count = loss_sum + group_sum, count + group_count
                pending.clear()
            ctx.progress((epoch - 1) * total_batches + i, planned, text=f"epoch {epoch}/{s.epochs}")
            if stop:
                self.reached_max_steps = True
                break
        if self.dist is not None:
            loss_sum, total = self.dist.sum(loss_sum, count)
            count = int(total)
        return loss_sum / max(count, 1), time.perf_counter() - start, count

    def _read_losses(self, pending: list[tuple[int, int, torch.Tensor, int]], epoch: int) -> tuple[float, int]:
        """Bring the step losses to the host in one transfer (one GPU sync per ``read_every`` steps instead of
        one per step), then check and log them step by step as if each had been read at once; returns the
        group's loss sum over samples and its sample count."""
        s = self.s
        loss_sum, count = 0.0, 0
        values = torch.stack([loss.float() for _, _, loss, _ in pending]).tolist()
        for (i, step, _, samples), value in zip(pending, values, strict=True):
            if not math.isfinite(value):
                raise JobFailed(f"non-finite loss ({value}) at epoch {epoch}, step {i}: lower the learning rate "
                                f"(lr={s.lr:g}) or enable grad_clip")
            if self.divergence.diverged(value):
                raise JobFailed(f"the loss diverged at epoch {epoch}, step {i}: smoothed {self.divergence.smoothed:.4g}"
                                f", over {s.diverge_factor:g}x its start ({self.divergence.start:.4g}); lower the "
                                f"learning rate (lr={s.lr:g}) or enable grad_clip")
            loss_sum, count = loss_sum + value * samples, count + samples
            if step % s.log_every == 0:
                if self.unit == "tokens":  # a language model: its training perplexity plots live beside the loss
                    self.ctx.log(step=step, loss=value, perplexity=math.exp(min(value, 700.0)))
                else:
                    self.ctx.log(step=step, loss=value)
        return loss_sum, count

    def _sync_extra(self) -> None:
        """Average the gradients of trainable parameters outside the wrapped model (DDP syncs the rest)."""
        if self.dist is not None and self.extra:
            self.dist.average_gradients(self.extra)
