"""Per-layer values (pruning sensitivity) colour the matching nodes of the graph view."""

import torch
from torch import nn

from workbench.core.graph import graph_from_torch
from workbench.ui.graph_view import GraphView


def test_heat_by_layer_name_colours_the_matching_nodes(qtbot):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).eval()
    view = GraphView()
    qtbot.addWidget(view)
    with qtbot.waitSignal(view.graph_shown, timeout=10_000):
        view.set_graph(graph_from_torch(model, torch.zeros(1, 1, 8, 8)))
    assert view.set_heat_by_name({"0": 0.9, "3": 0.1, "not-a-layer": 1.0}) == 2
    heats = {item.node.name: item.heat for item in view.node_items()}
    assert heats["0"] == 0.9 and heats["3"] == 0.1 and heats["1"] is None


def test_a_quantized_variant_colours_its_worst_nodes(qtbot, tmp_path, monkeypatch):
    """Selecting a variant whose result has per-node SQNR gives the lowest SQNR the hottest colour."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    from workbench.app import create_main_window
    from workbench.core.workspace import Variant

    w = create_main_window(workspace=tmp_path / "ws", model="zoo:mlp:hidden=8", dataset="digits:size=8")
    qtbot.addWidget(w)
    variant = Variant("v0009", "v0001", "quantize", {}, 0.0, "onnx", "", "", result={"node_sensitivity": [
        {"node": "/fc/Gemm", "sqnr_db": 10.0}, {"node": "/classifier/Gemm", "sqnr_db": 30.0}]})
    w._heat_from_result(variant)
    assert w._heat["v0009"] == {"/fc/Gemm": 1.0, "/classifier/Gemm": 0.0}
    w.controller.shutdown(wait=True)


def test_a_collapsed_block_shows_its_hottest_member(qtbot):
    """A decoder block folded into one node must not hide a sensitive layer inside it."""
    model = nn.Sequential(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 2)).eval()
    view = GraphView()
    qtbot.addWidget(view)
    with qtbot.waitSignal(view.graph_shown, timeout=10_000):
        view.set_graph(graph_from_torch(model, torch.zeros(1, 1, 8, 8)))
    view.set_heat_by_name({"0.0": 0.3, "0.2": 0.8, "2": 0.1})
    group = next(g for g, grp in view.graph.groups.items() if grp.name == "0")
    with qtbot.waitSignal(view.graph_shown, timeout=10_000):
        view.collapse(group)
    heats = {item.node.name: item.heat for item in view.node_items()}
    assert heats["0"] == 0.8 and heats["2"] == 0.1 and "0.0" not in heats
