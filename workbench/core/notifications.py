"""One error channel for the whole program (as in napari): subscribers are the app's dialog or the CLI printer.

Uncaught exceptions in any thread end up here instead of killing the process.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from time import time

log = logging.getLogger("workbench")


@dataclass(frozen=True)
class Notification:
    """A message for the user; ``details`` holds the traceback shown behind a "details" button."""

    message: str
    severity: str = "error"  # "info" | "warning" | "error"
    source: str = ""
    details: str = ""
    time: float = field(default_factory=time)


_subscribers: list[Callable[[Notification], None]] = []
_lock = threading.Lock()


def subscribe(callback: Callable[[Notification], None]) -> Callable[[], None]:
    """Receive every notification (on the thread that raised it); returns an unsubscribe function."""
    with _lock:
        _subscribers.append(callback)

    def unsubscribe() -> None:
        with _lock:
            if callback in _subscribers:
                _subscribers.remove(callback)

    return unsubscribe


def notify(message: str, severity: str = "info", source: str = "", details: str = "") -> None:
    note = Notification(message=message, severity=severity, source=source, details=details)
    with _lock:
        subscribers = list(_subscribers)
    if not subscribers:
        log.log(logging.ERROR if severity == "error" else logging.INFO, "%s", message)
    for callback in subscribers:
        try:
            callback(note)
        except Exception:  # noqa: BLE001 - never recurse into the channel
            log.exception("notification subscriber failed")


def notify_exception(exc: BaseException, source: str = "") -> None:
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    notify(f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc), "error", source, details)


def install_excepthooks() -> None:
    """Route uncaught exceptions of the main and worker threads to the channel instead of aborting."""

    def _sys_hook(exc_type, exc, tb):  # type: ignore[no-untyped-def]
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        notify_exception(exc.with_traceback(tb), source="main thread")

    def _thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            notify_exception(args.exc_value, source=f"thread {args.thread.name if args.thread else '?'}")

    sys.excepthook = _sys_hook
    threading.excepthook = _thread_hook
