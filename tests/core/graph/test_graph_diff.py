"""Diff: pruned channels, folded BatchNorm, added QuantizeLinear, Conv rewritten as QLinearConv."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from onnx import TensorProto, helper  # noqa: E402
from torch import nn  # noqa: E402

from workbench.core.graph import Graph, Node, diff_graphs, graph_from_onnx, graph_from_torch  # noqa: E402
from workbench.core.graph.ir import categorize  # noqa: E402


def seed_cnn(c2: int = 64) -> nn.Module:
    """The seed CNN, with the second conv's width as a knob (halving it is "pruning")."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, c2, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c2, 64, 3), nn.ReLU(), nn.Flatten(),
        nn.Linear(576, 64), nn.ReLU(), nn.Linear(64, 10),
    ).eval()


def test_pruned_conv_is_marked():
    x = torch.randn(1, 1, 28, 28)
    before = graph_from_torch(seed_cnn(64), x)
    after = graph_from_torch(seed_cnn(32), x)
    d = diff_graphs(before, after)
    conv = after.find("3")[0]
    assert conv.op == "conv2d"
    assert d[conv.id].kind == "pruned" and d[conv.id].text == "64 -> 32 channels"
    nxt = next(n for n in after.nodes if n.name == "6")
    assert d[nxt.id].kind == "shape" and "64 -> 32" in d[nxt.id].text
    relu = next(n for n in after.nodes if n.name == "4")
    assert d[relu.id].kind == "shape"  # no weights: carries the width, is not "pruned"
    assert next(n for n in after.nodes if n.name == "0").id not in d
    assert not d.removed


def _onnx(nodes, inits=()) -> Graph:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=list(inits))
    return graph_from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _t(name, dims, dtype=TensorProto.FLOAT):
    n = 1
    for d in dims:
        n *= d
    return helper.make_tensor(name, dtype, dims, [0] * n)


def test_folded_added_and_rewritten_onnx_nodes():
    w = _t("w", [4, 3, 3, 3])
    bn = [_t(k, [4]) for k in ("g", "b", "m", "v")]
    before = _onnx([
        helper.make_node("Conv", ["x", "w"], ["c"], name="/conv1/Conv"),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"], name="/bn1/BatchNormalization"),
        helper.make_node("Relu", ["n"], ["y"], name="/relu/Relu"),
    ], [w, *bn])
    sc, zp, wq = _t("s", []), _t("z", [], TensorProto.UINT8), _t("wq", [4, 3, 3, 3], TensorProto.INT8)
    zw = _t("zw", [], TensorProto.INT8)
    after = _onnx([
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="x_QuantizeLinear"),
        helper.make_node("QLinearConv", ["xq", "s", "z", "wq", "s", "zw", "s", "z"], ["cq"],
                         name="/conv1/Conv_quant"),
        helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["c"], name="/conv1/Conv_dq"),
        helper.make_node("Relu", ["c"], ["y"], name="/relu/Relu"),
    ], [sc, zp, wq, zw])
    d = diff_graphs(before, after)
    by_name = {after.node(k).name: v for k, v in d.items()}
    assert by_name["x_QuantizeLinear"].kind == "added"
    assert by_name["/conv1/Conv_quant"].kind == "op"
    assert by_name["/conv1/Conv_quant"].text == "Conv -> QLinearConv"
    assert "/relu/Relu" not in by_name
    assert [c.node_name for c in d.removed] == ["/bn1/BatchNormalization"]
    assert "folded" in d.removed[0].text
    qconv = after.find("QLinearConv")[0]
    assert qconv.category == "quant" and qconv.macs == 4 * 6 * 6 * 3 * 9
    assert d.summary() == "2 added, 1 op, 1 removed"


def test_ir_helpers():
    g = Graph([Node("a", "Input", "x", "input"), Node("b", "Conv", "c1", categorize("Conv")),
               Node("c", "Relu", "r1", categorize("Relu"))], [])
    from workbench.core.graph import Edge

    g.edges = [Edge("a", "b"), Edge("b", "c"), Edge("a", "c")]
    g.invalidate()
    assert g.successors("a") == ["b", "c"] and g.predecessors("c") == ["b", "a"]
    assert [n.id for n in g.find("relu")] == ["c"]
    assert g.node("b").category == "conv"
    assert categorize("DequantizeLinear") == "quant" and categorize("MatMulInteger") == "quant"
    assert categorize("Add") == "elementwise" and categorize("MaxPool") == "pooling"
    assert categorize("BatchNormalization") == "norm" and categorize("Gemm") == "linear"
