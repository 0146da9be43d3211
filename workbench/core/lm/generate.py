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


@torch.inference_mode()
def decode_tokens_per_s(model: Any, prompt_ids: list[int], new_tokens: int = 32, repeats: int = 3) -> float:
    """Greedy decoding speed with a KV cache at batch 1: tokens per second over the decode steps only (the prefill
    is not counted); the median of ``repeats`` runs after a warm-up."""
    hf = model.hf
    device = _device_of(model)
    limit = model.max_positions
    ids = list(prompt_ids) or [0]
    if limit is not None:
        new_tokens = max(1, min(new_tokens, limit // 2))
        ids = ids[: max(1, limit - new_tokens - 1)]
    was_training = model.training
    model.eval()

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

    try:
        run(min(4, new_tokens))
        seconds = statistics.median(run(new_tokens) for _ in range(max(1, repeats)))
    finally:
        model.train(was_training)
    return new_tokens / seconds if seconds > 0 else 0.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
