"""Folder-of-images, CSV and text CSV datasets written by the tests, plus their bad-input errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from workbench.core.data import load_dataset
from workbench.core.errors import InputError


def _write_images(root: Path, mode: str = "L", per_class: int = 6, classes=("cat", "dog")) -> None:
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            value = 40 + 150 * k + i
            color = value if mode == "L" else (value, 0, 255 - value)
            Image.new(mode, (10 + i, 12), color).save(root / name / f"{i}.png")


def test_folder_grayscale(tmp_path):
    _write_images(tmp_path)
    (tmp_path / "cat" / "notes.txt").write_text("ignored")
    b = load_dataset(f"folder:{tmp_path}")
    assert b.info.class_names == ("cat", "dog") and b.info.input_shape == (1, 28, 28)
    assert sum(b.info.sizes.values()) == 12
    x, y = (
        torch.cat([b.tensors(s)[0] for s in ("train", "val", "test")]),
        torch.cat([b.tensors(s)[1] for s in ("train", "val", "test")]),
    )
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    # class 0 is dark, class 1 bright
    assert float(x[y == 0].mean()) < 0.3 < 0.7 < float(x[y == 1].mean())


def test_folder_rgb_and_size(tmp_path):
    _write_images(tmp_path, mode="RGB", classes=("a", "b", "c"))
    b = load_dataset(f"folder:{tmp_path}:size=16")
    assert b.info.input_shape == (3, 16, 16) and b.info.num_classes == 3


def test_folder_corrupt_image(tmp_path):
    _write_images(tmp_path)
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(InputError, match="broken.png"):
        load_dataset(f"folder:{tmp_path}")
    with pytest.warns(UserWarning, match="broken.png"):
        b = load_dataset(f"folder:{tmp_path}:skip_bad=true")
    assert sum(b.info.sizes.values()) == 12


@pytest.mark.parametrize("layout", ["missing", "empty", "one_class"])
def test_folder_bad_layout(tmp_path, layout):
    if layout == "one_class":
        _write_images(tmp_path, classes=("only",))
    elif layout == "empty":
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
    root = tmp_path / "nope" if layout == "missing" else tmp_path
    with pytest.raises(InputError):
        load_dataset(f"folder:{root}")


def _csv_lines(n: int = 40, header: bool = True) -> list[str]:
    rng = np.random.default_rng(0)
    lines = ["f1,f2,f3,species"] if header else []
    for i in range(n):
        label = ["setosa", "virginica"][i % 2]
        a, b, c = rng.normal(size=3) + (5 if i % 2 else 0)
        lines.append(f"{a:.4f},{b:.4f},{c:.4f},{label}")
    return lines


@pytest.mark.parametrize("header", [True, False])
def test_csv_loads_and_standardizes(tmp_path, header):
    f = tmp_path / "d.csv"
    f.write_text("\n".join(_csv_lines(header=header)) + "\n")
    b = load_dataset(f"csv:{f}")
    assert b.info.kind == "tabular" and b.info.input_shape == (3,)
    assert b.info.class_names == ("setosa", "virginica") and sum(b.info.sizes.values()) == 40
    xtr = b.tensors("train")[0]
    assert torch.allclose(xtr.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(xtr.std(0, unbiased=False), torch.ones(3), atol=1e-4)


def test_csv_integer_labels_sort_numerically(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("".join(f"{i}.5,{[2, 10][i % 2]}\n" for i in range(20)))
    assert load_dataset(f"csv:{f}").info.class_names == ("2", "10")


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("1.0,2.0,setosa", "line 4"),
        ("1.0,nan,3.0,setosa", "line 4"),
        ("1.0,,3.0,setosa", "line 4"),
        ("1.0,abc,3.0,setosa", "line 4"),
    ],
)
def test_csv_bad_rows(tmp_path, bad_line, message):
    lines = _csv_lines()
    lines[3] = bad_line
    f = tmp_path / "d.csv"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=message):
        load_dataset(f"csv:{f}")


def test_csv_missing_and_empty(tmp_path):
    with pytest.raises(InputError):
        load_dataset(f"csv:{tmp_path / 'nope.csv'}")
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(InputError):
        load_dataset(f"csv:{tmp_path / 'e.csv'}")


def _text_rows() -> list[str]:
    pos = ["great movie, loved it!", "wonderful and great acting", "loved the great story"]
    neg = ["terrible plot, awful", "awful acting and boring", "boring, terrible film"]
    rows = []
    for i in range(30):
        rows.append(f'"{pos[i % 3]}",pos' if i % 2 == 0 else f'"{neg[i % 3]}",neg')
    return rows


def test_text_csv_loads(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("text,label\n" + "\n".join(_text_rows()) + "\n", encoding="utf-8")
    b = load_dataset(f"text_csv:{f}:seq_len=8")
    info = b.info
    assert info.kind == "text" and info.input_shape == (8,) and info.input_dtype == "int64"
    assert info.class_names == ("neg", "pos") and sum(info.sizes.values()) == 30
    assert b.vocab["<pad>"] == 0 and b.vocab["<unk>"] == 1 and info.vocab_size == len(b.vocab)
    ids = b.encode(["Great movie, UNSEENWORD!", ""])
    assert ids.shape == (2, 8) and ids.dtype == torch.int64
    great, comma = b.vocab["great"], b.vocab[","]
    assert ids[0].tolist()[:5] == [great, b.vocab["movie"], comma, 1, b.vocab["!"]]
    assert ids[1].tolist() == [0] * 8
    long = b.encode(["great " * 20])
    assert long.tolist() == [[great] * 8]


def test_text_csv_vocab_cap(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("\n".join(_text_rows()) + "\n", encoding="utf-8")
    b = load_dataset(f"text_csv:{f}:vocab=5")
    assert b.info.vocab_size == 5 and len(b.vocab) == 5
    assert int(b.tensors("train")[0].max()) < 5


def test_text_csv_invalid_utf8(tmp_path):
    f = tmp_path / "t.csv"
    f.write_bytes(b"text,label\nhello,pos\nbad \xff byte,neg\n")
    with pytest.raises(InputError, match="byte offset 25"):
        load_dataset(f"text_csv:{f}")


def test_text_csv_ragged(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("text,label\nhello,pos\nan,unquoted,comma,neg\n")
    with pytest.raises(InputError, match="line 3"):
        load_dataset(f"text_csv:{f}")
