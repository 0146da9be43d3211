"""Qt-free architecture graph: one IR, builders (torch, ONNX), a fast layered layout and a diff.

Builders are imported lazily so that importing the IR does not pull in torch or onnx.
"""

from __future__ import annotations

from .diff import Change, GraphDiff, diff_graphs
from .ir import Edge, Graph, Group, Node, categorize, layer_counts
from .layout import Layout, count_crossings, layered_layout

__all__ = [
    "Change", "Edge", "Graph", "GraphDiff", "Group", "Layout", "Node", "categorize", "count_crossings",
    "diff_graphs", "graph_from_onnx", "graph_from_torch", "layer_counts", "layered_layout",
]


def __getattr__(name: str):
    if name == "graph_from_torch":
        from .from_torch import graph_from_torch

        return graph_from_torch
    if name == "graph_from_onnx":
        from .from_onnx import graph_from_onnx

        return graph_from_onnx
    raise AttributeError(name)
