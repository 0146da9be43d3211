"""The thin Qt bridge between worker threads and the GUI thread.

Runner events, notifications and finished background tasks arrive on other threads; they are appended to a
thread-safe deque and delivered on the GUI thread by a QTimer (15 Hz by default), in batches, so a chatty job
costs the event loop one short slice per tick instead of one per event.
"""

from __future__ import annotations

import collections
import concurrent.futures
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from .threads import ThreadPerTask


class Bridge(QObject):
    """Delivers worker-thread items to the GUI thread. ``events`` carries a list of JobEvents per tick."""

    events = Signal(list)
    notified = Signal(object)

    def __init__(self, parent: QObject | None = None, hz: float = 15.0) -> None:
        super().__init__(parent)
        self._queue: collections.deque[tuple[str, Any]] = collections.deque()
        self._timer = QTimer(self)
        self._timer.setInterval(max(1, int(1000 / hz)))
        self._timer.timeout.connect(self.flush)
        self._timer.start()
        self._pool = ThreadPerTask(max_workers=2, name="workbench-ui")  # see threads.py: no idle torch pools

    # any thread ------------------------------------------------------------------------------------------------
    def push_event(self, event: Any) -> None:
        """A runner bus subscriber: called on the worker thread, only appends."""
        self._queue.append(("event", event))

    def push_notification(self, note: Any) -> None:
        self._queue.append(("note", note))

    def call_soon(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the GUI thread at the next tick."""
        self._queue.append(("call", fn))

    def run_in_background(self, fn: Callable[[], Any], on_done: Callable[[Any], None] | None = None,
                          on_error: Callable[[BaseException], None] | None = None) -> concurrent.futures.Future:
        """Run ``fn`` on a thread of its own; its result (or exception) is handed to the callbacks on the GUI thread."""
        future = self._pool.submit(fn)

        def finished(f: concurrent.futures.Future) -> None:
            exc = f.exception()
            if exc is not None:
                if on_error is not None:
                    self.call_soon(lambda: on_error(exc))
                else:
                    from workbench.core.notifications import notify_exception

                    notify_exception(exc, source="background task")
            elif on_done is not None:
                self.call_soon(lambda: on_done(f.result()))

        future.add_done_callback(finished)
        return future

    # GUI thread ------------------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Deliver everything queued so far (the timer calls it; tests may call it directly)."""
        events: list[Any] = []
        while self._queue:
            kind, item = self._queue.popleft()
            if kind == "event":
                events.append(item)
                continue
            if events:
                self.events.emit(events)
                events = []
            if kind == "note":
                self.notified.emit(item)
                continue
            try:
                item()
            except Exception as exc:  # noqa: BLE001 - a failing callback is reported, the loop goes on
                from workbench.core.notifications import notify_exception

                notify_exception(exc, source="app")
        if events:
            self.events.emit(events)

    def shutdown(self) -> None:
        self._timer.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
