"""Start-up progress: the slow first steps (importing PyTorch and the jobs, opening the model: the dataset, the job
worker, measuring the root variant) shown while they run, so the first minute never looks frozen.

In the window: a busy bar with the steps still running and the seconds so far, in the status bar, and one line per
finished step in the log. On the terminal (the ``workbench`` command passes its stderr): one line when a step
starts and one when it ends, with its time. Only start-up is tracked; the job panel shows jobs.
"""

from __future__ import annotations

import time
from typing import Any, TextIO

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QWidget

JOBS_STEP = "importing PyTorch and the jobs"


class StartupProgress(QObject):
    """Follows the controller's start-up signals; ``widget`` (objectName ``startupProgress``) sits in the status
    bar and hides itself when every step has ended."""

    def __init__(self, window: Any, stream: TextIO | None = None) -> None:
        super().__init__(window)
        self.window = window
        self.stream = stream
        self.started = time.monotonic()
        self.running: dict[str, float] = {}  # step -> when it started
        self.done: list[tuple[str, float]] = []
        self.failed = False
        self.widget = QWidget()
        self.widget.setObjectName("startupProgress")
        layout = QHBoxLayout(self.widget)
        layout.setContentsMargins(0, 0, 0, 0)
        self.bar = QProgressBar()
        self.bar.setRange(0, 0)  # busy: these steps cannot say how far they are
        self.bar.setMaximumWidth(90)
        self.bar.setMaximumHeight(14)
        self.bar.setTextVisible(False)
        self.label = QLabel()
        self.label.setObjectName("startupText")
        layout.addWidget(self.bar)
        layout.addWidget(self.label)
        window.status.insertPermanentWidget(0, self.widget, 1)
        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self._show)
        c = window.controller
        c.jobs_loaded.connect(self._on_jobs)
        c.session_opening.connect(self._on_opening)
        c.session_ready.connect(self._on_ready)
        c.session_failed.connect(self._on_failed)
        self.begin(JOBS_STEP)

    def begin(self, step: str) -> None:
        if step in self.running:
            return
        self.running[step] = time.monotonic()
        self._say(f"{step} ...")
        self.timer.start()
        self._show()

    def end(self, step: str, outcome: str = "done") -> None:
        started = self.running.pop(step, None)
        if started is None:
            return
        seconds = time.monotonic() - started
        self.done.append((step, seconds))
        line = f"{step}: {outcome} in {seconds:.1f} s"
        self._say(line)
        failed = outcome.startswith("failed")
        self.failed = self.failed or failed
        self.window.log_view.add(line, "error" if failed else "info")
        if not self.running and not self.failed:
            self._say(f"ready in {time.monotonic() - self.started:.1f} s")
        self._show()

    def finished(self) -> bool:
        return not self.running

    def _say(self, line: str) -> None:
        if self.stream is not None:
            print(f"workbench: {line}", file=self.stream, flush=True)

    def _show(self) -> None:
        if not self.running:
            self.timer.stop()
            self.widget.hide()
            return
        seconds = time.monotonic() - min(self.running.values())
        self.label.setText(f"{'; '.join(self.running)} ... {seconds:.0f} s")
        self.widget.show()

    # controller signals ---------------------------------------------------------------------------------------
    def _on_jobs(self, classes: dict) -> None:
        self.end(JOBS_STEP, f"{len(classes)} jobs")

    def _on_opening(self, text: str) -> None:
        if text.startswith("loading ") and not self.window.controller.session and not self._model_step():
            self.begin(text.removesuffix(" ...").strip() + " (dataset, job worker, measuring)")

    def _model_step(self) -> str | None:
        return next((s for s in self.running if s != JOBS_STEP), None)

    def _on_ready(self, _session: Any) -> None:
        step = self._model_step()
        if step is not None:
            self.end(step)

    def _on_failed(self, message: str, _details: str) -> None:
        step = self._model_step()
        if step is not None:
            self.end(step, f"failed ({message})")
