"""Training speed in the app against batch mode: the same train job (seed_cnn on digits, 4 epochs, seed 0), run by
``workbench --batch`` and by the app's Run button, alternated twice, median samples/s of each.

The app is measured twice per round, because what its GUI thread does while it waits decides the figure on a
small machine:
- ``event loop``: the GUI thread sleeps in Qt's event loop between events, as it does for a user;
- ``busy polling``: the GUI thread spins on ``processEvents`` (what a test probe does), which keeps one core
  busy; on a 2-core machine the worker's two OpenMP threads then share the other core with it.

Target: the app's event-loop figure within 10% of batch mode (ratio >= 0.9). The busy-polling figure is printed
for information: it measures the poller, not the app.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

EPOCHS = 4
EXE = str(Path(sys.executable).parent / "workbench")


def _median_speed(workspace: Path) -> float:
    con = sqlite3.connect(workspace / "workspace.sqlite")
    try:
        values = [v for (v,) in con.execute("SELECT value FROM metrics WHERE name = 'samples_per_s'")]
    finally:
        con.close()
    if not values:
        raise SystemExit(f"no samples_per_s recorded in {workspace}")
    return statistics.median(values)


def batch_speed(out: Path) -> float:
    done = subprocess.run([EXE, "--batch", "--model", "zoo:seed_cnn", "--dataset", "digits", "--seed", "0",
                           "--job", f"train:epochs={EPOCHS}", "--quiet", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"batch training failed: {done.stderr.strip().splitlines()[-1:]}")
    return _median_speed(out)


def app_speed(out: Path, busy: bool) -> float:
    """Train in the app (its Run button); ``busy`` waits by spinning on processEvents instead of sleeping."""
    from PySide6 import QtCore, QtWidgets

    from workbench.app import create_main_window

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    window = create_main_window(workspace=str(out))
    window.show()
    table = window.findChild(QtCore.QObject, "variantsTable")

    def rows() -> int:
        model = table.model() if callable(getattr(table, "model", None)) else None
        return model.rowCount() if model is not None else table.rowCount()

    def wait(cond, seconds: float) -> bool:
        end = time.perf_counter() + seconds
        if busy:
            while not cond() and time.perf_counter() < end:
                app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 20)
            return cond()
        loop = QtCore.QEventLoop()
        timer = QtCore.QTimer()
        timer.setInterval(100)
        timer.timeout.connect(lambda: loop.quit() if cond() or time.perf_counter() > end else None)
        timer.start()
        loop.exec()
        timer.stop()
        return cond()

    try:
        if not wait(lambda: rows() >= 1, 180):
            raise SystemExit("the demo variant never appeared in the app")
        selector = window.findChild(QtWidgets.QComboBox, "jobSelector")
        selector.setCurrentIndex(selector.findData("train") if selector.findData("train") >= 0
                                 else selector.findText("train", QtCore.Qt.MatchFlag.MatchFixedString))
        app.processEvents()
        window.findChild(QtWidgets.QWidget, "param.epochs").setValue(EPOCHS)
        before = rows()
        window.findChild(QtWidgets.QAbstractButton, "runButton").click()
        if not wait(lambda: rows() > before, 900):
            raise SystemExit("the app's train job made no variant")
    finally:
        window.close()
        window.deleteLater()
        app.processEvents()
    return _median_speed(out)


def main() -> float:
    batch, idle, busy = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(2):
            batch.append(batch_speed(Path(tmp) / f"b{i}"))
            idle.append(app_speed(Path(tmp) / f"a{i}", busy=False))
            busy.append(app_speed(Path(tmp) / f"p{i}", busy=True))
    ratio = max(idle) / max(batch)
    print(f"app_training: batch {max(batch):.0f} samples/s, app (event loop) {max(idle):.0f} -> ratio {ratio:.2f} "
          f"(target >= 0.9); app with a busy-polling GUI thread {max(busy):.0f} -> {max(busy) / max(batch):.2f} "
          f"(information: the poller takes a core)")
    return ratio


if __name__ == "__main__":
    main()
