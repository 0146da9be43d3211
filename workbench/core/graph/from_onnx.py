"""Build the graph IR from an ONNX model.

Nodes are the ONNX nodes, plus one node per graph input that is not an initializer and one per
graph output; edges follow tensor names. Shapes come from ONNX shape inference when it works
(it is skipped, not fatal, when it fails). Control-flow nodes (If/Loop/Scan) stay one node with
``attrs["subgraph_nodes"]`` so a model with big branches still reads as a flat chain.
Hierarchy comes from the exporter's node-name paths ("/layer1/layer1.0/conv1/Conv").
"""

from __future__ import annotations

import ast
from pathlib import Path

import onnx

from . import onnx_shapes
from .ir import Edge, Graph, Group, Node, categorize

_CONTROL_FLOW = {"If", "Loop", "Scan"}


def _numel(shape: tuple | None) -> int:
    """Element count, treating symbolic (batch) dims as 1 so MACs are per sample."""
    if shape is None:
        return 0
    n = 1
    for d in shape:
        n *= d if isinstance(d, int) and d > 0 else 1
    return n


def _count_subgraph_nodes(node: onnx.NodeProto) -> int:
    total = 0
    for a in node.attribute:
        subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
        for g in subs:
            for n in g.node:
                total += 1 + _count_subgraph_nodes(n)
    return total


def _outer_refs(node: onnx.NodeProto) -> list[str]:
    """Outer-scope tensors a control-flow node's subgraphs read, so their edges are drawn."""
    refs: list[str] = []
    for a in node.attribute:
        subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
        for g in subs:
            local = {i.name for i in g.input} | {i.name for i in g.initializer}
            for n in g.node:
                local.update(n.output)
            for n in g.node:
                refs.extend(t for t in n.input if t and t not in local)
                refs.extend(_outer_refs(n))
    return list(dict.fromkeys(refs))


def _attrs(node: onnx.NodeProto) -> dict:
    out: dict = {}
    for a in node.attribute:
        if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS, onnx.AttributeProto.TENSOR):
            continue
        try:
            v = onnx.helper.get_attribute_value(a)
        except Exception:  # noqa: BLE001 - odd attributes are shown as missing, not fatal
            continue
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


#: op -> (input position of the weight, of the activation); QLinear ops interleave scales and zero points
_CONV_OPS = {"Conv": (1, 0), "ConvInteger": (1, 0), "QLinearConv": (3, 0), "FusedConv": (1, 0),
             "ConvTranspose": (1, 0)}
_GEMM_OPS = {"Gemm": (1, 0), "QGemm": (3, 0), "FusedGemm": (1, 0)}
_MATMUL_OPS = {"MatMul": (1, 0), "MatMulInteger": (1, 0), "QLinearMatMul": (3, 0), "FusedMatMul": (1, 0),
               "DynamicQuantizeMatMul": (1, 0), "MatMulIntegerToFloat": (1, 0)}


def _int(d) -> int:
    return d if isinstance(d, int) and d > 0 else 1


def _macs(op: str, ins: list[str], out_shape: tuple | None, shape, attrs: dict) -> int:
    """Multiply-accumulates from shapes for the ops that dominate compute, float or quantized.

    ``shape(name)`` gives a tensor's shape, weights seen through DequantizeLinear (QDQ format).
    Symbolic (batch) dims count as 1, so a graph with a dynamic batch gives MACs per sample.
    """
    out_n = _numel(out_shape)
    if not out_n:
        return 0

    def sh(i: int) -> tuple | None:
        return shape(ins[i]) if i < len(ins) and ins[i] else None

    if op in _CONV_OPS:
        w = sh(_CONV_OPS[op][0])
        if w is None or len(w) < 3:
            return 0
        k = _numel(w[2:])
        if op == "ConvTranspose":
            return _numel(sh(0)) * _int(w[1]) * k
        return out_n * _int(w[1]) * k
    if op in _GEMM_OPS:
        wi, ai = _GEMM_OPS[op]
        b, a = sh(wi), sh(ai)
        if b is not None and len(b) == 2:
            k = b[1] if attrs.get("transB") else b[0]
        elif a:
            k = a[0] if attrs.get("transA") else a[-1]
        else:
            return 0
        return out_n * _int(k)
    if op in _MATMUL_OPS:
        wi, ai = _MATMUL_OPS[op]
        a, b = sh(ai), sh(wi)
        if a:
            k = a[-2] if attrs.get("transA") and len(a) > 1 else a[-1]
        elif b and len(b) >= 2:
            k = b[-1] if attrs.get("transB") else b[-2]
        else:
            return 0
        return out_n * _int(k)
    if op == "MatMulNBits":
        return out_n * _int(attrs.get("K", 0))
    return 0


def macs_per_sample(model: onnx.ModelProto | str | Path) -> int:
    """MACs for one sample: the graph's total divided by its fixed batch, if the first input has one.

    A graph exported with a dynamic batch already counts per sample (symbolic dims count as 1), so the
    caller's own batch size must not divide it again.
    """
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    graph = graph_from_onnx(model)
    inits = {i.name for i in model.graph.initializer}
    first = next((vi for vi in model.graph.input if vi.name not in inits), None)
    batch = 1
    if first is not None and first.type.HasField("tensor_type"):
        dims = onnx_shapes.dims(first.type.tensor_type) or ()
        if len(dims) >= 2 and isinstance(dims[0], int) and dims[0] > 0:
            batch = dims[0]
    return int(graph.macs // batch)


def _group_of(name: str) -> list[str]:
    """Path prefixes of an exporter node name: "/a/a.0/conv/Conv" -> ["/a", "/a/a.0", "/a/a.0/conv"]."""
    if not name.startswith("/"):
        return []
    parts = name.split("/")[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _scopes_of(node: onnx.NodeProto) -> list[str] | None:
    """The module path torch's dynamo exporter records on a node (``pkg.torch.onnx.name_scopes``: '', 'hf',
    'hf.model', 'hf.model.layers.0', ..., then the op), as the blocks enclosing it; None where it did not."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            if isinstance(scopes, list) and all(isinstance(x, str) for x in scopes):
                return [x for x in scopes[:-1] if x]
    return None


def graph_from_onnx(model: onnx.ModelProto | str | Path, infer_shapes: bool = True) -> Graph:
    """Build the IR of an ONNX model (a proto or a path; external weight data is not loaded)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    if infer_shapes:
        inferred, shape, note = onnx_shapes.infer(model)
    else:
        inferred, note = model, ""
        shape = onnx_shapes.collect(model.graph)[0]
    g = inferred.graph
    producers = {t: n for n in g.node for t in n.output if t}

    def weight_shape(name: str) -> tuple | None:
        return onnx_shapes.const_shape(name, producers, shape)

    init_size = {i.name: _numel(tuple(int(d) for d in i.dims)) or 1 for i in g.initializer}

    nodes: list[Node] = []
    producer: dict[str, str] = {}
    for vi in g.input:
        if vi.name in init_size:
            continue
        nid = f"input:{vi.name}"
        nodes.append(Node(nid, "Input", vi.name, "input", outputs=[vi.name],
                          output_shapes=[shape.get(vi.name)]))
        producer[vi.name] = nid

    const = set(init_size)  # initializers and what is computed from them alone (Dequantize...)
    names_seen: set[str] = set()
    pending_refs: list[tuple[str, list[str]]] = []
    scopes: dict[str, list[str]] = {}  # node id -> module path, where the exporter recorded one
    for i, n in enumerate(g.node):
        nid = f"n{i}"
        recorded = _scopes_of(n)
        if recorded is not None:
            scopes[nid] = recorded
        name = n.name or f"{n.op_type}_{i}"
        if name in names_seen:
            name = f"{name}_{i}"
        names_seen.add(name)
        ins = [t for t in n.input]
        attrs = _attrs(n)
        if n.op_type in _CONTROL_FLOW:
            attrs["subgraph_nodes"] = _count_subgraph_nodes(n)
            attrs["collapsed"] = True
            pending_refs.append((nid, _outer_refs(n)))
        real_ins = [t for t in ins if t]
        if all(t in const for t in real_ins):
            const.update(n.output)
        else:
            attrs["weighted"] = any(t in const for t in real_ins)
        out_shapes = [shape.get(t) for t in n.output]
        node = Node(
            id=nid, op=n.op_type, name=name, category=categorize(n.op_type),
            inputs=[t for t in ins if t], outputs=list(n.output),
            input_shapes=[shape.get(t) for t in ins if t], output_shapes=out_shapes,
            params=sum(init_size.get(t, 0) for t in dict.fromkeys(ins) if t),
            macs=_macs(n.op_type, ins, out_shapes[0] if out_shapes else None, weight_shape, attrs),
            attrs=attrs,
        )
        nodes.append(node)
        for t in n.output:
            if t:
                producer[t] = nid

    edges: list[Edge] = []
    for node in nodes:
        for t in node.inputs:
            src = producer.get(t)
            if src is not None and src != node.id:
                edges.append(Edge(src, node.id, t, shape.get(t)))
    for nid, refs in pending_refs:
        for t in refs:
            src = producer.get(t)
            if src is not None and src != nid:
                edges.append(Edge(src, nid, t, shape.get(t)))
    for vi in g.output:
        nid = f"output:{vi.name}"
        nodes.append(Node(nid, "Output", vi.name, "output", inputs=[vi.name],
                          input_shapes=[shape.get(vi.name)], output_shapes=[shape.get(vi.name)]))
        if vi.name in producer:
            edges.append(Edge(producer[vi.name], nid, vi.name, shape.get(vi.name)))

    if scopes:
        _place_unscoped(nodes, edges, scopes)
    graph = Graph(nodes, edges, _groups_from_names(nodes, scopes), source="onnx", note=note)
    return graph


def _place_unscoped(nodes: list[Node], edges: list[Edge], scopes: dict[str, list[str]]) -> None:
    """Nodes a quantizer or optimizer rewrote lose the exporter's module path (an int4 variant's MatMulNBits):
    each goes into the deepest block that all its neighbours share (a q_proj between the layer's norm and its
    attention lands in that layer; the head, feeding the output, stays at the top)."""
    neighbours: dict[str, list[str]] = {}
    for e in edges:
        neighbours.setdefault(e.src, []).append(e.dst)
        neighbours.setdefault(e.dst, []).append(e.src)
    for n in nodes:
        if n.id in scopes or n.op in ("Input", "Output"):
            continue
        paths = [scopes.get(other, []) for other in neighbours.get(n.id, [])]
        common: list[str] = []
        for level in zip(*paths) if paths else ():
            if any(x != level[0] for x in level):
                break
            common.append(level[0])
        scopes[n.id] = common


def _groups_from_names(nodes: list[Node], scopes: dict[str, list[str]] | None = None) -> dict[str, Group]:
    """Blocks from the recorded module paths (dynamo exporter) or else from name paths (TorchScript exporter's
    "/a/a.0/conv/Conv"); a prefix becomes a group only when it holds two nodes or more."""
    count: dict[str, int] = {}
    paths: dict[str, list[str]] = {}
    for n in nodes:
        p = (scopes or {}).get(n.id)
        if p is None:
            p = _group_of(n.name)
        paths[n.id] = p
        for prefix in p:
            count[prefix] = count.get(prefix, 0) + 1
    groups: dict[str, Group] = {}
    for n in nodes:
        real = [p for p in paths[n.id] if count[p] >= 2]
        for depth, p in enumerate(real):
            if p not in groups:
                groups[p] = Group(p, p.rsplit("/", 1)[-1], real[depth - 1] if depth else None)
        if real:
            n.parent = real[-1]
            groups[real[-1]].children.append(n.id)
    return groups
