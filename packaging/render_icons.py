"""Render the app icon's PNG sizes from resources/icons/workbench.svg (run after editing the SVG).

Usage: QT_QPA_PLATFORM=offscreen python packaging/render_icons.py
Writes resources/icons/workbench-<N>.png for the sizes desktops, installers and PyInstaller ask for.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
ICONS = Path(__file__).resolve().parents[1] / "resources" / "icons"


def render(svg: Path = ICONS / "workbench.svg", out_dir: Path = ICONS, sizes: tuple[int, ...] = SIZES) -> list[Path]:
    """Rasterise the SVG at each size with Qt's SVG renderer (antialiased, transparent background)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _app = QGuiApplication.instance() or QGuiApplication([])
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"error: {svg} is not a valid SVG")
    written = []
    for size in sizes:
        image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        renderer.render(painter)
        painter.end()
        path = out_dir / f"workbench-{size}.png"
        if not image.save(str(path), "PNG"):
            raise SystemExit(f"error: could not write {path}")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in render():
        print(p)
    sys.exit(0)
