"""Light scene items for the graph view: one rect item per node, a few path items for all edges.

Items derive from QGraphicsRectItem so bounding rects and hit tests stay in C++; only ``paint``
is Python, and it skips text below a level of detail of 0.4, which keeps 10,000 nodes fluid.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetricsF, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsItem, QGraphicsPathItem, QGraphicsRectItem, QStyleOptionGraphicsItem

from workbench.core.graph.ir import Node
from workbench.core.graph.summary import format_shape, human

NODE_H = 54.0
MIN_W, MAX_W = 104.0, 210.0

#: category -> (fill, accent); pastel fills keep dark text readable, accents tell kinds apart.
PALETTE = {
    "conv": ("#dbeafe", "#2563eb"), "linear": ("#ede9fe", "#7c3aed"), "norm": ("#ccfbf1", "#0d9488"),
    "activation": ("#fef3c7", "#d97706"), "pooling": ("#dcfce7", "#16a34a"),
    "shape": ("#f1f5f9", "#94a3b8"), "quant": ("#fce7f3", "#db2777"),
    "elementwise": ("#e0e7ff", "#4f46e5"), "input": ("#d1fae5", "#059669"),
    "output": ("#fee2e2", "#dc2626"), "other": ("#f3f4f6", "#6b7280"), "group": ("#e2e8f0", "#334155"),
}
CHANGE_COLORS = {"pruned": "#f08c00", "grown": "#1c7ed6", "added": "#2f9e44", "op": "#9c36b5",
                 "shape": "#e8590c", "params": "#f08c00"}
EDGE_COLOR = "#94a3b8"
TEXT, SUBTEXT = QColor("#0f172a"), QColor("#475569")

_FONTS: dict[str, QFont] = {}
_BRUSHES: dict[str, QBrush] = {}


def fonts() -> dict[str, QFont]:
    """Shared fonts (created after the QApplication exists)."""
    if not _FONTS:
        op = QFont()
        op.setPointSizeF(9.0)
        op.setBold(True)
        small = QFont()
        small.setPointSizeF(8.0)
        _FONTS.update(op=op, small=small)
    return _FONTS


def _brush(color: str) -> QBrush:
    b = _BRUSHES.get(color)
    if b is None:
        b = _BRUSHES[color] = QBrush(QColor(color))
    return b


def display_name(node: Node) -> str:
    """Short label: ONNX "/layer1/layer1.0/conv1/Conv" -> "layer1.0/conv1"."""
    name = node.name
    if name.startswith("/"):
        parts = [p for p in name.split("/") if p]
        if len(parts) > 1 and parts[-1].split("_")[0] == node.op:
            parts = parts[:-1]
        name = "/".join(parts[-2:])
    return name


def display_op(node: Node) -> str:
    """Op line: the leaf module's class for torch ops ("Conv2d"), "▸ Block" for collapsed groups."""
    if "members" in node.attrs:
        return f"▸ {node.op}"
    return node.attrs.get("module") or node.op


def third_line(node: Node, change=None) -> str:
    """Bottom label line: the change text, the block summary, or the output shape."""
    if change is not None and change.kind != "added":
        return change.text
    if "members" in node.attrs:
        return f"{node.attrs['members']} nodes · {human(node.params)} params"
    return format_shape(node.out_shape)


def node_width(node: Node, char_w: float | None = None, change=None) -> float:
    """Width from the widest label line, clamped; paint elides what does not fit.

    With ``char_w`` the width is estimated from character counts (fast, for huge graphs);
    without it the real font metrics are used.
    """
    op, name, third = display_op(node), display_name(node), third_line(node, change)
    if char_w is not None:
        longest = max(len(op) * 1.15, len(name), len(third)) * char_w
    else:
        f = fonts()
        fb, fs = QFontMetricsF(f["op"]), QFontMetricsF(f["small"])
        longest = max(fb.horizontalAdvance(op), fs.horizontalAdvance(name), fs.horizontalAdvance(third))
    return min(MAX_W, max(MIN_W, longest + 26.0))


def heat_color(v: float) -> QColor:
    """0..1 -> blue..red through a light middle, so labels stay readable."""
    v = min(1.0, max(0.0, float(v)))
    lo, mid, hi = (96, 165, 250), (248, 250, 252), (248, 113, 113)
    a, b, t = (lo, mid, v * 2) if v < 0.5 else (mid, hi, v * 2 - 1)
    return QColor(*(int(x + (y - x) * t) for x, y in zip(a, b)))


def tooltip_html(node: Node, change=None, heat: float | None = None) -> str:
    ins = ", ".join(format_shape(s) for s in node.input_shapes[:4]) or "-"
    outs = ", ".join(format_shape(s) for s in node.output_shapes[:4]) or "-"
    lines = [f"<b>{node.op}</b> &nbsp;{node.name}", f"in: {ins}", f"out: {outs}",
             f"params: {node.params:,} &nbsp; MACs: {human(node.macs)}"]
    if "members" in node.attrs:
        lines.append(f"collapsed block: {node.attrs['members']} nodes (double-click to expand)")
    if "subgraph_nodes" in node.attrs:
        lines.append(f"subgraphs: {node.attrs['subgraph_nodes']} nodes")
    if change is not None:
        lines.append(f"<span style='color:{CHANGE_COLORS.get(change.kind, '#000')}'>"
                     f"{change.kind}: {change.text}</span>")
    if heat is not None:
        lines.append(f"sensitivity: {heat:.2f}")
    return "<br>".join(lines)


class NodeItem(QGraphicsRectItem):
    """One graph node; ``node`` is the IR node, ``change``/``heat`` drive the colouring."""

    def __init__(self, node: Node, width: float, change=None, heat: float | None = None) -> None:
        super().__init__(-width / 2, -NODE_H / 2, width, NODE_H)
        self.node = node
        self.change = change
        self.heat = heat
        self.pruned = change is not None and change.kind == "pruned"
        self.setPen(QPen(Qt.PenStyle.NoPen))
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable, True)
        self.setAcceptHoverEvents(True)
        fill, accent = PALETTE.get(node.category, PALETTE["other"])
        self._fill = _brush(heat_color(heat).name() if heat is not None else fill)
        self._accent = _brush(accent)
        self._outline = CHANGE_COLORS.get(change.kind) if change is not None else None

    def tooltip_text(self) -> str:
        return tooltip_html(self.node, self.change, self.heat)

    def hoverEnterEvent(self, event) -> None:  # noqa: N802 - Qt override
        if not self.toolTip():  # built lazily: 10,000 tooltips up front would slow the first show
            self.setToolTip(self.tooltip_text())
        super().hoverEnterEvent(event)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget=None) -> None:
        r = self.rect()
        lod = QStyleOptionGraphicsItem.levelOfDetailFromTransform(painter.worldTransform())
        selected = self.isSelected()
        if lod < 0.2:  # a coloured block is all one can see at this zoom
            painter.fillRect(r, self._accent if (selected or self._outline) else self._fill)
            return
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        if self._outline or selected:
            color = "#0ea5e9" if selected else self._outline
            pen = QPen(QColor(color), 3.0 if selected or self.pruned else 2.2)
            if self.change is not None and self.change.kind == "shape" and not selected:
                pen.setStyle(Qt.PenStyle.DashLine)
        else:
            pen = QPen(self._accent.color().lighter(135), 1.0)
        painter.setPen(pen)
        painter.setBrush(self._fill)
        painter.drawRoundedRect(r.adjusted(1.5, 1.5, -1.5, -1.5), 7, 7)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(self._accent)
        painter.drawRoundedRect(QRectF(r.left() + 1.5, r.top() + 6, 4, r.height() - 12), 2, 2)
        if "members" in self.node.attrs:  # a collapsed block: a second edge hints at the stack
            painter.setPen(QPen(self._accent.color(), 1.2))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRoundedRect(r.adjusted(4, 4, -4, -4), 5, 5)
        if lod < 0.4:
            return
        f = fonts()
        tx, tw = r.left() + 12, r.width() - 18
        painter.setFont(f["op"])
        painter.setPen(TEXT)
        op = display_op(self.node)
        fm = QFontMetricsF(f["op"])
        painter.drawText(QPointF(tx, r.top() + 17), fm.elidedText(op, Qt.TextElideMode.ElideRight, tw))
        painter.setFont(f["small"])
        fs = QFontMetricsF(f["small"])
        painter.setPen(SUBTEXT)
        name = display_name(self.node)
        painter.drawText(QPointF(tx, r.top() + 32), fs.elidedText(name, Qt.TextElideMode.ElideLeft, tw))
        third = third_line(self.node, self.change)
        changed = self.change is not None and self.change.kind != "added"
        color = QColor(self._outline or "#000") if changed else SUBTEXT
        painter.setPen(color)
        painter.drawText(QPointF(tx, r.top() + 46), fs.elidedText(third, Qt.TextElideMode.ElideRight, tw))


def edge_path(polylines, half_h: float = NODE_H / 2) -> QPainterPath:
    """One path for many edges: a vertical S-curve per layer gap, straight through dummy points."""
    path = QPainterPath()
    for pts in polylines:
        x0, y0 = pts[0]
        cx, cy = float(x0), float(y0) + half_h
        path.moveTo(cx, cy)
        last = len(pts) - 1
        for i in range(1, last + 1):
            x, y = float(pts[i][0]), float(pts[i][1])
            ty = y - half_h if i == last else y - 6.0
            dy = (ty - cy) * 0.5
            path.cubicTo(cx, cy + dy, x, ty - dy, x, ty)
            cx, cy = x, ty
            if i != last:
                cy = y + 6.0
                path.lineTo(x, cy)
        path.moveTo(cx - 3.5, cy - 6.0)  # arrow head
        path.lineTo(cx, cy)
        path.lineTo(cx + 3.5, cy - 6.0)
    return path


class EdgesItem(QGraphicsPathItem):
    """A chunk of edges as one path; several chunks so zoomed-in repaints skip far-away edges."""

    def __init__(self, path: QPainterPath) -> None:
        super().__init__(path)
        pen = QPen(QColor(EDGE_COLOR), 1.4)
        pen.setCosmetic(True)
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        self.setPen(pen)
        self.setZValue(-1)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self.setAcceptHoverEvents(False)

    def paint(self, painter: QPainter, option, widget=None) -> None:
        lod = QStyleOptionGraphicsItem.levelOfDetailFromTransform(painter.worldTransform())
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, lod >= 0.2)
        painter.setPen(self.pen())
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(self.path())
