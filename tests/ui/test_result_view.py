"""The Details tab turns a job's result into tables: quantize candidates, per-layer sensitivity, notes."""

from PySide6.QtWidgets import QLabel, QTableWidget

from workbench.core.workspace import Variant
from workbench.ui.result_view import ResultView


def test_result_records_and_curves_become_tables(qtbot):
    view = ResultView()
    qtbot.addWidget(view)
    variant = Variant("v0004", "v0002", "quantize", {"format": "auto"}, 0.0, "onnx", "zoo:seed_cnn", "digits",
                      marks=["slower than fp32"], result={
                          "candidates": [{"format": "qdq", "latency_ms": 1.5, "val_accuracy": 0.97},
                                         {"format": "qoperator", "latency_ms": 1.2, "val_accuracy": 0.96}],
                          "sensitivity": {"features.0": {"0.25": 0.95, "0.5": 0.9}, "features.3": {"0.25": 0.97}},
                          "note": "no int8 candidate beats fp32 here"})
    view.show_variant(variant)
    tables = view.widget().findChildren(QTableWidget)
    assert [t.rowCount() for t in tables] == [2, 2]
    assert tables[0].item(1, 0).text() == "qoperator"
    assert tables[1].item(0, 0).text() == "features.0" and tables[1].columnCount() == 3
    text = " ".join(label.text() for label in view.widget().findChildren(QLabel))
    assert "slower than fp32" in text and "no int8 candidate beats fp32 here" in text


def test_a_job_without_a_variant_shows_its_findings(qtbot):
    view = ResultView()
    qtbot.addWidget(view)
    view.show_result("prune_sensitivity #3 on v0002", {"sensitivity": {"features.0": {"0.5": 0.8}}, "allocation": 0.5})
    assert view.widget().findChildren(QTableWidget)[0].item(0, 0).text() == "features.0"
    assert any("prune_sensitivity #3" in label.text() for label in view.widget().findChildren(QLabel))
