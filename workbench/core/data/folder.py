"""Image classification from a folder tree: one subfolder per class, images inside (via Pillow).

Lets users bring their own small image sets without writing a loader; everything is resized to one
square size and kept in memory.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from workbench.core.data.bundle import DataBundle, make_bundle
from workbench.core.data.specs import Options, need_path
from workbench.core.errors import InputError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def load_folder(
    spec: str, path: str | None, options: dict[str, str], *, seed: int, batch_size: int, download: bool
) -> DataBundle:
    """``folder:DIR[:size=28,skip_bad=false]``: grayscale if every image is, RGB otherwise."""
    from PIL import Image, UnidentifiedImageError

    root = Path(need_path(spec, "folder", path)).expanduser()
    opts = Options(spec, "folder", options, {"size", "skip_bad"})
    size = opts.get_int("size", 28, minimum=1, maximum=4096)
    skip_bad = opts.get_bool("skip_bad", False)
    if not root.is_dir():
        raise InputError(f"folder: {root} is not a directory")
    classes: list[tuple[str, list[Path]]] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in sub.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)
        if files:
            classes.append((sub.name, files))
    if len(classes) < 2:
        raise InputError(
            f"folder: {root} needs at least 2 class subfolders with images "
            f"({', '.join(sorted(EXTENSIONS))}), found {len(classes)}"
        )
    images = []
    labels: list[int] = []
    names: list[str] = []
    for name, files in classes:
        kept = 0
        for file in files:
            try:
                with Image.open(file) as im:
                    im.load()
                    img = im.copy()
            except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
                message = f"folder: cannot read image {file}: {exc}"
                if not skip_bad:
                    raise InputError(message) from None
                warnings.warn(message + " (skipped)", stacklevel=2)
                continue
            images.append(img)
            labels.append(len(names))
            kept += 1
        if kept:
            names.append(name)
        else:
            warnings.warn(f"folder: class {name!r} in {root} has no readable images (skipped)", stacklevel=2)
    if len(names) < 2:
        raise InputError(f"folder: {root} has fewer than 2 classes with readable images")
    gray = all(img.mode in GRAY_MODES for img in images)
    mode = "L" if gray else "RGB"
    arrays = []
    for img in images:
        converted = img.convert(mode).resize((size, size), Image.BILINEAR)
        arr = np.asarray(converted, dtype=np.float32) / 255.0
        arrays.append(arr[None] if gray else arr.transpose(2, 0, 1))
    x = torch.from_numpy(np.stack(arrays))
    y = torch.tensor(labels, dtype=torch.int64)
    return make_bundle(spec, "image", x, y, names, batch_size=batch_size, seed=seed)
