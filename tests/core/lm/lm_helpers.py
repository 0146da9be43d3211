"""Helpers of the language-model tests: a generated corpus and small Hugging Face folders of each family."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = ("the model reads a token and predicts the next one while the loss falls slowly as training goes on "
         "each layer mixes the sequence with attention then a small network transforms every position").split()


def make_corpus(path: Path, lines: int = 600, seed: int = 0) -> Path:
    """A plain-text corpus with structure to learn (sentences from a small vocabulary), and some non-ASCII."""
    rng = random.Random(seed)
    rows = []
    for i in range(lines):
        n = rng.randint(5, 14)
        rows.append(" ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + (". Ünïcode ✓" if i % 50 == 0 else "."))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def small_config(arch: str, vocab: int):
    """A tiny config of each family (2 layers, hidden 64), pad token inside the vocabulary (Phi-3's default is not)."""
    from transformers import AutoConfig

    if arch == "gpt2":
        return AutoConfig.for_model("gpt2", vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=256)
    if arch == "gpt_neox":
        return AutoConfig.for_model("gpt_neox", vocab_size=vocab, hidden_size=64, intermediate_size=128,
                                    num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256)
    return AutoConfig.for_model(arch, vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                pad_token_id=0)


def write_hf_folder(folder: Path, corpus: Path, arch: str = "llama", vocab: int = 400) -> Path:
    """What save_pretrained leaves: config.json, model.safetensors, and a tokenizer trained on ``corpus``."""
    import torch
    from transformers import AutoModelForCausalLM

    from workbench.core.lm.tokenizer import TextTokenizer

    tok = TextTokenizer.train_bpe(corpus.read_text(encoding="utf-8"), vocab)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(small_config(arch, tok.vocab_size))
    model.save_pretrained(folder, safe_serialization=True)
    tok.save(folder)
    return folder
