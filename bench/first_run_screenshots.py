"""A newcomer's first minute, photographed: the app opens on the demo with a fresh profile at the size it picks
for this screen, and Run is pressed with the form untouched.

    xvfb-run -a -s "-screen 0 1366x768x24" python bench/first_run_screenshots.py docs/screenshots
    (make screenshots runs it at 1600x1000 and 1366x768)

Writes, named after the screen, first_run_WxH.png (the whole screen once the default Run has finished) and
first_run_WxH_starting.png (while PyTorch and the demo model load). Prints the Run's accuracy and time, and
exits 1 when the job form needed a horizontal scrollbar or the window did not fit the screen.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from workbench.platform_check import explain_unusable  # noqa: E402

if explain_unusable():  # under xvfb-run with QT_QPA_PLATFORM=xcb: the X libraries must be there
    sys.exit(2)

from PySide6.QtCore import QEventLoop, QSettings  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


def wait(app: QApplication, until, limit_s: float = 600) -> bool:  # noqa: ANN001
    deadline = time.perf_counter() + limit_s
    while not until() and time.perf_counter() < deadline:
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
    return bool(until())


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots")
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication([])
    screen = app.primaryScreen()
    size = screen.geometry().size()
    tag = f"{size.width()}x{size.height()}"
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        QSettings.setDefaultFormat(QSettings.Format.IniFormat)  # a fresh profile: no saved size or form values
        QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, tmp)
        from workbench.app import create_main_window

        w = create_main_window(workspace=Path(tmp) / "ws", progress=sys.stderr)
        w.show()
        wait(app, lambda: w.startup.widget.isVisible() and "loading" in w.startup.label.text(), 60)
        wait(app, lambda: False, 1.5)
        screen.grabWindow(0).save(str(out / f"first_run_{tag}_starting.png"))
        if not wait(app, lambda: w.controller.session is not None and len(w.variants) >= 1
                    and w.job_panel.form is not None and w.job_panel.run_button.isEnabled()):
            print("the demo did not load", file=sys.stderr)
            return 1
        if not screen.availableGeometry().contains(w.frameGeometry()):
            problems.append(f"the window {w.frameGeometry()} does not fit the screen {screen.availableGeometry()}")
        started = time.perf_counter()
        w.job_panel.run_button.click()
        wait(app, lambda: len(w.variants) >= 2)
        seconds = time.perf_counter() - started
        w.tabs.setCurrentWidget(w.graph_view)  # the graph view builds the selected variant's graph when shown
        wait(app, lambda: not w.graph_view.busy and bool(w.graph_view.node_items()), 60)
        w.tabs.setCurrentWidget(w.metrics_plot)
        wait(app, lambda: False, 1.0)
        if w.job_panel.scroll.horizontalScrollBar().isVisible():
            problems.append("the job form shows a horizontal scrollbar")
        screen.grabWindow(0).save(str(out / f"first_run_{tag}.png"))
        accuracy = w.variants[-1].metrics.get("accuracy") if len(w.variants) >= 2 else None
        print(f"{tag}: default Run -> accuracy {accuracy} in {seconds:.0f} s; window {w.size().toTuple()}")
        w.controller.shutdown(wait=True)
        w.close()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
