"""The Details tab: what the job that made the selected variant found, not just its metrics.

Jobs put their findings in ``ctx.result``: quantize's candidate formats with their latency and accuracy, the
per-layer pruning sensitivity, notes such as "slower than fp32". Lists of records become tables, a mapping of
mappings (layer -> ratio -> accuracy) becomes a table with one row per layer, and the rest key: value lines.
Above them, the variant's measured latency with its 95% interval and its paired speed-up against its parent
("no measurable change" when within noise), worded as in the variants table.
"""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtWidgets import QLabel, QScrollArea, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from workbench.core.figures import (
    NO_CHANGE,
    interval,
    latency_readout,
    latency_text,
    paired_speedup,
    speedup_readout,
)


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)[:200]
    return str(value)


def _table(rows: list[dict[str, Any]], first: str | None = None) -> QTableWidget:
    columns = ([first] if first is not None else []) + sorted({k for r in rows for k in r if k != first},
                                                 key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
    table = QTableWidget(len(rows), len(columns))
    table.setHorizontalHeaderLabels(columns)
    for i, row in enumerate(rows):
        for j, key in enumerate(columns):
            table.setItem(i, j, QTableWidgetItem(_text(row.get(key, ""))))
    table.resizeColumnsToContents()
    table.setMinimumHeight(min(60 + 24 * len(rows), 320))
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    return table


def measured_text(metrics: dict[str, Any]) -> str:
    """One rich-text line: latencies with their intervals, and the paired speed-up with its interval."""
    parts = []
    for key, engine in (("latency_ms", "onnxruntime"), ("latency_torch_ms", "PyTorch")):
        readout = latency_readout(metrics, key)
        if readout.sort is not None:
            ci = interval(metrics.get(f"{key}_ci"))
            span = f" (95% interval {ci[0]:.3f}–{ci[1]:.3f})" if ci else ""
            parts.append(f"<b>latency, {engine}</b>: {readout.text}{span}")
    decode = metrics.get("decode_tokens_per_s")
    if isinstance(decode, int | float):
        ci = interval(metrics.get("decode_tokens_per_s_ci"))
        text = latency_text(float(decode), ci, unit=" tokens/s")
        span = f" (95% interval {ci[0]:,.0f}–{ci[1]:,.0f}; not paired)" if ci else ""
        parts.append(f"<b>decode, PyTorch + KV cache</b>: {text}{span}")
    sp = paired_speedup(metrics)
    if sp is not None:
        readout = speedup_readout(metrics)
        text = readout.text if readout.text == NO_CHANGE else f"{readout.text} faster" if sp["ratio"] > 1 \
            else f"{readout.text} (slower)"
        parts.append(f"<b>speed-up vs {sp.get('vs') or 'parent'}</b>: {text} <small>(measured paired)</small>")
    return " · ".join(parts)


class ResultView(QScrollArea):
    """objectName ``resultView``."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("resultView")
        self.setWidgetResizable(True)
        self.show_variant(None)

    def show_variant(self, variant: Any) -> None:
        body = QWidget()
        layout = QVBoxLayout(body)
        if variant is None:
            layout.addWidget(QLabel("Select a variant to see what its job found."))
        else:
            head = f"<b>{variant.id}</b> · {variant.job} of {variant.parent or '-'}"
            if variant.marks:
                head += " · <span style='color:#c0392b'>" + "; ".join(variant.marks) + "</span>"
            layout.addWidget(QLabel(head))
            params = ", ".join(f"{k}={_text(v)}" for k, v in variant.params.items())
            layout.addWidget(QLabel(f"<small>{params}</small>", wordWrap=True))
            measured = measured_text(variant.metrics or {})
            if measured:
                label = QLabel(measured, wordWrap=True)
                label.setObjectName("measuredFigures")
                layout.addWidget(label)
            for key, value in (variant.result or {}).items():
                self._add_entry(layout, key, value)
        layout.addStretch(1)
        self.setWidget(body)

    def show_result(self, title: str, result: dict[str, Any]) -> None:
        """The findings of a job that made no variant (prune_sensitivity, evaluate, export)."""
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.addWidget(QLabel(f"<b>{title}</b>"))
        for key, value in result.items():
            self._add_entry(layout, key, value)
        layout.addStretch(1)
        self.setWidget(body)

    def _add_entry(self, layout: QVBoxLayout, key: str, value: Any) -> None:
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            layout.addWidget(QLabel(f"<b>{key}</b>"))
            layout.addWidget(_table(value))
        elif isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            layout.addWidget(QLabel(f"<b>{key}</b>"))
            layout.addWidget(_table([{"": name, **inner} for name, inner in value.items()], first=""))
        else:
            layout.addWidget(QLabel(f"<b>{key}</b>: {_text(value)}", wordWrap=True))
