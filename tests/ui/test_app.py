"""The desktop app's story, driven through the widgets by objectName (pytest-qt, offscreen)."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import QObject, QSettings  # noqa: E402
from PySide6.QtWidgets import QAbstractButton, QComboBox, QLineEdit, QMessageBox, QSpinBox, QWidget  # noqa: E402

from workbench.core.jobs.registry import registry  # noqa: E402
from workbench.core.pipeline import Pipeline, load_pipeline_file  # noqa: E402
from workbench.plugin import Job, JobFailed, Param  # noqa: E402

NAMES = ("graphView", "metricsPlot", "jobPanel", "jobSelector", "runButton", "cancelButton", "variantsTable",
         "paretoPlot", "logView")


class ExplodingJob(Job):
    """A plugin job that always fails (the app must show it and stay up)."""

    name = "test_explode"
    strength: int = Param(1, min=0, max=3, help="how hard")

    def run(self, ctx):  # noqa: ANN001, ANN201
        raise JobFailed("the test job exploded")


@pytest.fixture
def settings_dir(tmp_path):
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    yield tmp_path


@pytest.fixture
def window(qtbot, settings_dir):
    from workbench.app import create_main_window

    registry().register(ExplodingJob)
    w = create_main_window(workspace=settings_dir / "ws", model="zoo:mlp", dataset="digits:size=8")
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.controller.session is not None and rows(w) == 1, timeout=120_000)
    yield w
    w.controller.shutdown(wait=True)
    registry().unregister(ExplodingJob.name)


def rows(w: QWidget) -> int:
    return w.findChild(QObject, "variantsTable").model().rowCount()


def find(w: QWidget, cls: type, name: str):  # noqa: ANN201
    widget = w.findChild(cls, name)
    assert widget is not None, f"no {name}"
    return widget


def pick(w: QWidget, job: str) -> None:
    selector = find(w, QComboBox, "jobSelector")
    index = selector.findData(job)
    assert index >= 0, f"{job} not in the job selector"
    selector.setCurrentIndex(index)


def run_and_wait(qtbot, w: QWidget, expect_rows: int) -> None:
    find(w, QAbstractButton, "runButton").click()
    qtbot.waitUntil(lambda: rows(w) == expect_rows and not w.controller.busy(), timeout=120_000)


def test_story_train_second_job_cancel_failure_files(qtbot, window, tmp_path) -> None:
    w = window
    assert w.objectName() == "mainWindow"
    for name in NAMES:
        assert w.findChild(QObject, name) is not None, name
    assert find(w, QComboBox, "jobSelector").currentData() == "train"  # the default job, form filled in
    epochs = find(w, QSpinBox, "param.epochs")
    assert epochs.value() == 10 and "passes over the train split" in epochs.toolTip()

    # 1. train: a new variant, plotted live
    epochs.setValue(1)
    run_and_wait(qtbot, w, 2)
    assert w.metrics_plot.point_count() > 0
    assert any(len(s.x[: s.n]) for s in w.metrics_plot.series.values())
    new = w.variants[-1]
    assert new.parent == "v0001" and new.job == "train" and 0.0 <= new.metrics["accuracy"] <= 1.0
    assert w.selected == new.id  # the new variant is selected everywhere
    assert len(w.pareto_plot.points) == 2 and w.pareto_plot.front

    # 2. a second job on the new variant
    run_and_wait(qtbot, w, 3)
    assert w.variants[-1].parent == new.id

    # 3. cancel: no variant added
    pick(w, "train")
    find(w, QSpinBox, "param.epochs").setValue(500)
    before = len(w.log_view.toPlainText().splitlines())
    find(w, QAbstractButton, "runButton").click()
    # any line after the click: the job may log (or a late event land) before the test looks at the last one
    qtbot.waitUntil(lambda: any("train: started" in line
                                for line in w.log_view.toPlainText().splitlines()[before:]), timeout=60_000)
    find(w, QAbstractButton, "cancelButton").click()
    qtbot.waitUntil(lambda: "cancelled, no variant added" in w.log_view.toPlainText(), timeout=30_000)
    qtbot.waitUntil(lambda: not w.controller.busy(), timeout=30_000)
    assert rows(w) == 3

    # 4. a failing plugin job: a notification with details, the window stays
    pick(w, "test_explode")
    find(w, QAbstractButton, "runButton").click()
    qtbot.waitUntil(lambda: any("exploded" in m for _s, m, _d in w.notifications.history), timeout=60_000)
    toast = w.findChild(QWidget, "notification")
    assert toast is not None and w.findChild(QAbstractButton, "notificationDetails") is not None
    assert "JobFailed" in w.notifications.history[-1][2]
    assert w.isVisible() and rows(w) == 3

    # 5. files: export the selected variant to ONNX, save its history as a replayable pipeline
    from workbench.ui import file_actions

    out = file_actions.export_onnx_to(w, w.selected, tmp_path / "exported.onnx")
    assert out.stat().st_size > 0 and out.read_bytes()[:2] == (w.variants[-1].path / "model.onnx").read_bytes()[:2]
    toml = tmp_path / "history.toml"
    toml.write_text(file_actions.pipeline_text(w, w.selected))
    pipe: Pipeline = load_pipeline_file(toml)
    assert pipe.model == "zoo:mlp" and pipe.dataset == "digits:size=8"
    assert [s.job for s in pipe.steps] == ["train", "train"] and pipe.steps[0].params["epochs"] == 1


def test_invalid_value_refused_and_pareto_click_selects(qtbot, window) -> None:
    w = window
    lr = find(w, QLineEdit, "param.lr")
    lr.setText("fast")
    assert lr.property("invalid") is True
    find(w, QAbstractButton, "runButton").click()
    qtbot.wait(200)
    assert not w.controller.busy() and "queued" not in w.log_view.toPlainText()
    assert "not a valid float" in w.findChild(QWidget, "paramError").text()
    # a Pareto point selects the variant everywhere
    w.pareto_plot.variant_selected.emit("v0001")
    assert w.selected == "v0001" and w.variants_table.selected_id() == "v0001"
    assert "v0001" in w.job_panel.target.text()


def test_close_while_running_asks(qtbot, window, monkeypatch) -> None:
    w = window
    find(w, QSpinBox, "param.epochs").setValue(500)
    find(w, QAbstractButton, "runButton").click()
    qtbot.waitUntil(lambda: w.controller.busy(), timeout=10_000)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.No)
    assert not w.close() and w.isVisible()
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    assert w.close()
    qtbot.waitUntil(lambda: w.controller.runner is None, timeout=10_000)


def test_remeasure_from_the_context_menu_replaces_stored_figures(qtbot, window) -> None:
    w = window
    w.controller.session.workspace.update_metrics("v0001", {"latency_ms": 999.0, "accuracy": 0.01})
    w.controller.refresh()
    qtbot.waitUntil(lambda: w.variants[0].metrics["latency_ms"] == 999.0, timeout=5_000)
    menu = w.variants_table.menu_for("v0001")
    action = menu.findChild(QObject, "remeasureAction")
    assert action is not None and "v0001" in action.text()
    action.trigger()
    qtbot.waitUntil(lambda: w.variants[0].metrics["latency_ms"] < 999.0 and not w.controller.busy(),
                    timeout=120_000)
    assert rows(w) == 1 and w.variants[0].metrics["accuracy"] > 0.01  # measured, not a new variant
    assert w.pareto_plot.points[0][1] == pytest.approx(100 * w.variants[0].metrics["accuracy"])
    log = w.log_view.toPlainText()
    assert "re-measuring v0001" in log and "evaluate: measured v0001, accuracy" in log and "new variant" not in log


def test_another_workspace_redraws_the_graph_of_its_own_v0001(qtbot, window, tmp_path) -> None:
    """Both workspaces start at v0001: the graph view kept the old workspace's graph (the id looked unchanged)."""
    w = window
    qtbot.waitUntil(lambda: w.graph_view.graph is not None, timeout=60_000)
    old_params = w.graph_view.graph.params
    w.controller.open(tmp_path / "other", "zoo:mlp:hidden=8", "digits:size=8")
    qtbot.waitUntil(lambda: w.controller.session is not None and rows(w) == 1
                    and w.controller.session.workspace.root == tmp_path / "other", timeout=120_000)
    qtbot.waitUntil(lambda: w.graph_view.graph is not None and w.graph_view.graph.params != old_params,
                    timeout=60_000)
    model = w.controller.session.load_variant("v0001", "cpu")
    assert w.selected == "v0001" and w.graph_view.graph.params == sum(p.numel() for p in model.parameters())
