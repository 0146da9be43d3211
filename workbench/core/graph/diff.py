"""What an optimization did to a model's graph: pruned channels, folded, added and rewritten nodes.

Nodes are matched by name (module paths for torch graphs, node names for ONNX), with a second
pass that strips the suffixes quantizers add ("/conv1/Conv_quant" matches "/conv1/Conv").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .ir import Graph, Node

_SUFFIXES = re.compile(r"(_quant|_QuantizeLinear|_DequantizeLinear|_fused|_folded|_int8|_q)$")


@dataclass
class Change:
    """One node's change; ``kind`` is pruned, grown, shape, op, params, added or removed."""

    kind: str
    text: str
    node_name: str = ""


class GraphDiff(dict):
    """``{node id in the after graph: Change}``; nodes that disappeared are in ``removed``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.removed: list[Change] = []

    def summary(self) -> str:
        kinds: dict[str, int] = {}
        for c in list(self.values()) + self.removed:
            kinds[c.kind] = kinds.get(c.kind, 0) + 1
        return ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())) or "no changes"


def _channels(shape: tuple | None) -> int | None:
    """Channel count of an activation: dim 1 for N,C,... tensors, the last dim for N,F."""
    if not shape or len(shape) < 2:
        return None
    c = shape[1] if len(shape) >= 3 else shape[-1]
    return c if isinstance(c, int) else None


def _key(name: str) -> str:
    return _SUFFIXES.sub("", name)


def _compare(b: Node, a: Node) -> Change | None:
    if a.op != b.op:
        return Change("op", f"{b.op} -> {a.op}", a.name)
    ob, oa = b.out_shape, a.out_shape
    if ob != oa and ob is not None and oa is not None:
        cb, ca = _channels(ob), _channels(oa)
        if cb is not None and ca is not None and cb != ca and len(ob) == len(oa):
            # Only layers with weights are "pruned"; ReLU/pool just carry the new width.
            kind = ("pruned" if ca < cb else "grown") if (a.params or b.params) else "shape"
            return Change(kind, f"{cb} -> {ca} channels", a.name)
        return Change("shape", f"{ob} -> {oa}", a.name)
    ib = b.input_shapes[0] if b.input_shapes else None
    ia = a.input_shapes[0] if a.input_shapes else None
    if ib != ia and ib is not None and ia is not None:
        cb, ca = _channels(ib), _channels(ia)
        if cb is not None and ca is not None and cb != ca:
            return Change("shape", f"in {cb} -> {ca} channels", a.name)
        return Change("shape", f"in {ib} -> {ia}", a.name)
    if a.params != b.params:
        return Change("params", f"{b.params:,} -> {a.params:,} params", a.name)
    return None


def diff_graphs(before: Graph, after: Graph) -> GraphDiff:
    """Changes keyed by node id in ``after``; unchanged nodes are absent."""
    out = GraphDiff()
    by_name = {n.name: n for n in before.nodes}
    by_key: dict[str, Node] = {}
    for n in before.nodes:
        by_key.setdefault(_key(n.name), n)
    matched: set[str] = set()
    for a in after.nodes:
        b = by_name.get(a.name)
        if b is None or b.id in matched:
            b = by_key.get(_key(a.name))
            if b is not None and b.id in matched:
                b = None
        if b is None:
            out[a.id] = Change("added", f"added {a.op}", a.name)
            continue
        matched.add(b.id)
        change = _compare(b, a)
        if change is not None:
            out[a.id] = change
    for b in before.nodes:
        if b.id not in matched:
            verb = "folded" if b.category == "norm" else "removed"
            out.removed.append(Change("removed", f"{verb} {b.op} {b.name}", b.name))
    return out
