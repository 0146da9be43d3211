"""Synthetic data: shapes per kind, determinism, and that a simple model can learn it."""

from __future__ import annotations

import torch
from sklearn.linear_model import LogisticRegression

from workbench.core.data import load_dataset


def test_synthetic_image_defaults():
    b = load_dataset("synthetic")
    info = b.info
    assert info.kind == "image" and info.input_shape == (1, 16, 16) and info.num_classes == 4
    assert sum(info.sizes.values()) == 512 and info.sizes["test"] == 103
    for split in ("train", "val", "test"):
        assert set(b.tensors(split)[1].tolist()) == {0, 1, 2, 3}


def test_synthetic_options_and_kinds():
    b = load_dataset("synthetic:kind=image,n=100,classes=3,shape=3x8x8")
    assert b.info.input_shape == (3, 8, 8) and b.info.num_classes == 3 and sum(b.info.sizes.values()) == 100
    t = load_dataset("synthetic:kind=tabular,features=5")
    assert t.info.kind == "tabular" and t.info.input_shape == (5,) and t.info.input_dtype == "float32"
    s = load_dataset("synthetic:kind=text,seq_len=12,vocab=50")
    assert s.info.kind == "text" and s.info.input_shape == (12,) and s.info.input_dtype == "int64"
    assert s.info.vocab_size == 50
    x = s.tensors("train")[0]
    assert x.dtype == torch.int64 and int(x.min()) >= 0 and int(x.max()) < 50


def test_synthetic_is_deterministic_per_seed():
    a = load_dataset("synthetic:seed=3")
    b = load_dataset("synthetic:seed=3")
    c = load_dataset("synthetic:seed=4")
    assert torch.equal(a.tensors("train")[0], b.tensors("train")[0])
    assert not torch.equal(a.tensors("train")[0], c.tensors("train")[0])


def _accuracy(spec: str) -> float:
    b = load_dataset(spec)
    xtr, ytr = b.tensors("train")
    xte, yte = b.tensors("test")
    if xtr.dtype == torch.int64:  # bag of words for text
        vocab = b.info.vocab_size
        xtr = torch.stack([torch.bincount(r, minlength=vocab) for r in xtr]).float()
        xte = torch.stack([torch.bincount(r, minlength=vocab) for r in xte]).float()
    clf = LogisticRegression(max_iter=500).fit(xtr.flatten(1).numpy(), ytr.numpy())
    return float(clf.score(xte.flatten(1).numpy(), yte.numpy()))


def test_synthetic_is_learnable():
    assert _accuracy("synthetic") > 0.8  # chance is 0.25
    assert _accuracy("synthetic:kind=tabular") > 0.8
    assert _accuracy("synthetic:kind=text") > 0.8
