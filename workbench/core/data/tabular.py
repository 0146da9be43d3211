"""Tabular classification from a CSV file: float feature columns, the label in the last column.

Also holds the strict CSV reading shared with text_csv, so both report bad input with a line number.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import torch

from workbench.core.data.bundle import DataBundle, bundle_from_splits, label_mapping, split_indices
from workbench.core.data.specs import Options, need_path
from workbench.core.errors import InputError

FLOAT32_MAX = float(np.finfo(np.float32).max)


def read_text_file(path: Path, kind: str) -> str:
    """Read a file as strict UTF-8 (a leading BOM is dropped); bad bytes are reported with their offset."""
    if not path.exists():
        raise InputError(f"{kind}: file {path} does not exist")
    if not path.is_file():
        raise InputError(f"{kind}: {path} is not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{kind}: cannot read {path}: {exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{kind}: {path} is not valid UTF-8 (byte offset {exc.start}: {exc.reason})"
        ) from None
    return text.removeprefix("\ufeff")


def read_csv_rows(path: Path, kind: str) -> list[tuple[int, list[str]]]:
    """All non-blank rows as (line number, cells); a CSV syntax error becomes an InputError."""
    text = read_text_file(path, kind)
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if row and any(cell.strip() for cell in row):
                rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise InputError(f"{kind}: {path} line {reader.line_num}: bad CSV: {exc}") from None
    if not rows:
        raise InputError(f"{kind}: {path} is empty")
    return rows


def check_ragged(rows: list[tuple[int, list[str]]], width: int, path: Path, kind: str) -> None:
    """Every row must have ``width`` columns; the first that does not is reported with its line."""
    for line, row in rows:
        if len(row) != width:
            raise InputError(f"{kind}: {path} line {line}: {len(row)} columns, expected {width}")


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_csv(
    spec: str, path: str | None, options: dict[str, str], *, seed: int, batch_size: int, download: bool
) -> DataBundle:
    """``csv:FILE``: optional header, features standardized with the train split's mean and std."""
    file = Path(need_path(spec, "csv", path)).expanduser()
    Options(spec, "csv", options, set())
    rows = read_csv_rows(file, "csv")
    width = len(rows[0][1])
    if width < 2:
        raise InputError(f"csv: {file} needs at least one feature column and a label column (the last)")
    check_ragged(rows, width, file, "csv")
    if not all(_is_float(c) for c in rows[0][1][:-1]):
        rows = rows[1:]  # the first row is a header
    if not rows:
        raise InputError(f"csv: {file} has a header but no data rows")
    features = np.empty((len(rows), width - 1), dtype=np.float32)
    labels: list[str] = []
    for i, (line, row) in enumerate(rows):
        for j, cell in enumerate(row[:-1]):
            try:
                value = float(cell)
            except ValueError:
                raise InputError(
                    f"csv: {file} line {line}, column {j + 1}: {cell.strip()!r} is not a number"
                ) from None
            if not math.isfinite(value):
                raise InputError(f"csv: {file} line {line}, column {j + 1}: {cell.strip()!r} is not finite")
            if abs(value) > FLOAT32_MAX:
                raise InputError(f"csv: {file} line {line}, column {j + 1}: {cell.strip()!r} is too large "
                                 "for float32")
            features[i, j] = value
        label = row[-1].strip()
        if not label:
            raise InputError(f"csv: {file} line {line}: empty label (last column)")
        labels.append(label)
    names, index = label_mapping(labels)
    if len(names) < 2:
        raise InputError(f"csv: {file} has only one class ({names[0]!r}); need at least 2")
    x = torch.from_numpy(features)
    y = torch.tensor([index[label] for label in labels], dtype=torch.int64)
    parts = split_indices(y.numpy())
    splits = {name: (x[torch.from_numpy(ix)], y[torch.from_numpy(ix)]) for name, ix in parts.items()}
    mean = splits["train"][0].mean(dim=0)
    std = splits["train"][0].std(dim=0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    splits = {name: ((sx - mean) / std, sy) for name, (sx, sy) in splits.items()}
    return bundle_from_splits(spec, "tabular", splits, names, batch_size=batch_size, seed=seed)
