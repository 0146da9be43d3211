"""The model builder (objectName ``modelBuilder``): a layer list edited as rows, as a form per layer, or as text.

The three views edit one list of ``LayerSpec``; the layer kinds and their arguments come from the core's
``stack.LAYERS`` table, the same one the ``stack:`` parser reads. Shapes, parameters and MACs per row are
computed on the GUI thread (building the layers of a stack takes milliseconds); the graph preview, which traces the
model with torch.export, runs on the graph view's worker thread, a short while after the last keystroke.
``buildButton`` hands ``stack:TEXT`` to the same path as File > Open model (``build_requested``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from workbench.core import stack_grammar as st
from workbench.core.errors import InputError
from workbench.ui.graph_view import GraphView
from workbench.ui.param_form import editor_value, make_editor, set_editor_value

if TYPE_CHECKING:
    from workbench.core.models.stack import StackCheck

PREVIEW_DELAY_MS = 350
COLUMNS = ("#", "layer", "output", "params", "MACs")


def _count(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.2f} M"
    if n >= 10_000:
        return f"{n / 1e3:.1f} k"
    return f"{n:,}"


class ModelBuilder(QWidget):
    """See the module docstring. ``set_dataset`` gives the shapes to infer from (the open workspace's dataset)."""

    build_requested = Signal(str)  # "stack:..."

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("modelBuilder")
        self.layers: list[st.LayerSpec] = []
        self.input_shape: tuple[int, ...] = (1, 28, 28)
        self.num_classes = 10
        self.vocab_size: int | None = None
        self.dataset_name = "digits (until a workspace opens)"
        self.check: StackCheck | None = None
        self._text_ok = True  # False while the text does not parse: row and form edits would drop layers
        self._editors: dict[str, QWidget] = {}
        self._syncing = False
        self._preview_timer = QTimer(self)
        self._preview_timer.setSingleShot(True)
        self._preview_timer.setInterval(PREVIEW_DELAY_MS)
        self._preview_timer.timeout.connect(self._preview)
        self._text_timer = QTimer(self)
        self._text_timer.setSingleShot(True)
        self._text_timer.setInterval(150)
        self._text_timer.timeout.connect(self._from_text)
        self._build_ui()
        self._checked_once = False
        self._set_text(next(iter(st.TEMPLATES.values())))  # checked when first shown (that needs torch)

    # construction ---------------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        outer = QHBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        split = QSplitter(Qt.Orientation.Horizontal)
        outer.addWidget(split)
        left = QWidget()
        col = QVBoxLayout(left)
        col.setContentsMargins(0, 0, 0, 0)

        top = QHBoxLayout()
        top.addWidget(QLabel("Template"))
        self.templates = QComboBox()
        self.templates.setObjectName("builderTemplates")
        self.templates.addItems(list(st.TEMPLATES))
        self.templates.activated.connect(lambda i: self.load_text(st.TEMPLATES[self.templates.itemText(i)]))
        top.addWidget(self.templates, 1)
        self.dataset_label = QLabel()
        self.dataset_label.setObjectName("builderDataset")
        top.addWidget(self.dataset_label)
        col.addLayout(top)

        tools = QHBoxLayout()
        self.kind_box = QComboBox()
        self.kind_box.setObjectName("builderLayerKind")
        for name, decl in st.LAYERS.items():
            self.kind_box.addItem(name)
            self.kind_box.setItemData(self.kind_box.count() - 1, decl.help, Qt.ItemDataRole.ToolTipRole)
        tools.addWidget(self.kind_box, 1)
        self.add_button = self._tool("Add", "builderAdd", self.add_layer, "insert a layer after the selected one")
        self.remove_button = self._tool("Remove", "builderRemove", self.remove_layer, "remove the selected layer")
        self.up_button = self._tool("Up", "builderUp", lambda: self.move_layer(-1), "move the selected layer up")
        self.down_button = self._tool("Down", "builderDown", lambda: self.move_layer(1), "move it down")
        for button in (self.add_button, self.remove_button, self.up_button, self.down_button):
            tools.addWidget(button)
        col.addLayout(tools)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("builderLayers")
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._on_row)
        col.addWidget(self.table, 3)

        self.form_box = QGroupBox("Layer")
        self.form_box.setObjectName("builderForm")
        self.form = QFormLayout(self.form_box)
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        col.addWidget(self.form_box)

        col.addWidget(QLabel("As text (the part after stack:)"))
        self.text = QPlainTextEdit()
        self.text.setObjectName("stackEdit")
        self.text.setPlaceholderText("conv(32,3);relu;maxpool(2);flatten;dense")
        self.text.setMaximumHeight(70)
        self.text.textChanged.connect(self._on_text_changed)
        col.addWidget(self.text)

        bottom = QHBoxLayout()
        self.status = QLabel()
        self.status.setObjectName("builderStatus")
        self.status.setWordWrap(True)
        bottom.addWidget(self.status, 1)
        self.build_button = QPushButton("Build variant")
        self.build_button.setObjectName("buildButton")
        self.build_button.setToolTip("add this stack to the workspace as a new root variant (untrained)")
        self.build_button.clicked.connect(self.build)
        bottom.addWidget(self.build_button)
        col.addLayout(bottom)
        split.addWidget(left)

        self.graph = GraphView()
        self.graph.setObjectName("builderGraph")
        split.addWidget(self.graph)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([560, 380])

    def _tool(self, text: str, name: str, slot: Any, tip: str) -> QToolButton:
        button = QToolButton()
        button.setText(text)
        button.setObjectName(name)
        button.setToolTip(tip)
        button.clicked.connect(slot)
        return button

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if not self._checked_once:
            self._from_text()

    # the dataset ----------------------------------------------------------------------------------------------
    def set_dataset(self, info: Any) -> None:
        """Infer shapes for this dataset (a ``DatasetInfo``)."""
        self.input_shape = tuple(int(d) for d in info.input_shape)
        self.num_classes = int(info.num_classes)
        self.vocab_size = info.vocab_size
        self.dataset_name = str(info.spec)
        if self._checked_once or self.isVisible():
            self._from_text()

    # editing --------------------------------------------------------------------------------------------------
    def stack_text(self) -> str:
        return self.text.toPlainText().strip()

    def load_text(self, text: str) -> None:
        """Replace the whole stack (a template, or text from elsewhere)."""
        self.text.setPlainText(text)  # textChanged parses it
        self._from_text()

    def _on_text_changed(self) -> None:
        if not self._syncing:
            self._text_timer.start()

    def _from_text(self) -> None:
        self._text_timer.stop()
        self._refresh(from_text=True)

    def _set_text(self, text: str) -> None:
        self._syncing = True
        try:
            self.text.setPlainText(text)
        finally:
            self._syncing = False

    def selected_row(self) -> int:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].row() if rows else -1

    def add_layer(self) -> None:
        kind = self.kind_box.currentText()
        at = self.selected_row() + 1 if self.selected_row() >= 0 else len(self.layers)
        self.layers.insert(at, st.parse_layer(kind, at + 1))
        self._after_edit(at)

    def remove_layer(self) -> None:
        row = self.selected_row()
        if 0 <= row < len(self.layers):
            del self.layers[row]
            self._after_edit(min(row, len(self.layers) - 1))

    def move_layer(self, step: int) -> None:
        row = self.selected_row()
        target = row + step
        if 0 <= row < len(self.layers) and 0 <= target < len(self.layers):
            self.layers[row], self.layers[target] = self.layers[target], self.layers[row]
            self._after_edit(target)

    def _after_edit(self, select: int) -> None:
        self._set_text(st.format_stack(self.layers))
        self._refresh()
        if 0 <= select < self.table.rowCount():
            self.table.selectRow(select)

    # the form of one layer ------------------------------------------------------------------------------------
    def _on_row(self) -> None:
        row = self.selected_row()
        while self.form.rowCount():
            self.form.removeRow(0)
        self._editors = {}
        if not 0 <= row < len(self.layers):
            self.form_box.setTitle("Layer")
            return
        spec = self.layers[row]
        self.form_box.setTitle(f"Layer {row + 1}: {spec.kind} — {spec.decl.help}")
        if not spec.decl.args:
            self.form.addRow(QLabel("no arguments"))
        for arg in spec.decl.args:
            value = spec.values.get(arg.name, arg.default)
            if arg.kind == "int" and arg.default is None:  # optional: 0 shows as the automatic choice
                editor: QWidget = QSpinBox()
                editor.setRange(0, 1 << 30)
                editor.setSpecialValueText("classes" if arg.name == "units" else "auto")
                editor.setValue(0 if value is None else int(value))
                editor.setObjectName(f"param.{arg.name}")
                editor.setToolTip(arg.describe())
            else:
                editor = make_editor(arg)
                if value is not None:
                    set_editor_value(editor, value)
            self._editors[arg.name] = editor
            label = QLabel(arg.label)
            label.setToolTip(arg.help)
            self.form.addRow(label, editor)
            for sig in ("valueChanged", "toggled", "currentTextChanged", "editingFinished"):
                if hasattr(editor, sig):
                    getattr(editor, sig).connect(lambda *_a, r=row: self._from_form(r))
                    break

    def _from_form(self, row: int) -> None:
        if not 0 <= row < len(self.layers):
            return
        spec = self.layers[row]
        parts = []
        for arg in spec.decl.args:
            value = editor_value(self._editors[arg.name])
            if arg.default is None and value == 0:
                continue
            if isinstance(value, bool):
                value = "true" if value else "false"
            parts.append(f"{arg.name}={value}")
        text = f"{spec.kind}({','.join(parts)})" if parts else spec.kind
        try:
            new = st.parse_layer(text, row + 1)
        except InputError as exc:
            self.status.setText(str(exc))
            return
        new.given = tuple(a.name for a in spec.decl.args
                          if new.values.get(a.name) != a.default or a.name in spec.given)
        self.layers[row] = new
        self._set_text(st.format_stack(self.layers))
        self._refresh(keep_form=True)

    # the rows, the status line and the preview ----------------------------------------------------------------
    def _refresh(self, from_text: bool = False, keep_form: bool = False) -> None:
        self._checked_once = True
        # torch: the app has loaded it in the background by the time anyone edits a stack
        from workbench.core.models.stack import inspect_stack

        source: str | list[st.LayerSpec] = self.stack_text() if from_text else list(self.layers)
        check = inspect_stack(source, self.input_shape, self.num_classes, vocab_size=self.vocab_size)
        self.check = check
        if from_text:
            self.layers = list(check.layers)
            self._text_ok = len(check.layers) == len(st.split_layers(self.stack_text()))
        for widget in (self.add_button, self.remove_button, self.up_button, self.down_button, self.form_box):
            widget.setEnabled(self._text_ok)
        selected = self.selected_row()
        self.table.blockSignals(True)
        self.table.setRowCount(len(self.layers))
        for i, spec in enumerate(self.layers):
            row = check.rows[i] if i < len(check.rows) else None
            cells = (str(i + 1), spec.text(), st.shape_text(row.output_shape) if row else "?",
                     _count(row.params) if row else "", _count(row.macs) if row else "")
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c != 1:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if check.failed == i + 1:
                    item.setBackground(QColor("#fde2e1"))
                    item.setToolTip(check.error or "")
                self.table.setItem(i, c, item)
        self.table.blockSignals(False)
        if 0 <= selected < self.table.rowCount():
            self.table.selectRow(selected)
        if not keep_form:
            self._on_row()
        shape = st.shape_text(self.input_shape)
        self.dataset_label.setText(f"input {shape} · {self.num_classes} classes")
        self.dataset_label.setToolTip(self.dataset_name)
        ok = check.error is None
        self.build_button.setEnabled(ok)
        if ok:
            params = sum(r.params for r in check.rows)
            macs = sum(r.macs for r in check.rows)
            self.status.setText(f"{len(check.rows)} layers · {params:,} parameters · {_count(macs)} MACs")
            self.status.setStyleSheet("")
            if self.isVisible():
                self._preview_timer.start()
        else:
            self.status.setText(check.error or "")
            self.status.setStyleSheet("color: #b42318;")

    def _preview(self) -> None:
        """Trace the stack into the graph view, off the GUI thread."""
        if self.check is None or self.check.error is not None:
            return
        text, shape, classes, vocab = st.format_stack(self.layers), self.input_shape, self.num_classes, self.vocab_size

        def build() -> Any:  # on the graph view's worker thread
            import torch

            from workbench.core.graph import graph_from_torch
            from workbench.core.models.stack import build_stack

            model = build_stack(text, shape, classes, vocab_size=vocab)
            tokens = bool(vocab) and len(shape) == 1
            example = torch.ones(1, *shape, dtype=torch.long) if tokens else torch.zeros(1, *shape)
            return graph_from_torch(model, example)

        self.graph.load_graph_async(build)

    def build(self) -> None:
        """Make a new root variant of this stack (the text as typed, checked first)."""
        self._from_text()
        if self.check is not None and self.check.error is not None:
            self.status.setText(self.check.error)
            return
        self.status.setText("building a variant ...")
        self.build_requested.emit("stack:" + st.format_stack(self.layers))
