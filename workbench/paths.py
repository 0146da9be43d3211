"""Where the app's data files (icons, themes, example pipelines) live, wherever the app runs from.

The source folder is the top-level ``resources/``; the wheel ships it as the data package
``workbench.resources`` (see ``[tool.setuptools]`` in pyproject.toml) and the PyInstaller bundle copies it to
the same place, so one lookup serves an installed wheel, a frozen bundle and a source checkout.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resources_dir() -> Path:
    """The resources folder: ``workbench/resources`` when installed or frozen, else the checkout's ``resources``."""
    packaged = _PACKAGE / "resources"
    if packaged.is_dir():
        return packaged
    return _PACKAGE.parent / "resources"


def resource_path(*parts: str) -> Path:
    """A file under the resources folder, e.g. ``resource_path("themes", "dark.qss")`` (it may not exist)."""
    return resources_dir().joinpath(*parts)
