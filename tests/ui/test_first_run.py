"""The first minute in the app: a window that fits the screen with the job form readable, the demo's form starting
from values tuned for it (and remembering only what the user changed), and start-up steps that show progress."""

from __future__ import annotations

import io
import json

import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import QRect, QSettings, QSize, Qt  # noqa: E402
from PySide6.QtGui import QGuiApplication  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from workbench.app import DEMO_PRESETS, opens_on_demo  # noqa: E402
from workbench.ui.job_panel import OLD_SETTINGS_GROUPS, SETTINGS_GROUP  # noqa: E402
from workbench.ui.main_window import PREFERRED_SIZE, first_geometry  # noqa: E402

SIZES = ((1600, 1000), (1366, 768))


def settle(qtbot, ms: int = 150) -> None:  # noqa: ANN001
    qtbot.wait(ms)
    QApplication.processEvents()


def ready(qtbot, w) -> None:  # noqa: ANN001
    qtbot.waitUntil(lambda: w.job_panel.form is not None and w.controller.session is not None and bool(w.variants),
                    timeout=120_000)


def test_first_geometry_fits_the_screen() -> None:
    big = first_geometry(QRect(0, 0, 1920, 1080))
    assert big.size() == PREFERRED_SIZE and big.center() == QRect(0, 0, 1920, 1080).center()
    for screen in (QRect(0, 0, 1366, 768), QRect(0, 27, 1366, 741), QRect(1920, 0, 1280, 720)):
        rect = first_geometry(screen)
        assert screen.contains(rect), (screen, rect)
        assert rect.height() <= screen.height() - 40  # room left for a title bar
        assert rect.width() >= screen.width() - 20  # and the screen is used


@pytest.fixture
def settings(tmp_path):
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    yield tmp_path


@pytest.fixture
def bare_window(qtbot, settings):
    """The main window without a session (no job worker, no model): its layout and job forms only."""
    from workbench.ui.controller import Controller
    from workbench.ui.main_window import MainWindow

    made = []

    def make():  # noqa: ANN202
        w = MainWindow(Controller())
        qtbot.addWidget(w)
        made.append(w)
        w.controller.load_jobs()
        return w

    yield make
    for w in made:
        w.controller.shutdown(wait=True)


def test_a_fresh_window_fits_the_screen_and_a_saved_size_comes_back(bare_window, qtbot) -> None:
    w = bare_window()
    available = (w.screen() or QGuiApplication.primaryScreen()).availableGeometry()
    assert w.geometry() == first_geometry(available) and available.contains(w.geometry())
    w.show()
    chosen = QSize(760, 600)  # within the offscreen platform's 800x800 screen (a larger saved size is clamped to it)
    w.resize(chosen)
    settle(qtbot)
    w.close()  # saves the geometry
    assert bare_window().size() == chosen


def test_no_job_form_needs_a_horizontal_scrollbar(bare_window, qtbot) -> None:
    w = bare_window()
    w.show()
    qtbot.waitUntil(lambda: w.job_panel.form is not None, timeout=60_000)
    selector = w.job_panel.selector
    for width, height in SIZES:
        w.resize(width, height)
        settle(qtbot)
        checked = []
        for index in range(selector.count()):
            if not selector.model().item(index).isEnabled():
                continue
            selector.setCurrentIndex(index)
            settle(qtbot, 30)
            form, scroll = w.job_panel.form, w.job_panel.scroll
            assert form is not None and form.job_class.name == selector.itemData(index)
            assert not scroll.horizontalScrollBar().isVisible(), (selector.itemData(index), width)
            assert scroll.viewport().width() >= form.minimumSizeHint().width()
            checked.append(selector.itemData(index))
        assert "train" in checked and len(checked) >= 5
        assert w.size() == QSize(width, height)  # no form made the window grow past the size it was given
    w.job_panel.select_job("train")
    w.resizeDocks([w.job_dock], [60], Qt.Orientation.Horizontal)
    settle(qtbot)
    assert not w.job_panel.scroll.horizontalScrollBar().isVisible()  # squeezing the dock stops at the form's width
    assert w.job_panel.scroll.viewport().width() >= w.job_panel.form.minimumSizeHint().width()


def test_the_demo_is_recognised() -> None:
    assert opens_on_demo(None, None, None)
    assert opens_on_demo("/nonexistent/new-ws", None, None)
    assert opens_on_demo(None, "zoo:seed_cnn", "digits")
    assert not opens_on_demo(None, "zoo:mlp", None)
    assert not opens_on_demo(None, None, "digits:size=8")


def test_existing_workspace_is_not_the_demo(tmp_path) -> None:
    (tmp_path / "workspace.sqlite").write_bytes(b"")
    assert not opens_on_demo(tmp_path, None, None)


def test_form_starts_from_the_preset_and_remembers_only_changes_per_workspace(settings, qtbot) -> None:
    from workbench.ui.controller import Controller
    from workbench.ui.job_panel import JobPanel, workspace_digest

    for group in OLD_SETTINGS_GROUPS:  # older apps' whole saved forms, for every workspace
        QSettings().setValue(f"{group}/train", json.dumps({"epochs": 3, "lr": 0.5}))
    preset = {"train": {"epochs": 7, "label_smoothing": 0.1}}
    here, elsewhere = workspace_digest(settings / "ws-a"), workspace_digest(settings / "ws-b")
    controller = Controller()

    def panel(key: str) -> JobPanel:
        made = JobPanel(controller)
        qtbot.addWidget(made)
        made.presets = preset
        made.workspace_key = key
        made.select_job("train")
        return made

    try:
        first = panel(here)
        assert first.form.editors["epochs"].value() == 7  # the preset, not an older app's whole saved form
        assert first.form.editors["lr"].text() == "0.002"
        assert all(QSettings().value(f"{group}/train") is None for group in OLD_SETTINGS_GROUPS)
        first.form.editors["epochs"].setValue(1)
        with qtbot.waitSignal(first.run_requested) as sent:
            first.request_run()
        assert sent.args[1]["epochs"] == 1 and sent.args[1]["label_smoothing"] == 0.1
        assert json.loads(str(QSettings().value(f"{SETTINGS_GROUP}/{here}/train"))) == {"epochs": 1}
        again = panel(here)
        assert again.form.editors["epochs"].value() == 1  # the user's change comes back in that workspace
        assert again.form.editors["label_smoothing"].text() == "0.1"  # untouched: the preset
        other = panel(elsewhere)
        assert other.form.editors["epochs"].value() == 7  # another (a fresh) workspace: the preset
        again.form.editors["epochs"].setValue(7)
        with qtbot.waitSignal(again.run_requested):
            again.request_run()
        assert json.loads(str(QSettings().value(f"{SETTINGS_GROUP}/{here}/train"))) == {}  # back to the preset
    finally:
        controller.shutdown(wait=True)


def test_opening_a_workspace_fills_the_forms_with_its_values(settings, qtbot) -> None:
    from types import SimpleNamespace

    from workbench.ui.controller import Controller
    from workbench.ui.job_panel import JobPanel, workspace_digest

    QSettings().setValue(f"{SETTINGS_GROUP}/{workspace_digest(settings / 'old')}/train", json.dumps({"epochs": 4}))
    controller = Controller()
    try:
        panel = JobPanel(controller)
        qtbot.addWidget(panel)
        panel.select_job("train")
        panel.form.editors["lr"].setText("0.01")  # typed while the workspace was still opening: kept
        controller.session_ready.emit(SimpleNamespace(workspace=SimpleNamespace(root=settings / "old")))
        assert panel.form.editors["epochs"].value() == 4 and panel.form.editors["lr"].text() == "0.01"
        controller.session_ready.emit(SimpleNamespace(workspace=SimpleNamespace(root=settings / "new")))
        assert panel.form.editors["epochs"].value() == 10 and panel.form.editors["lr"].text() == "0.002"
    finally:
        controller.shutdown(wait=True)


def test_start_up_shows_its_steps_in_the_window_and_the_terminal(workbench_main_window, qtbot) -> None:
    stream = io.StringIO()
    w = workbench_main_window(progress=stream)
    w.show()
    qtbot.waitUntil(lambda: w.startup.widget.isVisible(), timeout=10_000)
    assert "importing PyTorch and the jobs" in w.startup.label.text()
    ready(qtbot, w)
    qtbot.waitUntil(lambda: w.startup.finished(), timeout=60_000)
    assert not w.startup.widget.isVisible()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "workbench: importing PyTorch and the jobs ..."
    assert any(line.startswith("workbench: loading zoo:mlp") and line.endswith(" ...") for line in lines)
    assert any(" jobs in " in line for line in lines) and lines[-1].startswith("workbench: ready in ")
    log = w.log_view.toPlainText()
    assert "importing PyTorch and the jobs: " in log and "loading zoo:mlp" in log and ": done in " in log


def test_demo_preset_values_are_valid_for_train() -> None:
    from workbench.core.jobs.registry import registry

    train = registry().load("train")
    values = train(**DEMO_PRESETS["train"]).values
    assert values["epochs"] == DEMO_PRESETS["train"]["epochs"]


@pytest.mark.slow
def test_the_demo_preset_reaches_the_seed_accuracy(workbench_run_job) -> None:
    run = workbench_run_job("train", DEMO_PRESETS["train"], model="zoo:seed_cnn", dataset="digits")
    assert run.outcome.status == "ok", run.outcome.error
    assert run.metrics["accuracy"] >= 0.975


def test_the_demo_presets_stay_with_the_demos_data(settings, qtbot) -> None:
    """Presets tuned for seed_cnn on digits follow a new workspace on digits, not one on a corpus (an HF model
    opened from the demo started at 20 epochs with label smoothing)."""
    from types import SimpleNamespace

    from workbench.ui.controller import Controller
    from workbench.ui.job_panel import JobPanel

    def session(folder: str, dataset: str) -> SimpleNamespace:
        return SimpleNamespace(workspace=SimpleNamespace(root=settings / folder), dataset_spec=dataset)

    panel = JobPanel(Controller())
    qtbot.addWidget(panel)
    panel.presets = {"train": {"epochs": 7, "label_smoothing": 0.1}}
    panel.select_job("train")
    panel._on_session(session("demo", "digits"))
    assert panel.form.editors["epochs"].value() == 7
    panel._on_session(session("more-digits", "digits"))
    assert panel.form.editors["epochs"].value() == 7  # the same data: the presets still fit
    panel._on_session(session("lm", "pydocs:tokenizer=/m"))
    assert panel.form.editors["epochs"].value() == 10 and panel.form.editors["label_smoothing"].text() == "0"
    assert panel.presets == {}
