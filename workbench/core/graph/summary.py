"""Per-node table rows (name, op, output shape, params, MACs) for the layer table next to the graph."""

from __future__ import annotations

from .ir import Graph


def format_shape(shape: tuple | None) -> str:
    """"1x32x26x26"-style text; symbolic dims keep their name, unknown ones print "?"."""
    if shape is None:
        return "?"
    return "x".join("?" if d is None else str(d) for d in shape) or "scalar"


def human(n: int | float) -> str:
    """Compact counts for labels: 1234 -> 1.2K, 3.4e6 -> 3.4M."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return str(int(n))


def summary_rows(graph: Graph, compute_only: bool = False) -> list[dict]:
    """One row per node in graph order; ``compute_only`` drops inputs, outputs and shape plumbing."""
    rows = []
    for n in graph.nodes:
        if compute_only and n.category in ("input", "output", "shape"):
            continue
        rows.append({
            "id": n.id, "name": n.name, "op": n.op, "category": n.category,
            "output_shape": format_shape(n.out_shape), "params": n.params, "macs": n.macs,
        })
    return rows


def totals(graph: Graph) -> dict:
    return {"nodes": len(graph.nodes), "edges": len(graph.edges), "params": graph.params, "macs": graph.macs}
