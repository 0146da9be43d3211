"""CIFAR-10 from its python pickle batches, read with a restricted unpickler.

Pickle can run arbitrary code, and dataset folders come from anywhere, so only the few callables that
rebuild numpy arrays are allowed; anything else in the file is refused as corrupt input.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from workbench.core.data.bundle import DataBundle, make_bundle
from workbench.core.data.download import download_file, safe_extract_tar
from workbench.core.data.specs import Options, need_path
from workbench.core.errors import InputError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
SUBDIR = "cifar-10-batches-py"
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    ("builtins", "bytearray"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild numpy arrays, dtypes and plain Python containers."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
        if module.startswith("numpy.core"):  # numpy 2 renamed numpy.core to numpy._core
            try:
                return super().find_class(module.replace("numpy.core", "numpy._core", 1), name)
            except (ImportError, AttributeError):
                pass
        return super().find_class(module, name)


def load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR batch file into (N, 3, 32, 32) uint8 images and (N,) int64 labels."""
    try:
        data = _RestrictedUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (
        pickle.UnpicklingError,
        OSError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        ImportError,
        IndexError,
        KeyError,
        MemoryError,
    ) as exc:
        raise InputError(f"corrupt or unsafe CIFAR batch {path}: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"corrupt CIFAR batch {path}: expected a dict, got {type(data).__name__}")
    data = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in data.items()}
    images, labels = data.get("data"), data.get("labels", data.get("fine_labels"))
    if not isinstance(images, np.ndarray) or images.ndim != 2 or images.shape[1] != 3072:
        raise InputError(f"corrupt CIFAR batch {path}: 'data' must be an N x 3072 array")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"corrupt CIFAR batch {path}: 'labels' is not a list of integers") from None
    if len(labels) != len(images):
        raise InputError(f"corrupt CIFAR batch {path}: {len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= 10):
        raise InputError(f"corrupt CIFAR batch {path}: labels outside 0..9")
    if images.dtype != np.uint8:
        if images.min() < 0 or images.max() > 255:
            raise InputError(f"corrupt CIFAR batch {path}: pixel values outside 0..255")
        images = images.astype(np.uint8)
    return images.reshape(-1, 3, 32, 32), labels


def _class_names(folder: Path) -> tuple[str, ...]:
    """Class names from batches.meta when present and sane; the standard names otherwise."""
    meta = folder / "batches.meta"
    if not meta.is_file():
        return CLASS_NAMES
    try:
        data = _RestrictedUnpickler(io.BytesIO(meta.read_bytes()), encoding="bytes").load()
        names = data.get(b"label_names", data.get("label_names"))
        names = tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)
    except Exception as exc:  # noqa: BLE001 - any failure in an untrusted file is corrupt input
        raise InputError(f"corrupt or unsafe CIFAR metadata {meta}: {exc}") from None
    if len(names) != 10:
        raise InputError(f"corrupt CIFAR metadata {meta}: expected 10 label names, got {len(names)}")
    return names


def _locate(root: Path) -> Path | None:
    for candidate in (root, root / SUBDIR):
        if (candidate / "test_batch").is_file() and (candidate / "data_batch_1").is_file():
            return candidate
    return None


def load_cifar10(
    spec: str, path: str | None, options: dict[str, str], *, seed: int, batch_size: int, download: bool
) -> DataBundle:
    """``cifar10:DIR``: data_batch_1..5 and test_batch in DIR or DIR/cifar-10-batches-py."""
    root = Path(need_path(spec, "cifar10", path)).expanduser()
    Options(spec, "cifar10", options, set())
    if root.exists() and not root.is_dir():
        raise InputError(f"cifar10: {root} is not a directory")
    folder = _locate(root)
    if folder is None:
        if not download:
            raise InputError(
                f"cifar10: no data_batch_1/test_batch in {root} or {root / SUBDIR} (download disabled)"
            )
        archive = root / "cifar-10-python.tar.gz"
        try:
            if not archive.is_file():
                download_file(URL, archive)
            safe_extract_tar(archive, root)
        except InputError as exc:
            raise InputError(f"cifar10: files missing in {root} and the download failed: {exc}") from None
        folder = _locate(root)
        if folder is None:
            raise InputError(f"cifar10: the downloaded archive did not contain {SUBDIR}/test_batch")
    train_files = sorted(folder.glob("data_batch_[0-9]*"), key=lambda p: p.name)
    parts = [load_batch(p) for p in train_files]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = load_batch(folder / "test_batch")

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32) / 255.0)

    return make_bundle(
        spec,
        "image",
        images(train_x),
        torch.from_numpy(train_y),
        _class_names(folder),
        test=(images(test_x), torch.from_numpy(test_y)),
        batch_size=batch_size,
        seed=seed,
    )
