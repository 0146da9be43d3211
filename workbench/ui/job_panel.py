"""The job panel: pick a job, edit its generated form, run it on the selected variant, watch the queue."""

from __future__ import annotations

import json
import time
from typing import Any

from PySide6.QtCore import QEvent, QObject, QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from workbench.core.errors import InputError
from workbench.ui.param_form import ParamForm

# QSettings group of the values a user changed in a job's form, per workspace (``workspace_params/<path
# digest>/<job>``): only the changed values, so untouched fields follow the defaults (a better default reaches them),
# and only for that workspace, so a fresh workspace, the demo's first of all, starts from the defaults and presets
# whatever was run elsewhere. Older apps kept whole forms for every workspace under "params/" and "job_params/";
# those keys are dropped when met.
SETTINGS_GROUP = "workspace_params"
OLD_SETTINGS_GROUPS = ("params", "job_params")


def workspace_digest(root: Any) -> str:
    """A short, stable QSettings key for a workspace folder."""
    import hashlib
    from pathlib import Path

    return hashlib.sha1(str(Path(root).expanduser().resolve()).encode()).hexdigest()[:16]


class JobPanel(QWidget):
    """objectName ``jobPanel``; holds ``jobSelector``, the ``param.*`` editors, ``runButton``, ``cancelButton``."""

    run_requested = Signal(str, dict)   # job name, typed params
    cancel_requested = Signal()

    def __init__(self, controller: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("jobPanel")
        self.controller = controller
        self.form: ParamForm | None = None
        self._forms: dict[str, ParamForm] = {}
        self._started: dict[int, float] = {}
        layout = QVBoxLayout(self)
        self.selector = QComboBox()
        self.selector.setObjectName("jobSelector")
        self.selector.setToolTip("The job to run on the selected variant")
        layout.addWidget(self.selector)
        self.target = QLabel("input: -")
        self.target.setObjectName("jobInput")
        layout.addWidget(self.target)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        layout.addWidget(self.scroll, 1)
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.setObjectName("runButton")
        self.run_button.setToolTip("Run the job on the selected variant (Ctrl+R); queued if another job runs")
        self.run_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("cancelButton")
        self.cancel_button.setToolTip("Stop the running job and drop the queue (Esc)")
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.run_button, 2)
        buttons.addWidget(self.cancel_button, 1)
        layout.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setObjectName("jobProgress")
        self.progress.setFormat("idle")
        self.progress.setValue(0)
        layout.addWidget(self.progress)
        layout.addWidget(QLabel("Queue"))
        self.queue = QListWidget()
        self.queue.setObjectName("jobQueue")
        self.queue.setMaximumHeight(110)
        layout.addWidget(self.queue)
        self.default_job = "train"
        self.presets: dict[str, dict[str, Any]] = {}  # job -> values its form starts from instead of the defaults
        self._presets_for: str | None = None  # the dataset of the workspace the presets came with
        self._starting: dict[str, dict[str, Any]] = {}  # job -> its form's values before the user's edits
        self.workspace_key: str | None = None  # workspace_digest() of the open workspace, once known
        for name in controller.job_names():
            self.selector.addItem(name, name)
        self.selector.setPlaceholderText("loading jobs ...")
        self.selector.setCurrentIndex(-1)  # the default job is selected once the plugins are imported
        self.selector.currentIndexChanged.connect(self._show_current)
        self.run_button.clicked.connect(self.request_run)
        self.cancel_button.clicked.connect(self.cancel_requested)
        controller.jobs_loaded.connect(self._on_jobs_loaded)
        controller.job_event.connect(self.on_event)
        if hasattr(controller, "session_ready"):
            controller.session_ready.connect(self._on_session)

    def select_job(self, name: str) -> None:
        index = self.selector.findData(name)
        if index >= 0:
            self.selector.setCurrentIndex(index)
            self._show_current()

    def current_job(self) -> str:
        return str(self.selector.currentData() or "")

    def _show_current(self, *_args: Any, wait: bool = True) -> None:
        name = self.current_job()
        if not name or (self.form is not None and self.form.job_class.name == name):
            return
        form = self._forms.get(name)
        if form is None:
            job_class = self.controller.job_class(name, wait=wait)
            if job_class is None:
                return
            form = self._forms[name] = self._build_form(name, job_class)
        if self.scroll.widget() is not None:
            self.scroll.takeWidget()  # keep the old form (and its edits) for when the job is picked again
        self.scroll.setWidget(form)
        self.form = form
        self._fit_form()
        self.run_button.setToolTip(f"Run {name} on the selected variant (Ctrl+R)")

    def _build_form(self, name: str, job_class: type) -> ParamForm:
        """The job's form: its defaults, then the panel's preset for it (the demo's), then what the user changed
        last time."""
        form = ParamForm(job_class)
        form.set_values(self.presets.get(name, {}))
        try:
            self._starting[name] = form.values()
        except InputError:
            self._starting[name] = {}
        settings = QSettings()
        for group in OLD_SETTINGS_GROUPS:
            settings.remove(f"{group}/{name}")
        form.set_values(self._saved(name))
        form.installEventFilter(self)  # the Advanced section opening can widen the form
        return form

    def _saved(self, name: str) -> dict[str, Any]:
        """What the user changed in this job's form last time, in this workspace."""
        if self.workspace_key is None:
            return {}
        saved = QSettings().value(f"{SETTINGS_GROUP}/{self.workspace_key}/{name}")
        try:
            changed = json.loads(str(saved)) if saved else {}
        except ValueError:
            return {}
        return changed if isinstance(changed, dict) else {}

    def _on_session(self, session: Any) -> None:
        """A workspace is open: its remembered values fill the forms. Forms built for another workspace start over
        from their starting values; edits made while the first one was loading are kept."""
        key = workspace_digest(session.workspace.root)
        if key == self.workspace_key:
            return
        previous, self.workspace_key = self.workspace_key, key
        dataset = getattr(session, "dataset_spec", None)
        if previous is None:
            self._presets_for = dataset
        elif self.presets and dataset != self._presets_for:
            # the presets were tuned for the data the app opened on (the demo's digits), not for this workspace's
            # (an HF model on a corpus would start at 20 epochs with label smoothing): its forms start from defaults
            for name, values in self.presets.items():
                form = self._forms.get(name)
                if form is not None:  # the loop below sets the form from these starting values
                    defaults = {k: form.params[k].default for k in values if k in form.params}
                    self._starting[name] = {**self._starting.get(name, {}), **defaults}
            self.presets = {}
        for name, form in self._forms.items():
            if previous is not None:
                form.set_values(self._starting.get(name, {}))
            form.set_values(self._saved(name))

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if watched is self.form and event.type() == QEvent.Type.LayoutRequest:
            self._fit_form()
        return super().eventFilter(watched, event)

    def _fit_form(self) -> None:
        """Keep the scroll area at least as wide as the form needs (with room for the vertical scrollbar), so a
        narrow window or dock squeezes the other panels instead of hiding the form behind a horizontal
        scrollbar."""
        if self.form is None:
            return
        scrollbar = self.scroll.verticalScrollBar().sizeHint().width()
        frame = 2 * self.scroll.frameWidth()
        self.scroll.setMinimumWidth(self.form.minimumSizeHint().width() + scrollbar + frame)

    def _on_jobs_loaded(self, _classes: dict) -> None:
        """The plugins are imported: sync the selector with the job list, select the default job unless the
        user picked one already."""
        wanted = list(self.controller.job_names()) + sorted(self.controller.failed_jobs)
        for index in reversed(range(self.selector.count())):
            name = self.selector.itemData(index)
            if name not in wanted:
                self._forms.pop(name, None)
                self.selector.removeItem(index)
        for name in wanted:
            if self.selector.findData(name) < 0:
                self.selector.addItem(name, name)
        model = self.selector.model()
        for name in self.controller.failed_jobs:
            index = self.selector.findData(name)
            if index >= 0:
                model.item(index).setEnabled(False)
                model.item(index).setToolTip("this plugin failed to load (see the notification)")
        if self.selector.currentIndex() < 0 and self.selector.findData(self.default_job) >= 0:
            self.select_job(self.default_job)
        else:
            self._show_current(wait=False)

    def set_input(self, variant_id: str | None) -> None:
        self.target.setText(f"input: {variant_id or 'latest variant'}")

    def request_run(self) -> None:
        """Validate the form; an invalid value is refused here, before anything is queued."""
        self._show_current()
        if self.form is None:
            return
        try:
            values = self.form.values()
        except InputError:
            return
        name = self.current_job()
        starting = self._starting.get(name, {})
        changed = {k: v for k, v in values.items() if k not in starting or starting[k] != v}
        if self.workspace_key is not None:
            QSettings().setValue(f"{SETTINGS_GROUP}/{self.workspace_key}/{name}", json.dumps(changed, default=str))
        self.run_requested.emit(name, values)

    # events ---------------------------------------------------------------------------------------------------
    def add_waiting(self, job: str) -> None:
        item = QListWidgetItem(f"{job}: waiting for the model")
        item.setData(Qt.ItemDataRole.UserRole, -1)
        self.queue.addItem(item)
        self.cancel_button.setEnabled(True)

    def _item(self, run_id: int) -> QListWidgetItem | None:
        for i in range(self.queue.count()):
            if self.queue.item(i).data(Qt.ItemDataRole.UserRole) == run_id:
                return self.queue.item(i)
        return None

    def on_event(self, event: Any) -> None:
        kind, data = event.kind, event.data
        item = self._item(event.run_id)
        if kind == "queued":
            waiting = self._item(-1)
            if waiting is not None:
                self.queue.takeItem(self.queue.row(waiting))
            item = QListWidgetItem(f"#{event.run_id} {event.job}: queued")
            item.setData(Qt.ItemDataRole.UserRole, event.run_id)
            self.queue.addItem(item)
            self.cancel_button.setEnabled(True)
        elif kind == "started" and item is not None:
            item.setText(f"#{event.run_id} {event.job} on {data.get('input')}: running")
            self._started[event.run_id] = time.monotonic()
            self.progress.setRange(0, 0)
            self.progress.setFormat(f"{event.job}: starting")
        elif kind == "progress":
            self._progress(event)
        elif kind == "finished":
            if item is not None:
                self.queue.takeItem(self.queue.row(item))
            self._started.pop(event.run_id, None)
            self.progress.setRange(0, 100)
            status = data.get("status")
            self.progress.setValue(100 if status == "ok" else 0)
            self.progress.setFormat(f"{event.job}: {status} in {data.get('seconds', 0):.1f} s")
            self.cancel_button.setEnabled(self.queue.count() > 0)

    def _progress(self, event: Any) -> None:
        done, total = int(event.data.get("done", 0)), int(event.data.get("total", 0))
        if total <= 0:
            return
        self.progress.setRange(0, total)
        self.progress.setValue(min(done, total))
        eta = ""
        started = self._started.get(event.run_id)
        if started is not None and done > 0:
            left = (time.monotonic() - started) / done * (total - done)
            eta = f", ETA {int(left // 60)}:{int(left % 60):02d}"
        text = event.data.get("text") or f"{done}/{total}"
        self.progress.setFormat(f"{event.job}: {text} (%p%{eta})")
