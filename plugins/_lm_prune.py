"""One-shot unstructured / N:M pruning of a decoder language model, block by block: magnitude, Wanda, SparseGPT.

Why home-made: llmcompressor (the maintained home of both methods) pins its own transformers/torch and targets
vLLM on GPU; this is a small, CPU-friendly port of the reference code (locuslab/wanda, IST-DASLab/sparsegpt).

The calibration sequences (train split) run through the decoder one block at a time: the block's inputs are kept,
every Linear in the block gathers its input statistics (Wanda: the squared L2 norm of each input channel;
SparseGPT: the Hessian X X^T), the Linears are pruned, and the pruned block's outputs feed the next block, so each
block sees the errors of the ones before (as in the papers). The input embeddings are never pruned (a lookup
table has no input activations to weigh); ``lm_head`` is pruned unless it is tied to the embeddings or the caller
skips it (it is a third of a small model's parameters). The papers leave the head dense, so its method is a choice
made here by measurement: SparseGPT prunes it with its own OBS updates, Wanda and magnitude by magnitude across
the whole layer. Wanda's activation weighting measured worse there (tiny_llama hidden 128 on pydocs, 50%:
perplexity 119.5 with a Wanda head, 118.2 with a magnitude head, 118.6 for magnitude everywhere): its rows are
vocabulary tokens of very unequal use, which one norm per input channel cannot tell apart.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workbench.plugin import InputError, JobContext

LM_METHODS = ("l1_unstructured", "wanda", "sparsegpt")
PATTERNS = {"unstructured": None, "2:4": (2, 4), "4:8": (4, 8)}
HEAD_METHOD = {"l1_unstructured": "l1_unstructured", "wanda": "l1_unstructured", "sparsegpt": "sparsegpt"}
SPARSEGPT_BLOCK = 128
SPARSEGPT_DAMP = 0.01


class _Stop(Exception):
    """Raised by the hook on block 0 once its inputs are captured: the rest of the model need not run."""


def decoder_blocks(model: Any) -> nn.ModuleList:
    """``model.hf.model.layers`` of a Llama/Qwen-style decoder, or an InputError."""
    hf = getattr(model, "hf", model)
    layers = getattr(getattr(hf, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise InputError(f"prune needs a decoder language model with model.layers blocks; {type(hf).__name__} has "
                         "none")
    return layers


def check_settings(method: str, pattern: str, amount: float, calibration: int) -> tuple[int, int] | None:
    """The N:M pair of ``pattern`` (None when unstructured); a bad combination is a one-line InputError."""
    if method not in LM_METHODS:
        raise InputError(f"prune method={method} does not take a language model; use one of "
                         f"{', '.join(LM_METHODS)} (or drop_layers to remove whole blocks)")
    if pattern not in PATTERNS:
        raise InputError(f"pattern must be one of {', '.join(PATTERNS)}, got {pattern!r}")
    nm = PATTERNS[pattern]
    if nm is not None and abs(amount - nm[0] / nm[1]) > 1e-6:
        raise InputError(f"pattern {pattern} zeros {nm[0]} of every {nm[1]} weights, i.e. amount 0.5; "
                         f"amount={amount:g} does not match it (leave amount at 0.5)")
    if method in ("wanda", "sparsegpt") and calibration < 1:
        raise InputError(f"method={method} weighs weights by their input activations: it needs calibration "
                         "sequences (calibration >= 1)")
    return nm


def targets_of(model: Any, prune_head: bool) -> tuple[list[list[tuple[str, nn.Linear]]], nn.Linear | None]:
    """The Linears of every block (name, module) and the head to prune (None when skipped or tied)."""
    hf = getattr(model, "hf", model)
    prefix = {id(m): n for n, m in hf.named_modules()}
    blocks = [[(f"{prefix[id(block)]}.{n}", m) for n, m in block.named_modules() if isinstance(m, nn.Linear)]
              for block in decoder_blocks(model)]
    head = hf.get_output_embeddings() if prune_head else None
    embed = hf.get_input_embeddings()
    if head is not None and (not isinstance(head, nn.Linear) or head.weight is getattr(embed, "weight", None)):
        head = None  # tied to the embeddings (pruning it would prune them) or not a plain Linear
    return blocks, head


def check_widths(blocks: list[list[tuple[str, nn.Linear]]], head: nn.Linear | None, nm: tuple[int, int] | None
                 ) -> None:
    """N:M groups run along a layer's input: its width must be a multiple of M."""
    if nm is None:
        return
    named = [pair for block in blocks for pair in block] + ([("lm_head", head)] if head is not None else [])
    for name, layer in named:
        if layer.in_features % nm[1]:
            raise InputError(f"pattern {nm[0]}:{nm[1]} needs input widths that are multiples of {nm[1]}: layer "
                             f"{name} has {layer.in_features} inputs")


# masks --------------------------------------------------------------------------------------------------------------
def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """True where pruned: the ``n`` lowest scores of every ``m`` consecutive inputs of each row."""
    rows, cols = score.shape
    groups = score.reshape(rows, cols // m, m)
    low = torch.topk(groups, n, dim=-1, largest=False).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, low, True)
    return mask.reshape(rows, cols)


def magnitude_prune(layer: nn.Linear, amount: float, nm: tuple[int, int] | None) -> None:
    """|W|: the layer's smallest weights as a whole (as torch's l1_unstructured does), or the N:M pattern."""
    w = layer.weight.data
    score = w.abs().float()
    if nm is not None:
        mask = nm_mask(score, *nm)
    else:
        k = int(round(amount * score.numel()))
        mask = torch.zeros_like(score, dtype=torch.bool)
        if k > 0:
            mask.view(-1)[torch.topk(score.view(-1), k, largest=False).indices] = True
    w[mask] = 0


def wanda_prune(layer: nn.Linear, sq_norm: torch.Tensor, amount: float, nm: tuple[int, int] | None,
                per_row: bool = True) -> None:
    """Wanda (Sun et al. 2023): score |W_ij| * ||X_j||_2, compared within each output row (the paper's choice for
    LLaMA) or, ``per_row=False``, across the whole layer."""
    w = layer.weight.data
    score = w.abs().float() * sq_norm.sqrt().reshape(1, -1)
    if nm is not None:
        mask = nm_mask(score, *nm)
    elif not per_row:
        k = int(round(amount * score.numel()))
        mask = torch.zeros_like(score, dtype=torch.bool)
        if k > 0:
            mask.view(-1)[torch.topk(score.view(-1), k, largest=False).indices] = True
    else:
        k = int(amount * score.shape[1])
        mask = torch.zeros_like(score, dtype=torch.bool)
        if k > 0:
            mask.scatter_(1, torch.sort(score, dim=-1, stable=True).indices[:, :k], True)
    w[mask] = 0


def sparsegpt_prune(layer: nn.Linear, hessian: torch.Tensor, amount: float, nm: tuple[int, int] | None,
                    blocksize: int = SPARSEGPT_BLOCK, percdamp: float = SPARSEGPT_DAMP) -> float:
    """SparseGPT (Frantar & Alistarh 2023), after IST-DASLab/sparsegpt's ``fasterprune``: columns are pruned left
    to right in blocks, each pruned weight's error is spread over the columns not yet visited through the inverse
    Hessian's Cholesky factor (OBS updates), the mask chosen per block by w^2 / [H^-1]_jj^2."""
    w = layer.weight.data.clone().float()
    w0 = w.clone()
    h = hessian.clone().float()
    cols = w.shape[1]
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    diag = torch.arange(cols, device=h.device)
    h[diag, diag] += percdamp * torch.mean(torch.diag(h))
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        w1 = w[:, i1:i2].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        d1 = torch.diag(hinv1).reshape(1, -1)
        if nm is None:
            tmp = w1 ** 2 / d1 ** 2
            k = int(tmp.numel() * amount)
            mask1 = torch.zeros_like(w1, dtype=torch.bool)
            if k > 0:
                mask1.view(-1)[torch.topk(tmp.view(-1), k, largest=False).indices] = True
        else:
            mask1 = torch.zeros_like(w1, dtype=torch.bool)
        for i in range(i2 - i1):
            if nm is not None and i % nm[1] == 0:
                tmp = w1[:, i:i + nm[1]] ** 2 / d1[:, i:i + nm[1]] ** 2
                mask1.scatter_(1, i + torch.topk(tmp, nm[0], dim=1, largest=False).indices, True)
            col = w1[:, i]
            d = hinv1[i, i]
            q = col.clone()
            q[mask1[:, i]] = 0
            q1[:, i] = q
            e = (col - q) / d
            w1[:, i:] -= e.unsqueeze(1).matmul(hinv1[i, i:].unsqueeze(0))
            err1[:, i] = e
        w[:, i1:i2] = q1
        w[:, i2:] -= err1.matmul(hinv[i1:i2, i2:])
    layer.weight.data.copy_(w.to(layer.weight.dtype))
    return relative_error(w0, w, hessian)


def relative_error(before: torch.Tensor, after: torch.Tensor, hessian: torch.Tensor) -> float:
    """||(W - W') X||^2 / ||W X||^2 on the calibration inputs, from their Hessian (X X^T, up to a scale)."""
    h = hessian.float()
    d = before - after
    num = float(torch.einsum("ij,jk,ik->", d, h, d))
    den = float(torch.einsum("ij,jk,ik->", before, h, before))
    return num / den if den > 0 else 0.0


# statistics ---------------------------------------------------------------------------------------------------------
class _Stats:
    """Per-Linear input statistics, updated by a forward hook: mean squared input per channel (Wanda) or the
    running mean Hessian 2/n X X^T (SparseGPT)."""

    def __init__(self, layer: nn.Linear, method: str) -> None:
        self.method = method
        self.n = 0
        width = layer.in_features
        dev = layer.weight.device
        self.value = torch.zeros(width, width, device=dev) if method == "sparsegpt" else \
            torch.zeros(width, device=dev)
        self.handle = layer.register_forward_hook(self._hook)

    def _hook(self, _module: nn.Module, args: tuple, _output: Any) -> None:
        x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
        t = x.shape[0]
        self.value *= self.n / (self.n + t)
        self.n += t
        if self.method == "sparsegpt":
            x = x * (2.0 / self.n) ** 0.5
            self.value += x.t() @ x
        else:
            self.value += (x ** 2).sum(0) / self.n


def _block_output(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def capture_inputs(ctx: JobContext, model: Any, calibration: int, batch: int = 8) -> list[tuple[torch.Tensor, tuple,
                                                                                             dict]]:
    """The hidden states (and the other arguments: rotary embeddings, mask) entering block 0 for ``calibration``
    train sequences, one entry per batch."""
    hf = getattr(model, "hf", model)
    first = decoder_blocks(model)[0]
    inputs: list[tuple[torch.Tensor, tuple, dict]] = []

    def grab(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        inputs.append((hidden.detach(), tuple(args[1:]), dict(kwargs)))
        raise _Stop

    handle = first.register_forward_pre_hook(grab, with_kwargs=True)
    seen = 0
    try:
        for x, _ in ctx.data.loader("train", batch_size=min(batch, calibration), shuffle=False):
            ctx.check_cancelled()
            x = x[: calibration - seen].to(ctx.device)
            try:
                hf(input_ids=x, use_cache=False)
            except _Stop:
                pass
            seen += x.shape[0]
            if seen >= calibration:
                break
    finally:
        handle.remove()
    if not inputs:
        raise InputError("prune: the train split has no sequences to calibrate on")
    return inputs


def _prune_group(named: list[tuple[str, nn.Linear]], stats: dict[str, _Stats] | None, method: str, amount: float,
                 nm: tuple[int, int] | None, per_row: bool = True) -> dict[str, dict[str, float]]:
    """Prune each layer; per layer its sparsity and, for SparseGPT, the relative reconstruction error."""
    rows = {}
    for name, layer in named:
        row: dict[str, float] = {}
        if method == "l1_unstructured":
            magnitude_prune(layer, amount, nm)
        elif method == "wanda":
            wanda_prune(layer, stats[name].value, amount, nm, per_row)
        else:
            row["rel_error"] = round(sparsegpt_prune(layer, stats[name].value, amount, nm), 6)
        rows[name] = {"sparsity": round(float((layer.weight == 0).float().mean()), 4), **row}
    return rows


def prune_language_model(ctx: JobContext, model: Any, method: str, amount: float, pattern: str, calibration: int,
                         prune_head: bool) -> dict[str, dict[str, float]]:
    """Prune every block's Linears (and the head) in place, block by block; returns per layer its sparsity (and
    SparseGPT's relative reconstruction error)."""
    nm = check_settings(method, pattern, amount, calibration)
    blocks, head = targets_of(model, prune_head)
    check_widths(blocks, head, nm)
    hf = getattr(model, "hf", model)
    needs_data = method != "l1_unstructured"
    was_training = hf.training
    hf.eval()
    sparsity: dict[str, dict[str, float]] = {}
    total = len(blocks) + (head is not None)
    try:
        with torch.no_grad():
            inputs = capture_inputs(ctx, model, calibration) if needs_data else []
            for i, (block, named) in enumerate(zip(decoder_blocks(model), blocks)):
                ctx.check_cancelled()
                stats = _gather(block, named, inputs, method) if needs_data else None
                layer_sparsity = _prune_group(named, stats, method, amount, nm)
                sparsity.update(layer_sparsity)
                if needs_data:  # the pruned block's outputs are the next block's inputs
                    inputs = [(_block_output(block(h, *a, **k)), a, k) for h, a, k in inputs]
                mean = sum(r["sparsity"] for r in layer_sparsity.values()) / max(len(layer_sparsity), 1)
                ctx.log(step=i, block_sparsity=mean)
                ctx.progress(i + 1, total, text=f"{method}: block {i + 1}/{len(blocks)} pruned")
                ctx.info(f"{method}: block {i} pruned ({len(named)} linear layers, sparsity {mean:.3f})")
            if head is not None:
                ctx.check_cancelled()
                named = [("lm_head", head)]
                norm = getattr(hf.model, "norm", None)
                finals = [(norm(h) if norm is not None else h, (), {}) for h, _, _ in inputs]
                head_method = HEAD_METHOD[method]
                stats = _gather(head, named, finals, head_method, call=lambda mod, h, a, k: mod(h)) \
                    if head_method != "l1_unstructured" else None
                sparsity.update(_prune_group(named, stats, head_method, amount, nm, per_row=False))
                sparsity["lm_head"]["method"] = head_method
                ctx.progress(total, total, text=f"{method}: lm_head pruned")
                ctx.info(f"{method}: lm_head pruned (sparsity {sparsity['lm_head']['sparsity']:.3f})")
    finally:
        hf.train(was_training)
    return sparsity


def _gather(module: nn.Module, named: list[tuple[str, nn.Linear]], inputs: list, method: str,
            call: Any = None) -> dict[str, _Stats]:
    stats = {name: _Stats(layer, method) for name, layer in named}
    try:
        for h, a, k in inputs:
            if call is None:
                module(h, *a, **k)
            else:
                call(module, h, a, k)
    finally:
        for s in stats.values():
            s.handle.remove()
    return stats
