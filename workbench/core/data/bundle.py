"""The in-memory dataset container (DataBundle), its metadata (DatasetInfo) and the shared split logic.

Every dataset kind ends up as three (x, y) tensor pairs; keeping them in memory makes loaders cheap,
deterministic and free of worker processes, which suits the small datasets the workbench optimizes on.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from workbench.core.errors import InputError

SPLITS = ("train", "val", "test")
TEST_FRACTION = 0.2
VAL_FRACTION = 0.1
SPLIT_RANDOM_STATE = 0  # fixed, so the test set never depends on --seed
TOKEN_RE = re.compile(r"\w+|[^\w\s]")
PAD_ID = 0
UNK_ID = 1


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset: input shape/dtype, classes and split sizes."""

    spec: str
    kind: str
    input_shape: tuple[int, ...]
    num_classes: int
    class_names: tuple[str, ...]
    input_dtype: str
    vocab_size: int | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    task: str = "classification"  # the name of a workbench.core.tasks Task: "classification", "causal_lm", ...
    tokenizer: str | None = None  # a language-model corpus: the folder its tokenizer is saved in


def tokenize(text: str) -> list[str]:
    """Lowercase and split into word and punctuation tokens (the text datasets' only tokenizer)."""
    return TOKEN_RE.findall(text.lower())


class DataBundle:
    """A dataset held as train/val/test tensors, with deterministic loaders over them."""

    def __init__(
        self,
        info: DatasetInfo,
        splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
        *,
        batch_size: int = 64,
        seed: int = 0,
        vocab: dict[str, int] | None = None,
    ) -> None:
        missing = [s for s in SPLITS if s not in splits]
        if missing:
            raise ValueError(f"DataBundle needs splits {SPLITS}, missing {missing}")
        self.info = info
        self._splits = dict(splits)
        self.batch_size = _check_batch_size(batch_size)
        self.seed = seed
        self.vocab = vocab

    def __repr__(self) -> str:
        return f"DataBundle({self.info.spec!r}, sizes={self.info.sizes}, batch_size={self.batch_size})"

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the (x, y) tensors of ``split`` ("train", "val" or "test"); shared, do not modify."""
        if split not in self._splits:
            raise InputError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
        return self._splits[split]

    def loader(
        self,
        split: str,
        batch_size: int | None = None,
        shuffle: bool | None = None,
        seed: int = 0,
        sampler=None,
        drop_last: bool = False,
    ) -> DataLoader:
        """A DataLoader over ``split``; shuffled (train only, by default) in an order fixed by ``seed``."""
        x, y = self.tensors(split)
        bs = self.batch_size if batch_size is None else _check_batch_size(batch_size)
        if shuffle is None:
            shuffle = split == "train" and sampler is None
        if shuffle and sampler is not None:
            raise InputError("loader: pass either shuffle=True or a sampler, not both")
        generator = None
        if shuffle:
            generator = torch.Generator()
            generator.manual_seed(int(seed))
        return DataLoader(
            TensorDataset(x, y),
            batch_size=bs,
            shuffle=bool(shuffle),
            sampler=sampler,
            drop_last=drop_last,
            num_workers=0,
            generator=generator,
        )

    @property
    def train(self) -> DataLoader:
        """Shuffled training loader, seeded with the bundle's seed (``load_dataset(seed=...)``)."""
        return self.loader("train", seed=self.seed)

    @property
    def val(self) -> DataLoader:
        """Validation loader, in order."""
        return self.loader("val")

    @property
    def test(self) -> DataLoader:
        """Test loader, in order."""
        return self.loader("test")

    def example_batch(self, n: int = 64, split: str = "test") -> torch.Tensor:
        """The first ``n`` inputs of ``split``: a fixed batch for tracing, export and benchmarks."""
        if n < 1:
            raise InputError(f"example_batch: n must be >= 1, got {n}")
        return self.tensors(split)[0][:n]

    def with_batch_size(self, batch_size: int) -> DataBundle:
        """A shallow copy with another default batch size; the tensors are shared, not copied."""
        other = copy.copy(self)
        other.batch_size = _check_batch_size(batch_size)
        return other

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Encode new texts with this (text) dataset's vocabulary into padded int64 ids (N, seq_len)."""
        if self.vocab is None:
            raise InputError(
                f"dataset {self.info.spec!r} has no vocabulary: encode() needs a text_csv dataset"
            )
        return encode_texts(texts, self.vocab, self.info.input_shape[0])


def encode_texts(texts: Sequence[str], vocab: dict[str, int], seq_len: int) -> torch.Tensor:
    """Map texts to ids (unknown -> 1), truncated or right-padded with 0 to ``seq_len``."""
    out = np.zeros((len(texts), seq_len), dtype=np.int64)
    for i, text in enumerate(texts):
        ids = [vocab.get(tok, UNK_ID) for tok in tokenize(text)[:seq_len]]
        out[i, : len(ids)] = ids
    return torch.from_numpy(out)


def _check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch size must be a positive integer, got {batch_size!r}")
    return batch_size


def _split(indices: np.ndarray, labels: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of ``indices`` with a fixed random state; falls back to unstratified for tiny data."""
    from sklearn.model_selection import train_test_split

    try:
        keep, held = train_test_split(
            indices, test_size=fraction, random_state=SPLIT_RANDOM_STATE, stratify=labels
        )
    except ValueError:  # a class with a single sample, or fewer held-out samples than classes
        keep, held = train_test_split(indices, test_size=fraction, random_state=SPLIT_RANDOM_STATE)
    return np.sort(keep), np.sort(held)


def split_indices(y: np.ndarray, *, with_test: bool = True) -> dict[str, np.ndarray]:
    """Indices of train/val(/test): test = stratified 20%, val = stratified 10% of the rest."""
    y = np.asarray(y)
    n = len(y)
    if n < (3 if with_test else 2):
        raise InputError(f"dataset has only {n} samples: too few to split into train/val/test")
    idx = np.arange(n)
    out: dict[str, np.ndarray] = {}
    if with_test:
        idx, out["test"] = _split(idx, y, TEST_FRACTION)
    out["train"], out["val"] = _split(idx, y[idx], VAL_FRACTION)
    return out


def make_bundle(
    spec: str,
    kind: str,
    x: torch.Tensor,
    y: torch.Tensor,
    class_names: Sequence[str],
    *,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    vocab_size: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    vocab: dict[str, int] | None = None,
) -> DataBundle:
    """Split (x, y) (keeping a given ``test`` pair if the dataset has its own) and wrap it in a DataBundle."""
    parts = split_indices(y.numpy(), with_test=test is None)
    splits = {name: (x[torch.from_numpy(ix)], y[torch.from_numpy(ix)]) for name, ix in parts.items()}
    if test is not None:
        splits["test"] = test
    return bundle_from_splits(
        spec, kind, splits, class_names, vocab_size=vocab_size, batch_size=batch_size, seed=seed, vocab=vocab
    )


def bundle_from_splits(
    spec: str,
    kind: str,
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
    class_names: Sequence[str],
    *,
    vocab_size: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    vocab: dict[str, int] | None = None,
) -> DataBundle:
    """Build the DatasetInfo from already split tensors and return the bundle."""
    x0 = splits["train"][0]
    info = DatasetInfo(
        spec=spec,
        kind=kind,
        input_shape=tuple(int(d) for d in x0.shape[1:]),
        num_classes=len(class_names),
        class_names=tuple(str(c) for c in class_names),
        input_dtype=str(x0.dtype).removeprefix("torch."),
        vocab_size=vocab_size,
        sizes={name: int(splits[name][0].shape[0]) for name in SPLITS},
    )
    return DataBundle(info, splits, batch_size=batch_size, seed=seed, vocab=vocab)


def label_mapping(labels: Sequence[str]) -> tuple[list[str], dict[str, int]]:
    """Sorted class names (numerically if all labels are integers) and the label -> index map."""
    unique = set(labels)
    try:
        names = sorted(unique, key=lambda s: (int(s), s))
    except ValueError:
        names = sorted(unique)
    return names, {name: i for i, name in enumerate(names)}
