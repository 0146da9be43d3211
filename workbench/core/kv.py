"""``k=v,k=v`` option strings, as in ``--job NAME:k=v``, ``zoo:NAME:k=v`` and dataset specs: one parser for all."""

from __future__ import annotations

from workbench.core.errors import InputError

QUOTES = "'\""


def _pieces(text: str, what: str) -> list[str]:
    """Split on commas outside quotes; a quoted value keeps its commas (``student='zoo:m:a=1,b=2'``)."""
    pieces, current, quote = [], "", ""
    for char in text:
        if quote:
            if char == quote:
                quote = ""
            else:
                current += char
        elif char in QUOTES and current.rstrip().endswith("="):
            quote = char
        elif char == ",":
            pieces.append(current)
            current = ""
        else:
            current += char
    if quote:
        raise InputError(f"{what}: unclosed quote {quote} in {text!r}")
    pieces.append(current)
    return pieces


def split_kv(text: str, what: str) -> dict[str, str]:
    """Parse ``k=v,k=v``; a piece without '=' continues the previous value (``with=v0003,v0004``); a value in
    quotes keeps its commas and colons."""
    out: dict[str, str] = {}
    if not text:
        return out
    pieces: list[str] = []
    for piece in _pieces(text, what):
        if "=" in piece:
            pieces.append(piece)
        elif pieces:
            pieces[-1] += "," + piece
        else:
            raise InputError(f"{what}: expected k=v, got {piece!r}")
    for piece in pieces:
        key, _, value = piece.partition("=")
        key = key.strip()
        if not key:
            raise InputError(f"{what}: expected k=v, got {piece!r}")
        out[key] = value.strip()
    return out
