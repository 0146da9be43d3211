"""Synthetic, learnable datasets for tests and quick demos (image, tabular or text), fixed by a seed.

Each class gets its own mean pattern (or token preferences), so a model can learn them; noise keeps
it from being trivial. Nothing is downloaded or read from disk.
"""

from __future__ import annotations

import numpy as np
import torch

from workbench.core.data.bundle import DataBundle, make_bundle
from workbench.core.data.specs import Options, no_path
from workbench.core.errors import InputError

KINDS = ("image", "tabular", "text")
ALLOWED = {"kind", "n", "classes", "shape", "features", "seq_len", "vocab", "seed"}


def load_synthetic(
    spec: str, path: str | None, options: dict[str, str], *, seed: int, batch_size: int, download: bool
) -> DataBundle:
    """``synthetic[:kind=image|tabular|text,n=512,classes=4,shape=1x16x16,features=16,seq_len=32,vocab=100,seed=0]``."""
    no_path(spec, "synthetic", path)
    opts = Options(spec, "synthetic", options, ALLOWED)
    kind = opts.get_str("kind", "image").lower()
    if kind not in KINDS:
        raise InputError(
            f"bad dataset spec {spec!r}: synthetic kind must be one of {', '.join(KINDS)}, got {kind!r}"
        )
    n = opts.get_int("n", 512, minimum=3, maximum=10_000_000)
    classes = opts.get_int("classes", 4, minimum=2, maximum=10_000)
    data_seed = opts.get_int("seed", 0)
    rng = np.random.default_rng(data_seed)
    y = rng.permutation(np.arange(n) % classes).astype(np.int64)
    names = [f"class_{i}" for i in range(classes)]
    vocab_size = None
    if kind == "image":
        shape = opts.get_shape("shape", (1, 16, 16))
        protos = rng.uniform(0.0, 1.0, size=(classes, *shape)).astype(np.float32)
        noise = rng.normal(0.0, 0.35, size=(n, *shape)).astype(np.float32)
        x = torch.from_numpy(np.clip(protos[y] + noise, 0.0, 1.0).astype(np.float32))
    elif kind == "tabular":
        features = opts.get_int("features", 16, minimum=1, maximum=100_000)
        protos = rng.normal(0.0, 1.0, size=(classes, features)).astype(np.float32)
        x = torch.from_numpy((protos[y] + rng.normal(0.0, 1.0, size=(n, features))).astype(np.float32))
    else:
        seq_len = opts.get_int("seq_len", 32, minimum=1, maximum=100_000)
        vocab_size = opts.get_int("vocab", 100, minimum=4, maximum=10_000_000)
        x = torch.from_numpy(_text(rng, y, classes, seq_len, vocab_size))
    return make_bundle(
        spec, kind, x, torch.from_numpy(y), names, vocab_size=vocab_size, batch_size=batch_size, seed=seed
    )


def _text(rng: np.random.Generator, y: np.ndarray, classes: int, seq_len: int, vocab: int) -> np.ndarray:
    """Token ids in 2..vocab-1: half drawn from a class-specific subset, half uniform; 0-padded tails."""
    n = len(y)
    real = np.arange(2, vocab)
    per_class = max(1, len(real) // (2 * classes))
    favourites = np.stack([rng.choice(real, size=per_class, replace=False) for _ in range(classes)])
    uniform = rng.integers(2, vocab, size=(n, seq_len))
    picks = favourites[y[:, None], rng.integers(0, per_class, size=(n, seq_len))]
    ids = np.where(rng.random((n, seq_len)) < 0.5, picks, uniform).astype(np.int64)
    lengths = rng.integers(max(1, seq_len // 2), seq_len + 1, size=n)
    ids[np.arange(seq_len)[None, :] >= lengths[:, None]] = 0
    return ids
