"""Parse dataset spec strings (``NAME[:PATH][:k=v,...]``) and read typed options from them.

Kept apart from the loaders so the CLI can validate a spec before any heavy import happens.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from workbench.core.errors import InputError

_OPTION_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _is_options(segment: str) -> bool:
    """True if ``segment`` looks like ``k=v,k2=v2`` (every comma part starts with an identifier and '=')."""
    parts = segment.split(",")
    return bool(segment) and all(_OPTION_RE.match(p.strip()) for p in parts)


def parse_spec(spec: str) -> tuple[str, str | None, dict[str, str]]:
    """Split a spec into (kind, path or None, options).

    Everything between the first ':' and a trailing ``:k=v,...`` part is the path, so
    ``csv:data/x.csv:foo=1`` gives ``("csv", "data/x.csv", {"foo": "1"})`` and ``digits:size=8`` gives
    ``("digits", None, {"size": "8"})``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InputError("empty dataset spec: expected NAME[:PATH][:k=v,...], e.g. 'digits'")
    spec = spec.strip()
    name, sep, rest = spec.partition(":")
    name = name.strip().lower()
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise InputError(f"bad dataset spec {spec!r}: dataset name {name!r} is not a valid name")
    path: str | None = None
    options: dict[str, str] = {}
    if sep:
        head, colon, tail = rest.rpartition(":")
        if _is_options(tail):
            opt_text = tail
            path = head if colon else None
        else:
            opt_text = ""
            path = rest
        if path is not None and path == "":
            raise InputError(f"bad dataset spec {spec!r}: empty path")
        for part in filter(None, (p.strip() for p in opt_text.split(","))):
            key, _, value = part.partition("=")
            key = key.strip().lower()
            if key in options:
                raise InputError(f"bad dataset spec {spec!r}: option {key!r} given twice")
            options[key] = value.strip()
    return name, path, options


class Options:
    """Typed access to a spec's options; tracks which were read so unknown ones are reported."""

    def __init__(self, spec: str, kind: str, options: dict[str, str], allowed: set[str]) -> None:
        self.spec = spec
        self.kind = kind
        self.raw = dict(options)
        unknown = sorted(set(options) - allowed)
        if unknown:
            valid = ", ".join(sorted(allowed)) or "none"
            raise InputError(
                f"bad dataset spec {spec!r}: unknown option {unknown[0]!r} for {kind} (valid options: {valid})"
            )

    def get_str(self, key: str, default: str) -> str:
        """Return the option as a string (the default if absent)."""
        return self.raw.get(key, default)

    def get_int(
        self, key: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        """Return the option as an int within [minimum, maximum]; anything else is an InputError."""
        if key not in self.raw:
            return default
        text = self.raw[key]
        try:
            value = int(text)
        except ValueError:
            raise InputError(
                f"bad dataset spec {self.spec!r}: option {key}={text!r} is not an integer"
            ) from None
        if minimum is not None and value < minimum:
            raise InputError(f"bad dataset spec {self.spec!r}: option {key}={value} must be >= {minimum}")
        if maximum is not None and value > maximum:
            raise InputError(f"bad dataset spec {self.spec!r}: option {key}={value} must be <= {maximum}")
        return value

    def get_bool(self, key: str, default: bool) -> bool:
        """Return the option as a bool (true/false/1/0/yes/no)."""
        if key not in self.raw:
            return default
        text = self.raw[key].lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise InputError(f"bad dataset spec {self.spec!r}: option {key}={self.raw[key]!r} is not true/false")

    def get_shape(self, key: str, default: tuple[int, ...]) -> tuple[int, ...]:
        """Return an ``AxBxC`` option as a tuple of positive ints."""
        if key not in self.raw:
            return default
        text = self.raw[key]
        try:
            shape = tuple(int(p) for p in text.lower().split("x"))
        except ValueError:
            shape = ()
        if len(shape) != len(default) or any(d < 1 for d in shape):
            example = "x".join(str(d) for d in default)
            raise InputError(
                f"bad dataset spec {self.spec!r}: option {key}={text!r} must look like {example}"
            )
        return shape


def need_path(spec: str, kind: str, path: str | None) -> str:
    """Return the path of a kind that needs one, or raise a clear InputError."""
    if not path:
        what = "FILE" if kind in ("csv", "text_csv") else "DIR"
        raise InputError(f"bad dataset spec {spec!r}: {kind} needs a path, e.g. {kind}:{what}")
    return path


def no_path(spec: str, kind: str, path: str | None) -> None:
    """Reject a path for a kind that takes none (e.g. ``digits:foo``)."""
    if path is not None:
        raise InputError(f"bad dataset spec {spec!r}: {kind} takes no path, only options like {kind}:k=v")


def with_absolute_path(spec: str) -> str:
    """``spec`` with a relative path that exists made absolute (``text:c.txt:seq_len=32`` ->
    ``text:/home/u/c.txt:seq_len=32``): the workspace stores its dataset spec and a saved pipeline replays it, so
    reopening or replaying from another folder must find the same file."""
    try:
        _kind, path, _options = parse_spec(spec)
    except InputError:
        return spec  # load_dataset reports it
    if not path or os.path.isabs(path):
        return spec
    resolved = Path(path).expanduser()
    try:
        if not resolved.exists():
            return spec
        resolved = resolved.resolve()
    except OSError:
        return spec
    name, _, rest = spec.strip().partition(":")
    return f"{name}:{resolved}{rest[len(path):]}"
