"""Tokenizers: round trips, saving and reloading, a folder's own files, and the cache of trained ones."""

from __future__ import annotations

import json

import pytest

from workbench.core.errors import InputError
from workbench.core.lm.tokenizer import TextTokenizer, has_tokenizer, line_chunks, trained_tokenizer

TEXTS = ["plain words", "  leading spaces\tand\ttabs\n\nblank lines\n", "Ünïcode ✓ 你好 — emoji 🙂", ""]


def test_byte_level_bpe_round_trips_any_text(corpus):
    tok = TextTokenizer.train_bpe(corpus.read_text(encoding="utf-8"), 350)
    assert 257 <= tok.vocab_size <= 350
    for text in TEXTS:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
    assert tok.eos_id is not None and tok.decode([tok.eos_id]) == ""  # special tokens are skipped when decoding


def test_saved_tokenizer_reloads_identically(tmp_path, corpus):
    tok = TextTokenizer.train_bpe(corpus.read_text(encoding="utf-8"), 320)
    tok.save(tmp_path / "t")
    assert has_tokenizer(tmp_path / "t")
    again = TextTokenizer.load(tmp_path / "t")
    assert again.fingerprint() == tok.fingerprint()
    assert again.eos_token == tok.eos_token
    sample = corpus.read_text(encoding="utf-8")[:2000]
    assert again.encode(sample) == tok.encode(sample)
    config = json.loads((tmp_path / "t" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and config["eos_token"] == tok.eos_token


def test_transformers_reads_the_saved_tokenizer(tmp_path, corpus):
    from transformers import AutoTokenizer

    tok = TextTokenizer.train_bpe(corpus.read_text(encoding="utf-8"), 320)
    tok.save(tmp_path / "t")
    hf = AutoTokenizer.from_pretrained(str(tmp_path / "t"), local_files_only=True)
    text = "the model reads a token"
    assert hf.encode(text, add_special_tokens=False) == tok.encode(text)


def test_gpt2_vocab_and_merges_layout(tmp_path, corpus):
    tok = TextTokenizer.train_bpe(corpus.read_text(encoding="utf-8"), 320)
    tok.backend.model.save(str(tmp_path))  # writes vocab.json and merges.txt
    assert (tmp_path / "vocab.json").is_file() and (tmp_path / "merges.txt").is_file()
    again = TextTokenizer.load(tmp_path)
    assert again.encode("the next one") == tok.encode("the next one")


def test_trained_tokenizer_is_cached_and_stable(corpus, isolated_cache):
    text = corpus.read_text(encoding="utf-8")
    said = []
    first = trained_tokenizer(text, 330, progress=said.append)
    assert said and "training" in said[0]
    assert first.folder is not None and first.folder.is_relative_to(isolated_cache)
    said.clear()
    second = trained_tokenizer(text, 330, progress=said.append)
    assert said == []  # read back, not trained again
    assert second.fingerprint() == first.fingerprint()
    other = trained_tokenizer(text + "zebra quagga okapi\n" * 300, 330)
    assert other.folder != first.folder and other.fingerprint() != first.fingerprint()


def test_missing_and_unreadable_tokenizers_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        TextTokenizer.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no tokenizer"):
        TextTokenizer.load(tmp_path / "empty")
    (tmp_path / "sp").mkdir()
    (tmp_path / "sp" / "tokenizer.model").write_bytes(b"\x00")
    with pytest.raises(InputError, match="SentencePiece"):
        TextTokenizer.load(tmp_path / "sp")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_text("{not json")
    with pytest.raises(InputError, match="not a readable tokenizer"):
        TextTokenizer.load(tmp_path / "bad")


def test_custom_tokenizer_code_is_refused(tmp_path, corpus):
    tok = TextTokenizer.train_bpe(corpus.read_text(encoding="utf-8"), 300)
    tok.save(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["tok_evil.EvilTokenizer", None]}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="custom tokenizer code"):
        TextTokenizer.load(tmp_path)


def test_line_chunks_cut_after_newlines():
    text = "".join(f"line {i}\n" for i in range(1000))
    chunks = list(line_chunks(text, size=100))
    assert "".join(chunks) == text
    assert all(c.endswith("\n") for c in chunks)
