"""Non-modal notifications: a stack of toasts in the window's corner, the traceback behind "Details".

Fed by ``workbench.core.notifications`` (the one error channel) through the bridge, and by failed jobs.
Nothing here is modal and nothing closes the window.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt, QTimer
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QMessageBox, QPushButton, QVBoxLayout, QWidget


class Toast(QFrame):
    """One notification: message, a Details button when there is a traceback, and a close button."""

    def __init__(self, message: str, severity: str, details: str, parent: QWidget) -> None:
        super().__init__(parent)
        self.setObjectName("notification")
        self.setProperty("severity", severity)
        self.message, self.details = message, details
        self.setFrameShape(QFrame.Shape.StyledPanel)
        layout = QHBoxLayout(self)
        label = QLabel(message)
        label.setWordWrap(True)
        label.setObjectName("notificationText")
        layout.addWidget(label, 1)
        if details:
            button = QPushButton("Details")
            button.setObjectName("notificationDetails")
            button.clicked.connect(self.show_details)
            layout.addWidget(button)
        close = QPushButton("✕")
        close.setFlat(True)
        close.setFixedWidth(28)
        close.clicked.connect(self.dismiss)
        layout.addWidget(close)
        self.dialog: QMessageBox | None = None
        if severity != "error":
            QTimer.singleShot(12000, self.dismiss)

    def show_details(self) -> None:
        """A non-modal box with the traceback (selectable, copyable)."""
        self.dialog = QMessageBox(QMessageBox.Icon.Critical, "Details", self.message,
                                  QMessageBox.StandardButton.Close, self.window())
        self.dialog.setObjectName("notificationDialog")
        self.dialog.setDetailedText(self.details)
        self.dialog.setModal(False)
        self.dialog.show()

    def dismiss(self) -> None:
        self.hide()
        self.setParent(None)
        self.deleteLater()


class NotificationArea(QWidget):
    """Floats over the bottom-right corner of its parent; newest toast at the bottom, at most five."""

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setObjectName("notificationArea")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, False)
        self.layout_ = QVBoxLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self.layout_.addStretch(1)
        self.history: list[tuple[str, str, str]] = []
        parent.installEventFilter(self)
        self._place()

    def notify(self, message: str, severity: str = "error", details: str = "") -> Toast:
        self.history.append((severity, message, details))
        toasts = self.toasts()
        if len(toasts) >= 5:
            toasts[0].dismiss()
        toast = Toast(message, severity, details, self)
        self.layout_.addWidget(toast)
        self.show()
        self.raise_()
        self._place()
        return toast

    def on_notification(self, note: Any) -> None:
        """A core ``Notification`` (already on the GUI thread)."""
        text = f"{note.source}: {note.message}" if note.source else note.message
        self.notify(text, note.severity, note.details)

    def toasts(self) -> list[Toast]:
        return [t for t in self.findChildren(Toast) if t.isVisible() or not t.isHidden()]

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if event.type() == QEvent.Type.Resize:
            self._place()
        return False

    def _place(self) -> None:
        parent = self.parentWidget()
        width = min(460, max(200, parent.width() - 40))
        height = max(0, min(parent.height() - 40, self.layout_.sizeHint().height()))
        self.setGeometry(parent.width() - width - 20, parent.height() - height - 36, width, height)
        self.setVisible(bool(self.toasts()))
