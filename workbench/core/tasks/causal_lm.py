"""The ``causal_lm`` task: next-token prediction. Perplexity (lower is better) is the headline: exp of the mean
token negative log-likelihood on the test split; ``loss`` is that mean (nats) and ``token_accuracy`` the share of
positions whose most likely next token is the right one."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench.core.errors import JobFailed
from workbench.core.tasks.base import Check, Task
from workbench.core.tasks.classification import repeat_to, run_on

if TYPE_CHECKING:
    from workbench.core.data import DataBundle

DECODE_PROMPT_TOKENS = 16
DECODE_NEW_TOKENS = 32
EVAL_BATCH = 16  # sequences per evaluation batch: (16, seq, vocab) float logits stay small
# built-in jobs that cannot take a language model yet, and why (one line each)
UNSUPPORTED_JOBS = {
    "quantize": "its accuracy budget and calibration are written for classifiers",
    "fuse": "its BatchNorm folding, soups and ensembles are written for classifiers",
}


class CausalLMTask(Task):
    name = "causal_lm"
    headline = "perplexity"
    higher_is_better = False
    default_bench_batch = 1
    metric_names = ("perplexity", "loss", "token_accuracy")

    def evaluate(self, model: Any, data: DataBundle, split: str = "test", device: Any = "cpu",
                 check: Check = None) -> dict[str, float]:
        device = torch.device(device)
        was_training = getattr(model, "training", False)
        if isinstance(model, nn.Module):
            model.eval()
        nll, correct, tokens = 0.0, 0, 0
        fixed = fixed_batch(model)  # an ONNX export of the prefill takes exactly its batch size
        try:
            with torch.inference_mode():
                for x, y in data.loader(split, batch_size=fixed or EVAL_BATCH, shuffle=False):
                    if check is not None:
                        check()
                    x, y = x.to(device), y.to(device)
                    if fixed and x.shape[0] < fixed:  # the last, short batch: pad with its own rows, score the real
                        logits = _logits(model(repeat_to(x, fixed)))[: x.shape[0]]
                    else:
                        logits = _logits(model(x))
                    nll += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum"))
                    correct += int((logits.argmax(-1) == y).sum())
                    tokens += int(y.numel())
        finally:
            if was_training and isinstance(model, nn.Module):
                model.train()
        loss = nll / max(tokens, 1)
        return {"perplexity": math.exp(min(loss, 700.0)), "loss": loss, "token_accuracy": correct / max(tokens, 1)}

    def check_output(self, model: Any, data: DataBundle, device: Any, job_name: str) -> None:
        """The model runs on test sequences and gives next-token logits: (batch, seq, vocab)."""
        batch = data.example_batch(fixed_batch(model) or 2).to(torch.device(device))
        out = run_on(model, batch, job_name)
        vocab = int(data.info.vocab_size or data.info.num_classes)
        if not isinstance(out, torch.Tensor) or out.ndim != 3 or tuple(out.shape[:2]) != tuple(batch.shape) \
                or out.shape[2] < vocab:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise JobFailed(f"job {job_name} returned a model whose output is {shape}, expected next-token logits "
                            f"{(*batch.shape, vocab)} (batch, seq, vocab)")

    def bench_input(self, data: DataBundle, batch_size: int) -> torch.Tensor:
        """``batch_size`` test sequences of ``seq_len`` tokens: one prefill."""
        return repeat_to(data.example_batch(batch_size), batch_size)

    def training_loss(self, output: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """Mean next-token cross-entropy over every position."""
        logits = _logits(output)
        return F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), label_smoothing=label_smoothing)

    def extra_measurements(self, model: Any, data: DataBundle, device: Any, budget: Any = None,
                           check: Check = None) -> dict[str, Any]:
        """``decode_tokens_per_s`` with its 95% interval (``decode_tokens_per_s_ci``): greedy generation with a KV
        cache at batch 1, timed within the measuring budget, for the workbench's LM wrapper."""
        from workbench.core.lm import is_language_model
        from workbench.core.lm.generate import measure_decode

        if not is_language_model(model):
            return {}
        prompt = data.example_batch(1)[0, :DECODE_PROMPT_TOKENS].tolist()
        return measure_decode(model, prompt, DECODE_NEW_TOKENS, budget, check).metrics()

    def export_onnx(self, model: Any, example: torch.Tensor, path: Path, *,
                    verify_batches: list[torch.Tensor] | None = None, **options: Any) -> Any:
        """The prefill logits at the latency batch's fixed shape (batch x seq_len), verified."""
        from workbench.core.lm.export import export_language_model

        return export_language_model(model, example, path, verify_batches=verify_batches, **options)

    def throughput_unit(self, data: DataBundle) -> str:
        return "tokens"

    def items_in(self, target: torch.Tensor) -> int:
        return int(target.numel())

    def supports_job(self, job_name: str) -> str | None:
        reason = UNSUPPORTED_JOBS.get(job_name)
        return None if reason is None else f"{job_name} works on classifiers only for now: {reason}"


def fixed_batch(model: Any) -> int | None:
    """The batch size an ONNX model's input is fixed to, or None (a torch model, or a dynamic batch axis)."""
    from workbench.core.models.onnx_model import is_onnx

    if not is_onnx(model):
        return None
    shape = model.session().get_inputs()[0].shape
    return shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else None


def _logits(output: Any) -> torch.Tensor:
    """Logits from a tensor or a Hugging Face ModelOutput (a bare HF model passed by a plugin)."""
    if isinstance(output, torch.Tensor):
        return output.float()
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits.float()
    raise JobFailed(f"a language model must return logits (batch, seq, vocab), got {type(output).__name__}")
