"""Typed job parameters, declared once.

A job declares each parameter as a class attribute ``name: type = Param(default, ...)``. From that single
declaration the CLI parses ``k=v`` strings, the pipeline file is validated, and the app builds its form.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

from workbench.core.errors import InputError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass
class Param:
    """One job parameter: default, limits, choices and help.

    ``kind`` is one of ``int``, ``float``, ``bool``, ``str``, ``choice`` or ``list`` (a list of strings,
    written ``a,b`` on the command line and as a TOML array in a pipeline). It is filled in from the
    type annotation when the job class is created.
    """

    default: Any
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    kind: str = ""
    name: str = ""
    label: str = ""
    advanced: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        if not self.label:
            self.label = name.replace("_", " ")

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.__dict__.get("_params", {}).get(self.name, self.default)

    def bind_annotation(self, annotation: Any) -> None:
        """Set ``kind`` (and choices) from the attribute's type annotation."""
        origin = get_origin(annotation)
        if origin is Literal:
            self.kind = "choice"
            self.choices = tuple(str(a) for a in get_args(annotation))
        elif annotation in (int, "int"):
            self.kind = "int"
        elif annotation in (float, "float"):
            self.kind = "float"
        elif annotation in (bool, "bool"):
            self.kind = "bool"
        elif annotation in (str, "str"):
            self.kind = "choice" if self.choices else "str"
        elif origin in (list, tuple) or annotation in (list, "list[str]"):
            self.kind = "list"
        else:
            raise TypeError(f"parameter {self.name!r}: unsupported type {annotation!r}")
        if self.kind != "list":
            self.default = self.convert(self.default) if self.default is not None else None

    def convert(self, value: Any) -> Any:
        """Turn a CLI string, a TOML value or a widget value into this parameter's type, checking limits."""
        where = f"parameter {self.name}"
        if value is None:
            return None
        try:
            if self.kind == "bool":
                if isinstance(value, bool):
                    out: Any = value
                elif str(value).strip().lower() in _TRUE:
                    out = True
                elif str(value).strip().lower() in _FALSE:
                    out = False
                else:
                    raise ValueError
            elif self.kind == "int":
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                out = int(str(value).strip()) if isinstance(value, str) else int(value)
            elif self.kind == "float":
                if isinstance(value, bool):
                    raise ValueError
                out = float(str(value).strip()) if isinstance(value, str) else float(value)
                if not math.isfinite(out):
                    raise ValueError
            elif self.kind == "list":
                if isinstance(value, str):
                    parts = value.replace("|", ";").replace(",", ";").split(";")
                    out = [p.strip() for p in parts if p.strip()]
                else:
                    out = [str(v) for v in value]
            else:
                out = str(value)
        except (TypeError, ValueError):
            raise InputError(f"{where}: {value!r} is not a valid {self.kind}") from None
        if self.kind == "choice" and out not in self.choices:
            raise InputError(f"{where}: {out!r} is not one of {', '.join(self.choices)}")
        if self.kind in ("int", "float"):
            if self.min is not None and out < self.min:
                raise InputError(f"{where}: {out} is below the minimum {self.min:g}")
            if self.max is not None and out > self.max:
                raise InputError(f"{where}: {out} is above the maximum {self.max:g}")
        return out

    def describe(self) -> str:
        """One line for --help-style listings and tooltips."""
        limits = ""
        if self.choices:
            limits = " (" + "|".join(self.choices) + ")"
        elif self.min is not None or self.max is not None:
            lo = "" if self.min is None else f"{self.min:g}"
            hi = "" if self.max is None else f"{self.max:g}"
            limits = f" [{lo}..{hi}]"
        return f"{self.name}={self.default!r}{limits}: {self.help}"


def collect_params(cls: type) -> dict[str, Param]:
    """Gather the Param declarations of a job class and its bases, in declaration order."""
    params: dict[str, Param] = {}
    for klass in reversed(cls.__mro__):
        try:
            hints = typing.get_type_hints(klass, include_extras=False)
        except Exception:  # noqa: BLE001 - a bad hint is reported below per parameter
            hints = getattr(klass, "__annotations__", {})
        for name, value in vars(klass).items():
            if isinstance(value, Param):
                if not value.kind:
                    if name not in hints:
                        raise TypeError(f"{cls.__name__}.{name}: a Param needs a type annotation")
                    value.bind_annotation(hints[name])
                params[name] = value
    return params


def parse_params(declared: dict[str, Param], given: dict[str, Any], job_name: str) -> dict[str, Any]:
    """Validate user values against the declarations and fill in defaults."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        known = ", ".join(declared) or "none"
        raise InputError(f"job {job_name}: unknown parameter {unknown[0]!r} (known: {known})")
    values = {name: p.default for name, p in declared.items()}
    for name, raw in given.items():
        values[name] = declared[name].convert(raw)
    return values
