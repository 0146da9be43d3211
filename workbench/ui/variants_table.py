"""The variants table: one row per variant with its figures; sortable.

Speed-ups come from the paired measurement against the parent (``metrics["speedup"]``) when there is one, and
read "no measurable change" when it is within noise; older variants are compared with the root of their lineage,
claiming a speed-up only where the two latencies' intervals do not overlap (see ``workbench.core.figures``).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPoint, QSortFilterProxyModel, Qt, Signal
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QMenu, QTableView, QWidget

from workbench.core.figures import Readout, latency_readout, speedup_readout

COLUMNS = ("id", "parent", "job", "accuracy", "params", "size", "latency", "speed-up", "size ratio", "marks")
HEADER_TIPS = {
    "latency": "median onnxruntime latency of one batch, ± half its 95% interval (hover a cell for the interval)",
    "speed-up": "the parent's latency over this one, measured paired with the parent (95% interval); "
                "\"no measurable change\" when within noise. Variants measured before paired timing are compared "
                "with the root of their lineage (\"~\": not measured paired)",
}


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def human_count(n: float | None) -> str:
    if n is None:
        return "-"
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    if n >= 1e3:
        return f"{n / 1e3:.1f} k"
    return f"{n:.0f}"


def root_of(variant: Any, by_id: dict[str, Any]) -> Any:
    seen = set()
    while variant.parent and variant.parent in by_id and variant.id not in seen:
        seen.add(variant.id)
        variant = by_id[variant.parent]
    return variant


class VariantsModel(QAbstractTableModel):
    """Rows are workspace variants; ``sort_value`` gives numbers for numeric columns so sorting is numeric."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.variants: list[Any] = []
        self.rows: list[dict[str, Any]] = []
        self.quality_header = "accuracy"  # "perplexity" for a language model's workspace

    def set_loading(self, text: str) -> None:
        """Show one placeholder row for a model that is being loaded and measured (replaced when it is saved)."""
        self.beginResetModel()
        self.variants = [None]
        self.rows = [{"id": "…", "parent": "", "job": "load", "accuracy": None, "params": None, "size": None,
                      "latency": None, "speed-up": None, "size ratio": None, "marks": text}]
        self.endResetModel()

    def set_variants(self, variants: list[Any]) -> None:
        self.beginResetModel()
        self.variants = list(variants)
        by_id = {v.id: v for v in variants}
        self.rows = []
        for v in variants:
            root_variant = root_of(v, by_id)
            m, root = v.metrics, root_variant.metrics
            ratio = (m["size_bytes"] / root["size_bytes"]) if m.get("size_bytes") and root.get("size_bytes") else None
            self.rows.append({
                "id": v.id, "parent": v.parent or "", "job": v.job, "accuracy": quality_of(m),
                "params": m.get("params"), "size": m.get("size_bytes"), "latency": latency_readout(m),
                "speed-up": speedup_readout(m, root, root_variant.id, is_reference=root_variant is v),
                "size ratio": ratio, "marks": ", ".join(v.marks),
            })
        lm = any(v.metrics.get("accuracy") is None and v.metrics.get("perplexity") is not None for v in variants)
        self.quality_header = "perplexity" if lm else "accuracy"
        self.endResetModel()

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802 - Qt API
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802 - Qt API
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.quality_header if COLUMNS[section] == "accuracy" else COLUMNS[section]
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole:
            return HEADER_TIPS.get(COLUMNS[section])
        return None

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row, column = self.rows[index.row()], COLUMNS[index.column()]
        value = row[column]
        if isinstance(value, Readout):
            if role == Qt.ItemDataRole.DisplayRole:
                return value.text
            if role == Qt.ItemDataRole.ToolTipRole and value.tooltip:
                return value.tooltip
            value = value.sort
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(column, value)
        if role == Qt.ItemDataRole.UserRole:
            return value if value is not None else float("-inf")
        if role == Qt.ItemDataRole.TextAlignmentRole and column not in ("id", "parent", "job", "marks"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole and self.variants[index.row()] is not None:
            v = self.variants[index.row()]
            return "\n".join(f"{k}: {val}" for k, val in {**v.params, **v.metrics}.items())
        return None

    @staticmethod
    def _text(column: str, value: Any) -> str:
        if value is None or value == "":
            return "-" if column not in ("parent", "marks") else ""
        if column == "accuracy":
            return f"{100 * value:.2f} %"
        if column == "params":
            return human_count(value)
        if column == "size":
            return human_bytes(value)
        if column == "size ratio":
            return f"{value:.2f}x"
        return str(value)


def quality_of(metrics: dict[str, Any]) -> Any:
    """The quality cell: accuracy for a classifier; for a language model its perplexity, which sorts lower first
    as the better one (the column sorts by the negated value)."""
    ppl = metrics.get("perplexity")
    if metrics.get("accuracy") is None and isinstance(ppl, int | float):
        return Readout(f"ppl {ppl:,.1f}", "perplexity on the test split (lower is better)", -float(ppl))
    return metrics.get("accuracy")


class VariantsTable(QTableView):
    """objectName ``variantsTable``; emits ``variant_selected(id)`` when the user picks a row, and
    ``remeasure_requested(id)`` from a row's context menu."""

    variant_selected = Signal(str)
    remeasure_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("variantsTable")
        self.source = VariantsModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.source)
        self.proxy.setSortRole(Qt.ItemDataRole.UserRole)
        self.setModel(self.proxy)
        self.setSortingEnabled(True)
        self.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setAlternatingRowColors(True)
        self.verticalHeader().hide()
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)
        self.selectionModel().selectionChanged.connect(self._on_selection)
        self._quiet = False
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(lambda pos: self._show_menu(pos))

    def menu_for(self, variant_id: str) -> QMenu:
        """The row's context menu. Latency on a shared machine is noisy (other programs, a job training in the
        background): re-measuring when it is quiet replaces the stored figures."""
        menu = QMenu(self)
        action = menu.addAction(f"Re-measure {variant_id} ({self.source.quality_header}, size, latency)")
        action.setObjectName("remeasureAction")
        action.setToolTip("runs evaluate with record=true on this variant; the table and the Pareto plot update")
        action.triggered.connect(lambda: self.remeasure_requested.emit(variant_id))
        return menu

    def _show_menu(self, pos: QPoint) -> None:
        index = self.indexAt(pos)
        variant_id = self.proxy.index(index.row(), 0).data() if index.isValid() else None
        if not variant_id or variant_id == "…":
            return
        self.select(variant_id)
        menu = self.menu_for(variant_id)
        menu.exec(self.viewport().mapToGlobal(pos))
        menu.deleteLater()  # a menu per right-click: none may pile up as children of the table

    def set_variants(self, variants: list[Any]) -> None:
        current = self.selected_id()
        self._quiet = True
        self.source.set_variants(variants)
        self._quiet = False
        if current:
            self.select(current, emit=False)

    def set_loading(self, text: str) -> None:
        if self.source.rowCount() == 0:
            self.source.set_loading(text)

    def selected_id(self) -> str | None:
        rows = self.selectionModel().selectedRows()
        if not rows:
            return None
        value = self.proxy.index(rows[0].row(), 0).data(Qt.ItemDataRole.DisplayRole)
        return None if value == "…" else value

    def select(self, variant_id: str, emit: bool = True) -> None:
        for row in range(self.proxy.rowCount()):
            if self.proxy.index(row, 0).data() == variant_id:
                self._quiet = not emit
                self.selectRow(row)
                self._quiet = False
                return

    def _on_selection(self, *_args: Any) -> None:
        variant_id = self.selected_id()
        if variant_id and not self._quiet:
            self.variant_selected.emit(variant_id)
