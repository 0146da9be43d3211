"""The desktop app's entry points: ``create_main_window`` (tests, automation) and ``main`` (the ``workbench``
command). Qt, pyqtgraph and superqt are imported here and in ``workbench.ui`` only.

Start-up is kept fast: the window is built from Qt alone; torch, the plugins, the dataset and the root model are
loaded on worker threads and appear when ready.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from workbench.ui.theme import ensure_app

# The train form's starting values on the demo (zoo:seed_cnn on digits), for a convincing first Run: the job's
# general defaults (10 epochs) stop at 0.96-0.97 test accuracy there; these reach 0.98-0.99 over seeds in about
# 20 s on one core (the app leaves the other to the GUI). bench/demo_defaults.py measures both.
DEMO_PRESETS: dict[str, dict[str, object]] = {"train": {"epochs": 20, "label_smoothing": 0.1}}


def opens_on_demo(workspace: str | Path | None, model: str | None, dataset: str | None) -> bool:
    """Whether the window opens on the demo: a new workspace without a model (the controller then loads the demo
    model and dataset), or the demo model on the demo dataset named explicitly."""
    from workbench.ui.controller import DEMO_DATASET, DEMO_MODEL

    if dataset not in (None, DEMO_DATASET):
        return False
    if model is None:
        return workspace is None or not (Path(workspace) / "workspace.sqlite").exists()
    return model == DEMO_MODEL


def create_main_window(workspace: str | Path | None = None, model: str | None = None, dataset: str | None = None,
                       *, trust: bool = False, device: str = "auto",
                       progress: TextIO | None = None):  # noqa: ANN201 - MainWindow, imported lazily
    """Build the main window on the demo (zoo:seed_cnn + digits in a fresh workspace) or on the given
    workspace/model/dataset, without showing it or starting an event loop. Loading continues in the background;
    its steps show in the window and, with ``progress`` (a text stream), as lines there too.
    """
    from workbench.core.notifications import install_excepthooks, subscribe
    from workbench.ui.controller import Controller
    from workbench.ui.main_window import MainWindow
    from workbench.ui.startup import StartupProgress

    ensure_app()
    sys.setswitchinterval(0.0002)  # hand the GIL back to the GUI thread often while a job trains
    controller = Controller(trust=trust, device=device)
    window = MainWindow(controller)
    install_excepthooks()
    unsubscribe = subscribe(controller.bridge.push_notification)
    window.destroyed.connect(lambda *_a: unsubscribe())
    window.job_panel.default_job = "train"
    window.startup = StartupProgress(window, progress)
    if opens_on_demo(workspace, model, dataset):
        window.job_panel.presets = dict(DEMO_PRESETS)
    # torch, the plugins and the model load on worker threads, started once the event loop turns (after show)
    QTimer.singleShot(0, controller.load_jobs)
    QTimer.singleShot(0, lambda: controller.open(Path(workspace) if workspace else None, model, dataset))
    return window


def main(model: str | None = None, dataset: str | None = None, workspace: str | None = None,
         trust: bool = False) -> int:
    """Show the window and run the event loop; returns the exit code."""
    app = ensure_app()
    window = create_main_window(workspace, model, dataset, trust=trust, progress=sys.stderr)
    window.show()
    return QApplication.exec() if app is not None else 0
