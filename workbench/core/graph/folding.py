"""How a big graph opens: a decoder reads as embedding, N blocks, norm and head, not 500 ATen ops.

A transformer traced by torch.export has hundreds of nodes: every decoder layer's projections, rotary maths and
norms, and at the top the ops that build the attention mask and position ids. Drawn whole it is a column no one
can read. Two steps fold it, both Qt-free so the app and tests share them:

- :func:`group_plumbing` gathers, in a block that holds a token embedding, the parameter-free ops that do not
  depend on the embedding's output (mask and position-id construction) into a block of their own;
- :func:`default_collapsed` picks the blocks a graph opens with folded: the repeated blocks (``layers.0``,
  ``layers.1``, ... or ONNX's ``layers.0``) and the blocks beside them, when the graph is big enough to need it.
  Each folded block keeps its params and MACs and expands on a double-click.
"""

from __future__ import annotations

import re
from collections import deque

from .ir import Graph, Group

BIG_GRAPH_NODES = 120  # below this a graph reads fine expanded (ResNet-18: 70 nodes, a 3-layer GPT-2: 154)
_NUMBERED = re.compile(r"^(.*?)[._]?(\d+)$")  # "hf.model.layers.3" -> ("hf.model.layers", "3")
PLUMBING_SUFFIX = "/masks"


def _local_name(group: Group) -> str:
    return group.name.rsplit("/", 1)[-1]


def _repeat_key(group: Group) -> str | None:
    """``layers`` for ``...layers.3`` and ``layers.3``; None for a name without a trailing index."""
    match = _NUMBERED.match(group.name)
    return match.group(1) if match else None


def repeated_blocks(graph: Graph) -> list[str]:
    """Groups that are one of several numbered siblings (decoder layers, ResNet stages' blocks), outermost only."""
    by_key: dict[tuple[str | None, str], list[str]] = {}
    for group in graph.groups.values():
        key = _repeat_key(group)
        if key is not None:
            by_key.setdefault((group.parent, key), []).append(group.id)
    repeated = {gid for ids in by_key.values() if len(ids) >= 2 for gid in ids}
    outermost = []
    for gid in repeated:
        parent, seen = graph.groups[gid].parent, set()
        while parent is not None and parent not in repeated and parent not in seen:
            seen.add(parent)
            parent = graph.groups[parent].parent if parent in graph.groups else None
        if parent is None or parent not in repeated:
            outermost.append(gid)
    order = {gid: i for i, gid in enumerate(graph.groups)}
    return sorted(outermost, key=order.__getitem__)


def default_collapsed(graph: Graph, big: int = BIG_GRAPH_NODES) -> set[str]:
    """The blocks a graph of more than ``big`` nodes opens with folded: its repeated blocks and their sibling
    blocks (rotary embedding, final norm, the mask block). Small graphs open expanded."""
    if len(graph.nodes) <= big:
        return set()
    blocks = repeated_blocks(graph)
    if not blocks:
        return set()
    parents = {graph.groups[gid].parent for gid in blocks}
    siblings = {g.id for g in graph.groups.values() if g.parent in parents}
    return set(blocks) | siblings


def group_plumbing(graph: Graph) -> Graph:
    """In each block that holds a token embedding, fold the parameter-free ops that are not downstream of it (the
    attention-mask and position-id construction) into a child block ``<block>/masks``. Returns the graph."""
    succ: dict[str, list[str]] = {}
    for edge in graph.edges:
        succ.setdefault(edge.src, []).append(edge.dst)
    by_id = {n.id: n for n in graph.nodes}
    for group in list(graph.groups.values()):
        embeddings = [c for c in group.children if c in by_id and by_id[c].op == "embedding"]
        if not embeddings:
            continue
        downstream: set[str] = set(embeddings)
        queue = deque(embeddings)
        while queue:
            for nxt in succ.get(queue.popleft(), []):
                if nxt not in downstream:
                    downstream.add(nxt)
                    queue.append(nxt)
        plumbing = [c for c in group.children
                    if c in by_id and c not in downstream and by_id[c].params == 0 and by_id[c].op != "embedding"]
        if len(plumbing) < 2:
            continue
        gid = group.id + PLUMBING_SUFFIX
        graph.groups[gid] = Group(gid, f"{_local_name(group)} (masks, positions)", group.id, plumbing)
        moved = set(plumbing)
        group.children = [c for c in group.children if c not in moved]
        for node_id in plumbing:
            by_id[node_id].parent = gid
    return graph
