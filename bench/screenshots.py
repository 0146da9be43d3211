"""Drive the app through the story and save screenshots: after training (live plots), the graph, the comparison.

    QT_QPA_PLATFORM=offscreen python bench/screenshots.py docs/screenshots     (or: make screenshots, under xvfb)

Writes app_metrics.png, app_graph.png, app_compare.png (and app_dark.png) in OUTDIR, and model_builder.png
(``--builder`` writes only that one: it needs no training).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QEventLoop  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


def wait(app: QApplication, until, limit_s: float = 600) -> bool:  # noqa: ANN001
    deadline = time.perf_counter() + limit_s
    while not until() and time.perf_counter() < deadline:
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
    return bool(until())


def settle(app: QApplication, seconds: float = 0.6) -> None:
    wait(app, lambda: False, seconds)


def run_job(app: QApplication, w, job: str, **params) -> bool:  # noqa: ANN001
    if w.job_panel.selector.findData(job) < 0 or job in w.controller.failed_jobs:
        return False
    print(f"running {job} {params} on {w.selected}", file=sys.stderr, flush=True)
    before = len(w.variants)
    w.job_panel.select_job(job)
    for name, value in params.items():
        from workbench.ui.param_form import set_editor_value

        set_editor_value(w.job_panel.form.editors[name], value)
    w.job_panel.run_button.click()
    wait(app, lambda: w.controller.busy(), 30)
    wait(app, lambda: not w.controller.busy())
    wait(app, lambda: len(w.variants) > before, 3)  # the finished event reaches the GUI on the next tick
    return len(w.variants) > before


def builder_shot(app: QApplication, w):  # noqa: ANN001, ANN201
    """The Build tab on the seed CNN, the dense(64) row selected, its graph traced."""
    from workbench.core.stack_grammar import TEMPLATES

    w.tabs.setCurrentWidget(w.model_builder)
    builder = w.model_builder
    wait(app, lambda: builder.input_shape == (1, 28, 28) and builder.check is not None, 30)
    builder.load_text(TEMPLATES["seed CNN (Keras MNIST example)"])
    builder.table.selectRow(9)
    wait(app, lambda: not builder.graph.busy and builder.graph.node_items(), 60)
    builder.graph.fit()
    settle(app)
    return w.grab()


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    only_builder = "--builder" in sys.argv[1:]
    out = Path(args[0] if args else "docs/screenshots")
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication([])
    from PySide6.QtCore import QSettings

    with tempfile.TemporaryDirectory() as tmp:
        QSettings.setDefaultFormat(QSettings.Format.IniFormat)  # a clean profile: default layout and values
        QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, tmp)
        from workbench.app import create_main_window

        w = create_main_window(workspace=Path(tmp) / "ws")
        w.resize(1600, 1000)
        w.show()
        if not wait(app, lambda: w.controller.session is not None and len(w.variants) >= 1 and w.job_panel.form):
            print("the demo did not load", file=sys.stderr)
            return 1
        if only_builder:
            builder_shot(app, w).save(str(out / "model_builder.png"))
            print(out / "model_builder.png")
            w.controller.shutdown(wait=True)
            w.close()
            return 0
        run_job(app, w, "train", epochs=8, lr=0.002, schedule="cosine")
        trained = w.selected
        shots = []
        for job, params in (("prune", {"amount": 0.5}), ("quantize", {})):
            w.selected = None
            w.select_variant(trained)
            if job == "prune" and w.job_panel.selector.findData("prune") >= 0:
                run_job(app, w, job, **{k: v for k, v in params.items() if k in _params(w, job)})
            elif job != "prune":
                run_job(app, w, job)
        w.selected = None
        w.select_variant(trained)
        run_job(app, w, "train", epochs=3, lr=0.001)  # fine-tune: its curves are the ones on screen
        settle(app, 1.0)
        w.tabs.setCurrentWidget(w.metrics_plot)
        settle(app)
        shots.append(("app_metrics.png", w.grab()))
        w.tabs.setCurrentWidget(w.graph_view)
        wait(app, lambda: not w.graph_view.busy and w.graph_view.node_items(), 60)
        w.graph_view.fit()
        settle(app)
        shots.append(("app_graph.png", w.grab()))
        w.tabs.setCurrentWidget(w.compare)
        settle(app)
        shots.append(("app_compare.png", w.grab()))
        shots.append(("model_builder.png", builder_shot(app, w)))
        w.set_theme("dark")
        w.tabs.setCurrentWidget(w.metrics_plot)
        settle(app)
        shots.append(("app_dark.png", w.grab()))
        w.set_theme("light")
        for name, pixmap in shots:
            pixmap.save(str(out / name))
            print(out / name)
        w.controller.shutdown(wait=True)
        w.close()
    return 0


def _params(w, job: str) -> set[str]:  # noqa: ANN001
    cls = w.controller.job_class(job)
    return set(cls.params()) if cls is not None else set()


if __name__ == "__main__":
    sys.exit(main())
