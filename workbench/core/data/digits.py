"""The default dataset: scikit-learn's bundled 8x8 handwritten digits (1,797 real images, no download).

Small enough to train in seconds on a CPU, real enough that pruning/quantization effects are visible.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from workbench.core.data.bundle import DataBundle, bundle_from_splits, split_indices
from workbench.core.data.specs import Options, no_path
from workbench.core.errors import InputError

SIZES = (8, 28)
CLASS_NAMES = tuple(str(i) for i in range(10))


@lru_cache(maxsize=len(SIZES))
def _digits_splits(size: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Load, scale (0..16 -> 0..1), resize and split once per size; later loads reuse the tensors."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = torch.from_numpy(np.asarray(raw.images, dtype=np.float32) / 16.0).unsqueeze(1)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    x = x.contiguous()
    y = torch.from_numpy(np.asarray(raw.target, dtype=np.int64))
    parts = split_indices(y.numpy())
    return {name: (x[torch.from_numpy(ix)], y[torch.from_numpy(ix)]) for name, ix in parts.items()}


def load_digits_dataset(
    spec: str, path: str | None, options: dict[str, str], *, seed: int, batch_size: int, download: bool
) -> DataBundle:
    """``digits[:size=8|28]``: 1x28x28 by default (upsampled bilinearly), 1x8x8 with size=8."""
    no_path(spec, "digits", path)
    opts = Options(spec, "digits", options, {"size"})
    size = opts.get_int("size", 28)
    if size not in SIZES:
        raise InputError(f"bad dataset spec {spec!r}: digits size must be 8 or 28, got {size}")
    splits = _digits_splits(size)
    return bundle_from_splits(spec, "image", splits, CLASS_NAMES, batch_size=batch_size, seed=seed)
