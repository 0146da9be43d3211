"""A scaffolded job shows up in the app's jobSelector with its generated form (param.<name> editors)."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")
from PySide6.QtWidgets import QCheckBox, QComboBox, QLineEdit, QWidget  # noqa: E402

from workbench.core.jobs.devplugins import load_plugin_folders  # noqa: E402
from workbench.core.jobs.registry import Registry  # noqa: E402
from workbench.core.scaffold import scaffold_plugin  # noqa: E402


def test_scaffolded_job_has_a_form_in_the_app(tmp_path, qtbot, workbench_main_window):
    root = scaffold_plugin("gui_probe", tmp_path)
    reg = Registry()
    load_plugin_folders([root], into=reg)
    window = workbench_main_window(jobs=[reg.load("gui_probe")])
    window.show()
    selector = window.findChild(QComboBox, "jobSelector")
    qtbot.waitUntil(lambda: selector.findData("gui_probe") >= 0, timeout=120_000)
    selector.setCurrentIndex(selector.findData("gui_probe"))
    qtbot.waitUntil(lambda: window.findChild(QWidget, "param.amount") is not None, timeout=30_000)
    amount = window.findChild(QLineEdit, "param.amount")
    assert amount is not None and float(amount.text()) == pytest.approx(0.3)
    assert "fraction of each layer" in amount.toolTip() and "0.99" in amount.toolTip()
    skip_last = window.findChild(QWidget, "param.skip_last")
    assert isinstance(skip_last, QCheckBox) and skip_last.isChecked()
