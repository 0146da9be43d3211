"""A job's parameter form, generated from its ``Param`` declarations (no GUI code in plugins).

One editor per parameter, objectName ``param.<name>``; limits and help are tooltips; values are checked with
the same ``Param.convert`` the CLI uses, so an invalid value is refused before the job starts.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from workbench.core.errors import InputError

INT_LIMIT = 2**31 - 1


def make_editor(param: Any) -> QWidget:
    """The editor for one parameter kind (int, float, bool, str, choice, list)."""
    kind = param.kind
    editor: QWidget
    if kind == "int":
        editor = QSpinBox()
        lo = -INT_LIMIT if param.min is None else max(-INT_LIMIT, int(param.min))
        hi = INT_LIMIT if param.max is None else min(INT_LIMIT, int(param.max))
        editor.setRange(lo, hi)
        editor.setValue(int(param.default) if param.default is not None else lo)
        editor.setAccelerated(True)
    elif kind == "bool":
        editor = QCheckBox()
        editor.setChecked(bool(param.default))
    elif kind == "choice":
        editor = QComboBox()
        editor.addItems(list(param.choices))
        if param.default is not None:
            editor.setCurrentText(str(param.default))
    else:  # float, str, list: typed text checked by Param.convert
        editor = QLineEdit()
        editor.setText(format_value(param.default))
        if kind == "list":
            editor.setPlaceholderText("comma-separated")
    editor.setObjectName(f"param.{param.name}")
    editor.setToolTip(param.describe())
    return editor


def format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def editor_value(editor: QWidget) -> Any:
    if isinstance(editor, QSpinBox):
        return editor.value()
    if isinstance(editor, QCheckBox):
        return editor.isChecked()
    if isinstance(editor, QComboBox):
        return editor.currentText()
    return editor.text()  # type: ignore[attr-defined]


def set_editor_value(editor: QWidget, value: Any) -> None:
    if isinstance(editor, QSpinBox):
        editor.setValue(int(value))
    elif isinstance(editor, QCheckBox):
        editor.setChecked(bool(value))
    elif isinstance(editor, QComboBox):
        editor.setCurrentText(str(value))
    else:
        editor.setText(format_value(value))  # type: ignore[attr-defined]


class ParamForm(QWidget):
    """The form of one job class; ``values()`` returns typed values or raises InputError."""

    def __init__(self, job_class: type, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.job_class = job_class
        self.params = job_class.params()
        self.editors: dict[str, QWidget] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        if getattr(job_class, "description", ""):
            about = QLabel(job_class.description)
            about.setWordWrap(True)
            about.setObjectName("jobDescription")
            layout.addWidget(about)
        basic = QFormLayout()
        basic.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        layout.addLayout(basic)
        advanced_params = [p for p in self.params.values() if p.advanced]
        advanced_form = QFormLayout()
        for param in self.params.values():
            editor = make_editor(param)
            self.editors[param.name] = editor
            label = QLabel(param.label)
            label.setToolTip(param.describe())
            (advanced_form if param.advanced else basic).addRow(label, editor)
            if isinstance(editor, QLineEdit):
                editor.textChanged.connect(lambda _t, n=param.name: self._check_one(n))
        if advanced_params:
            toggle = QToolButton()
            toggle.setObjectName("advancedToggle")
            toggle.setText(f"Advanced ({len(advanced_params)})")
            toggle.setCheckable(True)
            toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            toggle.setArrowType(Qt.ArrowType.RightArrow)
            toggle.setAutoRaise(True)
            inner = QWidget()
            inner.setLayout(advanced_form)
            inner.hide()

            def flip(shown: bool) -> None:
                inner.setVisible(shown)
                toggle.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)

            toggle.toggled.connect(flip)
            layout.addWidget(toggle)
            layout.addWidget(inner)
        self.error_label = QLabel()
        self.error_label.setObjectName("paramError")
        self.error_label.setWordWrap(True)
        self.error_label.hide()
        layout.addWidget(self.error_label)
        layout.addStretch(1)

    def _check_one(self, name: str) -> None:
        editor = self.editors[name]
        try:
            self.params[name].convert(editor_value(editor))
            editor.setProperty("invalid", False)
        except InputError:
            editor.setProperty("invalid", True)
        editor.style().unpolish(editor)
        editor.style().polish(editor)

    def raw_values(self) -> dict[str, Any]:
        return {name: editor_value(editor) for name, editor in self.editors.items()}

    def values(self) -> dict[str, Any]:
        """Typed, validated values (the job class checks them exactly as the CLI would)."""
        try:
            values = self.job_class(**self.raw_values()).values
        except InputError as exc:
            self.error_label.setText(str(exc))
            self.error_label.show()
            raise
        self.error_label.hide()
        return values

    def set_values(self, values: dict[str, Any]) -> None:
        """Restore saved values; unknown or invalid ones are skipped (a plugin may have changed)."""
        for name, value in values.items():
            if name in self.editors and value is not None:
                try:
                    set_editor_value(self.editors[name], self.params[name].convert(value))
                except (InputError, ValueError, TypeError):
                    continue

    def reset(self) -> None:
        for name, param in self.params.items():
            if param.default is not None:
                set_editor_value(self.editors[name], param.default)
