"""The log dock: what the jobs say, with time stamps; bounded so a long session stays light."""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtGui import QFont
from PySide6.QtWidgets import QPlainTextEdit, QWidget


class LogView(QPlainTextEdit):
    """objectName ``logView``; read-only, at most 5,000 lines."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("logView")
        self.setReadOnly(True)
        self.setMaximumBlockCount(5000)
        font = QFont("monospace")
        font.setStyleHint(QFont.StyleHint.Monospace)
        self.setFont(font)
        self._inputs: dict[int, str] = {}  # run id -> input variant, to tell a measurement from a new variant

    def add(self, message: str, level: str = "info") -> None:
        stamp = time.strftime("%H:%M:%S")
        prefix = {"warning": "warning: ", "error": "error: "}.get(level, "")
        self.appendPlainText(f"{stamp}  {prefix}{message}")

    def on_event(self, event: Any) -> None:
        data, tag = event.data, f"#{event.run_id} {event.job}"
        if event.kind == "queued":
            self.add(f"{tag}: queued on {data.get('device')} (input {data.get('input') or 'latest'})")
        elif event.kind == "started":
            params = ", ".join(f"{k}={v}" for k, v in data.get("params", {}).items())
            self._inputs[event.run_id] = data.get("input")
            self.add(f"{tag}: started on {data.get('input')} ({params})")
        elif event.kind == "log":
            self.add(f"{tag}: {data.get('message')}", data.get("level", "info"))
        elif event.kind == "finished":
            status = data.get("status")
            variant, measured = data.get("variant"), self._inputs.pop(event.run_id, None)
            if status == "ok":
                what = ("done" if not variant else f"measured {variant}" if variant == measured
                        else f"new variant {variant}")
                acc = data.get("metrics", {}).get("accuracy")
                extra = f", accuracy {100 * acc:.2f} %" if isinstance(acc, float) else ""
                self.add(f"{tag}: {what}{extra} in {data.get('seconds', 0):.1f} s")
            elif status == "cancelled":
                self.add(f"{tag}: cancelled, no variant added", "warning")
            else:
                self.add(f"{tag}: failed: {data.get('error')}", "error")
