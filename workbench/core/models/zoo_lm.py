"""The zoo's language models. The factories import transformers only when called (``--list-models`` stays fast)."""

from __future__ import annotations

from torch import nn


def tiny_llama(input_shape: tuple[int, ...], num_classes: int, layers: int = 4, hidden: int = 256, heads: int = 4,
               kv_heads: int = 2, ffn: str = "auto") -> nn.Module:
    """A small Llama decoder (transformers' LlamaForCausalLM) for text corpora; vocab from the dataset."""
    from workbench.core.lm.model import tiny_llama as build

    return build(input_shape, num_classes, layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads, ffn=ffn)
