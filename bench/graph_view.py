"""Time the graph view pipeline on a big synthetic ONNX model (and Graphviz dot, when installed).

    python bench/graph_view.py [N]        # default N = 10,000 nodes; target total <= 2 s

The model is a chain of MatMul/Relu blocks with a residual Add every four blocks, tiny 8x8
weights. Stages: graph_from_onnx, layered_layout, and GraphView until ``graph_shown`` plus one
processed paint (QT_QPA_PLATFORM=offscreen when no display). The last line is machine readable:
``graph_view total_s=<x> nodes=<N>``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def make_chain_model(n_nodes: int = 10_000, dim: int = 8) -> onnx.ModelProto:
    """MatMul -> Relu blocks, with ``Add(block output, block input four blocks back)`` every 4 blocks."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    cur = res = "x"
    blocks = 0
    while len(nodes) + 3 <= n_nodes:
        b = blocks
        w = f"w{b}"
        inits.append(numpy_helper.from_array(rng.standard_normal((dim, dim)).astype(np.float32) * 0.3, w))
        nodes.append(helper.make_node("MatMul", [cur, w], [f"mm{b}"], name=f"/block{b}/MatMul"))
        nodes.append(helper.make_node("Relu", [f"mm{b}"], [f"r{b}"], name=f"/block{b}/Relu"))
        cur = f"r{b}"
        blocks += 1
        if blocks % 4 == 0 and len(nodes) < n_nodes:
            nodes.append(helper.make_node("Add", [cur, res], [f"add{b}"], name=f"/res{b}/Add"))
            cur = res = f"add{b}"
    while len(nodes) < n_nodes:  # pad to exactly N nodes
        i = len(nodes)
        nodes.append(helper.make_node("Relu", [cur], [f"pad{i}"], name=f"/pad{i}/Relu"))
        cur = f"pad{i}"
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", dim])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, ["N", dim])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def time_dot(graph) -> float | None:
    """Graphviz dot on the same graph, for scale; None when dot is not installed."""
    dot = shutil.which("dot")
    if dot is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.dot"
        lines = ["digraph g {", "node [shape=box];"]
        lines += [f'"{n.id}" [label="{n.op}"];' for n in graph.nodes]
        lines += [f'"{e.src}" -> "{e.dst}";' for e in graph.edges]
        path.write_text("\n".join(lines + ["}"]))
        t0 = time.perf_counter()
        subprocess.run([dot, "-Tplain", str(path)], check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0


def main(argv: list[str]) -> int:
    n = int(argv[1]) if len(argv) > 1 else 10_000
    from PySide6.QtWidgets import QApplication

    from workbench.core.graph.from_onnx import graph_from_onnx
    from workbench.core.graph.layout import layered_layout
    from workbench.ui.graph_view import GraphView

    model = make_chain_model(n)
    app = QApplication.instance() or QApplication([])
    view = GraphView()
    view.resize(1280, 800)
    view.show()
    app.processEvents()

    t0 = time.perf_counter()
    graph = graph_from_onnx(model)
    t1 = time.perf_counter()
    layered_layout(graph)  # the bare layout, for the record; the view lays out again with widths
    t2 = time.perf_counter()
    shown: list[int] = []
    view.graph_shown.connect(shown.append)
    view.set_graph(graph)
    while not shown:
        app.processEvents()
        time.sleep(0.001)
    view.viewport().repaint()  # one synchronous paint of the visible part
    app.processEvents()
    t3 = time.perf_counter()

    items = len(view.scene().items())
    parse, lay, show = t1 - t0, t2 - t1, t3 - t2
    total = parse + lay + show  # conservative: the view lays out again inside "shown"
    print(f"nodes={len(graph.nodes)} edges={len(graph.edges)} scene_items={items}")
    print(f"graph_from_onnx  {parse:7.3f} s")
    print(f"layered_layout   {lay:7.3f} s")
    print(f"GraphView shown  {show:7.3f} s  (layout + items + first paint)")
    print(f"total            {total:7.3f} s  (target <= 2 s)")
    if n <= 20_000:
        t_dot = time_dot(graph)
        if t_dot is None:
            print("dot: not installed (skipped)")
        else:
            print(f"graphviz dot     {t_dot:7.3f} s  ratio dot/ours(layout) = {t_dot / max(lay, 1e-9):.1f}x")
    print(f"graph_view total_s={total:.3f} nodes={n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
