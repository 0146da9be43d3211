"""Spec parsing, the default digits dataset and the DataBundle loaders."""

from __future__ import annotations

import time

import pytest
import torch

from workbench.core.data import DataBundle, DatasetInfo, list_datasets, load_dataset, parse_spec
from workbench.core.errors import InputError


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("digits", ("digits", None, {})),
        ("digits:size=8", ("digits", None, {"size": "8"})),
        ("csv:data/x.csv", ("csv", "data/x.csv", {})),
        ("csv:/tmp/a=b.csv", ("csv", "/tmp/a=b.csv", {})),
        ("folder:imgs:size=32,skip_bad=true", ("folder", "imgs", {"size": "32", "skip_bad": "true"})),
        ("synthetic:n=100,kind=text", ("synthetic", None, {"n": "100", "kind": "text"})),
        ("csv:C:\\data\\x.csv", ("csv", "C:\\data\\x.csv", {})),
    ],
)
def test_parse_spec(spec, expected):
    assert parse_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", "  ", "9bad", "digits:size=8,size=28"])
def test_parse_spec_rejects(spec):
    with pytest.raises(InputError):
        parse_spec(spec)


def test_list_datasets_names_every_kind():
    patterns = [p for p, _ in list_datasets()]
    for kind in ("digits", "synthetic", "mnist", "fashion_mnist", "cifar10", "folder", "csv", "text_csv"):
        assert any(p.split(":")[0].split("[")[0] == kind for p in patterns)
    assert all(isinstance(d, str) and d for _, d in list_datasets())


@pytest.mark.parametrize(
    "spec",
    [
        "nosuch",
        "digits:size=12",
        "digits:size=abc",
        "digits:colour=red",
        "digits:somepath",
        "synthetic:kind=audio",
        "synthetic:n=1",
        "synthetic:shape=16x16",
        "csv",
        "mnist",
    ],
)
def test_bad_specs_raise_input_error(spec):
    with pytest.raises(InputError):
        load_dataset(spec)


def test_bad_batch_size():
    with pytest.raises(InputError):
        load_dataset("digits", batch_size=0)


def test_digits_default_shapes_and_sizes():
    b = load_dataset("digits")
    assert isinstance(b, DataBundle)
    info = b.info
    assert isinstance(info, DatasetInfo)
    assert (info.spec, info.kind, info.input_shape) == ("digits", "image", (1, 28, 28))
    assert info.num_classes == 10 and info.class_names == tuple(str(i) for i in range(10))
    assert info.input_dtype == "float32" and info.vocab_size is None
    assert info.sizes == {"train": 1293, "val": 144, "test": 360}
    assert info.sizes["train"] + info.sizes["val"] == 1437
    for split in ("train", "val", "test"):
        x, y = b.tensors(split)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape == (info.sizes[split], 1, 28, 28)
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert set(y.tolist()) == set(range(10)), f"{split} misses a class"


def test_digits_size8_is_raw_scaled_pixels():
    b = load_dataset("digits:size=8")
    x, _ = b.tensors("train")
    assert x.shape[1:] == (1, 8, 8) and b.info.input_shape == (1, 8, 8)
    assert float(x.max()) == 1.0 and float(x.min()) == 0.0
    # pixels are k/16 exactly
    assert torch.allclose(x * 16, torch.round(x * 16))


def test_digits_test_split_is_stratified_and_independent_of_seed():
    a = load_dataset("digits", seed=0)
    b = load_dataset("digits", seed=123)
    for split in ("train", "val", "test"):
        assert torch.equal(a.tensors(split)[0], b.tensors(split)[0])
        assert torch.equal(a.tensors(split)[1], b.tensors(split)[1])
    counts = torch.bincount(a.tensors("test")[1], minlength=10)
    assert int(counts.min()) >= 34 and int(counts.max()) <= 38  # ~20% of ~180 per class


def test_digits_is_fast_when_cached():
    load_dataset("digits")
    start = time.perf_counter()
    load_dataset("digits")
    load_dataset("digits:size=8")
    assert time.perf_counter() - start < 0.5


def test_loader_shuffles_deterministically():
    b = load_dataset("digits:size=8", batch_size=32)
    assert b.batch_size == 32

    def labels(loader):
        return torch.cat([y for _, y in loader])

    first = labels(b.loader("train", seed=7))
    again = labels(b.loader("train", seed=7))
    other = labels(b.loader("train", seed=8))
    unshuffled = b.tensors("train")[1]
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first, unshuffled)
    assert torch.equal(torch.sort(first).values, torch.sort(unshuffled).values)
    # val/test are not shuffled by default
    assert torch.equal(labels(b.test), b.tensors("test")[1])
    assert torch.equal(labels(b.val), b.tensors("val")[1])
    assert torch.equal(labels(b.train), labels(load_dataset("digits:size=8", batch_size=32).train))


def test_loader_options_and_copies():
    b = load_dataset("digits:size=8")
    xb, yb = next(iter(b.test))
    assert xb.shape == (64, 1, 8, 8) and yb.shape == (64,)
    loader = b.loader("train", batch_size=100, drop_last=True)
    assert all(len(y) == 100 for _, y in loader)
    assert len(loader) == 1293 // 100
    small = b.with_batch_size(16)
    assert small.batch_size == 16 and b.batch_size == 64
    assert small.tensors("train")[0] is b.tensors("train")[0]
    assert next(iter(small.val))[0].shape[0] == 16
    ex = b.example_batch(10)
    assert torch.equal(ex, b.tensors("test")[0][:10])
    assert b.example_batch(10_000).shape[0] == 360
    sampler = torch.utils.data.SequentialSampler(range(5))
    assert sum(len(y) for _, y in b.loader("train", sampler=sampler)) == 5
    with pytest.raises(InputError):
        b.tensors("holdout")
    with pytest.raises(InputError):
        b.encode(["hello"])
