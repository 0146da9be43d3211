"""Layout correctness: planar inputs stay planar, cycles are handled, quality is near grandalf's."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.core.graph.layout import count_crossings, layered_layout


def _chain_with_residuals(n: int) -> tuple[list[tuple[int, int]], int]:
    """MatMul/Relu blocks with a residual Add every four blocks (the bench graph's shape)."""
    edges: list[tuple[int, int]] = []
    cur = res = 0
    nid, blocks = 1, 0
    while nid < n - 2:
        m, r = nid, nid + 1
        nid += 2
        edges += [(cur, m), (m, r)]
        cur, blocks = r, blocks + 1
        if blocks % 4 == 0:
            edges += [(cur, nid), (res, nid)]
            cur = res = nid
            nid += 1
    return edges, nid


def _random_dag(rng: np.random.Generator, n: int, p: float) -> list[tuple[int, int]]:
    edges = {(int(rng.integers(0, j)), j) for j in range(1, n)}  # connected
    for i in range(n):
        for j in range(i + 1, min(n, i + 6)):
            if rng.random() < p:
                edges.add((i, j))
    return sorted(edges)


def test_chain_has_no_crossings_and_is_straight():
    lay = layered_layout([(i, i + 1) for i in range(199)], 200)
    assert lay.crossings() == 0
    assert list(lay.layer) == list(range(200))
    assert np.ptp(lay.x) == pytest.approx(0.0)
    x, y, layer = lay  # unpacks like a tuple
    assert np.all(np.diff(y) > 0)


@pytest.mark.parametrize("inverted", [False, True])
def test_tree_has_no_crossings(inverted):
    tree = [(i, 2 * i + 1) for i in range(63)] + [(i, 2 * i + 2) for i in range(63)]
    if inverted:
        tree = [(b, a) for a, b in tree]
    lay = layered_layout(tree, 127)
    assert lay.crossings() == 0
    # No two nodes of a layer overlap (unit widths plus the separation).
    for lv in np.unique(lay.layer):
        xs = np.sort(lay.x[lay.layer == lv])
        assert np.all(np.diff(xs) >= 1.0 + 24.0 - 1e-6)


def test_big_residual_chain_layout_is_correct():
    edges, n = _chain_with_residuals(10_000)
    lay = layered_layout(edges, n, widths=np.full(n, 120.0))
    assert len(lay.x) == n
    assert lay.crossings() == 0
    src, dst = np.asarray(edges).T
    assert np.all(lay.layer[dst] > lay.layer[src])
    # Every edge polyline starts at its source and ends at its target.
    for i in (0, len(lay.edges) // 2, len(lay.edges) - 1):
        s, d = lay.edges[i]
        pts = lay.edge_points(i)
        assert tuple(pts[0]) == (lay.x[s], lay.y[s]) and tuple(pts[-1]) == (lay.x[d], lay.y[d])


def test_cycles_are_broken_not_fatal():
    lay = layered_layout([(0, 1), (1, 2), (2, 0), (2, 3), (3, 3)], 4)
    assert lay.reversed.sum() == 1
    assert len(set(lay.layer.tolist())) == 4
    e = int(np.nonzero(lay.reversed)[0][0])
    s, d = lay.edges[e]
    assert tuple(lay.edge_points(e)[0]) == (lay.x[s], lay.y[s])  # still drawn from its source


def test_count_crossings_simple_cases():
    layer = np.array([0, 0, 1, 1])
    assert count_crossings([(0, 2), (1, 3)], layer, [0, 1, 0, 1]) == 0
    assert count_crossings([(0, 3), (1, 2)], layer, [0, 1, 0, 1]) == 1
    assert count_crossings([(0, 2), (0, 3)], layer, [0, 1, 0, 1]) == 0  # shared endpoint


def test_count_crossings_large_layer_matches_bruteforce():
    rng = np.random.default_rng(0)
    k = 300
    layer = np.array([0] * k + [1] * k)
    pos = np.concatenate([rng.permutation(k), rng.permutation(k)]).astype(float)
    edges = np.stack([rng.integers(0, k, 400), k + rng.integers(0, k, 400)], axis=1)
    edges = np.unique(edges, axis=0)
    pu, pv = pos[edges[:, 0]], pos[edges[:, 1]]
    brute = int(np.sum((pu[:, None] < pu[None, :]) & (pv[:, None] > pv[None, :])))
    assert count_crossings(edges, layer, pos) == brute


def _grandalf_crossings(edges: list[tuple[int, int]], n: int) -> int:
    gg = pytest.importorskip("grandalf.graphs")
    gl = pytest.importorskip("grandalf.layouts")

    class View:
        w, h = 40, 20

    verts = [gg.Vertex(i) for i in range(n)]
    for v in verts:
        v.view = View()
    g = gg.Graph(verts, [gg.Edge(verts[a], verts[b]) for a, b in edges])
    total = 0
    for comp in g.C:
        sug = gl.SugiyamaLayout(comp)
        sug.init_all()
        sug.draw(3)

        def rank_pos(x, sug=sug):
            attr = x if isinstance(x, gl.DummyVertex) else sug.grx[x]
            return attr.rank, attr.pos

        nodes: dict[int, tuple[int, int]] = {}
        proper: list[tuple[int, int]] = []
        for e in comp.sE:
            v0, v1 = e.v
            chain = [v0, v1]
            ctrl = sug.ctrls.get(e)
            if ctrl:
                chain = [ctrl[r] for r in sorted(ctrl)]
            ids = [id(x) for x in chain]
            for x in chain:
                nodes[id(x)] = rank_pos(x)
            proper += list(zip(ids, ids[1:]))
        keys = {k: i for i, k in enumerate(nodes)}
        layer = np.array([nodes[k][0] for k in keys])
        pos = np.array([nodes[k][1] for k in keys], dtype=float)
        total += count_crossings([(keys[a], keys[b]) for a, b in proper], layer, pos)
    return total


def test_crossings_close_to_grandalf_on_random_dags():
    pytest.importorskip("grandalf")
    rng = np.random.default_rng(7)
    ours = theirs = 0
    for _ in range(12):
        n = int(rng.integers(12, 30))
        edges = _random_dag(rng, n, 0.25)
        ours += layered_layout(edges, n).crossings()
        theirs += _grandalf_crossings(edges, n)
    assert ours <= 1.5 * theirs + 2, (ours, theirs)


if __name__ == "__main__":  # quick report: ours vs grandalf per graph
    r = np.random.default_rng(7)
    for _ in range(12):
        nn = int(r.integers(12, 30))
        ee = _random_dag(r, nn, 0.25)
        print(nn, len(ee), layered_layout(ee, nn).crossings(), _grandalf_crossings(ee, nn))
