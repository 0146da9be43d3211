"""GraphView: one item per node, search, click, collapse, diff and heat colouring, async layout."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import QPoint, Qt  # noqa: E402

from workbench.core.graph import Edge, Graph, Group, Node, categorize  # noqa: E402
from workbench.core.graph.diff import Change, GraphDiff  # noqa: E402
from workbench.ui.graph_items import EdgesItem, NodeItem  # noqa: E402
from workbench.ui.graph_view import GraphView  # noqa: E402


def small_graph() -> Graph:
    """input -> block1(conv, relu) -> block2(conv, relu) -> linear -> output."""
    specs = [("in", "Input", "x", None), ("c1", "Conv", "block1.conv", "b1"), ("r1", "Relu", "block1.relu", "b1"),
             ("c2", "Conv", "block2.conv", "b2"), ("r2", "Relu", "block2.relu", "b2"),
             ("fc", "Gemm", "fc", None), ("out", "Output", "y", None)]
    nodes = [Node(i, op, name, "input" if op == "Input" else "output" if op == "Output" else categorize(op),
                  output_shapes=[(1, 8, 4, 4)], input_shapes=[(1, 8, 4, 4)], params=10, macs=100, parent=p)
             for i, op, name, p in specs]
    edges = [Edge(a.id, b.id) for a, b in zip(nodes, nodes[1:])] + [Edge("c1", "c2")]
    groups = {"b1": Group("b1", "block1", None, ["c1", "r1"]), "b2": Group("b2", "block2", None, ["c2", "r2"])}
    return Graph(nodes, edges, groups, source="test")


def chain(n: int) -> Graph:
    nodes = [Node(f"n{i}", "Relu" if i % 2 else "MatMul", f"/b{i}", "activation") for i in range(n)]
    return Graph(nodes, [Edge(f"n{i}", f"n{i + 1}") for i in range(n - 1)])


@pytest.fixture
def view(qtbot):
    v = GraphView()
    v.resize(900, 700)
    qtbot.addWidget(v)
    v.show()
    return v


def node_items(v: GraphView) -> list[NodeItem]:
    return [i for i in v.scene().items() if isinstance(i, NodeItem)]


def test_set_graph_shows_one_item_per_node(view, qtbot):
    assert view.objectName() == "graphView"
    with qtbot.waitSignal(view.graph_shown, timeout=5000) as sig:
        view.set_graph(small_graph())
    assert sig.args == [7]
    assert sorted(i.node.id for i in node_items(view)) == sorted(n.id for n in small_graph().nodes)
    assert len(view.scene().items()) == 7 + 1  # plus one edge path item
    assert any(isinstance(i, EdgesItem) for i in view.scene().items())
    tip = view.item_for("c1").tooltip_text()
    assert "Conv" in tip and "1x8x4x4" in tip and "params: 10" in tip


def test_big_graph_is_laid_out_off_thread(view, qtbot):
    with qtbot.waitSignal(view.graph_shown, timeout=10000) as sig:
        view.set_graph(chain(3000))
        assert view.busy  # returned before the layout finished
    assert sig.args == [3000]
    assert len(node_items(view)) == 3000
    assert len(view.scene().items()) < 3000 + 20
    view.viewport().repaint()  # paints at the low level of detail without errors


def test_find_selects_and_centres(view, qtbot):
    view.set_graph(small_graph())
    matches = view.find("conv")
    assert [m.id for m in matches] == ["c1", "c2"]
    selected = view.scene().selectedItems()
    assert [i.node.id for i in selected] == ["c1"]
    assert view.viewport().rect().contains(view.mapFromScene(selected[0].pos()))
    assert view.find("no-such-node") == [] and not view.scene().selectedItems()
    view.set_graph(chain(300))
    assert [m.id for m in view.find("/b150")] == ["n150"]
    centre = view.mapToScene(view.viewport().rect().center())
    assert abs(centre.y() - view.item_for("n150").pos().y()) < 5


def test_click_emits_node_selected(view, qtbot):
    view.set_graph(small_graph())
    item = view.item_for("fc")
    pos = view.mapFromScene(item.sceneBoundingRect().center())
    with qtbot.waitSignal(view.node_selected, timeout=2000) as sig:
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(pos.x(), pos.y()))
    assert sig.args[0].id == "fc"


def test_collapse_and_expand(view, qtbot):
    view.set_graph(small_graph())
    with qtbot.waitSignal(view.graph_shown, timeout=2000):
        view.collapse("b1")
    items = node_items(view)
    assert len(items) == 6
    block = view.item_for("r1")
    assert block.node.category == "group" and block.node.attrs["members"] == 2
    assert block.node.params == 20
    assert view.shown.predecessors(block.node.id) == ["in"]
    assert sorted(view.shown.successors(block.node.id)) == ["c2"]
    view.find("block1.relu")
    assert view.scene().selectedItems() == [block]
    view.expand("b1")
    assert len(node_items(view)) == 7


def test_diff_and_heat_colouring(view, qtbot):
    d = GraphDiff({"c2": Change("pruned", "64 -> 32 channels", "block2.conv"),
                   "fc": Change("added", "added Gemm", "fc")})
    d.removed.append(Change("removed", "folded BatchNormalization bn1", "bn1"))
    view.set_graph(small_graph(), diff=d, heat={"c1": 1.0, "r1": 0.0})
    pruned = view.item_for("c2")
    assert pruned.pruned and pruned.change.text == "64 -> 32 channels"
    assert not view.item_for("c1").pruned and view.item_for("fc").change.kind == "added"
    assert "folded BatchNormalization" in " ".join(view.overlay_lines())
    hot, cold = view.item_for("c1")._fill.color(), view.item_for("r1")._fill.color()
    assert hot.red() > hot.blue() and cold.blue() > cold.red()
    assert "pruned: 64 -> 32 channels" in pruned.tooltip_text()
    view.grab()  # paints every item kind without errors


def test_load_graph_async(view, qtbot):
    with qtbot.waitSignal(view.graph_shown, timeout=5000):
        view.load_graph_async(small_graph)
    assert len(node_items(view)) == 7
    with qtbot.waitSignal(view.load_failed, timeout=5000) as sig:
        view.load_graph_async(lambda: 1 / 0)
    assert "ZeroDivisionError" in sig.args[0]


def test_wheel_zoom_and_fit(view, qtbot):
    view.set_graph(chain(40))
    view.fit()
    s0 = view.transform().m11()
    view.zoom(2.0)
    assert view.transform().m11() == pytest.approx(2 * s0)


def numbered_blocks(blocks: int, ops_per_block: int) -> Graph:
    """input -> body.layers.0 ... body.layers.{blocks-1} (a chain of ops each) -> output, all inside ``body``."""
    nodes = [Node("in", "Input", "x", "input")]
    groups = {"g:body": Group("g:body", "body")}
    for b in range(blocks):
        gid = f"g:body.layers.{b}"
        groups[gid] = Group(gid, f"body.layers.{b}", "g:body")
        for k in range(ops_per_block):
            nodes.append(Node(f"b{b}_{k}", "MatMul", f"body.layers.{b}/op{k}", "linear", params=4, parent=gid))
            groups[gid].children.append(nodes[-1].id)
    nodes.append(Node("out", "Output", "y", "output"))
    return Graph(nodes, [Edge(a.id, b.id) for a, b in zip(nodes, nodes[1:])], groups, source="test")


def test_a_big_graph_opens_with_its_repeated_blocks_folded_and_keeps_what_the_user_opens(view, qtbot):
    big = numbered_blocks(4, 40)  # 162 nodes: a decoder-sized column
    with qtbot.waitSignal(view.graph_shown, timeout=10_000):
        view.set_graph(big)
    assert view.collapsed() == {f"g:body.layers.{b}" for b in range(4)}
    assert len(node_items(view)) == 6  # input, four blocks, output
    with qtbot.waitSignal(view.graph_shown, timeout=10_000):
        view.expand("g:body.layers.1")
    with qtbot.waitSignal(view.graph_shown, timeout=10_000):
        view.set_graph(numbered_blocks(4, 40))  # another variant of the same model: the user's choice stays
    assert "g:body.layers.1" not in view.collapsed() and len(node_items(view)) == 5 + 40
    with qtbot.waitSignal(view.graph_shown, timeout=10_000):
        view.set_graph(numbered_blocks(3, 40))  # a new structure (a block dropped) opens folded again
    assert view.collapsed() == {f"g:body.layers.{b}" for b in range(3)}
    with qtbot.waitSignal(view.graph_shown, timeout=10_000):
        view.set_graph(numbered_blocks(3, 4))  # small: drawn whole
    assert view.collapsed() == set() and len(node_items(view)) == 14
