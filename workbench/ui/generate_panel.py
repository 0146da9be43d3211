"""The Generate panel: a language-model variant continues a prompt, on the job worker (the ``generate`` job).

objectNames: ``generatePanel``, ``promptEdit``, ``generateButton``, ``generatedText`` (the contract), and
``compareWith`` (a second variant that continues the same prompt, for a side-by-side reading). The panel submits
through the controller like the job panel does, so the window never waits for the model; the continuation
arrives with the job's ``finished`` event.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

JOB = "generate"


class GeneratePanel(QWidget):
    """objectName ``generatePanel``."""

    def __init__(self, controller: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("generatePanel")
        self.controller = controller
        self.variant: str | None = None
        self._runs: dict[int, str] = {}  # run id -> the variant it generates with
        self._comparing = False

        self.prompt = QPlainTextEdit()
        self.prompt.setObjectName("promptEdit")
        self.prompt.setPlaceholderText("A prompt for the selected language-model variant")
        self.prompt.setMaximumHeight(90)
        self.max_tokens = QSpinBox()
        self.max_tokens.setObjectName("maxTokensSpin")
        self.max_tokens.setRange(1, 4096)
        self.max_tokens.setValue(64)
        self.temperature = QDoubleSpinBox()
        self.temperature.setObjectName("temperatureSpin")
        self.temperature.setRange(0.0, 5.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setToolTip("0: greedy (the most likely token each time); above 0: sampling")
        self.compare_with = QComboBox()
        self.compare_with.setObjectName("compareWith")
        self.compare_with.setToolTip("another variant that continues the same prompt, shown below the first")
        self.compare_with.addItem("(none)", None)
        self.button = QPushButton("Generate")
        self.button.setObjectName("generateButton")
        self.button.setToolTip("continue the prompt with the selected variant (runs on the job worker)")
        self.button.clicked.connect(self.generate)
        self.status = QLabel("")
        self.status.setObjectName("generateStatus")
        self.status.setWordWrap(True)
        self.output = QPlainTextEdit()
        self.output.setObjectName("generatedText")
        self.output.setReadOnly(True)
        self.output.setPlaceholderText("the continuation appears here")

        form = QFormLayout()
        form.addRow("max new tokens", self.max_tokens)
        form.addRow("temperature", self.temperature)
        form.addRow("also with", self.compare_with)
        row = QHBoxLayout()
        row.addWidget(self.button)
        row.addWidget(self.status, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Prompt"))
        layout.addWidget(self.prompt)
        layout.addLayout(form)
        layout.addLayout(row)
        layout.addWidget(self.output, 1)

    # inputs ---------------------------------------------------------------------------------------------------
    def set_variant(self, variant_id: str | None) -> None:
        self.variant = variant_id
        self.button.setText(f"Generate with {variant_id}" if variant_id else "Generate")

    def set_variants(self, variants: list[Any]) -> None:
        """The variants the comparison can pick from (kept selected across refreshes)."""
        current = self.compare_with.currentData()
        self.compare_with.blockSignals(True)
        self.compare_with.clear()
        self.compare_with.addItem("(none)", None)
        for v in variants:
            self.compare_with.addItem(f"{v.id} ({v.job})", v.id)
        index = self.compare_with.findData(current)
        self.compare_with.setCurrentIndex(max(0, index))
        self.compare_with.blockSignals(False)

    # running --------------------------------------------------------------------------------------------------
    def generate(self) -> None:
        """Submit one ``generate`` job for the selected variant (and one for the comparison variant)."""
        params = {"prompt": self.prompt.toPlainText(), "max_new_tokens": int(self.max_tokens.value()),
                  "temperature": float(self.temperature.value())}
        targets = [self.variant]
        other = self.compare_with.currentData()
        if other and other != self.variant:
            targets.append(other)
        self.output.clear()
        self._comparing = len(targets) > 1
        self.status.setText("generating ...")
        for target in targets:
            self.controller.submit(JOB, dict(params), target,
                                   lambda handle, t=target: self._on_submitted(handle, t))

    def _on_submitted(self, handle: Any, target: str | None) -> None:
        if handle is None:
            self.status.setText("the model could not be opened")
            return
        self._runs[handle.run_id] = target or "latest variant"

    def on_event(self, event: Any) -> None:
        """The controller's job events: show the continuation of each of this panel's runs when it finishes."""
        if event.job != JOB or event.kind != "finished" or event.run_id not in self._runs:
            return
        target = self._runs.pop(event.run_id)
        data = event.data
        if data.get("status") != "ok":
            self.status.setText(f"{target}: {data.get('error') or data.get('status')}")
            return
        result = data.get("result") or {}
        label = data.get("variant") or target
        text = f"{result.get('prompt', '')}{result.get('text', '')}"
        if self._comparing:  # two variants, one prompt: each continuation under its variant's name
            if self.output.toPlainText():
                self.output.appendPlainText("")
            self.output.appendPlainText(f"── {label} ──")
        self.output.appendPlainText(text)
        self.output.moveCursor(self.output.textCursor().MoveOperation.End)
        rate = result.get("tokens_per_s")
        self.status.setText(f"{label}: {result.get('new_tokens', 0)} tokens"
                            + (f", {rate:.0f} tokens/s" if isinstance(rate, int | float) else ""))
