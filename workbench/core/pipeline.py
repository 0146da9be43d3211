"""Pipelines: the steps of a batch run, from ``--job`` flags or a TOML file, validated before anything runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from workbench.core.errors import InputError
from workbench.core.kv import split_kv

TOP_LEVEL_KEYS = {"model", "dataset", "weights", "device", "seed", "out", "bench_batch", "step"}


@dataclass
class Step:
    job: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pipeline:
    model: str | None = None
    dataset: str | None = None  # None: the reopened workspace's, pydocs for a language model, else digits
    weights: str | None = None
    device: str = "auto"
    seed: int = 0
    out: str | None = None
    bench_batch: int = 0  # 0: the task's default (64 classifier inputs, 1 language-model sequence)
    steps: list[Step] = field(default_factory=list)


def parse_job_flag(text: str) -> Step:
    """``NAME[:k=v,...]`` as given to ``--job``."""
    name, _, rest = text.strip().partition(":")
    if not name:
        raise InputError(f"--job {text!r}: expected NAME[:k=v,...]")
    return Step(name, split_kv(rest, f"--job {name}"))


def load_pipeline_file(path: Path) -> Pipeline:
    """Read a TOML pipeline; unknown keys and wrong types are errors, not silently ignored."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such pipeline file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a valid TOML pipeline ({exc})") from None
    unknown = sorted(set(data) - TOP_LEVEL_KEYS)
    if unknown:
        raise InputError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(sorted(TOP_LEVEL_KEYS))})")
    pipe = Pipeline()
    for key, kind in (("model", str), ("dataset", str), ("weights", str), ("device", str), ("out", str),
                      ("seed", int), ("bench_batch", int)):
        if key in data:
            value = data[key]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise InputError(f"{path}: {key} must be a {kind.__name__}, got {value!r}")
            setattr(pipe, key, value)
    steps = data.get("step", [])
    if not isinstance(steps, list):
        raise InputError(f"{path}: [[step]] must be an array of tables")
    for i, step in enumerate(steps, 1):
        if not isinstance(step, dict) or not isinstance(step.get("job"), str):
            raise InputError(f"{path}: step {i} needs a job = \"NAME\"")
        params = {k: v for k, v in step.items() if k != "job"}
        pipe.steps.append(Step(step["job"], params))
    return pipe


def validate_steps(steps: list[Step]) -> list[dict[str, Any]]:
    """Load each job and check its parameters; returns the typed values. Raises InputError on the first bad one."""
    from workbench.core.jobs.registry import registry

    typed = []
    for step in steps:
        job_class = registry().load(step.job)
        typed.append(job_class(**step.params).values)
    return typed


def to_toml(pipe: Pipeline) -> str:
    """A pipeline file that ``workbench --batch --pipeline`` replays (the app saves its history with it)."""
    lines = []
    for key in ("model", "dataset", "weights", "device"):
        value = getattr(pipe, key)
        if value:
            lines.append(f"{key} = {_toml_value(value)}")
    lines.append(f"seed = {pipe.seed}")
    for step in pipe.steps:
        lines.append("")
        lines.append("[[step]]")
        lines.append(f"job = {_toml_value(step.job)}")
        for key, value in step.params.items():
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))
