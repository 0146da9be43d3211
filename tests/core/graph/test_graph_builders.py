"""torch and ONNX builders agree on the seed CNN: shapes, params, MACs, layer counts, hierarchy."""

from __future__ import annotations

import io
import warnings

import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402
from torch import nn  # noqa: E402

from workbench.core.graph import graph_from_onnx, graph_from_torch, layer_counts  # noqa: E402
from workbench.core.graph.from_torch import _from_hooks  # noqa: E402
from workbench.core.graph.ir import compute_nodes  # noqa: E402


def seed_cnn(c2: int = 64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, c2, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c2, 64, 3), nn.ReLU(), nn.Flatten(),
        nn.Linear(576, 64), nn.ReLU(), nn.Linear(64, 10),
    ).eval()


def to_onnx(model: nn.Module, x: torch.Tensor) -> onnx.ModelProto:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "N"}})
    return onnx.load_from_string(buf.getvalue())


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(1, 1, 28, 28)


@pytest.fixture(scope="module")
def torch_graph(x):
    return graph_from_torch(seed_cnn(), x)


@pytest.fixture(scope="module")
def onnx_graph(x):
    return graph_from_onnx(to_onnx(seed_cnn(), x))


def test_torch_graph_shapes_params_macs(torch_graph):
    g = torch_graph
    assert g.source == "torch.export" and not g.note
    convs = [n for n in g.nodes if n.category == "conv"]
    linears = [n for n in g.nodes if n.category == "linear"]
    assert [n.name for n in convs] == ["0", "3", "6"]
    assert [n.out_shape for n in convs] == [(1, 32, 26, 26), (1, 64, 11, 11), (1, 64, 3, 3)]
    assert [n.out_shape for n in linears] == [(1, 64), (1, 10)]
    assert g.params == sum(p.numel() for p in seed_cnn().parameters())
    assert convs[0].macs == 26 * 26 * 32 * 9
    assert convs[1].macs == 11 * 11 * 64 * 32 * 9
    assert linears[0].macs == 64 * 576
    assert [n.category for n in g.nodes][0] == "input" and g.nodes[-1].category == "output"
    # Every compute node is connected: a chain from the input to the output.
    for n in g.nodes[1:]:
        assert g.predecessors(n.id), n


def test_onnx_graph_matches_torch_layers(torch_graph, onnx_graph):
    assert layer_counts(onnx_graph) == layer_counts(torch_graph) == {
        "conv": 3, "linear": 2, "pooling": 2, "activation": 4}
    t_shapes = [n.out_shape[1:] for n in compute_nodes(torch_graph)]
    o_shapes = [n.out_shape[1:] for n in compute_nodes(onnx_graph)]
    assert t_shapes == o_shapes
    assert onnx_graph.params == torch_graph.params
    t_macs = [n.macs for n in compute_nodes(torch_graph)]
    assert [n.macs for n in compute_nodes(onnx_graph)] == t_macs
    assert onnx_graph.nodes[0].out_shape == ("N", 1, 28, 28)
    # Plain chain: both have one edge per node but the first.
    assert len(onnx_graph.edges) == len(onnx_graph.nodes) - 1
    assert len(torch_graph.edges) == len(torch_graph.nodes) - 1


def test_search_finds_convs(torch_graph, onnx_graph):
    assert len(torch_graph.find("conv")) == 3
    assert len(onnx_graph.find("CONV")) == 3
    assert torch_graph.find("nothing-like-this") == []


def test_torch_hierarchy_from_module_stack():
    class Block(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, padding=1)
            self.bn = nn.BatchNorm2d(c)

        def forward(self, t):
            return torch.relu(self.bn(self.conv(t)) + t)

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Sequential(Block(8), Block(8)), nn.AdaptiveAvgPool2d(1))
    g = graph_from_torch(model, torch.randn(2, 3, 16, 16))
    assert {"g:1", "g:1.0", "g:1.1"} <= set(g.groups)
    assert g.groups["g:1.0"].parent == "g:1"
    members = g.group_members("g:1")
    assert len(members) == 8  # conv, bn, add, relu twice
    add = next(n for n in g.nodes if n.op == "add")
    assert add.name == "1.0/add" and add.parent == "g:1.0"
    assert len(g.predecessors(add.id)) == 2  # the residual
    assert g.params == sum(p.numel() for p in model.parameters())
    conv = g.find("1.0.conv")[0]
    assert conv.macs == 14 * 14 * 8 * 8 * 9  # per sample, batch of 2 divided out


def test_untraceable_model_falls_back_with_a_note():
    class Weird(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, t):
            if float(t.sum()) > 1e9:  # data-dependent Python control flow: export and fx fail
                return self.fc2(self.fc1(t)) * 0
            return self.fc2(torch.relu(self.fc1(t)))

    g = graph_from_torch(Weird(), torch.randn(1, 4))
    assert g.source in ("fx", "module-tree") and g.note
    if g.source == "module-tree":
        assert [n.name for n in g.nodes[1:-1]] == ["fc1", "fc2"]
    assert g.params == 4 * 8 + 8 + 8 * 2 + 2
    tree = _from_hooks(seed_cnn(), (torch.randn(1, 1, 28, 28),), 1, "test")
    assert layer_counts(tree)["conv"] == 3 and "module tree" in tree.note
    assert tree.find("0")[0].out_shape == (1, 32, 26, 26)


def _if_model() -> onnx.ModelProto:
    def branch(name: str, op: str) -> onnx.GraphProto:
        n1 = helper.make_node(op, ["x"], [f"{name}_a"], name=f"{name}/{op}")
        n2 = helper.make_node("Relu", [f"{name}_a"], [f"{name}_out"], name=f"{name}/Relu")
        return helper.make_graph([n1, n2], name, [], [helper.make_tensor_value_info(
            f"{name}_out", TensorProto.FLOAT, [1, 4])])

    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], name="/sum/ReduceSum", keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"], name="/cmp/Greater"),
        helper.make_node("If", ["cond"], ["y"], name="/branch/If",
                         then_branch=branch("then", "Neg"), else_branch=branch("else", "Abs")),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_onnx_if_is_one_collapsed_node():
    g = graph_from_onnx(_if_model())
    ifs = [n for n in g.nodes if n.op == "If"]
    assert len(ifs) == 1 and ifs[0].attrs["subgraph_nodes"] == 4 and ifs[0].attrs["collapsed"]
    assert len(g.nodes) == 5  # input, 3 nodes, output
    # The If reads x inside its branches: that outer-scope edge is drawn.
    assert "input:x" in g.predecessors(ifs[0].id)


def test_onnx_survives_failed_shape_inference(tmp_path):
    model = _if_model()
    model.graph.node[1].op_type = "NotARealOp"
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    g = graph_from_onnx(path)
    assert len(g.nodes) == 5


def test_onnx_groups_from_name_paths(x):
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
            self.head = nn.Linear(4 * 26 * 26, 2)

        def forward(self, t):
            return self.head(torch.flatten(self.block(t), 1))

    g = graph_from_onnx(to_onnx(Net().eval(), x))
    assert "/block" in g.groups
    assert len(g.group_members("/block")) == 2



def test_transformer_layer_counts_match_onnx():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(16, 32),
        nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 2),
        nn.Linear(32, 4)).eval()
    x = torch.randn(1, 10, 16)
    gt, go = graph_from_torch(model, x), graph_from_onnx(to_onnx(model, x))
    assert layer_counts(gt) == layer_counts(go) == {"conv": 0, "linear": 10, "pooling": 0, "activation": 2}
    assert gt.params == go.params == sum(p.numel() for p in model.parameters())


def test_zoo_resnet18_layer_counts_match_onnx():
    from workbench.core.models import build_zoo_model

    torch.manual_seed(0)
    model = build_zoo_model("resnet18", (1, 28, 28), 10, {"width": 0.125}).eval()
    x = torch.randn(1, 1, 28, 28)
    gt, go = graph_from_torch(model, x), graph_from_onnx(to_onnx(model, x))
    counts = layer_counts(gt)
    assert counts == layer_counts(go)
    assert counts["conv"] == 20 and counts["linear"] == 1  # 1 stem + 16 block convs + 3 shortcuts; classifier
    weights = sum(p.numel() for name, p in model.named_parameters() if "bn" not in name and "shortcut.1" not in name)
    assert go.params <= gt.params == sum(p.numel() for p in model.parameters())
    assert go.params >= weights  # ONNX folds BatchNorm into the convolutions: their weights, plus conv biases
