"""The architecture graph view: zoom, pan, search, collapsible blocks, diff and heat colouring.

Layout runs in a worker thread for big graphs (its result comes back through a queued signal),
and the scene holds one light item per node plus a few path items for all edges, so a
10,000-node ONNX model shows in well under a second on a laptop.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PySide6.QtCore import QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFontMetricsF, QPainter, QTransform
from PySide6.QtWidgets import QGraphicsScene, QGraphicsView

from workbench.core.graph.folding import default_collapsed
from workbench.core.graph.ir import Edge, Graph, Node
from workbench.core.graph.layout import Layout, layered_layout

from .graph_items import NODE_H, EdgesItem, NodeItem, edge_path, fonts, node_width
from .threads import ThreadPerTask

ASYNC_THRESHOLD = 2000  # nodes; above this the layout leaves the GUI thread
EDGE_CHUNK = 400  # edges per path item
READABLE_SCALE = 0.8


class _Bridge(QObject):
    """Carries worker results back to the GUI thread (queued connections)."""

    laid_out = Signal(int, object, object)
    built = Signal(int, object)
    failed = Signal(int, str)


def block_heat(graph: Graph | None, shown: Graph, heat: dict[str, float]) -> dict[str, float]:
    """``heat`` plus, for each collapsed block shown as one node, the hottest of its members: a block hiding a
    sensitive layer must not look cool."""
    blocks = {n.attrs["group"]: n.id for n in shown.nodes if n.category == "group" and "group" in n.attrs}
    if not heat or not blocks or graph is None:
        return heat
    out = dict(heat)
    for node_id, value in heat.items():
        for group in graph.ancestors(graph.node(node_id)):
            if group in blocks:
                out[blocks[group]] = max(out.get(blocks[group], value), value)
                break
    return out


def visible_graph(graph: Graph, collapsed: set[str]) -> Graph:
    """The graph as shown: each collapsed group becomes one node, edges rerouted and deduplicated."""
    if not collapsed:
        return graph
    rep: dict[str, str] = {}
    nodes: list[Node] = []
    blocks: dict[str, Node] = {}
    for n in graph.nodes:
        top = next((g for g in graph.ancestors(n) if g in collapsed), None)
        if top is None:
            rep[n.id] = n.id
            nodes.append(n)
            continue
        rid = f"group:{top}"
        rep[n.id] = rid
        block = blocks.get(rid)
        if block is None:
            grp = graph.groups[top]
            block = blocks[rid] = Node(rid, "Block", grp.name, "group", parent=grp.parent,
                                       input_shapes=list(n.input_shapes), attrs={"group": top, "members": 0})
            nodes.append(block)
        block.attrs["members"] += 1
        block.params += n.params
        block.macs += n.macs
        block.output_shapes = list(n.output_shapes)
    seen: set[tuple[str, str]] = set()
    edges: list[Edge] = []
    for e in graph.edges:
        s, d = rep.get(e.src), rep.get(e.dst)
        if s is None or d is None or s == d or (s, d) in seen:
            continue
        seen.add((s, d))
        edges.append(Edge(s, d, e.tensor, e.shape))
    return Graph(nodes, edges, graph.groups, graph.source, graph.note)


class GraphView(QGraphicsView):
    """Shows a :class:`Graph`; see the module docstring for what it does off the GUI thread."""

    graph_shown = Signal(int)
    node_selected = Signal(object)
    load_failed = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("graphView")
        scene = QGraphicsScene(self)
        scene.setItemIndexMethod(QGraphicsScene.ItemIndexMethod.NoIndex)
        scene.setBackgroundBrush(QColor("#f8fafc"))
        self.setScene(scene)
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.TextAntialiasing)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.BoundingRectViewportUpdate)
        self.setOptimizationFlag(QGraphicsView.OptimizationFlag.DontAdjustForAntialiasing, True)
        self.setCacheMode(QGraphicsView.CacheModeFlag.CacheBackground)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self._bridge = _Bridge(self)
        self._bridge.laid_out.connect(self._on_laid_out, Qt.ConnectionType.QueuedConnection)
        self._bridge.built.connect(self._on_built, Qt.ConnectionType.QueuedConnection)
        self._bridge.failed.connect(self._on_failed, Qt.ConnectionType.QueuedConnection)
        self._pool: ThreadPerTask | None = None
        self._gen = 0
        self.graph: Graph | None = None
        self.shown: Graph | None = None
        self.diff: dict | None = None
        self.heat: dict[str, float] | None = None
        self.layout_result: Layout | None = None
        self._collapsed: set[str] = set()
        self._items: dict[str, NodeItem] = {}
        self._overlay: list[str] = []
        self.busy = False

    # ---- loading -------------------------------------------------------------------------
    def set_graph(self, graph: Graph, diff: dict | None = None, heat: dict[str, float] | None = None) -> None:
        """Show ``graph``; big graphs are laid out in a worker and ``graph_shown`` comes later."""
        same_structure = (self.graph is not None and set(self.graph.groups) == set(graph.groups)
                          and [n.id for n in self.graph.nodes] == [n.id for n in graph.nodes])
        self.graph, self.diff, self.heat = graph, diff, heat
        if same_structure:  # another variant of the same model: keep what the user folded and opened
            self._collapsed = {g for g in graph.groups if g in self._collapsed}
        else:  # a new structure opens readable: a decoder as embedding, N blocks, head
            self._collapsed = default_collapsed(graph)
        self._rebuild()

    def set_heat_by_name(self, values: dict[str, float]) -> int:
        """Colour nodes by a 0..1 value keyed by layer name (e.g. per-layer pruning sensitivity, where names are
        module paths such as ``features.0``); returns how many nodes matched."""
        if self.graph is None:
            return 0
        heat = {n.id: float(values[n.name]) for n in self.graph.nodes if n.name in values}
        if heat and heat != self.heat:
            self.set_graph(self.graph, self.diff, heat)
        return len(heat)

    def load_graph_async(self, builder: Callable[[], Graph]) -> None:
        """Run a (slow) graph builder, e.g. torch.export or ONNX parsing, off the GUI thread."""
        self._gen += 1
        gen, self.busy = self._gen, True

        def work() -> None:
            try:
                self._bridge.built.emit(gen, builder())
            except Exception as exc:  # noqa: BLE001 - shown to the user, not raised in a thread
                self._bridge.failed.emit(gen, f"{type(exc).__name__}: {exc}")

        self._executor().submit(work)

    def collapse(self, group_id: str) -> None:
        """Show a block as one node (its members and their edges fold into it)."""
        if self.graph is not None and group_id in self.graph.groups and group_id not in self._collapsed:
            self._collapsed.add(group_id)
            self._rebuild()

    def expand(self, group_id: str) -> None:
        if group_id in self._collapsed:
            self._collapsed.discard(group_id)
            self._rebuild()

    def collapsed(self) -> set[str]:
        return set(self._collapsed)

    def node_items(self) -> list[NodeItem]:
        return list(self._items.values())

    def item_for(self, node_id: str) -> NodeItem | None:
        """The item showing a node, or the collapsed block that contains it."""
        item = self._items.get(node_id)
        if item is None and self.graph is not None and node_id in self.graph.index():
            for gid in self.graph.ancestors(self.graph.node(node_id)):
                if gid in self._collapsed:
                    return self._items.get(f"group:{gid}")
        return item

    def _executor(self) -> ThreadPerTask:
        if self._pool is None:
            self._pool = ThreadPerTask(1, name="graph-layout")
        return self._pool

    def _rebuild(self) -> None:
        assert self.graph is not None
        shown = visible_graph(self.graph, self._collapsed)
        big = len(shown.nodes) > ASYNC_THRESHOLD
        char_w = QFontMetricsF(fonts()["small"]).averageCharWidth() * 1.1 if big else None
        diff = self.diff or {}
        widths = np.fromiter((node_width(n, char_w, diff.get(n.id)) for n in shown.nodes), float,
                             len(shown.nodes))
        self._gen += 1
        gen, self.busy = self._gen, True
        if not big:
            self._on_laid_out(gen, shown, (self._layout(shown, widths), widths))
            return

        def work() -> None:
            try:
                self._bridge.laid_out.emit(gen, shown, (self._layout(shown, widths), widths))
            except Exception as exc:  # noqa: BLE001
                self._bridge.failed.emit(gen, f"layout failed: {exc}")

        self._executor().submit(work)

    @staticmethod
    def _layout(g: Graph, widths: np.ndarray) -> Layout:
        return layered_layout(g, widths=widths, node_sep=28.0, layer_sep=NODE_H + 38.0, dummy_width=10.0)

    def _on_built(self, gen: int, graph: Graph) -> None:
        if gen == self._gen:
            self.set_graph(graph)

    def _on_failed(self, gen: int, message: str) -> None:
        if gen == self._gen:
            self.busy = False
            self.load_failed.emit(message)

    def _on_laid_out(self, gen: int, shown: Graph, result) -> None:
        if gen != self._gen:  # a newer graph or collapse replaced this one
            return
        lay, widths = result
        self._populate(shown, lay, widths)
        self.busy = False
        self.graph_shown.emit(len(shown.nodes))

    def _populate(self, shown: Graph, lay: Layout, widths: np.ndarray) -> None:
        scene = self.scene()
        self._items = {}
        scene.clearSelection()
        scene.clear()
        self.shown, self.layout_result = shown, lay
        diff, heat = self.diff or {}, block_heat(self.graph, shown, self.heat or {})
        xs, ys = lay.x.tolist(), lay.y.tolist()
        for i, n in enumerate(shown.nodes):
            item = NodeItem(n, float(widths[i]), diff.get(n.id), heat.get(n.id))
            item.setPos(xs[i], ys[i])
            scene.addItem(item)
            self._items[n.id] = item
        order = np.argsort(lay.y[lay.edges[:, 0]], kind="stable") if len(lay.edges) else []
        for start in range(0, len(order), EDGE_CHUNK):
            polys = [lay.edge_points(int(i)) for i in order[start:start + EDGE_CHUNK]]
            scene.addItem(EdgesItem(edge_path(polys)))
        removed = getattr(self.diff, "removed", []) if self.diff else []
        self._overlay = ([shown.note] if shown.note else []) + [
            f"removed: {c.text}" for c in removed[:8]] + (
            [f"... and {len(removed) - 8} more removed"] if len(removed) > 8 else [])
        rect = scene.itemsBoundingRect().adjusted(-60, -60, 60, 60)
        scene.setSceneRect(rect)
        self._initial_view(lay)

    def _initial_view(self, lay: Layout) -> None:
        """Fit small graphs; start big ones at a readable zoom on their inputs."""
        self.fit()
        if self.transform().m11() >= READABLE_SCALE * 0.6 or not len(lay.x):
            return
        self.setTransform(QTransform.fromScale(READABLE_SCALE, READABLE_SCALE))
        top = int(np.argmin(lay.y))
        vh = self.viewport().height() / READABLE_SCALE
        self.centerOn(QPointF(float(lay.x[top]), float(lay.y[top]) + vh / 2 - NODE_H))

    # ---- navigation ------------------------------------------------------------------------
    def fit(self) -> None:
        """Zoom to show the whole graph (never above 1:1)."""
        rect = self.scene().sceneRect()
        if rect.isEmpty():
            return
        self.fitInView(rect, Qt.AspectRatioMode.KeepAspectRatio)
        if self.transform().m11() > 1.0:
            self.setTransform(QTransform())
            self.centerOn(rect.center())

    def find(self, text: str) -> list[Node]:
        """Select and centre the first node matching ``text`` (name or op); return all matches."""
        if self.graph is None:
            return []
        matches = self.graph.find(text)
        self.scene().clearSelection()
        for m in matches:
            item = self.item_for(m.id)
            if item is not None:
                item.setSelected(True)
                if self.transform().m11() < READABLE_SCALE * 0.6:
                    self.setTransform(QTransform.fromScale(READABLE_SCALE, READABLE_SCALE))
                self.centerOn(item)
                break
        return matches

    def zoom(self, factor: float) -> None:
        s = self.transform().m11()
        factor = min(max(factor, 0.01 / s), 4.0 / s)
        self.scale(factor, factor)

    def wheelEvent(self, event) -> None:  # noqa: N802 - Qt override
        self.zoom(1.0015 ** event.angleDelta().y())
        event.accept()

    def mousePressEvent(self, event) -> None:  # noqa: N802
        super().mousePressEvent(event)
        item = self.itemAt(event.position().toPoint())
        if isinstance(item, NodeItem):
            self.node_selected.emit(item.node)

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802
        item = self.itemAt(event.position().toPoint())
        if isinstance(item, NodeItem):
            gid = item.node.attrs.get("group")
            if gid is not None:
                self.expand(gid)
            elif item.node.parent is not None:
                self.collapse(item.node.parent)
            return
        super().mouseDoubleClickEvent(event)

    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:  # noqa: N802
        """Notes and removed nodes, pinned to the top-left corner of the viewport."""
        if not self._overlay:
            return
        painter.save()
        painter.resetTransform()
        painter.setFont(fonts()["small"])
        fm = QFontMetricsF(painter.font())
        w = max(fm.horizontalAdvance(t) for t in self._overlay) + 20
        h = fm.height() * len(self._overlay) + 12
        painter.setPen(QColor("#cbd5e1"))
        painter.setBrush(QColor(255, 255, 255, 230))
        painter.drawRoundedRect(QRectF(8, 8, w, h), 6, 6)
        painter.setPen(QColor("#b91c1c"))
        for i, t in enumerate(self._overlay):
            painter.drawText(QPointF(18, 8 + 6 + fm.ascent() + i * fm.height()), t)
        painter.restore()

    def overlay_lines(self) -> list[str]:
        return list(self._overlay)

    def closeEvent(self, event) -> None:  # noqa: N802
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        super().closeEvent(event)
