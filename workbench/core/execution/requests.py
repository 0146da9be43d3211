"""What the runner is asked to do and what it answers: plain, picklable values that cross process boundaries."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class JobRequest:
    """What to run: a job by name with raw or typed parameters, on an input variant of the workspace."""

    job: str
    params: dict[str, Any] = field(default_factory=dict)
    input_variant: str | None = None
    device: str = "auto"
    seed: int = 0


@dataclass
class OpenModelRequest:
    """Load a model spec and save it as a new root variant (measured like any other)."""

    model: str
    weights: str | None = None
    device: str = "auto"

    @property
    def job(self) -> str:
        return "load"

    @property
    def params(self) -> dict[str, Any]:
        return {"model": self.model}


Request = JobRequest | OpenModelRequest


@dataclass
class RunOutcome:
    status: str  # "ok" | "failed" | "cancelled"
    variant: str | None = None
    error: str | None = None
    traceback: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    input_variant: str | None = None
    marks: list[str] = field(default_factory=list)
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    bad_input: bool = False  # the failure was the user's input (exit code 2 in batch mode)


class RunHandle:
    """A queued or running job; ``cancel()`` is honoured between steps (within a second in training)."""

    def __init__(self, run_id: int, request: Request) -> None:
        self.run_id = run_id
        self.request = request
        self.cancel_event = threading.Event()
        self.done_event = threading.Event()
        self.outcome: RunOutcome | None = None

    def cancel(self) -> None:
        self.cancel_event.set()

    def wait(self, timeout: float | None = None) -> RunOutcome | None:
        self.done_event.wait(timeout)
        return self.outcome
