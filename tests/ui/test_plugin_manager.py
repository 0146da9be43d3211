"""Help > Plugins: status of every plugin, enable/disable kept in settings, reload of a development folder."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import QSettings  # noqa: E402

from workbench.core.jobs.registry import Registry  # noqa: E402
from workbench.ui.plugin_manager import (  # noqa: E402
    DISABLED_KEY,
    PluginManagerDialog,
    apply_saved_settings,
    saved_plugin_paths,
)

GOOD = ("from workbench.plugin import Job, Param\n\nclass Good(Job):\n    name = 'pm_good'\n"
        "    level: int = Param(1, min=0, max=3, help='how much')\n\n    def run(self, ctx):\n"
        "        return ctx.model\n")


@pytest.fixture
def settings(tmp_path):
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    QSettings().clear()
    yield QSettings()
    QSettings().clear()


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "dev"
    path.mkdir()
    (path / "good.py").write_text(GOOD)
    (path / "broken.py").write_text("import no_such_module_for_the_manager\n")
    return path


def cells(dialog: PluginManagerDialog, job: str) -> list[str]:
    row = dialog.row_of(job)
    assert row >= 0, f"{job} not listed"
    return [dialog.table.item(row, c).text() for c in range(1, dialog.table.columnCount())]


def test_lists_status_and_errors_and_reloads_a_dev_folder(qtbot, settings, folder):
    reg = Registry()
    dialog = PluginManagerDialog(plugins=reg)
    qtbot.addWidget(dialog)
    assert dialog.objectName() == "pluginManager" and dialog.row_of("pm_good") < 0
    train = cells(dialog, "train")
    assert train[:2] == ["train", "workbench-nn"] and train[3] == "built-in"

    with qtbot.waitSignal(dialog.reloaded, timeout=120_000):
        dialog.add_folder(folder)  # remembered in settings, then loaded
    assert saved_plugin_paths() == [folder]
    good, broken = cells(dialog, "pm_good"), cells(dialog, "broken.py")
    assert good[3] == str(folder) and good[4] == "loaded"
    assert broken[4].startswith("failed:") and "no_such_module_for_the_manager" in broken[4]
    assert "pm_good" in reg.job_names() and cells(dialog, "train")[4] == "loaded"
    assert "broken" in dialog.status_label.text()

    (folder / "broken.py").write_text(GOOD.replace("pm_good", "pm_fixed"))
    with qtbot.waitSignal(dialog.reloaded, timeout=120_000):
        dialog.reload_button.click()
    assert cells(dialog, "pm_fixed")[4] == "loaded" and dialog.row_of("broken.py") < 0


def test_disable_is_applied_and_kept_in_settings(qtbot, settings):
    reg = Registry()
    dialog = PluginManagerDialog(plugins=reg)
    qtbot.addWidget(dialog)
    with qtbot.waitSignal(dialog.pluginsChanged):
        dialog.set_enabled("evaluate", False)
    assert "evaluate" in reg.disabled and "evaluate" not in reg.job_names()
    assert cells(dialog, "evaluate")[4] == "disabled"
    assert settings.value(DISABLED_KEY) in ("evaluate", ["evaluate"])

    fresh = Registry()
    apply_saved_settings(fresh)  # what the app does at start-up
    assert fresh.disabled == {"evaluate"} and "evaluate" not in fresh.job_names()

    dialog.set_enabled("evaluate", True)
    assert "evaluate" in reg.job_names() and not QSettings().value(DISABLED_KEY)
