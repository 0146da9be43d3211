"""Text corpora for language modelling: ``text:FILE`` (a UTF-8 file) and ``pydocs`` (the docstrings of this
Python's standard library, built once and cached; no download).

The text is cut into contiguous train / val / test parts (90 / 5 / 5 % of the characters, at line ends), the
tokenizer is the one given with ``tokenizer=DIR`` (the model's own: ``lm_dataset_spec`` adds it when the model
folder has one) or a byte-level BPE trained on the train part only, and each part becomes blocks of ``seq_len``
tokens: x is a block, y the same block shifted by one token, so every token of a part is predicted once and the
existing loaders, train loop and latency batches work on (N, seq_len) int64 tensors unchanged.
"""

from __future__ import annotations

import ast
import hashlib
import os
import sys
import sysconfig
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from workbench.core.data.bundle import SPLITS, DataBundle, DatasetInfo
from workbench.core.data.specs import Options, need_path, no_path, parse_spec
from workbench.core.errors import InputError

LM_KIND = "corpus"
DEFAULT_SEQ_LEN = 128
DEFAULT_VOCAB = 4096
MAX_SEQ_LEN = 1 << 16
FRACTIONS = {"train": 0.90, "val": 0.05, "test": 0.05}
PYDOCS_SKIP = {"test", "tests", "idlelib", "lib2to3", "turtledemo", "site-packages", "dist-packages", "__pycache__",
               "ensurepip", "venv"}
Progress = Callable[[str], None]


class LMDataBundle(DataBundle):
    """A DataBundle of token blocks that also carries its tokenizer (to encode prompts and decode output)."""

    def __init__(self, info: DatasetInfo, splits: dict[str, tuple[torch.Tensor, torch.Tensor]], *, tokenizer,
                 batch_size: int = 64, seed: int = 0, token_counts: dict[str, int] | None = None) -> None:
        super().__init__(info, splits, batch_size=batch_size, seed=seed)
        self.tokenizer = tokenizer
        self.token_counts = dict(token_counts or {})

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids of each text, truncated or right-padded (with the end-of-text id) to ``seq_len``."""
        seq_len = self.info.input_shape[0]
        pad = self.tokenizer.eos_id or 0
        out = torch.full((len(texts), seq_len), pad, dtype=torch.int64)
        for i, text in enumerate(texts):
            ids = self.tokenizer.encode(text)[:seq_len]
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)


def load_text_corpus(spec: str, path: str | None, options: dict[str, str], *, seed: int, batch_size: int,
                     download: bool) -> LMDataBundle:
    """``text:FILE[:seq_len=128,tokenizer=DIR,vocab=4096]``."""
    file = Path(need_path(spec, "text", path)).expanduser()
    opts = Options(spec, "text", options, {"seq_len", "tokenizer", "vocab"})
    text = read_corpus_file(file)
    return corpus_bundle(spec, text, opts, seed=seed, batch_size=batch_size, what=str(file))


def load_pydocs(spec: str, path: str | None, options: dict[str, str], *, seed: int, batch_size: int,
                download: bool) -> LMDataBundle:
    """``pydocs[:seq_len=128,vocab=4096]``: the standard library's docstrings, from the cache after the first run."""
    no_path(spec, "pydocs", path)
    opts = Options(spec, "pydocs", options, {"seq_len", "tokenizer", "vocab"})
    return corpus_bundle(spec, pydocs_text(), opts, seed=seed, batch_size=batch_size, what="pydocs")


def read_corpus_file(file: Path) -> str:
    """The text of a UTF-8 corpus; an empty, binary or non-UTF-8 file is a one-line InputError."""
    if not file.exists():
        raise InputError(f"text: {file}: no such file")
    if file.is_dir():
        raise InputError(f"text: {file} is a folder; give a UTF-8 text file")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise InputError(f"text: {file}: cannot be read ({exc.strerror or exc})") from None
    if not data.strip():
        raise InputError(f"text: {file} is empty")
    if b"\x00" in data[: 1 << 20]:
        raise InputError(f"text: {file} looks binary (it has NUL bytes); give a UTF-8 text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"text: {file} is not valid UTF-8 (byte {exc.start}, line {line}); "
                         "convert it, e.g. iconv -t UTF-8") from None
    return text.replace("\r\n", "\n")


def corpus_bundle(spec: str, text: str, opts: Options, *, seed: int, batch_size: int, what: str,
                  progress: Progress | None = None) -> LMDataBundle:
    """Split, tokenize and block ``text`` into a language-modelling DataBundle."""
    from workbench.core.lm.tokenizer import MIN_VOCAB, TextTokenizer, trained_tokenizer

    seq_len = opts.get_int("seq_len", DEFAULT_SEQ_LEN, minimum=2, maximum=MAX_SEQ_LEN)
    tokenizer_dir = opts.get_str("tokenizer", "")
    if tokenizer_dir and "vocab" in opts.raw:
        raise InputError(f"bad dataset spec {spec!r}: vocab= sizes a trained tokenizer, tokenizer=DIR names one; "
                         "give one of them")
    parts = split_text(text)
    if tokenizer_dir:
        tokenizer = TextTokenizer.load(tokenizer_dir)
    else:
        vocab = opts.get_int("vocab", DEFAULT_VOCAB, minimum=MIN_VOCAB, maximum=1_000_000)
        tokenizer = trained_tokenizer(parts["train"], vocab, progress=progress or _stderr)
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    counts: dict[str, int] = {}
    for name in SPLITS:
        ids = tokenizer.encode_corpus(parts[name])
        counts[name] = len(ids)
        blocks = (len(ids) - 1) // seq_len
        if blocks < 1:
            total = sum(len(p) for p in parts.values())
            raise InputError(f"{what}: corpus too short: its {name} part ({FRACTIONS[name]:.0%} of "
                             f"{total:,} characters) has {len(ids)} tokens, and one sequence of seq_len={seq_len} "
                             f"needs {seq_len + 1}; give a longer text or a smaller seq_len")
        stream = torch.tensor(ids[: blocks * seq_len + 1], dtype=torch.int64)
        splits[name] = (stream[:-1].view(blocks, seq_len).clone(), stream[1:].view(blocks, seq_len).clone())
    vocab_size = tokenizer.vocab_size
    top = max(int(splits[s][0].max()) for s in SPLITS)
    if top >= vocab_size:  # a tokenizer.json whose added tokens lie beyond its own count
        vocab_size = top + 1
    info = DatasetInfo(
        spec=spec, kind=LM_KIND, input_shape=(seq_len,), num_classes=vocab_size, class_names=(),
        input_dtype="int64", vocab_size=vocab_size, sizes={s: int(splits[s][0].shape[0]) for s in SPLITS},
        task="causal_lm", tokenizer=str(tokenizer.folder) if tokenizer.folder else None,
    )
    return LMDataBundle(info, splits, tokenizer=tokenizer, batch_size=batch_size, seed=seed, token_counts=counts)


def split_text(text: str) -> dict[str, str]:
    """Contiguous train / val / test parts of ``text`` (by characters, each cut just after a line end)."""
    n = len(text)
    cut1 = _line_cut(text, int(n * FRACTIONS["train"]))
    cut2 = _line_cut(text, max(cut1, int(n * (FRACTIONS["train"] + FRACTIONS["val"]))))
    return {"train": text[:cut1], "val": text[cut1:cut2], "test": text[cut2:]}


def _line_cut(text: str, at: int) -> int:
    """``at`` moved to just after the next newline, if one is near (within 1% of the text); else ``at``."""
    window = max(200, len(text) // 100)
    nl = text.find("\n", at, at + window)
    return nl + 1 if nl >= 0 else at


# pydocs -------------------------------------------------------------------------------------------------------------
def pydocs_text(progress: Progress | None = None) -> str:
    """The standard library's docstrings as one text, built on first use and cached in the user cache folder."""
    from workbench.core.lm.tokenizer import cache_dir
    from workbench.core.workspace.atomic import atomic_write_text

    root = Path(sysconfig.get_paths()["stdlib"])
    tag = hashlib.sha256(f"{root}|{sys.version}".encode()).hexdigest()[:12]
    file = cache_dir() / "corpora" / f"pydocs-py{sys.version_info.major}.{sys.version_info.minor}-{tag}.txt"
    if file.is_file():
        try:
            return file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            pass  # rebuild a damaged cache file
    say = progress or _stderr
    text = build_pydocs(root, say)
    if not text.strip():
        raise InputError(f"pydocs: no docstrings found under {root} (is the standard library's source installed?)")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(file, text)
        say(f"pydocs: {len(text):,} characters cached in {file}")
    except OSError:
        pass
    return text


def build_pydocs(root: Path, progress: Progress) -> str:
    """Docstrings of modules, classes and functions of every standard-library source file, read with ``ast`` (no
    module is imported), in a fixed order, separated by blank lines."""
    files = sorted(p for p in root.rglob("*.py")
                   if not any(part in PYDOCS_SKIP or part.startswith("test") for part in p.relative_to(root).parts))
    progress(f"pydocs: reading the docstrings of {len(files)} standard-library files in {root} (once)")
    docs: list[str] = []
    step = max(1, len(files) // 10)
    for i, file in enumerate(files, 1):
        try:
            tree = ast.parse(file.read_bytes(), filename=str(file))
        except (SyntaxError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node, clean=True)
                if doc and doc.strip():
                    docs.append(doc.strip())
        if i % step == 0:
            progress(f"pydocs: {i}/{len(files)} files, {len(docs)} docstrings")
    return "\n\n".join(docs) + "\n"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# the model's own tokenizer ------------------------------------------------------------------------------------------
def lm_dataset_spec(dataset: str | None, model: str | None) -> str | None:
    """``dataset`` with ``tokenizer=DIR`` added when it is a corpus without a tokenizer choice and ``model`` is a
    folder with its own tokenizer (a Hugging Face folder or a language-model variant), so that the data is
    tokenized the model's way. The result is a complete spec: a worker process loading it gets the same data."""
    if not dataset or not model:
        return dataset
    try:
        kind, _path, options = parse_spec(dataset)
    except InputError:
        return dataset  # load_dataset reports it
    if kind not in ("text", "pydocs") or "tokenizer" in options or "vocab" in options:
        return dataset
    folder = model_folder(model)
    if folder is None:
        return dataset
    from workbench.core.lm.tokenizer import has_tokenizer

    if not has_tokenizer(folder) or not tokenizer_folder_ok(str(folder)):
        return dataset
    addition = f"tokenizer={folder}"
    if options:
        return f"{dataset},{addition}"
    return f"{dataset}:{addition}"


def model_folder(model: str) -> Path | None:
    """The folder a model spec names (``DIR`` or ``hf:DIR``), or None for zoo/py/file specs."""
    text = model[3:] if model.startswith("hf:") else model
    if model.startswith(("zoo:", "py:")):
        return None
    path = Path(text).expanduser()
    try:
        return path.resolve() if path.is_dir() else None
    except OSError:
        return None


def tokenizer_folder_ok(path: str) -> bool:
    """Whether ``path`` can go into a spec unchanged (the spec syntax splits on ':' and ',')."""
    return not any(c in path for c in ":,") and os.path.isabs(path)
