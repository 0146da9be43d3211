"""File menu actions: workspaces, models (dialog, drag and drop, recent files), ONNX export, pipeline save.

Each action has a dialog-free core (``*_to``/``load_model_path``) that tests call directly.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QFileDialog

MODEL_FILTER = ("Models (*.onnx *.pt2 *.pt *.pth *.py *.keras *.h5 config.json);;"
                "Hugging Face folder: its config.json (config.json);;All files (*)")
MAX_RECENT = 10


def recent_files() -> list[str]:
    value = QSettings().value("recentFiles", [])
    if isinstance(value, str):
        value = [value]
    return [str(v) for v in (value or [])]


def remember(path: str) -> None:
    files = [path] + [p for p in recent_files() if p != path]
    QSettings().setValue("recentFiles", files[:MAX_RECENT])


def fill_recent(window: Any) -> None:
    menu = window.recent_menu
    menu.clear()
    files = recent_files()
    if not files:
        menu.addAction("(none)").setEnabled(False)
    for path in files:
        menu.addAction(path, lambda p=path: load_model_path(window, p))


def load_model_path(window: Any, path: str) -> None:
    """A model file, ``zoo:`` spec or workspace folder: open it (a workspace) or add it as a new root."""
    target = Path(path)
    if target.name == "config.json" and target.is_file():
        target = target.parent  # a Hugging Face checkpoint is its folder: config, weights and tokenizer together
        path = str(target)
    if target.is_dir() and (target / "workspace.sqlite").exists():
        remember(str(target))
        window.controller.open(target)
        return
    spec = path if ":" in path and not target.exists() else str(target.resolve())
    remember(spec)
    window.log_view.add(f"loading model {spec}")
    window.controller.add_model(spec)


def open_model(window: Any) -> None:
    path, _ = QFileDialog.getOpenFileName(window, "Open model", "", MODEL_FILTER)
    if path:
        load_model_path(window, path)


def open_model_folder(window: Any) -> None:
    """A Hugging Face checkpoint folder (config.json, safetensors shards, tokenizer files), or a variant folder."""
    folder = QFileDialog.getExistingDirectory(window, "Open a Hugging Face model folder")
    if folder:
        load_model_path(window, folder)


def new_workspace(window: Any) -> None:
    """A new workspace starting from the current root model (the demo model when none is open)."""
    folder = QFileDialog.getExistingDirectory(window, "New workspace folder")
    if not folder:
        return
    session, model, dataset = window.controller.session, "zoo:seed_cnn", None
    if session is not None and window.variants:
        root = window.variants[0]
        model, dataset = root.params.get("model") or root.source, session.dataset_spec
    window.controller.open(Path(folder), model=model, dataset=dataset)


def open_workspace(window: Any) -> None:
    folder = QFileDialog.getExistingDirectory(window, "Open workspace folder")
    if folder:
        remember(folder)
        window.controller.open(Path(folder))


def export_onnx_to(window: Any, variant_id: str, dest: Path) -> Path:
    """Copy the variant's verified ONNX file (every variant has one) to ``dest``."""
    variant = window.controller.session.workspace.variant(variant_id)
    source = variant.path / "model.onnx"
    shutil.copyfile(source, dest)
    return dest


def export_onnx(window: Any) -> None:
    variant_id = window.selected
    if window.controller.session is None or not variant_id:
        window.notifications.notify("select a variant to export", "warning")
        return
    path, _ = QFileDialog.getSaveFileName(window, "Export to ONNX", f"{variant_id}.onnx", "ONNX (*.onnx)")
    if path:
        try:
            export_onnx_to(window, variant_id, Path(path))
        except OSError as exc:
            window.notifications.notify(f"export failed: {exc}", "error")
            return
        window.log_view.add(f"exported {variant_id} to {path}")


def pipeline_text(window: Any, variant_id: str) -> str:
    """The TOML pipeline that rebuilds ``variant_id`` from its root model (for ``workbench --batch``)."""
    from workbench.core.pipeline import Pipeline, Step, to_toml

    session = window.controller.session
    lineage = list(reversed(session.workspace.lineage(variant_id)))  # root first
    root = lineage[0]
    pipe = Pipeline(model=root.params.get("model") or root.source, dataset=session.dataset_spec,
                    device="auto", seed=session.seed)
    pipe.steps = [Step(v.job, dict(v.params)) for v in lineage[1:]]
    return to_toml(pipe)


def save_pipeline(window: Any) -> None:
    variant_id = window.selected
    if window.controller.session is None or not variant_id:
        window.notifications.notify("select a variant: its history becomes the pipeline", "warning")
        return
    path, _ = QFileDialog.getSaveFileName(window, "Save history as pipeline", f"{variant_id}.toml",
                                          "Pipeline (*.toml)")
    if path:
        Path(path).write_text(pipeline_text(window, variant_id), encoding="utf-8")
        window.log_view.add(f"saved the history of {variant_id} to {path}")
