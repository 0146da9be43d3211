"""MNIST-style IDX files, CIFAR pickle batches (including a malicious one) and the downloader."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.core.data import idx as idx_module
from workbench.core.data import load_dataset
from workbench.core.data.download import download_file, safe_extract_tar
from workbench.core.errors import InputError


def _idx_images(a: np.ndarray) -> bytes:
    return struct.pack(">IIII", 0x803, *a.shape) + a.astype(np.uint8).tobytes()


def _idx_labels(a: np.ndarray) -> bytes:
    return struct.pack(">II", 0x801, len(a)) + a.astype(np.uint8).tobytes()


def _write_mnist(root: Path, *, gz: bool, n_train: int = 50, n_test: int = 20) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte": _idx_images(rng.integers(0, 256, (n_train, 28, 28))),
        "train-labels-idx1-ubyte": _idx_labels(np.arange(n_train) % 10),
        "t10k-images-idx3-ubyte": _idx_images(np.full((n_test, 28, 28), 255)),
        "t10k-labels-idx1-ubyte": _idx_labels(np.arange(n_test) % 10),
    }
    for name, data in files.items():
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("kind", ["mnist", "fashion_mnist"])
def test_idx_loads(tmp_path, gz, kind):
    _write_mnist(tmp_path, gz=gz)
    b = load_dataset(f"{kind}:{tmp_path}", download=False)
    assert b.info.kind == "image" and b.info.input_shape == (1, 28, 28) and b.info.num_classes == 10
    assert b.info.sizes["test"] == 20 and b.info.sizes["train"] + b.info.sizes["val"] == 50
    x, y = b.tensors("test")
    assert torch.all(x == 1.0) and torch.equal(y, torch.arange(20) % 10)
    xt = b.tensors("train")[0]
    assert float(xt.min()) >= 0.0 and float(xt.max()) <= 1.0
    if kind == "fashion_mnist":
        assert b.info.class_names[9] == "Ankle boot"


def test_idx_missing_without_download(tmp_path):
    with pytest.raises(InputError, match="missing"):
        load_dataset(f"mnist:{tmp_path / 'nope'}", download=False)


def test_idx_downloads_missing_files(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    _write_mnist(mirror, gz=True)
    monkeypatch.setitem(idx_module.MIRRORS, "mnist", mirror.as_uri() + "/")
    dest = tmp_path / "data"
    b = load_dataset(f"mnist:{dest}")
    assert b.info.sizes["test"] == 20
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in mirror.iterdir())


def test_idx_download_failure_is_input_error(tmp_path, monkeypatch):
    def offline(url, dest, **kw):
        raise InputError(f"download of {url} failed: offline")

    monkeypatch.setattr("workbench.core.data.idx.download_file", offline)
    with pytest.raises(InputError, match="download failed"):
        load_dataset(f"mnist:{tmp_path}")


@pytest.mark.parametrize("damage", ["magic", "truncated", "count", "empty", "badgz"])
def test_idx_corrupt(tmp_path, damage):
    _write_mnist(tmp_path, gz=False)
    target = tmp_path / "train-images-idx3-ubyte"
    data = target.read_bytes()
    if damage == "magic":
        target.write_bytes(struct.pack(">I", 0x802) + data[4:])
    elif damage == "truncated":
        target.write_bytes(data[:-7])
    elif damage == "count":
        (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_labels(np.zeros(49)))
    elif damage == "empty":
        target.write_bytes(b"")
    else:
        target.unlink()
        (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(InputError):
        load_dataset(f"mnist:{tmp_path}", download=False)


def _cifar_batch(n: int, label_offset: int = 0) -> dict:
    rng = np.random.default_rng(n)
    return {
        b"batch_label": b"batch",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"labels": [(i + label_offset) % 10 for i in range(n)],
    }


def _write_cifar(root: Path, protocol: int = 4) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        (root / f"data_batch_{i}").write_bytes(pickle.dumps(_cifar_batch(20, i), protocol=protocol))
    (root / "test_batch").write_bytes(pickle.dumps(_cifar_batch(30), protocol=protocol))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_loads(tmp_path, protocol):
    _write_cifar(tmp_path / "cifar-10-batches-py", protocol)
    meta = {b"label_names": [f"c{i}".encode() for i in range(10)]}
    (tmp_path / "cifar-10-batches-py" / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    b = load_dataset(f"cifar10:{tmp_path}", download=False)
    assert b.info.input_shape == (3, 32, 32) and b.info.num_classes == 10
    assert b.info.class_names == tuple(f"c{i}" for i in range(10))
    assert b.info.sizes["test"] == 30 and b.info.sizes["train"] + b.info.sizes["val"] == 100
    raw = _cifar_batch(30)[b"data"].reshape(30, 3, 32, 32)
    assert torch.allclose(b.tensors("test")[0], torch.from_numpy(raw).float() / 255)


def test_cifar_in_dir_directly(tmp_path):
    _write_cifar(tmp_path)
    b = load_dataset(f"cifar10:{tmp_path}", download=False)
    assert b.info.class_names[0] == "airplane"


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_malicious_pickle_is_refused(tmp_path):
    _write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    evil = _cifar_batch(20)
    evil[b"labels"] = _Evil(marker)
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(evil))
    with pytest.raises(InputError, match="unsafe"):
        load_dataset(f"cifar10:{tmp_path}", download=False)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["garbage", "shape", "labels"])
def test_cifar_corrupt(tmp_path, damage):
    _write_cifar(tmp_path)
    bad = _cifar_batch(20)
    if damage == "garbage":
        (tmp_path / "test_batch").write_bytes(b"\x80\x04not a pickle")
    else:
        if damage == "shape":
            bad[b"data"] = np.zeros((20, 100), dtype=np.uint8)
        else:
            bad[b"labels"] = [0] * 19
        (tmp_path / "test_batch").write_bytes(pickle.dumps(bad))
    with pytest.raises(InputError):
        load_dataset(f"cifar10:{tmp_path}", download=False)


def test_cifar_missing_without_download(tmp_path):
    with pytest.raises(InputError):
        load_dataset(f"cifar10:{tmp_path}", download=False)


def test_download_file_url(tmp_path):
    src = tmp_path / "src.bin"
    payload = os.urandom(200_000)
    src.write_bytes(payload)
    dest = tmp_path / "out" / "copy.bin"
    assert download_file(src.as_uri(), dest) == dest
    assert dest.read_bytes() == payload
    assert sorted(p.name for p in dest.parent.iterdir()) == ["copy.bin"]


def test_download_file_failure_leaves_nothing(tmp_path):
    dest = tmp_path / "copy.bin"
    with pytest.raises(InputError, match="download"):
        download_file((tmp_path / "missing.bin").as_uri(), dest)
    assert list(tmp_path.iterdir()) == []


def test_safe_extract_rejects_traversal(tmp_path):
    evil = tmp_path / "evil.txt"
    evil.write_text("x")
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(evil, arcname="../escape.txt")
    out = tmp_path / "out"
    with pytest.raises(InputError, match="unsafe"):
        safe_extract_tar(archive, out)
    assert not (tmp_path / "escape.txt").exists()
