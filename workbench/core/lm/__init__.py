"""Language models: Hugging Face causal LMs behind a tensor-in/tensor-out module, their tokenizers, generation
with a KV cache, fixed-shape ONNX export, and the variant format (config.json + safetensors + tokenizer).

transformers and tokenizers are imported only by the functions that need them, so importing this package (and
asking ``is_language_model``) stays cheap for classifier sessions.
"""

from __future__ import annotations

from typing import Any

LM_RECIPE_KIND = "causal_lm"


def is_language_model(model: Any) -> bool:
    """True for the workbench's causal-LM wrapper (``workbench.core.lm.model.CausalLM``), without importing it."""
    return bool(getattr(model, "is_causal_lm", False))


__all__ = ["LM_RECIPE_KIND", "is_language_model"]
