"""The app loads the plugin folders of WORKBENCH_PLUGIN_PATH: the plugin manager lists them, the job selector offers
their jobs, and the folders the app loads are exported for the job worker processes."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtWidgets import QComboBox, QWidget  # noqa: E402

from workbench.core.jobs import devplugins  # noqa: E402
from workbench.core.jobs.registry import Registry, registry  # noqa: E402
from workbench.ui.plugin_manager import PATHS_KEY, PluginManagerDialog, apply_saved_settings  # noqa: E402

ENV = devplugins.ENV_VAR
PLUGIN = ("from workbench.plugin import Job, Param\n\n\nclass EnvApp(Job):\n    name = 'env_app_job'\n"
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
    path = tmp_path / "envdev"
    path.mkdir()
    (path / "env_app.py").write_text(PLUGIN)
    return path


def test_start_up_loads_env_folders_and_exports_saved_ones(qtbot, settings, folder, tmp_path, monkeypatch):
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "saved_job.py").write_text(PLUGIN.replace("env_app_job", "env_saved_job").replace("EnvApp", "Saved"))
    settings.setValue(PATHS_KEY, [str(saved)])
    monkeypatch.setenv(ENV, os.pathsep.join([str(folder), str(tmp_path / "missing")]))
    reg = Registry()
    problems = apply_saved_settings(reg)
    assert problems == [f"{ENV} {tmp_path / 'missing'}: not a folder"]  # reported, not fatal
    assert {"env_app_job", "env_saved_job"} <= set(reg.job_names())
    assert str(saved.resolve()) in os.environ[ENV].split(os.pathsep)  # a worker process will load it too
    dialog = PluginManagerDialog(plugins=reg)
    qtbot.addWidget(dialog)
    row = dialog.row_of("env_app_job")
    assert row >= 0 and dialog.table.item(row, 4).text() == str(folder.resolve())
    assert str(folder.resolve()) in dialog.folders_label.text()


def test_job_selector_offers_the_env_plugin(qtbot, settings, folder, tmp_path, monkeypatch):
    from workbench.app import create_main_window

    monkeypatch.setenv(ENV, str(folder))
    w = create_main_window(workspace=tmp_path / "ws", model="zoo:mlp", dataset="digits:size=8")
    qtbot.addWidget(w)
    try:
        selector = w.findChild(QComboBox, "jobSelector")
        qtbot.waitUntil(lambda: selector.findData("env_app_job") >= 0, timeout=120_000)
        selector.setCurrentIndex(selector.findData("env_app_job"))
        qtbot.waitUntil(lambda: w.findChild(QWidget, "param.level") is not None, timeout=10_000)  # its form
    finally:
        w.controller.shutdown(wait=True)
        registry().unregister("env_app_job")
