"""Text classification from a CSV of (text, label) rows, tokenized into fixed-length id sequences.

The vocabulary comes from the train split only, so validation and test measure generalization to
unseen words (they map to <unk>), as they would in deployment.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from workbench.core.data.bundle import (
    PAD_ID,
    UNK_ID,
    DataBundle,
    bundle_from_splits,
    encode_texts,
    label_mapping,
    split_indices,
    tokenize,
)
from workbench.core.data.specs import Options, need_path
from workbench.core.data.tabular import check_ragged, read_csv_rows
from workbench.core.errors import InputError

PAD, UNK = "<pad>", "<unk>"


def build_vocab(texts: list[str], max_size: int) -> dict[str, int]:
    """Most frequent tokens first (ties alphabetical), capped so that pad and unk fit in ``max_size``."""
    counts = Counter(tok for text in texts for tok in tokenize(text))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: max(0, max_size - 2)]
    vocab = {PAD: PAD_ID, UNK: UNK_ID}
    for token, _ in ranked:
        vocab[token] = len(vocab)
    return vocab


def load_text_csv(
    spec: str, path: str | None, options: dict[str, str], *, seed: int, batch_size: int, download: bool
) -> DataBundle:
    """``text_csv:FILE[:seq_len=64,vocab=20000]``: columns text,label (header optional)."""
    file = Path(need_path(spec, "text_csv", path)).expanduser()
    opts = Options(spec, "text_csv", options, {"seq_len", "vocab"})
    seq_len = opts.get_int("seq_len", 64, minimum=1, maximum=1_000_000)
    max_vocab = opts.get_int("vocab", 20000, minimum=3, maximum=100_000_000)
    rows = read_csv_rows(file, "text_csv")
    check_ragged(rows, 2, file, "text_csv")
    if [c.strip().lower() for c in rows[0][1]] == ["text", "label"]:
        rows = rows[1:]
    if not rows:
        raise InputError(f"text_csv: {file} has a header but no data rows")
    texts = [row[0] for _, row in rows]
    labels = [row[1].strip() for _, row in rows]
    for (line, _), label in zip(rows, labels):
        if not label:
            raise InputError(f"text_csv: {file} line {line}: empty label")
    names, index = label_mapping(labels)
    if len(names) < 2:
        raise InputError(f"text_csv: {file} has only one class ({names[0]!r}); need at least 2")
    y = torch.tensor([index[label] for label in labels], dtype=torch.int64)
    parts = split_indices(y.numpy())
    vocab = build_vocab([texts[i] for i in parts["train"]], max_vocab)
    splits = {
        name: (encode_texts([texts[i] for i in ix], vocab, seq_len), y[torch.from_numpy(ix)])
        for name, ix in parts.items()
    }
    return bundle_from_splits(
        spec, "text", splits, names, vocab_size=len(vocab), batch_size=batch_size, seed=seed, vocab=vocab
    )
