"""Events that jobs emit: observed by the app's plots, the CLI's progress bars and the metric history.

Observers subscribe to an ``EventBus``; callbacks run on the worker thread, so a GUI subscriber must only
append to a buffer that its own timer drains (see ``workbench.ui.bridge``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

METRIC = "metric"
PROGRESS = "progress"
LOG = "log"
STARTED = "started"
QUEUED = "queued"
FINISHED = "finished"


@dataclass(frozen=True)
class JobEvent:
    """One thing that happened in a job run. ``data`` depends on ``kind``:

    - metric: ``{"step": int, "metrics": {name: float}}``
    - progress: ``{"done": int, "total": int, "text": str}``
    - log: ``{"level": "info"|"warning"|"error", "message": str}``
    - queued/started: ``{"params": dict, "input": variant id, "device": str}``
    - finished: ``{"status": "ok"|"failed"|"cancelled", "variant": id|None, "error": str|None,
      "traceback": str|None, "metrics": dict, "seconds": float, "result": dict}``
    """

    kind: str
    run_id: int
    job: str
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


Subscriber = Callable[[JobEvent], None]


class EventBus:
    """Fan-out of job events to subscribers; a raising subscriber is dropped from that delivery, never fatal."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns a function that removes it."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def emit(self, event: JobEvent) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception as exc:  # noqa: BLE001 - an observer must not break the job
                from workbench.core.notifications import notify_exception

                notify_exception(exc, source=f"event subscriber {getattr(callback, '__name__', callback)!r}")
