"""Build the graph IR from a torch ``nn.Module`` and one example input.

Three tiers, because not every model traces:

1. ``torch.export.export(strict=False)``: ATen-level nodes with shapes from ``meta["val"]`` and the
   owning module from ``meta["nn_module_stack"]`` (node names are module paths like "features.0").
2. ``torch.fx.symbolic_trace`` + ShapeProp: one node per leaf module call.
3. The module tree: leaf modules in call order (forward hooks give the shapes), chained.

``Graph.note`` says when a fallback was used. Params are counted once per parameter tensor, on
the first node that consumes it (the module's main op), so they sum to the model's count.
MACs are per sample (the example batch dimension is divided out).
Comparison with the ONNX builder is at the layer level: see :func:`ir.layer_counts`.
"""

from __future__ import annotations

import operator
import threading
from typing import Any

import torch
from torch import nn

from .folding import group_plumbing
from .ir import Edge, Graph, Group, Node, categorize

# torch.export keeps its dispatch-mode stack per process, not per thread: two exports at once on two threads (the
# app's graph view and the model builder's preview) fail with "Trying to pop empty mode stack"; one at a time
_EXPORT_LOCK = threading.Lock()

_PLUMBING = {"getitem", "sym_size", "_assert_tensor_metadata", "_assert_scalar", "detach", "alias",
             "lift_fresh_copy", "sym_constrain_range_for_size", "_assert_async", "sym_numel",
             "dropout", "contiguous", "clone"}


def _shape(val: Any) -> tuple | None:
    if isinstance(val, torch.Tensor):
        return tuple(int(d) if isinstance(d, int) or str(d).isdigit() else str(d) for d in val.shape)
    return None


def _numel(shape: tuple | None) -> int:
    n = 1
    for d in shape or ():
        n *= d if isinstance(d, int) else 1
    return n if shape else 0


def _per_sample(shape: tuple | None, batch: int | None) -> int:
    n = _numel(shape)
    if shape and batch and len(shape) >= 2 and shape[0] == batch and n:
        n //= batch
    return n


def _op_name(target: Any) -> str:
    packet = getattr(target, "_overloadpacket", None)
    if packet is not None:
        return packet.__name__
    if target is operator.getitem:
        return "getitem"
    return getattr(target, "__name__", str(target))


def _macs(op: str, out_shape: tuple | None, in_shapes: list[tuple | None], batch: int | None) -> int:
    """Conv: out * Cin/groups * kh * kw; linear/matmul: out * K; everything else counts as 0."""
    out = _per_sample(out_shape, batch)
    if not out:
        return 0
    if op in ("conv1d", "conv2d", "conv3d", "convolution", "_convolution") and len(in_shapes) > 1:
        w = in_shapes[1]
        return out * _numel(w[1:]) if w else 0
    if op == "linear" and len(in_shapes) > 1 and in_shapes[1]:
        return out * int(in_shapes[1][-1])
    if op in ("matmul", "mm", "bmm") and in_shapes and in_shapes[0]:
        return out * int(in_shapes[0][-1]) if isinstance(in_shapes[0][-1], int) else 0
    if op in ("addmm", "baddbmm") and len(in_shapes) > 1 and in_shapes[1]:
        return out * int(in_shapes[1][-1])
    if op == "scaled_dot_product_attention" and len(in_shapes) > 1 and in_shapes[1]:
        return 2 * out * _numel(in_shapes[1][-2:-1])
    return 0


def _groups_from_paths(
    nodes: list[Node], stacks: dict[str, list[str]], prefix: str = "g:"
) -> tuple[dict[str, Group], set[str]]:
    """Blocks from module paths: a path is a group when it holds a sub-module or two nodes or more."""
    last_count: dict[str, int] = {}
    inner: set[str] = set()
    for stack in stacks.values():
        inner.update(stack[:-1])
        if stack:
            last_count[stack[-1]] = last_count.get(stack[-1], 0) + 1
    is_group = inner | {p for p, c in last_count.items() if c >= 2}
    groups: dict[str, Group] = {}
    for n in nodes:
        real = [p for p in stacks.get(n.id, []) if p in is_group]
        for depth, p in enumerate(real):
            gid = prefix + p
            if gid not in groups:
                groups[gid] = Group(gid, p, prefix + real[depth - 1] if depth else None)
        if real:
            n.parent = prefix + real[-1]
            groups[n.parent].children.append(n.id)
    return groups, is_group


def _dotted_stack(path: str) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))] if path else []


def _name_nodes(nodes: list[Node], stacks: dict[str, list[str]], is_group: set[str]) -> None:
    """A leaf module's op is named by its path; ops of a block are "block/op"; names are unique."""
    seen: set[str] = set()
    for n in nodes:
        stack = stacks.get(n.id) or []
        if n.category in ("input", "output") or not stack:
            name = n.name
        elif stack[-1] in is_group:
            name = f"{stack[-1]}/{n.name}"
        else:
            name = stack[-1]
            if n.attrs.get("module_type"):  # the label shows "Conv2d" for the op of a leaf module
                n.attrs["module"] = n.attrs["module_type"]
        if name in seen:
            name = f"{name}/{n.name}" if stack else f"{name}_{n.id}"
        seen.add(name)
        n.name = name


def _from_export(model: nn.Module, example: tuple, batch: int | None) -> Graph:
    ep = torch.export.export(model, example, strict=False)
    sig = ep.graph_signature
    user_inputs = set(sig.user_inputs)
    param_names = {**sig.inputs_to_parameters}
    param_numel = {}
    for ph, fqn in param_names.items():
        try:
            param_numel[ph] = ep.state_dict[fqn].numel() if fqn in ep.state_dict else 0
        except Exception:  # noqa: BLE001
            param_numel[ph] = 0
    counted: set[str] = set()
    alias: dict[str, str] = {}
    nodes: list[Node] = []
    stacks: dict[str, list[str]] = {}
    kept: set[str] = set()
    edges: list[Edge] = []
    out_shape_of: dict[str, tuple | None] = {}
    derived: set[str] = set()  # weights and what is computed from weights alone (t, chunk...)

    for fx in ep.graph.nodes:
        val = fx.meta.get("val")
        if fx.op == "placeholder":
            out_shape_of[fx.name] = _shape(val)
            if fx.name not in user_inputs:
                derived.add(fx.name)
            else:
                nodes.append(Node(fx.name, "Input", fx.name, "input", outputs=[fx.name],
                                  output_shapes=[_shape(val)]))
                kept.add(fx.name)
            continue
        args = [a for a in fx.all_input_nodes]
        if fx.op == "output":
            srcs = [alias.get(a.name, a.name) for a in args]
            nodes.append(Node("output", "Output", "output", "output", inputs=srcs,
                              input_shapes=[out_shape_of.get(s) for s in srcs],
                              output_shapes=[out_shape_of.get(s) for s in srcs]))
            edges.extend(Edge(s, "output", s, out_shape_of.get(s)) for s in dict.fromkeys(srcs) if s in kept)
            kept.add("output")
            continue
        if fx.op != "call_function":
            continue
        op = _op_name(fx.target)
        data_args = [a for a in args if a.op not in ("placeholder", "get_attr") or a.name in user_inputs]
        from_weights = bool(args) and all(a.name in derived for a in args)
        if from_weights:
            derived.add(fx.name)
        if op in _PLUMBING and len(data_args) == 1:
            alias[fx.name] = alias.get(data_args[0].name, data_args[0].name)
            out_shape_of[fx.name] = _shape(val) or out_shape_of.get(alias[fx.name])
            continue
        shapes = [out_shape_of.get(a.name) for a in args]
        out = _shape(val) if not isinstance(val, (list, tuple)) else _shape(val[0]) if val else None
        out_shape_of[fx.name] = out
        params = 0
        for a in args:
            if a.name in param_numel and a.name not in counted:
                counted.add(a.name)
                params += param_numel[a.name]
        st = fx.meta.get("nn_module_stack") or {}
        stacks[fx.name] = [p for p, _ in st.values() if p]
        mtype = next(reversed(st.values()))[1] if st else ""
        mtype = mtype.__name__ if isinstance(mtype, type) else str(mtype).rsplit(".", 1)[-1]
        inputs = [param_names.get(a.name, alias.get(a.name, a.name)) for a in args]
        nodes.append(Node(fx.name, op, fx.name, categorize(op), inputs=inputs, outputs=[fx.name],
                          input_shapes=shapes, output_shapes=[out], params=params,
                          macs=_macs(op, out, shapes, batch),
                          attrs={"target": str(fx.target), "module_type": mtype,
                                 "weighted": not from_weights and any(a.name in derived for a in args)}))
        kept.add(fx.name)
        for a in dict.fromkeys(alias.get(a.name, a.name) for a in data_args):
            if a in kept:
                edges.append(Edge(a, fx.name, a, out_shape_of.get(a)))
    groups, is_group = _groups_from_paths(nodes, stacks)
    _name_nodes(nodes, stacks, is_group)
    return Graph(nodes, edges, groups, source="torch.export")


def _module_node(nid: str, path: str, mod: nn.Module, ins: list, out: Any, batch: int | None) -> Node:
    op = type(mod).__name__
    in_shapes = [_shape(t) for t in ins]
    out_shape = _shape(out[0] if isinstance(out, (list, tuple)) and out else out)
    macs = 0
    w = getattr(mod, "weight", None)
    if isinstance(w, torch.Tensor) and isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
        per_out = _numel(tuple(w.shape[1:]))
        macs = _per_sample(out_shape, batch) * per_out
    params = sum(p.numel() for p in mod.parameters())
    return Node(nid, op, path, categorize(op), inputs=[], outputs=[nid], input_shapes=in_shapes,
                output_shapes=[out_shape], params=params, macs=macs)


def _from_fx(model: nn.Module, example: tuple, batch: int | None) -> Graph:
    from torch.fx.passes.shape_prop import ShapeProp

    gm = torch.fx.symbolic_trace(model)
    ShapeProp(gm).propagate(*example)
    nodes: list[Node] = []
    edges: list[Edge] = []
    stacks: dict[str, list[str]] = {}
    shape_of: dict[str, tuple | None] = {}
    for fx in gm.graph.nodes:
        tm = fx.meta.get("tensor_meta")
        shape = tuple(tm.shape) if hasattr(tm, "shape") else None
        shape_of[fx.name] = shape
        if fx.op == "placeholder":
            nodes.append(Node(fx.name, "Input", fx.name, "input", outputs=[fx.name], output_shapes=[shape]))
        elif fx.op == "output":
            nodes.append(Node("output", "Output", "output", "output", output_shapes=[shape]))
        elif fx.op == "call_module":
            mod = gm.get_submodule(fx.target)
            node = _module_node(fx.name, fx.target, mod, [], None, batch)
            node.input_shapes = [shape_of.get(a.name) for a in fx.all_input_nodes]
            node.output_shapes = [shape]
            if node.macs:
                node.macs = _per_sample(shape, batch) * _numel(tuple(mod.weight.shape[1:]))
            nodes.append(node)
            stacks[fx.name] = _dotted_stack(fx.target)
        elif fx.op in ("call_function", "call_method"):
            op = fx.target if isinstance(fx.target, str) else _op_name(fx.target)
            nodes.append(Node(fx.name, op, fx.name, categorize(op), outputs=[fx.name],
                              input_shapes=[shape_of.get(a.name) for a in fx.all_input_nodes],
                              output_shapes=[shape]))
        else:
            continue
        nodes[-1].inputs = [a.name for a in fx.all_input_nodes]
        for a in fx.all_input_nodes:
            if a.op != "get_attr":
                edges.append(Edge(a.name, nodes[-1].id, a.name, shape_of.get(a.name)))
    ids = {n.id for n in nodes}
    edges = [e for e in edges if e.src in ids]
    groups, is_group = _groups_from_paths(nodes, stacks)
    return Graph(nodes, edges, groups, source="fx",
                 note="torch.export failed; showing the torch.fx trace")


def _from_hooks(model: nn.Module, example: tuple, batch: int | None, why: str) -> Graph:
    calls: list[tuple[str, nn.Module, list, Any]] = []
    handles = []
    for path, mod in model.named_modules():
        leaf = not any(True for _ in mod.children())
        if path and (leaf or any(True for _ in mod.parameters(recurse=False))):
            def hook(m, ins, out, _p=path):
                calls.append((_p, m, list(ins), out))
            handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(*example)
    finally:
        for h in handles:
            h.remove()
    nodes = [Node("input", "Input", "input", "input", output_shapes=[_shape(example[0])])]
    stacks: dict[str, list[str]] = {}
    seen_params: set[str] = set()
    for i, (path, mod, ins, out) in enumerate(calls):
        node = _module_node(f"m{i}", path, mod, ins, out, batch)
        if any(True for _ in mod.children()):  # a block with its own weights (e.g. attention)
            node.params = sum(p.numel() for p in mod.parameters(recurse=False))
        if path in seen_params:
            node.params = 0
        seen_params.add(path)
        nodes.append(node)
        stacks[node.id] = _dotted_stack(path)[:-1] + [path]
    nodes.append(Node("output", "Output", "output", "output",
                      output_shapes=[nodes[-1].out_shape] if len(nodes) > 1 else []))
    edges = [Edge(a.id, b.id, a.id, a.out_shape) for a, b in zip(nodes, nodes[1:])]
    for a, b in zip(nodes, nodes[1:]):
        b.inputs = [a.id]
    groups, _ = _groups_from_paths(nodes, stacks)
    note = f"the model did not trace ({why}); showing the module tree with shapes from forward hooks"
    return Graph(nodes, edges, groups, source="module-tree", note=note)


def graph_from_torch(model: nn.Module, example_input: torch.Tensor | tuple) -> Graph:
    """Build the IR of a module (in eval mode, restored afterwards), falling back as described above."""
    example = example_input if isinstance(example_input, tuple) else (example_input,)
    first = example[0] if example else None
    batch = int(first.shape[0]) if isinstance(first, torch.Tensor) and first.dim() >= 2 else None
    was_training = model.training
    model.eval()
    try:
        try:
            with _EXPORT_LOCK:
                return group_plumbing(_from_export(model, example, batch))
        except Exception as exc:  # noqa: BLE001 - any export failure falls back to fx
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
        try:
            g = _from_fx(model, example, batch)
            g.note = f"torch.export failed ({why}); showing the torch.fx trace"
            return group_plumbing(g)
        except Exception as exc:  # noqa: BLE001 - and fx failures fall back to the module tree
            why = f"{why}; fx: {type(exc).__name__}"
        return _from_hooks(model, example, batch, why)
    finally:
        model.train(was_training)
