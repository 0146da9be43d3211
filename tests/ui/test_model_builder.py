"""The model builder panel: rows, per-layer forms and the text form edit one stack; buildButton makes a variant."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import QObject  # noqa: E402
from PySide6.QtWidgets import QAbstractButton, QComboBox, QPlainTextEdit, QSpinBox, QTableWidget  # noqa: E402

from workbench.core.data import DatasetInfo  # noqa: E402
from workbench.core.stack_grammar import TEMPLATES  # noqa: E402

SEED = TEMPLATES["seed CNN (Keras MNIST example)"]


@pytest.fixture
def builder(qtbot):
    from workbench.ui.model_builder import ModelBuilder

    panel = ModelBuilder()
    qtbot.addWidget(panel)
    panel.set_dataset(DatasetInfo("digits", "image", (1, 28, 28), 10, tuple("0123456789"), "float32"))
    panel.load_text(SEED)
    return panel


def cells(panel, column: int) -> list[str]:
    table = panel.findChild(QTableWidget, "builderLayers")
    return [table.item(r, column).text() for r in range(table.rowCount())]


def test_rows_show_shapes_params_and_macs(builder):
    assert cells(builder, 1)[:3] == ["conv(32,3)", "relu", "maxpool(2)"]
    assert cells(builder, 2)[0] == "1x32x26x26" and cells(builder, 2)[-1] == "1x10"
    assert cells(builder, 3)[0] == "320" and cells(builder, 3)[-1] == "650"
    assert "93,322 parameters" in builder.findChild(QObject, "builderStatus").text()


def test_text_edits_update_the_rows_and_errors_name_the_layer(builder, qtbot):
    edit = builder.findChild(QPlainTextEdit, "stackEdit")
    edit.setPlainText("conv(8,3);relu;dense(4);dense")
    qtbot.waitUntil(lambda: "needs flatten first" in builder.status.text(), timeout=3000)
    assert "layer 3 dense(4): input 1x8x26x26 needs flatten first" in builder.status.text()
    assert not builder.findChild(QAbstractButton, "buildButton").isEnabled()
    edit.setPlainText("conv(8,3);relu;flatten;dense")
    qtbot.waitUntil(lambda: builder.findChild(QAbstractButton, "buildButton").isEnabled(), timeout=3000)
    assert cells(builder, 2) == ["1x8x26x26", "1x8x26x26", "1x5408", "1x10"]


def test_form_and_row_edits_rewrite_the_text(builder):
    edit = builder.findChild(QPlainTextEdit, "stackEdit")
    builder.table.selectRow(0)
    filters = builder.findChild(QSpinBox, "param.filters")
    filters.setValue(16)
    assert edit.toPlainText().startswith("conv(16,3);relu")
    assert cells(builder, 2)[0] == "1x16x26x26"
    builder.table.selectRow(1)
    builder.findChild(QComboBox, "builderLayerKind").setCurrentText("batchnorm")
    builder.findChild(QAbstractButton, "builderAdd").click()
    assert edit.toPlainText().startswith("conv(16,3);relu;batchnorm;maxpool(2)")
    builder.findChild(QAbstractButton, "builderUp").click()
    assert edit.toPlainText().startswith("conv(16,3);batchnorm;relu;maxpool(2)")
    builder.findChild(QAbstractButton, "builderRemove").click()
    assert edit.toPlainText().startswith("conv(16,3);relu;maxpool(2)")
    builder.table.selectRow(len(builder.layers) - 1)
    units = builder.findChild(QSpinBox, "param.units")
    assert units.specialValueText() == "classes" and units.value() == 0  # the final dense: number of classes


def test_templates_fit_their_kind_of_dataset(builder, qtbot):
    builder.load_text(TEMPLATES["LeNet-5"])
    assert builder.check.error is None and cells(builder, 2)[0] == "1x6x28x28"
    builder.set_dataset(DatasetInfo("text", "text", (20,), 2, ("neg", "pos"), "int64", vocab_size=100))
    builder.load_text(TEMPLATES["LSTM classifier (text)"])
    assert builder.check.error is None and cells(builder, 2) == ["1x20x64", "1x64", "1x2"]


def test_build_button_makes_a_root_variant(workbench_main_window, qtbot):
    window = workbench_main_window()
    window.show()
    table = window.findChild(QObject, "variantsTable")
    qtbot.waitUntil(lambda: window.controller.session is not None and table.model().rowCount() == 1,
                    timeout=120_000)
    qtbot.waitUntil(lambda: window.model_builder.input_shape == (1, 8, 8), timeout=30_000)  # the open dataset's
    window.findChild(QPlainTextEdit, "stackEdit").setPlainText("flatten;dense(32);relu;dense")
    window.findChild(QAbstractButton, "buildButton").click()
    qtbot.waitUntil(lambda: table.model().rowCount() == 2, timeout=120_000)
    root = window.controller.session.workspace.variants()[-1]
    assert root.params["model"] == "stack:flatten;dense(32);relu;dense" and root.parent is None
