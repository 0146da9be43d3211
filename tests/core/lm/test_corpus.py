"""text:FILE and pydocs: contiguous splits, blocks of seq_len tokens shifted by one, tokenizer choice, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.core.lm.lm_helpers import make_corpus
from workbench.core.data import dataset_task, list_datasets, load_dataset
from workbench.core.data.corpus import build_pydocs, lm_dataset_spec, split_text
from workbench.core.errors import InputError


def test_blocks_are_next_token_pairs_over_contiguous_splits(corpus):
    data = load_dataset(f"text:{corpus}:seq_len=16,vocab=320")
    info = data.info
    assert info.task == "causal_lm" and info.kind == "corpus" and info.input_shape == (16,)
    assert info.num_classes == info.vocab_size == data.tokenizer.vocab_size
    assert all(info.sizes[s] >= 1 for s in ("train", "val", "test"))
    text = corpus.read_text(encoding="utf-8")
    parts = split_text(text)
    assert parts["train"] + parts["val"] + parts["test"] == text  # contiguous, nothing lost or shared
    assert parts["train"].endswith("\n") and parts["val"].endswith("\n")
    for split in ("train", "val", "test"):
        x, y = data.tensors(split)
        assert x.dtype == torch.int64 and x.shape == y.shape and x.shape[1] == 16
        assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one token
        assert torch.equal(y[:-1, -1], x[1:, 0])  # blocks follow each other in the text
        ids = data.tokenizer.encode_corpus(parts[split])
        assert x[0].tolist() == ids[:16]
    assert data.decode(data.tensors("test")[0][0].tolist()) in parts["test"]


def test_the_loader_and_encode_work_like_any_bundle(corpus):
    data = load_dataset(f"text:{corpus}:seq_len=8,vocab=300", batch_size=4)
    x, y = next(iter(data.train))
    assert x.shape == (4, 8) and y.shape == (4, 8)
    enc = data.encode(["the model", "a much longer prompt than eight tokens surely is"])
    assert enc.shape == (2, 8)
    assert enc[0, :2].tolist() == data.tokenizer.encode("the model")[:2]
    assert enc[0, -1].item() == data.tokenizer.eos_id  # padded with end-of-text


def test_tokenizer_option_uses_the_folder(tmp_path, corpus, hf_folder):
    from workbench.core.lm.tokenizer import TextTokenizer

    data = load_dataset(f"text:{corpus}:seq_len=16,tokenizer={hf_folder}")
    assert data.tokenizer.fingerprint() == TextTokenizer.load(hf_folder).fingerprint()
    assert data.info.tokenizer == str(hf_folder.resolve())
    with pytest.raises(InputError, match="give one of them"):
        load_dataset(f"text:{corpus}:tokenizer={hf_folder},vocab=300")


def test_lm_dataset_spec_adds_the_model_folders_tokenizer(corpus, hf_folder, tmp_path):
    spec = f"text:{corpus}:seq_len=16"
    assert lm_dataset_spec(spec, str(hf_folder)) == f"{spec},tokenizer={hf_folder.resolve()}"
    assert lm_dataset_spec(spec, f"hf:{hf_folder}") == f"{spec},tokenizer={hf_folder.resolve()}"
    assert lm_dataset_spec(f"text:{corpus}", str(hf_folder)) == f"text:{corpus}:tokenizer={hf_folder.resolve()}"
    assert lm_dataset_spec(f"{spec},vocab=300", str(hf_folder)) == f"{spec},vocab=300"  # the user chose a BPE
    assert lm_dataset_spec(spec, "zoo:tiny_llama") == spec
    assert lm_dataset_spec("digits", str(hf_folder)) == "digits"
    (tmp_path / "no_tok").mkdir()
    assert lm_dataset_spec(spec, str(tmp_path / "no_tok")) == spec


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"   \n\n", "is empty"),
    (b"text\x00with\x00nul bytes " * 10, "looks binary"),
    (b"caf\xe9 au lait\n" * 10, "not valid UTF-8 \\(byte 3, line 1\\)"),
    (b"far too short\n", "corpus too short"),
])
def test_bad_corpus_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        load_dataset(f"text:{path}:seq_len=32,vocab=300")
    assert "\n" not in str(info.value)


def test_other_bad_specs(tmp_path, corpus):
    with pytest.raises(InputError, match="no such file"):
        load_dataset(f"text:{tmp_path / 'missing.txt'}")
    with pytest.raises(InputError, match="is a folder"):
        load_dataset(f"text:{tmp_path}")
    with pytest.raises(InputError, match="text needs a path"):
        load_dataset("text")
    with pytest.raises(InputError, match="unknown option 'bogus'"):
        load_dataset(f"text:{corpus}:bogus=1")
    with pytest.raises(InputError, match="seq_len=1 must be >= 2"):
        load_dataset(f"text:{corpus}:seq_len=1")
    with pytest.raises(InputError, match="pydocs takes no path"):
        load_dataset("pydocs:somewhere")
    with pytest.raises(InputError, match="corpus too short"):  # long enough for short sequences, not for these
        load_dataset(f"text:{make_corpus(tmp_path / 'small.txt', lines=30)}:seq_len=512,vocab=300")


def test_pydocs_reads_docstrings_without_importing(tmp_path):
    root = tmp_path / "lib"
    (root / "pkg").mkdir(parents=True)
    (root / "test").mkdir()
    (root / "alpha.py").write_text('"""Alpha module."""\ndef f():\n    """Return one."""\n    return 1\n')
    (root / "pkg" / "beta.py").write_text('raise SystemExit("imported!")\nclass B:\n    """A class B."""\n')
    (root / "test" / "test_x.py").write_text('"""A test, skipped."""\n')
    (root / "broken.py").write_text("def (:\n")
    said = []
    text = build_pydocs(root, said.append)
    assert text == "Alpha module.\n\nReturn one.\n\nA class B.\n"
    assert said and "reading the docstrings" in said[0]


def test_dataset_listing_and_task():
    specs = [s for s, _ in list_datasets()]
    assert any(s.startswith("text:FILE") for s in specs) and any(s.startswith("pydocs") for s in specs)
    assert dataset_task("pydocs") == dataset_task("text:x.txt:seq_len=8") == "causal_lm"
    assert dataset_task("digits") == dataset_task("text_csv:a.csv") == dataset_task("") == "classification"


def test_pydocs_is_built_once_then_read_from_the_cache(tmp_path, monkeypatch):
    """The corpus is read from the standard library once and cached per Python; a damaged cache file is rebuilt."""
    from workbench.core.data import corpus

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    builds: list[Path] = []

    def build(root, progress):
        builds.append(root)
        return "Return the docstring.\nA second line.\n"

    monkeypatch.setattr(corpus, "build_pydocs", build)
    said: list[str] = []
    first = corpus.pydocs_text(said.append)
    cached = list((tmp_path / "cache").rglob("pydocs-*.txt"))
    assert first == "Return the docstring.\nA second line.\n" and len(builds) == 1 and len(cached) == 1
    assert any("cached in" in line for line in said)
    assert corpus.pydocs_text(said.append) == first and len(builds) == 1  # read back, not rebuilt
    cached[0].write_bytes(b"\xff\xfe not utf-8")
    assert corpus.pydocs_text(said.append) == first and len(builds) == 2  # damaged: rebuilt
    assert cached[0].read_text(encoding="utf-8") == first
