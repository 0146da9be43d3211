"""Text generation with a KV cache, and the decode speed figure (tokens/s, greedy, batch 1).

The loop is written out rather than calling ``model.generate``: one prefill, then one token per forward pass with
the cache the previous pass returned, so ``decode_tokens_per_s`` times exactly the decoder's per-token work and
nothing of transformers' generation bookkeeping.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from workbench.core.errors import InputError


@dataclass
class Generation:
    prompt: str
    text: str  # the continuation only
    prompt_tokens: int
    new_tokens: int
    seconds: float
    stopped_at_eos: bool

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


def _device_of(model: Any) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.inference_mode()
def generate_ids(model: Any, prompt_ids: list[int], max_new_tokens: int, *, temperature: float = 0.0,
                 top_k: int = 0, eos_id: int | None = None, seed: int = 0,
                 on_token: Callable[[int], None] | None = None) -> tuple[list[int], bool]:
    """Continue ``prompt_ids`` by up to ``max_new_tokens`` (greedy at temperature 0, else sampled from the top
    ``top_k``); returns (new ids, stopped at end of text). ``on_token`` sees each id (progress, cancelling)."""
    hf = model.hf
    device = _device_of(model)
    limit = model.max_positions
    ids = list(prompt_ids)
    if limit is not None:
        max_new_tokens = max(0, min(max_new_tokens, limit - 1))
        keep = limit - max_new_tokens
        ids = ids[-keep:] if keep > 0 else ids[-1:]
    if not ids:
        start = eos_id if eos_id is not None else (getattr(hf.config, "bos_token_id", None) or 0)
        ids = [int(start)]
    generator = torch.Generator(device="cpu").manual_seed(int(seed)) if temperature > 0 else None
    was_training = model.training
    model.eval()
    new: list[int] = []
    stopped = False
    try:
        out = hf(input_ids=torch.tensor([ids], device=device), use_cache=True)
        past = out.past_key_values
        logits = out.logits[:, -1, :]
        for _ in range(max_new_tokens):
            token = _pick(logits, temperature, top_k, generator)
            new.append(token)
            if on_token is not None:
                on_token(token)
            if eos_id is not None and token == eos_id:
                stopped = True
                break
            out = hf(input_ids=torch.tensor([[token]], device=device), past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[:, -1, :]
    finally:
        model.train(was_training)
    return new, stopped


def _pick(logits: torch.Tensor, temperature: float, top_k: int, generator: torch.Generator | None) -> int:
    if temperature <= 0:
        return int(logits[0].argmax())
    scores = logits[0].float().cpu() / temperature
    if top_k > 0 and top_k < scores.numel():
        cutoff = torch.topk(scores, top_k).values[-1]
        scores = scores.masked_fill(scores < cutoff, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def generate_text(model: Any, prompt: str, max_new_tokens: int = 64, *, temperature: float = 0.0, top_k: int = 0,
                  seed: int = 0, tokenizer: Any = None, on_token: Callable[[int], None] | None = None) -> Generation:
    """A continuation of ``prompt`` by a language model, decoded with its (or the given) tokenizer."""
    tokenizer = tokenizer or getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise InputError("this language model has no tokenizer: open it with a text dataset (text:FILE or pydocs), "
                         "or give the dataset tokenizer=DIR")
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    prompt_ids = tokenizer.encode(prompt)
    start = time.perf_counter()
    new, stopped = generate_ids(model, prompt_ids, max_new_tokens, temperature=temperature, top_k=top_k,
                                eos_id=tokenizer.eos_id, seed=seed, on_token=on_token)
    seconds = time.perf_counter() - start
    return Generation(prompt, tokenizer.decode(new), len(prompt_ids), len(new), seconds, stopped)


@dataclass(frozen=True)
class DecodeSpeed:
    """Greedy decode speed at batch 1: the median over timed runs and its 95% bootstrap interval, in tokens/s."""

    tokens_per_s: float
    ci: tuple[float, float]
    runs: int

    def metrics(self) -> dict[str, Any]:
        return {"decode_tokens_per_s": round(self.tokens_per_s, 2),
                "decode_tokens_per_s_ci": [round(self.ci[0], 2), round(self.ci[1], 2)]}


def measure_decode(model: Any, prompt_ids: list[int], new_tokens: int = 32, budget: Any = None,
                   check: Callable[[], None] | None = None) -> DecodeSpeed:
    """Decode speed with a KV cache, measured like a latency (``workbench.core.variants.timing``): warm-up, then
    runs of ``new_tokens`` greedy steps after an untimed prefill until the budget's seconds have passed (at least
    3 runs), under the machine-wide measuring lock; the figure is the median run's tokens/s with its interval.

    A few runs of a few dozen tokens spread widely on a busy machine (one 32-token run is tens of milliseconds),
    which once put two variants of the same shape 4x apart; a budgeted median with its interval does not."""
    import numpy as np

    from workbench.core.variants import timing

    budget = budget or timing.DEFAULT_BUDGET
    run, new_tokens, restore = _decoder(model, prompt_ids, new_tokens)
    ms_per_token: list[float] = []
    try:
        with timing.measuring_lock():
            warm_start = time.perf_counter()
            run(min(4, new_tokens))
            while time.perf_counter() - warm_start < budget.warmup_s:
                run(new_tokens)
            start = time.perf_counter()
            while len(ms_per_token) < 3 or (len(ms_per_token) < max(3, budget.max_samples)
                                            and time.perf_counter() - start < budget.seconds):
                if check is not None:
                    check()
                ms_per_token.append(run(new_tokens) * 1000.0 / new_tokens)
    finally:
        restore()
    per_token = timing.latency_of(np.asarray(ms_per_token))
    return DecodeSpeed(1000.0 / per_token.ms, (1000.0 / per_token.ci[1], 1000.0 / per_token.ci[0]),
                       len(ms_per_token))


def decode_tokens_per_s(model: Any, prompt_ids: list[int], new_tokens: int = 32, repeats: int = 3) -> float:
    """Greedy decoding speed with a KV cache at batch 1: tokens per second over the decode steps only (the prefill
    is not counted); the median of ``repeats`` runs after a warm-up (a quick figure; variants are measured with
    ``measure_decode``)."""
    run, new_tokens, restore = _decoder(model, prompt_ids, new_tokens)
    try:
        run(min(4, new_tokens))
        seconds = statistics.median(run(new_tokens) for _ in range(max(1, repeats)))
    finally:
        restore()
    return new_tokens / seconds if seconds > 0 else 0.0


def _decoder(model: Any, prompt_ids: list[int], new_tokens: int) -> tuple[Callable[[int], float], int, Callable[[], None]]:
    """``run(steps)``: one untimed prefill of the prompt, then ``steps`` timed greedy steps with the cache, in
    seconds; the new-token count cut to fit the model's positions; and a call that restores the model's mode."""
    hf = model.hf
    device = _device_of(model)
    limit = model.max_positions
    ids = list(prompt_ids) or [0]
    if limit is not None:
        new_tokens = max(1, min(new_tokens, limit // 2))
        ids = ids[: max(1, limit - new_tokens - 1)]
    was_training = model.training
    model.eval()

    @torch.inference_mode()
    def run(steps: int) -> float:
        out = hf(input_ids=torch.tensor([ids], device=device), use_cache=True)
        past, token = out.past_key_values, out.logits[:, -1:, :].argmax(-1)
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            out = hf(input_ids=token, past_key_values=past, use_cache=True)
            past, token = out.past_key_values, out.logits[:, -1:, :].argmax(-1)
        _sync(device)
        return time.perf_counter() - start

    return run, new_tokens, lambda: model.train(was_training)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
