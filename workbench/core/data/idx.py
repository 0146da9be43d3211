"""MNIST and Fashion-MNIST from the standard IDX files (raw or .gz), downloaded when missing.

The IDX header is validated (magic number, dimensions, data length) so that a truncated or wrong file
is reported as such instead of surfacing later as a shape error in training.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from workbench.core.data.bundle import DataBundle, make_bundle
from workbench.core.data.download import download_file
from workbench.core.data.specs import Options, need_path
from workbench.core.errors import InputError

FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
MIRRORS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}
CLASS_NAMES = {
    "mnist": tuple(str(i) for i in range(10)),
    "fashion_mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
}
IMAGE_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Read one IDX file (gzip-compressed if it ends in .gz) into a uint8 array, validating it fully."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4:
        raise InputError(f"corrupt IDX file {path}: only {len(raw)} bytes, no header")
    (magic,) = struct.unpack(">I", raw[:4])
    if magic != expected_magic:
        raise InputError(
            f"corrupt IDX file {path}: magic number 0x{magic:08x}, expected 0x{expected_magic:08x}"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputError(f"corrupt IDX file {path}: truncated header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        raise InputError(
            f"corrupt IDX file {path}: {len(raw) - header} data bytes, expected {expected} for shape {dims}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(root: Path, base: str) -> Path | None:
    for candidate in (root / base, root / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _ensure_files(name: str, root: Path, download: bool) -> dict[str, Path]:
    found = {key: _find(root, base) for key, base in FILES.items()}
    missing = [FILES[k] for k, p in found.items() if p is None]
    if not missing:
        return found  # type: ignore[return-value]
    if not download:
        raise InputError(f"{name}: missing files in {root}: {', '.join(missing)} (download disabled)")
    for base in missing:
        try:
            download_file(MIRRORS[name] + base + ".gz", root / f"{base}.gz")
        except InputError as exc:
            raise InputError(f"{name}: files missing in {root} and the download failed: {exc}") from None
    return {key: _find(root, base) for key, base in FILES.items()}  # type: ignore[misc]


def load_idx_dataset(
    spec: str,
    path: str | None,
    options: dict[str, str],
    *,
    seed: int,
    batch_size: int,
    download: bool,
    name: str,
) -> DataBundle:
    """``mnist:DIR`` / ``fashion_mnist:DIR``: the official test split is kept, val comes from train."""
    root = Path(need_path(spec, name, path)).expanduser()
    Options(spec, name, options, set())
    if root.exists() and not root.is_dir():
        raise InputError(f"{name}: {root} is not a directory")
    files = _ensure_files(name, root, download)
    arrays = {}
    for key, file in files.items():
        arrays[key] = read_idx(file, IMAGE_MAGIC if key.endswith("_x") else LABEL_MAGIC)
    for part in ("train", "test"):
        nx, ny = len(arrays[f"{part}_x"]), len(arrays[f"{part}_y"])
        if nx != ny:
            raise InputError(f"{name}: {part} has {nx} images but {ny} labels in {root}")
        if ny and int(arrays[f"{part}_y"].max()) >= 10:
            raise InputError(f"{name}: {part} labels in {root} contain a class >= 10")
    if arrays["train_x"].shape[1:] != arrays["test_x"].shape[1:]:
        raise InputError(f"{name}: train and test images in {root} differ in size")

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    test = (images(arrays["test_x"]), labels(arrays["test_y"]))
    return make_bundle(
        spec,
        "image",
        images(arrays["train_x"]),
        labels(arrays["train_y"]),
        CLASS_NAMES[name],
        test=test,
        batch_size=batch_size,
        seed=seed,
    )
