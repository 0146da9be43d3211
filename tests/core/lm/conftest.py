"""Fixtures for the language-model tests: an isolated cache, a generated corpus, a small Hugging Face folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.core.lm.lm_helpers import make_corpus, write_hf_folder


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Trained tokenizers and built corpora go to a per-test cache, not the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def corpus(tmp_path) -> Path:
    return make_corpus(tmp_path / "corpus.txt")


@pytest.fixture
def hf_folder(tmp_path, corpus) -> Path:
    return write_hf_folder(tmp_path / "hf_llama", corpus)
