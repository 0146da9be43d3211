"""The dataset layer: turn a spec string such as ``digits`` or ``csv:data.csv`` into in-memory tensors.

Qt-free. Every failure the user can cause (bad spec, missing or corrupt file) is an ``InputError`` with
one line that says what and where, so the CLI and the app can show it without a traceback.
"""

from __future__ import annotations

import functools
import importlib

from workbench.core.data.bundle import DataBundle, DatasetInfo
from workbench.core.data.specs import parse_spec
from workbench.core.errors import InputError

__all__ = ["DataBundle", "DatasetInfo", "dataset_task", "list_datasets", "load_dataset", "parse_spec"]

DEFAULT_DATASET = "digits"

# kind -> (module, function, extra keyword arguments); modules are imported only when used.
_LOADERS: dict[str, tuple[str, str, dict[str, str]]] = {
    "digits": ("digits", "load_digits_dataset", {}),
    "synthetic": ("synthetic", "load_synthetic", {}),
    "mnist": ("idx", "load_idx_dataset", {"name": "mnist"}),
    "fashion_mnist": ("idx", "load_idx_dataset", {"name": "fashion_mnist"}),
    "cifar10": ("cifar", "load_cifar10", {}),
    "folder": ("folder", "load_folder", {}),
    "csv": ("tabular", "load_csv", {}),
    "text_csv": ("text", "load_text_csv", {}),
    "text": ("corpus", "load_text_corpus", {}),
    "pydocs": ("corpus", "load_pydocs", {}),
}

_DESCRIPTIONS: list[tuple[str, str]] = [
    ("digits[:size=8|28]", "scikit-learn's 1,797 handwritten 8x8 digits, 10 classes, no download (default)"),
    (
        "synthetic[:kind=image|tabular|text,n=512,classes=4,...]",
        "generated learnable data for tests and demos (options: shape, features, seq_len, vocab, seed)",
    ),
    ("mnist:DIR", "MNIST IDX files in DIR (raw or .gz), downloaded when missing"),
    ("fashion_mnist:DIR", "Fashion-MNIST IDX files in DIR (raw or .gz), downloaded when missing"),
    ("cifar10:DIR", "CIFAR-10 python batches in DIR or DIR/cifar-10-batches-py, downloaded when missing"),
    ("folder:DIR[:size=28,skip_bad=true]", "images in one subfolder per class (png/jpg/bmp/gif)"),
    ("csv:FILE", "tabular CSV: numeric feature columns, class label in the last column"),
    ("text_csv:FILE[:seq_len=64,vocab=20000]", "CSV with text,label columns, tokenized into word ids"),
    ("text:FILE[:seq_len=128,tokenizer=DIR,vocab=4096]",
     "a UTF-8 corpus for language models; the model's tokenizer, DIR's, or a BPE trained on it"),
    ("pydocs[:seq_len=128,vocab=4096]", "this Python's standard-library docstrings, a corpus for language models"),
]


_TASKS = {"text": "causal_lm", "pydocs": "causal_lm"}  # dataset kinds whose task is not classification


def dataset_task(spec: str) -> str:
    """The task of a dataset spec, from its kind alone (nothing is loaded): ``causal_lm`` for corpora."""
    try:
        kind = parse_spec(spec)[0]
    except InputError:
        return "classification"
    return _TASKS.get(kind, "classification")


def list_datasets() -> list[tuple[str, str]]:
    """(spec pattern, one-line description) for each dataset kind, for ``--list-datasets``."""
    return list(_DESCRIPTIONS)


def load_dataset(spec: str, *, seed: int = 0, batch_size: int = 64, download: bool = True) -> DataBundle:
    """Load ``spec`` into a DataBundle.

    ``seed`` only seeds the shuffling of the ``train`` loader: the splits are fixed (random_state=0) so
    the test set is the same whatever seed a run uses. ``download=False`` never touches the network.
    """
    kind, path, options = parse_spec(spec)
    if kind not in _LOADERS:
        known = ", ".join(sorted(_LOADERS))
        raise InputError(f"unknown dataset kind {kind!r} in spec {spec!r} (known: {known})")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch size must be a positive integer, got {batch_size!r}")
    module_name, func_name, extra = _LOADERS[kind]
    module = importlib.import_module(f"{__name__}.{module_name}")
    loader = functools.partial(getattr(module, func_name), **extra)
    return loader(spec.strip(), path, options, seed=int(seed), batch_size=batch_size, download=download)
