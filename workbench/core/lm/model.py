"""``CausalLM``: a Hugging Face causal language model as the rest of the workbench expects a model to be.

Hugging Face models take keyword inputs and return a ``ModelOutput``; the wrapper takes token ids (batch, seq)
and returns the logits (batch, seq, vocab), so export, latency timing, training and saving see a plain tensor
module. The HF model stays reachable as ``.hf`` for generation with a KV cache, and the tokenizer the data was
encoded with rides along as ``.tokenizer`` so a variant saves and reloads with it.

A variant folder of a language model is itself a Hugging Face folder: ``config.json``, ``model.safetensors``,
``generation_config.json``, ``tokenizer.json``, ``tokenizer_config.json``, plus the workbench's ``recipe.json``
(kind ``causal_lm``) that says how it was made.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.core.errors import InputError
from workbench.core.lm import LM_RECIPE_KIND
from workbench.core.lm.offline import quiet_transformers
from workbench.core.models.recipe import recipe_of, set_recipe


class CausalLM(nn.Module):
    """Token ids (batch, seq) int64 in, next-token logits (batch, seq, vocab) out."""

    is_causal_lm = True

    def __init__(self, hf_model: nn.Module, tokenizer: Any = None, recipe: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.hf = hf_model
        self.tokenizer = tokenizer
        set_recipe(self, dict(recipe or {"kind": LM_RECIPE_KIND}, kind=LM_RECIPE_KIND))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=input_ids, use_cache=False).logits

    @property
    def config(self) -> Any:
        return self.hf.config

    @property
    def vocab_size(self) -> int:
        """Rows of the input embedding: the ids the model accepts."""
        return int(self.hf.get_input_embeddings().num_embeddings)

    @property
    def max_positions(self) -> int | None:
        """The longest sequence the model's position scheme takes (prompt and continuation together)."""
        return max_positions(self.hf.config)

    def __repr__(self) -> str:
        cfg = self.hf.config
        return (f"CausalLM({type(self.hf).__name__}, layers {getattr(cfg, 'num_hidden_layers', '?')}, "
                f"hidden {getattr(cfg, 'hidden_size', '?')}, vocab {self.vocab_size})")


def max_positions(config: Any) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def ffn_size(hidden: int, ffn: str | int) -> int:
    """``auto``: Llama's 8/3 x hidden, rounded up to a multiple of 32."""
    if isinstance(ffn, str) and ffn.strip().lower() == "auto":
        return -(-(8 * hidden // 3) // 32) * 32
    try:
        value = int(ffn)
    except (TypeError, ValueError):
        raise InputError(f"tiny_llama: ffn must be 'auto' or a positive integer, got {ffn!r}") from None
    if value < 1:
        raise InputError(f"tiny_llama: ffn must be positive, got {value}")
    return value


def tiny_llama_config(vocab_size: int, seq_len: int, *, layers: int = 4, hidden: int = 256, heads: int = 4,
                      kv_heads: int = 2, ffn: str | int = "auto", eos_id: int | None = None) -> Any:
    """The LlamaConfig of ``zoo:tiny_llama``; a bad combination is a one-line InputError."""
    for name, value in (("layers", layers), ("hidden", hidden), ("heads", heads), ("kv_heads", kv_heads),
                        ("vocab", vocab_size)):
        if int(value) < 1:
            raise InputError(f"tiny_llama: {name} must be at least 1, got {value}")
    if hidden % heads:
        raise InputError(f"tiny_llama: hidden={hidden} is not divisible by heads={heads}")
    if heads % kv_heads:
        raise InputError(f"tiny_llama: heads={heads} is not divisible by kv_heads={kv_heads}")
    if (hidden // heads) % 2:
        raise InputError(f"tiny_llama: the head size hidden/heads={hidden // heads} must be even (rotary embedding)")
    transformers = quiet_transformers()
    return transformers.LlamaConfig(
        vocab_size=int(vocab_size), hidden_size=int(hidden), intermediate_size=ffn_size(int(hidden), ffn),
        num_hidden_layers=int(layers), num_attention_heads=int(heads), num_key_value_heads=int(kv_heads),
        max_position_embeddings=max(2048, int(seq_len)), tie_word_embeddings=False,
        bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id,
    )


def tiny_llama(input_shape: tuple[int, ...], num_classes: int, layers: int = 4, hidden: int = 256, heads: int = 4,
               kv_heads: int = 2, ffn: str = "auto") -> nn.Module:
    """A small Llama-architecture decoder (transformers' LlamaForCausalLM); vocabulary from the dataset."""
    if len(input_shape) != 1:
        raise InputError(f"tiny_llama is a language model: it needs token sequences (a text:FILE or pydocs corpus), "
                         f"not inputs of shape {tuple(input_shape)}")
    transformers = quiet_transformers()
    config = tiny_llama_config(num_classes, input_shape[0], layers=layers, hidden=hidden, heads=heads,
                               kv_heads=kv_heads, ffn=ffn)
    from workbench.core.lm.hf_folder import check_memory

    check_memory("zoo:tiny_llama", config)  # sizes are options: refuse a model this machine cannot hold, unbuilt
    hf_model = transformers.LlamaForCausalLM(config).float()
    return CausalLM(hf_model, None, {"kind": LM_RECIPE_KIND, "source": "zoo:tiny_llama"})


tiny_llama.input_kinds = ("tokens",)  # type: ignore[attr-defined]


def save_language_model(model: CausalLM, folder: Path) -> str:
    """Write a language-model variant into ``folder`` as a Hugging Face folder + recipe.json; returns the format."""
    from workbench.core.workspace.atomic import atomic_write_text

    quiet_transformers()
    folder = Path(folder)
    hf_model = model.hf
    hf_model.save_pretrained(str(folder), safe_serialization=True)
    if model.tokenizer is not None:
        model.tokenizer.save(folder)
    recipe = dict(recipe_of(model) or {})
    if recipe.get("kind") != LM_RECIPE_KIND:  # built by the zoo: keep how, for the record
        recipe = {"kind": LM_RECIPE_KIND, "source": f"zoo:{recipe.get('name', '')}", "origin": recipe}
    recipe["architecture"] = type(hf_model).__name__
    atomic_write_text(folder / "recipe.json", json.dumps({"recipe": recipe, "shapes": {}}, indent=1))
    return "safetensors"


def load_language_model(folder: Path, recipe: dict[str, Any] | None = None) -> CausalLM:
    """A language-model variant folder back as a CausalLM, tokenizer included, on the CPU in eval mode."""
    from workbench.core.lm.hf_folder import load_hf_causal_lm
    from workbench.core.lm.tokenizer import TextTokenizer, has_tokenizer

    folder = Path(folder)
    hf_model = load_hf_causal_lm(folder, trust=False)
    tokenizer = TextTokenizer.load(folder) if has_tokenizer(folder) else None
    if recipe is None and (folder / "recipe.json").is_file():
        try:
            recipe = json.loads((folder / "recipe.json").read_text()).get("recipe")
        except ValueError:
            recipe = None
    return CausalLM(hf_model, tokenizer, recipe).eval()


def open_hf_folder(folder: Path, *, trust: bool = False, info: Any = None) -> nn.Module:
    """``--model DIR`` / ``hf:DIR``: a CausalLM with the dataset's tokenizer, checked against the dataset."""
    from workbench.core.lm.hf_folder import attach_dataset_tokenizer, load_hf_causal_lm
    from workbench.core.lm.tokenizer import TextTokenizer, has_tokenizer

    folder = Path(folder).expanduser()
    if info is not None and getattr(info, "task", "classification") != "causal_lm":
        raise InputError(f"{folder} is a language model: it needs a text corpus dataset (text:FILE or pydocs), "
                         f"not {info.spec!r}")
    hf_model = load_hf_causal_lm(folder, trust=trust)
    own = TextTokenizer.load(folder, trust=trust) if has_tokenizer(folder) else None
    model = CausalLM(hf_model, own, {"source": str(folder), "architecture": type(hf_model).__name__})
    if info is not None:
        attach_dataset_tokenizer(model, info, what=str(folder))
    return model
