"""Tensor shapes of an ONNX graph, including the onnxruntime contrib ops that ONNX shape inference skips.

``onnx.shape_inference`` knows only the standard operator sets. A graph quantized by onnxruntime in the
QOperator format holds ``com.microsoft`` ops (QGemm, QLinearAdd, QLinearConcat, ...), weight-only 4-bit
graphs hold MatMulNBits, and optimized graphs hold FusedConv/FusedGemm: their outputs, and everything
after them, would have no shape, so their MACs would read as zero. Here each such op is inferred as the
standard op it behaves like (QGemm as Gemm on inputs A and B, ...) and the shapes found are fed back to
ONNX inference for the standard ops downstream.
"""

from __future__ import annotations

import onnx

Shape = tuple | None

#: contrib op -> (standard op whose shape rule it follows, the input positions that rule reads)
_AS_STANDARD: dict[str, tuple[str, tuple[int, ...]]] = {
    "QGemm": ("Gemm", (0, 3)),
    "FusedGemm": ("Gemm", (0, 1)),
    "FusedConv": ("Conv", (0, 1)),
    "DynamicQuantizeMatMul": ("MatMul", (0, 1)),
    "MatMulIntegerToFloat": ("MatMul", (0, 1)),
    "QLinearAdd": ("Add", (0, 3)),
    "QLinearMul": ("Mul", (0, 3)),
    "QLinearSigmoid": ("Identity", (0,)),
    "QLinearLeakyRelu": ("Identity", (0,)),
    "QLinearSoftmax": ("Identity", (0,)),
    "Gelu": ("Identity", (0,)),
    "FastGelu": ("Identity", (0,)),
    "BiasGelu": ("Identity", (0,)),
    "QuickGelu": ("Identity", (0,)),
    "QLinearGlobalAveragePool": ("GlobalAveragePool", (0,)),
    "QLinearAveragePool": ("AveragePool", (0,)),
}
#: ops whose output keeps the element type of the float path, not of their first input
_FLOAT_OUT = {"DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
_MAX_ROUNDS = 6


def dims(tensor_type: onnx.TypeProto.Tensor) -> Shape:
    """A tensor type's shape: ints for fixed dims, the name for symbolic ones, None where unknown."""
    if not tensor_type.HasField("shape"):
        return None
    out: list = []
    for d in tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return tuple(out)


def collect(graph: onnx.GraphProto) -> tuple[dict[str, Shape], dict[str, int]]:
    """Shapes and element types stated in a graph (inputs, value_info, outputs, initializers)."""
    shapes: dict[str, Shape] = {}
    types: dict[str, int] = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        if vi.type.HasField("tensor_type"):
            shapes[vi.name] = dims(vi.type.tensor_type)
            if vi.type.tensor_type.elem_type:
                types[vi.name] = vi.type.tensor_type.elem_type
    for init in graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
        types[init.name] = init.data_type
    return shapes, types


def _type_proto(shape: tuple, elem_type: int) -> onnx.TypeProto:
    dims_ = [d if isinstance(d, int | str) else None for d in shape]
    return onnx.helper.make_tensor_type_proto(elem_type, dims_)


def _as_standard(node: onnx.NodeProto, shapes: dict[str, Shape]) -> dict[str, tuple]:
    """Output shapes of a contrib node computed by the shape rule of the standard op it mirrors."""
    std, positions = _AS_STANDARD[node.op_type]
    ins = [node.input[i] if i < len(node.input) else "" for i in positions]
    if not all(t and shapes.get(t) is not None for t in ins):
        return {}
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("channels_last"):
        return {}
    schema = onnx.defs.get_schema(std)
    allowed = set(schema.attributes)
    proxy = onnx.helper.make_node(std, ins, [node.output[0]],
                                  **{k: v for k, v in attrs.items() if k in allowed})
    types = {t: _type_proto(shapes[t], onnx.TensorProto.FLOAT) for t in ins}
    try:
        out = onnx.shape_inference.infer_node_outputs(schema, proxy, types)
    except Exception:  # noqa: BLE001 - an odd node keeps its unknown shape; the rest of the graph still counts
        return {}
    found = {}
    for name, tp in out.items():
        shape = dims(tp.tensor_type)
        if shape is not None:
            found[name] = shape
    return found


def _matmul_nbits(node: onnx.NodeProto, shapes: dict[str, Shape]) -> dict[str, tuple]:
    a = shapes.get(node.input[0]) if node.input else None
    n = next((a_.i for a_ in node.attribute if a_.name == "N"), 0)
    if not a or not n:
        return {}
    return {node.output[0]: tuple(a[:-1]) + (int(n),)}


def _concat(node: onnx.NodeProto, shapes: dict[str, Shape]) -> dict[str, tuple]:
    """QLinearConcat: inputs are Y_scale, Y_zero_point, then (X, X_scale, X_zero_point) per tensor."""
    xs = [shapes.get(t) for t in list(node.input)[2::3]]
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    if not xs or any(x is None for x in xs):
        return {}
    rank = len(xs[0])
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank or any(len(x) != rank for x in xs):
        return {}
    parts = [x[axis] for x in xs]
    total = sum(parts) if all(isinstance(p, int) for p in parts) else None
    return {node.output[0]: xs[0][:axis] + (total,) + xs[0][axis + 1:]}


def _contrib_outputs(node: onnx.NodeProto, shapes: dict[str, Shape]) -> dict[str, tuple]:
    if node.op_type in _AS_STANDARD:
        return _as_standard(node, shapes)
    if node.op_type == "MatMulNBits":
        return _matmul_nbits(node, shapes)
    if node.op_type == "QLinearConcat":
        return _concat(node, shapes)
    return {}


def _out_type(node: onnx.NodeProto, types: dict[str, int]) -> int:
    if node.op_type in _FLOAT_OUT:
        return onnx.TensorProto.FLOAT
    if node.op_type == "QGemm":
        zp = node.input[8] if len(node.input) > 8 else ""
        return types.get(zp, 0) if zp else onnx.TensorProto.FLOAT
    if node.op_type == "QLinearConcat":  # Y_scale, Y_zero_point, ...: the zero point carries the type
        return types.get(node.input[1], 0) if len(node.input) > 1 else 0
    return types.get(node.input[0], 0) if node.input else 0


def infer(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, Shape], str]:
    """Shapes of every tensor that can be known: ONNX inference, then the contrib ops, repeated.

    Returns the model with value_info filled in (a copy; the argument is not changed), the shapes by
    tensor name, and a note when ONNX inference failed (shapes are then partial, never fatal).
    """
    note = ""
    current = model
    shapes: dict[str, Shape] = {}
    found: dict[str, tuple] = {}  # contrib outputs, kept across rounds (those without a known type too)
    for round_ in range(_MAX_ROUNDS):
        try:
            current = onnx.shape_inference.infer_shapes(current)
        except Exception as exc:  # noqa: BLE001 - a model that fails inference is still drawable
            if round_ == 0:
                note = f"ONNX shape inference failed ({type(exc).__name__}); shapes are partial"
            else:  # the shapes added last round did not help; keep what the previous rounds found
                break
        shapes, types = collect(current.graph)
        for name, shape in found.items():
            if shapes.get(name) is None:
                shapes[name] = shape
        added: list[onnx.ValueInfoProto] = []
        for node in current.graph.node:
            if node.domain in ("", "ai.onnx") or not node.output or shapes.get(node.output[0]) is not None:
                continue
            elem = _out_type(node, types)
            for name, shape in _contrib_outputs(node, shapes).items():
                shapes[name] = found[name] = shape
                if elem:
                    types[name] = elem
                    added.append(onnx.helper.make_value_info(name, _type_proto(shape, elem)))
        if not added or note:
            break
        if current is model:
            current = onnx.ModelProto()
            current.CopyFrom(model)
        current.graph.value_info.extend(added)
    return current, shapes, note


def const_shape(name: str, producers: dict[str, onnx.NodeProto], shapes: dict[str, Shape]) -> Shape:
    """The shape of a weight, looking through the nodes that only re-encode it (QDQ's DequantizeLinear)."""
    seen = 0
    while shapes.get(name) is None and name in producers and seen < 8:
        node = producers[name]
        if node.op_type not in ("DequantizeLinear", "QuantizeLinear", "Cast", "Identity") or not node.input:
            return None
        name, seen = node.input[0], seen + 1
    return shapes.get(name)
