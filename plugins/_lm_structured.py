"""Structured pruning of a decoder language model: whole attention-head groups and MLP channels are removed.

Why hand-written: Torch-Pruning 1.6 cannot trace transformers 5 decoders (Llama, Qwen2, Mistral). Given the HF
model its tracer fails on the tuple the model returns; given a ``forward_fn`` that returns the logits it did not
finish in 5 minutes on a 2-block, hidden-64 Llama. The layout is simple enough to edit directly.

What is removed, and why this way:

- Attention: whole KV groups, i.e. one key/value head with the query heads that read it (grouped-query
  attention). ``num_attention_heads / num_key_value_heads`` stays the same and ``head_dim`` is unchanged, so the
  rotary embedding and ``repeat_kv`` work as before. Rows of q/k/v (and their biases, Qwen2) and the matching
  input columns of o_proj go.
- MLP: channels of the gated MLP, i.e. rows of gate_proj and up_proj and input columns of down_proj.
- Every block loses the same number of groups and channels (which ones is chosen per block), because a Hugging
  Face config holds one ``num_attention_heads`` and one ``intermediate_size``: the pruned model saves with
  ``save_pretrained`` and reloads from its config, exactly.

Importance (after Wanda-sp / FLAP): a unit's output weights times the size of its input activations, read by
hooks on calibration sequences of the train split, block by block (a pruned block's outputs feed the next block,
so later blocks see the earlier pruning). MLP channel j: ``||down[:, j]|| * rms(act_j)``; a head group: the same
sum over the o_proj input columns of its query heads. ``calibration=0``: weight norms only (magnitude).

Refused with a one-line InputError, the architecture named: anything whose blocks are not
``self_attn.{q,k,v,o}_proj`` + ``mlp.{gate,up,down}_proj`` Linears, e.g. GPT-2 (Conv1D), GPT-NeoX and Phi-3
(fused qkv), mixture-of-experts MLPs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from workbench.plugin import InputError, JobContext
from workbench_plugins import _lm_prune as LM

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
FUSED = ("c_attn", "query_key_value", "qkv_proj", "Wqkv")  # GPT-2 (Conv1D), GPT-NeoX, Phi-3, MPT
NOTE = ("hand-written (plugins/_lm_structured.py): Torch-Pruning 1.6 cannot trace transformers 5 decoders; the "
        "same number of KV groups and MLP channels is removed from every block so the config describes the model")

Select = Callable[[torch.Tensor, int], torch.Tensor]


def top_k(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """The default selection: indices of the ``keep`` highest scores, in their original order."""
    return torch.sort(torch.topk(scores, keep).indices).values


@dataclass(frozen=True)
class Plan:
    """Per block: KV groups and MLP channels before and after (the same in every block)."""

    kv_heads: int
    kv_keep: int
    group: int  # query heads per KV head
    head_dim: int
    channels: int
    channels_keep: int

    @property
    def heads(self) -> int:
        return self.kv_heads * self.group

    @property
    def heads_keep(self) -> int:
        return self.kv_keep * self.group


def _round_half_down(x: float) -> int:
    """Nearest integer, half-way cases down: never more removed than asked at a tie (0.25 of 2 groups is 0)."""
    return int(math.ceil(x - 0.5))


def check_architecture(model: Any) -> nn.ModuleList:
    """The decoder blocks, when every one has the q/k/v/o + gate/up/down Linear layout; else a one-line refusal."""
    hf = getattr(model, "hf", model)
    arch = type(hf).__name__
    cfg = hf.config
    layers = getattr(getattr(hf, "model", None), "layers", None)
    why = None
    fused = next((n for n, _ in hf.named_modules() if n.rsplit(".", 1)[-1] in FUSED), None)
    if fused is not None:
        why = f"its attention projects q, k and v in one fused layer ({fused})"
    elif not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        why = "no model.layers decoder blocks"
    elif not all(isinstance(getattr(cfg, k, None), int) for k in ("num_attention_heads", "num_key_value_heads",
                                                                  "intermediate_size")):
        why = "its config has no num_attention_heads/num_key_value_heads/intermediate_size"
    else:
        for block in layers:
            attn, mlp = getattr(block, "self_attn", None), getattr(block, "mlp", None)
            if not all(isinstance(getattr(attn, n, None), nn.Linear) for n in ATTN):
                why = "its attention is not separate q_proj/k_proj/v_proj/o_proj Linears (fused qkv or Conv1D)"
                break
            if not all(isinstance(getattr(mlp, n, None), nn.Linear) for n in MLP):
                why = "its MLP is not a gated gate_proj/up_proj/down_proj (a plain or mixture-of-experts MLP)"
                break
    if why:
        raise InputError(f"prune method=structured takes Llama-style decoders (Llama, Qwen2, Mistral); {arch} is "
                         f"not one: {why}; use method=wanda|sparsegpt or drop_layers")
    return layers


def plan_for(model: Any, amount: float, round_to: int = 1) -> Plan:
    """How many KV groups and MLP channels each block keeps; a plan that removes all or nothing is refused.

    ``round_to``: the kept MLP channel count is a multiple of it (nearest, at least ``round_to``)."""
    layers = check_architecture(model)
    cfg = getattr(model, "hf", model).config
    heads, kv = int(cfg.num_attention_heads), int(cfg.num_key_value_heads)
    attn = layers[0].self_attn
    head_dim = attn.q_proj.out_features // heads
    channels = layers[0].mlp.gate_proj.out_features
    removed = _round_half_down(amount * kv)
    if kv > 1 and removed >= kv:
        most = (kv - 0.5) / kv
        raise InputError(f"amount={amount:g} would remove all {kv} KV head groups of every block; amount must be "
                         f"below {most:g} to keep one")
    kv_keep = kv if kv == 1 else kv - removed
    keep = channels - _round_half_down(amount * channels)
    if round_to > 1:
        keep = min(channels, max(round_to, round_to * _round_half_down(keep / round_to)))
    if keep < 1:
        raise InputError(f"amount={amount:g} would remove all {channels} MLP channels of every block")
    if kv_keep == kv and keep == channels:
        raise InputError(f"amount={amount:g} removes no KV head group (of {kv}) and no MLP channel (of {channels}) "
                         "per block; use a larger amount")
    return Plan(kv, kv_keep, heads // kv, head_dim, channels, keep)


# importance ---------------------------------------------------------------------------------------------------------
class _InputNorms:
    """Sum of squares of each input channel of a Linear over the calibration tokens (a forward pre-hook)."""

    def __init__(self, layer: nn.Linear) -> None:
        self.sq = torch.zeros(layer.in_features, dtype=torch.float64, device=layer.weight.device)
        self.tokens = 0
        self.handle = layer.register_forward_pre_hook(self._hook)

    def _hook(self, _module: nn.Module, args: tuple) -> None:
        x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
        self.sq += (x ** 2).sum(0)
        self.tokens += x.shape[0]

    def rms(self) -> torch.Tensor:
        return (self.sq / max(self.tokens, 1)).sqrt().float()


def _column_norms(layer: nn.Linear, p: int) -> torch.Tensor:
    return layer.weight.detach().float().norm(p=p, dim=0)


def _row_norms(layer: nn.Linear, p: int) -> torch.Tensor:
    return layer.weight.detach().float().norm(p=p, dim=1)


def group_scores(column: torch.Tensor, plan: Plan) -> torch.Tensor:
    """Sum per KV group of the o_proj input-column scores of its query heads (heads of a group are adjacent)."""
    return column.reshape(plan.kv_heads, plan.group * plan.head_dim).sum(1)


def magnitude_scores(block: nn.Module, plan: Plan, p: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(group, channel) scores from weights alone: output-weight norm times input-weight norm."""
    attn, mlp = block.self_attn, block.mlp
    v = _row_norms(attn.v_proj, p).reshape(plan.kv_heads, plan.head_dim).sum(1)
    groups = group_scores(_column_norms(attn.o_proj, p), plan) * v
    channels = _column_norms(mlp.down_proj, p) * (_row_norms(mlp.gate_proj, p) * _row_norms(mlp.up_proj, p)).sqrt()
    return groups, channels


def activation_scores(block: nn.Module, plan: Plan, inputs: list, p: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(group, channel) scores: output-weight column norm times the RMS of the input activation it multiplies,
    on the block's calibration inputs."""
    o_in, down_in = _InputNorms(block.self_attn.o_proj), _InputNorms(block.mlp.down_proj)
    try:
        for h, a, k in inputs:
            block(h, *a, **k)
    finally:
        o_in.handle.remove()
        down_in.handle.remove()
    groups = group_scores(_column_norms(block.self_attn.o_proj, p) * o_in.rms(), plan)
    channels = _column_norms(block.mlp.down_proj, p) * down_in.rms()
    return groups, channels


# surgery ------------------------------------------------------------------------------------------------------------
def _keep_rows(layer: nn.Linear, rows: torch.Tensor) -> None:
    layer.weight = nn.Parameter(layer.weight.data[rows].clone(), requires_grad=layer.weight.requires_grad)
    if layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias.data[rows].clone(), requires_grad=layer.bias.requires_grad)
    layer.out_features = int(rows.numel())


def _keep_columns(layer: nn.Linear, cols: torch.Tensor) -> None:
    layer.weight = nn.Parameter(layer.weight.data[:, cols].clone(), requires_grad=layer.weight.requires_grad)
    layer.in_features = int(cols.numel())


def _units(index: torch.Tensor, width: int) -> torch.Tensor:
    """Rows/columns of the units ``index`` when each unit spans ``width`` adjacent rows."""
    return (index.reshape(-1, 1) * width + torch.arange(width, device=index.device)).reshape(-1)


def shrink_block(block: nn.Module, plan: Plan, groups: torch.Tensor, channels: torch.Tensor) -> None:
    """Keep KV groups ``groups`` (with their query heads) and MLP channels ``channels`` of one block, in place."""
    attn, mlp = block.self_attn, block.mlp
    kv_rows = _units(groups, plan.head_dim)
    q_rows = _units(groups, plan.group * plan.head_dim)
    _keep_rows(attn.q_proj, q_rows)
    _keep_rows(attn.k_proj, kv_rows)
    _keep_rows(attn.v_proj, kv_rows)
    _keep_columns(attn.o_proj, q_rows)
    for name, value in (("num_heads", plan.heads_keep), ("num_attention_heads", plan.heads_keep),
                        ("num_key_value_heads", plan.kv_keep)):
        if isinstance(getattr(attn, name, None), int):  # older transformers keep the counts on the module
            setattr(attn, name, value)
    _keep_rows(mlp.gate_proj, channels)
    _keep_rows(mlp.up_proj, channels)
    _keep_columns(mlp.down_proj, channels)
    if isinstance(getattr(mlp, "intermediate_size", None), int):
        mlp.intermediate_size = plan.channels_keep


def update_config(hf: Any, plan: Plan) -> None:
    """The new widths in the HF config (head_dim explicit: hidden/heads no longer gives it)."""
    cfg = hf.config
    cfg.num_attention_heads = plan.heads_keep
    cfg.num_key_value_heads = plan.kv_keep
    cfg.intermediate_size = plan.channels_keep
    cfg.head_dim = plan.head_dim


def _hidden(out: Any) -> torch.Tensor:
    """A decoder block returns its hidden states, alone or first in a tuple (transformers versions differ)."""
    return out[0] if isinstance(out, (tuple, list)) else out


# the job ------------------------------------------------------------------------------------------------------------
def prune_structured(ctx: JobContext, model: Any, amount: float, calibration: int, round_to: int = 1, p: int = 2,
                     select: Select = top_k) -> dict[str, Any]:
    """Remove KV groups and MLP channels from every block in place; returns the result fields (per-block table,
    params before/after). ``select(scores, keep)`` picks the kept indices (top-k by default; tests swap it)."""
    plan = plan_for(model, amount, round_to)
    hf = getattr(model, "hf", model)
    layers = check_architecture(model)
    params0 = sum(t.numel() for t in model.parameters())
    importance = "activation" if calibration > 0 else "magnitude"
    ctx.info(f"structured: per block {plan.heads}->{plan.heads_keep} query heads, {plan.kv_heads}->{plan.kv_keep} "
             f"KV heads, {plan.channels}->{plan.channels_keep} MLP channels ({importance} importance)")
    if plan.kv_heads == 1:
        ctx.warn("structured: the model has one KV head, which a KV group is removed with: attention is kept "
                 "whole, only MLP channels are removed")
    rows: dict[str, dict[str, Any]] = {}
    was_training = hf.training
    hf.eval()
    try:
        with torch.no_grad():
            inputs = LM.capture_inputs(ctx, model, calibration) if calibration > 0 else []
            for i, block in enumerate(layers):
                ctx.check_cancelled()
                if inputs:
                    g_score, c_score = activation_scores(block, plan, inputs, p)
                else:
                    g_score, c_score = magnitude_scores(block, plan, p)
                groups = select(g_score, plan.kv_keep).to(torch.long)
                channels = select(c_score, plan.channels_keep).to(torch.long)
                shrink_block(block, plan, groups, channels)
                if inputs:  # the pruned block's outputs are the next block's inputs
                    inputs = [(_hidden(block(h, *a, **k)), a, k) for h, a, k in inputs]
                kept = sorted(int(g) for g in groups)
                rows[f"hf.model.layers.{i}"] = {  # the graph view's and prune_sensitivity's names
                    "heads_before": plan.heads, "heads_after": plan.heads_keep,
                    "kv_heads_before": plan.kv_heads, "kv_heads_after": plan.kv_keep,
                    "channels_before": plan.channels, "channels_after": plan.channels_keep,
                    "kv_groups_kept": ",".join(map(str, kept)),
                }
                ctx.log(step=i, block_heads=plan.heads_keep, block_channels=plan.channels_keep)
                ctx.progress(i + 1, len(layers), text=f"structured: block {i + 1}/{len(layers)} pruned")
                ctx.info(f"structured: block {i} pruned (KV groups kept {kept}, {plan.channels_keep}/"
                         f"{plan.channels} MLP channels)")
        update_config(hf, plan)
    finally:
        hf.train(was_training)
    params = sum(t.numel() for t in model.parameters())
    return {
        "method": "structured", "importance": importance, "calibration": calibration, "amount": amount,
        "round_to": round_to,
        "heads": [plan.heads, plan.heads_keep], "kv_heads": [plan.kv_heads, plan.kv_keep],
        "intermediate_size": [plan.channels, plan.channels_keep],
        "layers": rows, "params_before": params0, "params_after": params,
        "param_ratio": round(params / max(params0, 1), 4), "note": NOTE,
    }
