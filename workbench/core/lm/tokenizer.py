"""Tokenizers for language models: a folder's own (``tokenizer.json``, or GPT-2's ``vocab.json`` + ``merges.txt``),
or a byte-level BPE trained on a corpus with Hugging Face ``tokenizers``.

The Rust ``tokenizers`` library reads and runs them directly, so no tokenizer class from a model folder is ever
imported (a folder's ``auto_map`` custom code is refused without ``--trust``, and not needed even with it). A
trained tokenizer is cached by the hash of its training text, so every process of a run, and later runs, get the
very same one; it is saved into every variant folder of a language model as ``tokenizer.json`` +
``tokenizer_config.json``, which ``transformers.AutoTokenizer`` reads too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from workbench.core.errors import InputError

EOS_TOKEN = "<|endoftext|>"
MIN_VOCAB = 300  # 256 byte symbols, the end-of-text token and a few merges
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
_CHUNK_CHARS = 1 << 16


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` with what the workbench needs: encode without special tokens, decode, the end
    of text id, a fingerprint to tell two tokenizers apart, and saving in the Hugging Face folder layout."""

    def __init__(self, backend: Any, *, eos_token: str | None = None, bos_token: str | None = None,
                 source: str = "") -> None:
        self.backend = backend
        self.source = source
        self.folder: Path | None = None  # where it is saved (loaded from, or cached in), if anywhere
        self.eos_token = eos_token if eos_token and backend.token_to_id(eos_token) is not None else None
        self.bos_token = bos_token if bos_token and backend.token_to_id(bos_token) is not None else None

    def __repr__(self) -> str:
        return f"TextTokenizer({self.source or 'in memory'}, vocab {self.vocab_size})"

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce (added tokens included)."""
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    @property
    def eos_id(self) -> int | None:
        return None if self.eos_token is None else int(self.backend.token_to_id(self.eos_token))

    @property
    def bos_id(self) -> int | None:
        return None if self.bos_token is None else int(self.backend.token_to_id(self.bos_token))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without the special tokens a model's template would add."""
        return list(self.backend.encode(text, add_special_tokens=False).ids)

    def encode_corpus(self, text: str) -> list[int]:
        """Ids of a long text, encoded in line-aligned chunks in parallel (the Rust side uses every core)."""
        ids: list[int] = []
        for enc in self.backend.encode_batch(list(line_chunks(text)), add_special_tokens=False):
            ids.extend(enc.ids)
        return ids

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return str(self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special))

    def fingerprint(self) -> str:
        """A short hash of the tokenizer's full definition: equal fingerprints encode identically."""
        return hashlib.sha256(self.backend.to_str().encode("utf-8")).hexdigest()[:16]

    def save(self, folder: Path) -> None:
        """``tokenizer.json`` and a ``tokenizer_config.json`` naming the special tokens (the HF folder layout)."""
        from workbench.core.workspace.atomic import atomic_write_text

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "tokenizer.json", self.backend.to_str())
        config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
                                  "model_max_length": 1_000_000_000}
        if self.eos_token:
            config["eos_token"] = self.eos_token
        if self.bos_token:
            config["bos_token"] = self.bos_token
        atomic_write_text(folder / "tokenizer_config.json", json.dumps(config, indent=1))
        if self.folder is None:
            self.folder = folder

    @classmethod
    def load(cls, folder: Path | str, *, trust: bool = False) -> TextTokenizer:
        """The tokenizer of a Hugging Face (or variant) folder; a clear InputError when there is none."""
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise InputError(f"tokenizer {folder}: no such folder")
        config = _read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").exists() else {}
        if "auto_map" in config and not trust:
            raise InputError(f"{folder}: tokenizer_config.json names custom tokenizer code (auto_map); refused, it "
                             "would run code from the folder (pass --trust only if you trust where it came from)")
        eos = _token_text(config.get("eos_token"))
        bos = _token_text(config.get("bos_token"))
        if eos is None or bos is None:
            special = folder / "special_tokens_map.json"
            if special.exists():
                extra = _read_json(special)
                eos = eos or _token_text(extra.get("eos_token"))
                bos = bos or _token_text(extra.get("bos_token"))
        backend = _load_backend(folder)
        if eos is None and backend.token_to_id(EOS_TOKEN) is not None:
            eos = EOS_TOKEN
        tok = cls(backend, eos_token=eos, bos_token=bos, source=str(folder))
        tok.folder = folder.resolve()
        return tok

    @classmethod
    def train_bpe(cls, text: str, vocab_size: int) -> TextTokenizer:
        """A byte-level BPE (GPT-2's scheme: any UTF-8 text round-trips, no unknown token) trained on ``text``."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        backend = Tokenizer(models.BPE(unk_token=None))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), special_tokens=[EOS_TOKEN], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        backend.train_from_iterator(line_chunks(text), trainer)
        return cls(backend, eos_token=EOS_TOKEN, source=f"byte-level BPE, vocab {vocab_size}")


def has_tokenizer(folder: Path | str) -> bool:
    """Whether a folder holds tokenizer files this module can read."""
    folder = Path(folder)
    return (folder / "tokenizer.json").is_file() or ((folder / "vocab.json").is_file()
                                                     and (folder / "merges.txt").is_file())


def trained_tokenizer(text: str, vocab_size: int, *, progress: Any = None) -> TextTokenizer:
    """The BPE for ``text``, from the user cache when this exact text and size were trained before."""
    import tokenizers

    key = hashlib.sha256()
    key.update(f"bpe:{vocab_size}:{tokenizers.__version__}:".encode())
    key.update(text.encode("utf-8"))
    folder = cache_dir() / "tokenizers" / f"bpe-{vocab_size}-{key.hexdigest()[:20]}"
    if (folder / "tokenizer.json").is_file():
        try:
            tok = TextTokenizer.load(folder)
            tok.source = f"byte-level BPE, vocab {vocab_size} (cached in {folder})"
            return tok
        except (InputError, ValueError, OSError):
            pass  # a damaged cache entry: train again
    if progress is not None:
        progress(f"training a byte-level BPE tokenizer (vocab {vocab_size}) on {len(text):,} characters")
    tok = TextTokenizer.train_bpe(text, vocab_size)
    try:
        tok.save(folder)
    except OSError:  # a read-only cache: keep it for this process in a temporary folder
        import tempfile

        tok.save(Path(tempfile.mkdtemp(prefix="workbench-tokenizer-")))
    tok.source = f"byte-level BPE, vocab {vocab_size} (cached in {tok.folder})"
    return tok


def cache_dir() -> Path:
    """The user's cache folder for built corpora and trained tokenizers."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("workbench", appauthor=False))


def line_chunks(text: str, size: int = _CHUNK_CHARS) -> Iterator[str]:
    """``text`` in pieces of about ``size`` characters, cut after a newline so no word is split."""
    start, n = 0, len(text)
    while start < n:
        end = min(n, start + size)
        if end < n:
            cut = text.rfind("\n", start, end)
            end = cut + 1 if cut > start else end
        yield text[start:end]
        start = end


def _load_backend(folder: Path) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    file = folder / "tokenizer.json"
    if file.is_file():
        try:
            return Tokenizer.from_file(str(file))
        except Exception as exc:  # noqa: BLE001 - the Rust side raises plain Exceptions
            raise InputError(f"{file}: not a readable tokenizer ({str(exc).splitlines()[0][:160]})") from None
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    if vocab.is_file() and merges.is_file():  # the GPT-2 layout
        try:
            backend = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{folder}: unreadable vocab.json/merges.txt ({str(exc).splitlines()[0][:160]})") from None
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        return backend
    if (folder / "tokenizer.model").is_file():
        raise InputError(f"{folder}: only a SentencePiece tokenizer.model, no tokenizer.json; save the tokenizer "
                         "with transformers' fast tokenizer (tokenizer.save_pretrained) or give tokenizer=DIR")
    raise InputError(f"{folder}: no tokenizer (tokenizer.json, or vocab.json + merges.txt)")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or {"content": ...}."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None

