"""One Qt-free graph IR shared by the torch and ONNX builders, the layout, the diff and the view.

Keeping one small, plain-data IR lets the view, the layer table and the diff work the same way
whatever the model came from (torch.export, torch.fx, a module tree, or an ONNX file).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

CATEGORIES = (
    "conv", "linear", "norm", "activation", "pooling", "shape", "quant",
    "elementwise", "input", "output", "other",
)

#: Categories compared between builders of the same model (see :func:`layer_counts`).
#: "norm" is left out because the ONNX exporter folds BatchNorm into Conv in eval mode.
LAYER_CATEGORIES = ("conv", "linear", "pooling", "activation")

_QUANT = {"quantizelinear", "dequantizelinear", "dynamicquantizelinear", "convinteger",
          "matmulinteger", "quantize_per_tensor", "dequantize", "quantize_per_channel", "qgemm",
          "matmulintegertofloat"}
_CONV = ("conv", "convolution", "conv_transpose", "convtranspose")
_LINEAR = {"linear", "gemm", "matmul", "mm", "bmm", "addmm", "einsum", "baddbmm", "matmulnbits"}
_NORM = ("batchnorm", "batch_norm", "layernorm", "layer_norm", "groupnorm", "group_norm",
         "instancenorm", "instance_norm", "native_batch_norm", "rmsnorm", "rms_norm",
         "lpnormalization", "batchnormalization", "layernormalization", "groupnormalization",
         "instancenormalization", "simplifiedlayernormalization", "_native_batch_norm_legit")
_ACT = {"relu", "relu_", "relu6", "sigmoid", "tanh", "gelu", "silu", "softmax", "log_softmax",
        "leakyrelu", "leaky_relu", "elu", "selu", "hardswish", "hardsigmoid", "hardtanh", "mish",
        "prelu", "softplus", "clip", "clamp", "_softmax", "logsoftmax", "erf", "celu",
        "thresholdedrelu", "quickgelu", "hardswish_", "silu_", "gelu_"}
_POOL = ("adaptive_avg", "adaptive_max", "globalaveragepool", "globalmaxpool")
_SHAPE = {"reshape", "view", "flatten", "transpose", "permute", "squeeze", "unsqueeze", "concat",
          "cat", "split", "slice", "gather", "expand", "shape", "size", "constant", "identity",
          "contiguous", "t", "unflatten", "chunk", "stack", "pad", "constantofshape", "tile",
          "split_with_sizes", "select", "getitem", "_unsafe_view", "clone", "dropout", "cast",
          "to", "_to_copy", "alias", "detach", "range", "arange", "unbind", "scatter", "where",
          "resize", "upsample_nearest2d", "upsample_bilinear2d", "interpolate", "depthtospace",
          "spacetodepth", "repeat", "narrow", "slice_scatter", "index", "index_select", "embedding",
          "nonzero", "topk", "argmax", "flip", "roll"}
_ELEMENTWISE = {"add", "sub", "mul", "div", "pow", "sqrt", "exp", "log", "neg", "abs", "sum",
                "mean", "max", "min", "reciprocal", "iadd", "add_", "mul_", "rsqrt", "reducemean",
                "reducesum", "reducemax", "scaled_dot_product_attention", "matmul_add", "bitshift",
                "equal", "greater", "less", "not", "and", "or", "floor", "ceil", "round", "sin",
                "cos", "truediv", "floordiv", "masked_fill", "sign", "square"}


@lru_cache(maxsize=4096)
def categorize(op: str) -> str:
    """Map an ATen/ONNX/module op name to a category, so colours and layer counts agree across builders."""
    raw = op.split("::")[-1]
    o = raw.split(".")[0].lower()
    if o.startswith("qlinear") or o in _QUANT or "quantize" in o:
        return "quant"
    if o in ("input", "placeholder"):
        return "input"
    if o == "output":
        return "output"
    if o.startswith(_CONV) or o in ("_convolution", "cudnn_convolution"):
        return "conv"
    if o in _LINEAR:
        return "linear"
    if o.startswith(_NORM) or o.endswith("norm") or o.endswith("normalization"):
        return "norm"
    if o in _ACT or o.rstrip("_") in _ACT:
        return "activation"
    if "pool" in o or o.startswith(_POOL):
        return "pooling"
    if o in _SHAPE or o.rstrip("_") in _SHAPE:
        return "shape"
    if o in _ELEMENTWISE or o.rstrip("_") in _ELEMENTWISE:
        return "elementwise"
    return "other"


@dataclass
class Node:
    """One operation (or a graph input/output, or a collapsed group) of a model."""

    id: str
    op: str
    name: str
    category: str = "other"
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    input_shapes: list[tuple | None] = field(default_factory=list)
    output_shapes: list[tuple | None] = field(default_factory=list)
    params: int = 0
    macs: int = 0
    attrs: dict = field(default_factory=dict)
    parent: str | None = None

    @property
    def out_shape(self) -> tuple | None:
        """The first output shape, the one the view prints."""
        return self.output_shapes[0] if self.output_shapes else None


@dataclass
class Edge:
    """A tensor flowing from one node to another."""

    src: str
    dst: str
    tensor: str = ""
    shape: tuple | None = None


@dataclass
class Group:
    """A block (module or name-path prefix) that can be collapsed into one node in the view."""

    id: str
    name: str
    parent: str | None = None
    children: list[str] = field(default_factory=list)


@dataclass
class Graph:
    """Nodes, edges and the block hierarchy of one model, plus where it came from."""

    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    groups: dict[str, Group] = field(default_factory=dict)
    source: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        self._index: dict[str, int] | None = None
        self._succ: dict[str, list[str]] | None = None
        self._pred: dict[str, list[str]] | None = None

    def invalidate(self) -> None:
        """Drop cached lookups after mutating nodes or edges in place."""
        self._index = self._succ = self._pred = None

    def index(self) -> dict[str, int]:
        """Node id -> position in ``nodes`` (cached; the layout works on positions)."""
        if self._index is None or len(self._index) != len(self.nodes):
            self._index = {n.id: i for i, n in enumerate(self.nodes)}
        return self._index

    def node(self, node_id: str) -> Node:
        return self.nodes[self.index()[node_id]]

    def _adjacency(self) -> None:
        succ: dict[str, list[str]] = {n.id: [] for n in self.nodes}
        pred: dict[str, list[str]] = {n.id: [] for n in self.nodes}
        for e in self.edges:
            if e.src in succ and e.dst in pred:
                succ[e.src].append(e.dst)
                pred[e.dst].append(e.src)
        self._succ, self._pred = succ, pred

    def successors(self, node_id: str) -> list[str]:
        if self._succ is None:
            self._adjacency()
        return list(dict.fromkeys(self._succ.get(node_id, [])))

    def predecessors(self, node_id: str) -> list[str]:
        if self._pred is None:
            self._adjacency()
        return list(dict.fromkeys(self._pred.get(node_id, [])))

    def find(self, text: str) -> list[Node]:
        """Nodes whose name, op or category contains ``text`` (case-insensitive), in graph order."""
        t = text.strip().lower()
        if not t:
            return []
        return [n for n in self.nodes if t in n.name.lower() or t in n.op.lower() or t == n.category]

    def edge_index_pairs(self) -> list[tuple[int, int]]:
        """Edges as (src position, dst position), deduplicated; what :func:`layered_layout` takes."""
        idx = self.index()
        pairs = {(idx[e.src], idx[e.dst]) for e in self.edges if e.src in idx and e.dst in idx}
        return sorted(pairs)

    def group_members(self, group_id: str) -> list[str]:
        """All node ids inside a group, nested groups included."""
        kids: dict[str, list[str]] = {}
        for g in self.groups.values():
            if g.parent is not None:
                kids.setdefault(g.parent, []).append(g.id)
        out: list[str] = []
        stack = [group_id]
        while stack:
            gid = stack.pop()
            grp = self.groups.get(gid)
            if grp is None:
                continue
            out.extend(grp.children)
            stack.extend(kids.get(gid, []))
        return out

    def ancestors(self, node: Node) -> list[str]:
        """Group ids enclosing a node, outermost first."""
        chain: list[str] = []
        gid = node.parent
        while gid is not None and gid in self.groups and gid not in chain:
            chain.append(gid)
            gid = self.groups[gid].parent
        return chain[::-1]

    @property
    def params(self) -> int:
        return sum(n.params for n in self.nodes)

    @property
    def macs(self) -> int:
        return sum(n.macs for n in self.nodes)


def layer_counts(graph: Graph, categories: tuple[str, ...] = LAYER_CATEGORIES) -> dict[str, int]:
    """Count compute nodes per category: the builder-independent "shape" of a model.

    torch.export and the ONNX exporter do not emit the same plumbing nodes (getitem, Constant,
    Shape...), the ONNX exporter folds BatchNorm into Conv and decomposes attention, so node and
    edge totals differ for the same model. Layer counts do match: convs, weight-bearing linear
    ops (Gemm/MatMul/linear reading a weight), pooling, and activations other than softmax.
    """
    c = Counter(n.category for n in compute_nodes(graph, categories))
    return {k: c.get(k, 0) for k in categories}


def _is_layer(n: Node) -> bool:
    if n.category == "linear":  # weight layers only: attention's Q@K and A@V are not layers
        return bool(n.params or n.attrs.get("weighted"))
    if n.category == "activation":  # softmax belongs to attention (fused SDPA in torch)
        return "softmax" not in n.op.lower()
    return True


def compute_nodes(graph: Graph, categories: tuple[str, ...] = LAYER_CATEGORIES) -> list[Node]:
    """The nodes counted by :func:`layer_counts`, in graph order."""
    return [n for n in graph.nodes if n.category in categories and _is_layer(n)]
