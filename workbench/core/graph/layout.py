"""A linear-time layered (Sugiyama-style) top-to-bottom layout, in numpy.

Graphviz and grandalf are far too slow for 10,000-node networks (seconds to minutes), and network
graphs are mostly long chains, so this keeps every step O(V + E) per pass:

1. cycles: Kahn's topological sort; only if it stalls, a DFS finds back edges, which are reversed;
2. layering: longest path from the sources, then sources are pulled down next to their consumers;
3. long edges are split by virtual (dummy) nodes, one per crossed layer;
4. ordering: DFS preorder (planar for chains and trees), then barycenter sweeps down and up, done
   for all even then all odd layers at once (vectorized), keeping the order with fewest crossings;
5. coordinates: nodes spaced by their widths, pulled toward the median of their parents/children.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .ir import Graph


@dataclass
class Layout:
    """Positions of the real nodes, plus the proper (dummy-expanded) graph and edge polylines.

    Iterating yields ``(x, y, layer)`` so ``x, y, layer = layered_layout(...)`` works.
    """

    x: np.ndarray
    y: np.ndarray
    layer: np.ndarray
    edges: np.ndarray  # (E, 2) original edges as laid out (deduplicated, no self loops)
    reversed: np.ndarray  # (E,) bool: edge was reversed to break a cycle
    points: np.ndarray  # (K, 2) polyline points of all edges, src to dst
    offsets: np.ndarray  # (E + 1,) edge i's points are points[offsets[i]:offsets[i+1]]
    proper_edges: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 2), int))
    proper_layer: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, int))
    proper_x: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def __iter__(self):
        return iter((self.x, self.y, self.layer))

    def edge_points(self, i: int) -> np.ndarray:
        """Polyline of edge ``i`` from source to target, through its dummy points."""
        return self.points[self.offsets[i]:self.offsets[i + 1]]

    def crossings(self) -> int:
        return count_crossings(self.proper_edges, self.proper_layer, self.proper_x)


def _as_edges(graph_or_edges, n_nodes: int | None) -> tuple[np.ndarray, int]:
    if isinstance(graph_or_edges, Graph):
        pairs = graph_or_edges.edge_index_pairs()
        n = len(graph_or_edges.nodes)
    else:
        pairs = graph_or_edges
        n = n_nodes
    e = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if n is None:
        n = int(e.max()) + 1 if len(e) else 0
    e = e[e[:, 0] != e[:, 1]]
    if len(e):
        e = np.unique(e, axis=0)
    return e, int(n)


def _csr(src: np.ndarray, dst: np.ndarray, n: int) -> tuple[list[int], list[int]]:
    order = np.argsort(src, kind="stable")
    indptr = np.searchsorted(src[order], np.arange(n + 1))
    return indptr.tolist(), dst[order].tolist()


def _topo(src: np.ndarray, dst: np.ndarray, n: int) -> list[int]:
    """Kahn's order; shorter than n when the graph has a cycle."""
    indptr, adj = _csr(src, dst, n)
    indeg = np.bincount(dst, minlength=n).tolist()
    stack = [v for v in range(n - 1, -1, -1) if indeg[v] == 0]
    order = []
    while stack:
        v = stack.pop()
        order.append(v)
        for w in adj[indptr[v]:indptr[v + 1]]:
            indeg[w] -= 1
            if indeg[w] == 0:
                stack.append(w)
    return order


def _back_edges(src: np.ndarray, dst: np.ndarray, n: int) -> np.ndarray:
    """Edges closing a cycle in an iterative DFS (reversing them leaves a DAG)."""
    indptr, adj = _csr(src, dst, n)
    eorder = np.argsort(src, kind="stable").tolist()
    state = [0] * n  # 0 new, 1 on stack, 2 done
    back = np.zeros(len(src), dtype=bool)
    for root in range(n):
        if state[root]:
            continue
        state[root] = 1
        stack = [(root, indptr[root])]
        while stack:
            v, i = stack[-1]
            if i < indptr[v + 1]:
                stack[-1] = (v, i + 1)
                w = adj[i]
                if state[w] == 1:
                    back[eorder[i]] = True
                elif state[w] == 0:
                    state[w] = 1
                    stack.append((w, indptr[w]))
            else:
                state[v] = 2
                stack.pop()
    return back


def _layers(src: np.ndarray, dst: np.ndarray, n: int, order: list[int]) -> np.ndarray:
    indptr, adj = _csr(src, dst, n)
    layer = [0] * n
    for v in order:
        lv = layer[v] + 1
        for w in adj[indptr[v]:indptr[v + 1]]:
            if layer[w] < lv:
                layer[w] = lv
    lay = np.asarray(layer, dtype=np.int64)
    if len(src):
        # Pull sources (graph inputs, constants) down next to their first consumer.
        is_src = np.bincount(dst, minlength=n) == 0
        low = np.full(n, np.iinfo(np.int64).max)
        np.minimum.at(low, src, lay[dst] - 1)
        move = is_src & (low < np.iinfo(np.int64).max)
        lay[move] = low[move]
        lay -= lay.min() if n else 0
    return lay


def _expand(src, dst, layer, n):
    """Split edges longer than one layer with dummy nodes; return proper edges and chains."""
    span = layer[dst] - layer[src]
    seq_len = span + 1
    offsets = np.concatenate([[0], np.cumsum(seq_len)])
    total = int(offsets[-1])
    n_dummy = int((span - 1).sum())
    seq = np.empty(total, dtype=np.int64)
    starts, ends = offsets[:-1], offsets[1:] - 1
    inner = np.ones(total, dtype=bool)
    inner[starts] = False
    inner[ends] = False
    seq[starts] = src
    seq[ends] = dst
    seq[inner] = n + np.arange(n_dummy)
    edge_of = np.repeat(np.arange(len(src)), seq_len)
    pos_in = np.arange(total) - offsets[:-1][edge_of]
    p_layer = np.concatenate([layer, np.zeros(n_dummy, dtype=np.int64)])
    p_layer[seq[inner]] = layer[src][edge_of[inner]] + pos_in[inner]
    not_end = np.ones(total, dtype=bool)
    not_end[ends] = False
    idx = np.nonzero(not_end)[0]
    p_edges = np.stack([seq[idx], seq[idx + 1]], axis=1)
    return p_edges, p_layer, seq, offsets


def _dfs_order(p_edges: np.ndarray, p_layer: np.ndarray, npn: int) -> np.ndarray:
    """Initial in-layer positions from a DFS preorder: no crossings on chains and trees."""
    src, dst = p_edges[:, 0], p_edges[:, 1]
    indptr, adj = _csr(src, dst, npn)
    indeg = np.bincount(dst, minlength=npn)
    seen = [False] * npn
    visit = []
    roots = np.nonzero(indeg == 0)[0].tolist() + list(range(npn))
    for r in roots:
        if seen[r]:
            continue
        seen[r] = True
        stack = [r]
        while stack:
            v = stack.pop()
            visit.append(v)
            kids = adj[indptr[v]:indptr[v + 1]]
            for w in reversed(kids):
                if not seen[w]:
                    seen[w] = True
                    stack.append(w)
    t = np.empty(npn, dtype=np.int64)
    t[np.asarray(visit, dtype=np.int64)] = np.arange(npn)
    return _rank_in_layer(p_layer, t.astype(float))


def _rank_in_layer(layer: np.ndarray, key: np.ndarray, tie: np.ndarray | None = None) -> np.ndarray:
    order = np.lexsort((tie, key, layer)) if tie is not None else np.lexsort((key, layer))
    starts = np.searchsorted(layer[order], layer[order], side="left")
    pos = np.empty(len(layer), dtype=float)
    pos[order] = np.arange(len(layer)) - starts
    return pos


def _sweep(pos, p_layer, a, b, npn, parity):
    """Reorder layers of one parity by the barycenter of their neighbours a -> b."""
    deg = np.bincount(b, minlength=npn)
    s = np.bincount(b, weights=pos[a], minlength=npn)
    bary = np.where(deg > 0, s / np.maximum(deg, 1), pos)
    active = (p_layer % 2) == parity
    key = np.where(active, bary, pos)
    return _rank_in_layer(p_layer, key, pos)


def count_crossings(edges: np.ndarray, layer: np.ndarray, pos: np.ndarray) -> int:
    """Edge crossings between adjacent layers of a proper layered graph (dummies included).

    ``pos`` is any coordinate that orders nodes within a layer (rank or x). Edges not joining
    adjacent layers are ignored.
    """
    e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    layer, pos = np.asarray(layer), np.asarray(pos, dtype=float)
    if not len(e):
        return 0
    u, v = e[:, 0].copy(), e[:, 1].copy()
    flip = layer[u] > layer[v]
    u[flip], v[flip] = e[flip, 1], e[flip, 0]
    keep = layer[v] - layer[u] == 1
    u, v = u[keep], v[keep]
    order = np.lexsort((pos[v], pos[u], layer[u]))
    g, pu, pv = layer[u][order], pos[u][order], pos[v][order]
    bounds = np.flatnonzero(np.diff(g)) + 1
    starts = np.concatenate([[0], bounds])
    sizes = np.diff(np.concatenate([starts, [len(g)]]))
    total = 0
    small = sizes <= 64
    member = np.repeat(small, sizes)
    gid = np.repeat(np.arange(len(sizes)), sizes)
    for d in range(1, int(sizes[small].max()) if small.any() else 1):
        i = np.arange(len(g) - d)
        ok = member[i] & (gid[i] == gid[i + d])
        total += int(np.count_nonzero(ok & (pu[i] < pu[i + d]) & (pv[i] > pv[i + d])))
    for s, k in zip(starts[~small], sizes[~small]):
        total += _inversions(pu[s:s + k], pv[s:s + k])
    return total


def _inversions(pu: np.ndarray, pv: np.ndarray) -> int:
    """Pairs i<j with pu[i] < pu[j] and pv[i] > pv[j], by a Fenwick tree (large layers only)."""
    ranks = np.searchsorted(np.unique(pv), pv) + 1
    size = int(ranks.max()) + 1
    tree = [0] * (size + 1)
    total = 0
    i = 0
    n = len(pu)
    while i < n:
        j = i
        while j < n and pu[j] == pu[i]:
            j += 1
        for r in ranks[i:j].tolist():  # count earlier edges ending strictly right of r
            k, le = r, 0
            while k > 0:
                le += tree[k]
                k -= k & -k
            total += i - le
        for r in ranks[i:j].tolist():
            k = r
            while k <= size:
                tree[k] += 1
                k += k & -k
        i = j
    return total


def _refine_small(pos, p_layer, a, b, npn, sweeps):
    """Layer-by-layer barycenter sweeps plus adjacent transpositions, for graphs small enough
    that Python loops cost nothing; this is what brings crossings to grandalf's level."""
    preds: list[list[int]] = [[] for _ in range(npn)]
    succs: list[list[int]] = [[] for _ in range(npn)]
    for u, v in zip(a.tolist(), b.tolist()):
        succs[u].append(v)
        preds[v].append(u)
    order = np.lexsort((pos, p_layer))
    layers: list[list[int]] = []
    prev = None
    for v, lv in zip(order.tolist(), p_layer[order].tolist()):
        if lv != prev:
            layers.append([])
            prev = lv
        layers[-1].append(v)
    p = pos.tolist()

    def total() -> int:
        return count_crossings(np.stack([a, b], 1), p_layer, np.asarray(p))

    def pair_cross(u: int, v: int, nbrs: list[list[int]]) -> int:
        return sum(1 for x in nbrs[u] for y in nbrs[v] if p[x] > p[y])

    best_p, best_c = list(p), total()
    for it in range(sweeps * 2):
        down = it % 2 == 0
        seq = layers[1:] if down else layers[-2::-1]
        nb = preds if down else succs
        for lay in seq:
            key = {v: (sum(p[x] for x in nb[v]) / len(nb[v]) if nb[v] else p[v], p[v]) for v in lay}
            lay.sort(key=key.__getitem__)
            for i, v in enumerate(lay):
                p[v] = i
        improved, passes = True, 0
        while improved and passes < 4:  # transpose adjacent nodes while that removes crossings
            improved, passes = False, passes + 1
            for lay in layers:
                for i in range(len(lay) - 1):
                    u, v = lay[i], lay[i + 1]
                    before = pair_cross(u, v, preds) + pair_cross(u, v, succs)
                    after = pair_cross(v, u, preds) + pair_cross(v, u, succs)
                    if after < before:
                        lay[i], lay[i + 1] = v, u
                        p[u], p[v] = i + 1, i
                        improved = True
        c = total()
        if c < best_c:
            best_p, best_c = list(p), c
        if best_c == 0:
            break
    return np.asarray(best_p, dtype=float)


def _seg_cummax(z: np.ndarray, seg: np.ndarray) -> np.ndarray:
    big = 4.0 * (np.abs(z).max() + 1.0)
    return np.maximum.accumulate(z + seg * big) - seg * big


def _place(order, sep, d, seg):
    c = np.cumsum(np.concatenate([[0.0], sep]))
    c = c - c[np.searchsorted(seg, seg, side="left")]
    z = d[order] - c
    fwd = _seg_cummax(z, seg) + c
    bwd = -_seg_cummax(-z[::-1], seg[::-1].max() - seg[::-1])[::-1] + c
    x = np.empty_like(d)
    x[order] = (fwd + bwd) / 2
    return x


def _median(a, b, x, npn):
    """Median x of each node's neighbours a -> b (nan where it has none)."""
    order = np.lexsort((x[a], b))
    bs, xs = b[order], x[a][order]
    cnt = np.bincount(b, minlength=npn)
    start = np.searchsorted(bs, np.arange(npn))
    has = cnt > 0
    lo = start + (cnt - 1) // 2
    hi = start + cnt // 2
    out = np.full(npn, np.nan)
    out[has] = (xs[lo[has]] + xs[hi[has]]) / 2
    return out


def layered_layout(
    graph_or_edges,
    n_nodes: int | None = None,
    widths: np.ndarray | None = None,
    node_sep: float = 24.0,
    layer_sep: float = 72.0,
    dummy_width: float = 8.0,
    sweeps: int = 6,
    coord_iters: int = 8,
    exact_limit: int = 4000,
) -> Layout:
    """Lay out a graph top to bottom; ``graph_or_edges`` is a Graph or (src, dst) index pairs."""
    e, n = _as_edges(graph_or_edges, n_nodes)
    w = np.ones(n) * 1.0 if widths is None else np.asarray(widths, dtype=float)
    src, dst = e[:, 0].copy(), e[:, 1].copy()
    rev = np.zeros(len(e), dtype=bool)
    order = _topo(src, dst, n)
    if len(order) < n:
        rev = _back_edges(src, dst, n)
        src[rev], dst[rev] = e[rev, 1], e[rev, 0]
        order = _topo(src, dst, n)
    layer = _layers(src, dst, n, order) if n else np.zeros(0, dtype=np.int64)
    p_edges, p_layer, seq, offsets = _expand(src, dst, layer, n)
    npn = len(p_layer)
    a, b = p_edges[:, 0], p_edges[:, 1]
    pos = _dfs_order(p_edges, p_layer, npn) if npn else np.zeros(0)
    best, best_c = pos, count_crossings(p_edges, p_layer, pos)
    for _ in range(sweeps if best_c else 0):
        for parity in (1, 0):
            pos = _sweep(pos, p_layer, a, b, npn, parity)
        c_down = count_crossings(p_edges, p_layer, pos)
        if c_down < best_c:
            best, best_c = pos, c_down
        for parity in (0, 1):
            pos = _sweep(pos, p_layer, b, a, npn, parity)
        c = count_crossings(p_edges, p_layer, pos)
        if c < best_c:
            best, best_c = pos, c
        if best_c == 0:
            break
    pos = best
    if best_c and npn <= exact_limit:
        pos = _refine_small(pos, p_layer, a, b, npn, sweeps)
    pw = np.concatenate([w, np.full(npn - n, dummy_width)])
    x = _coordinates(p_layer, pos, pw, a, b, npn, node_sep, coord_iters)
    if n:
        x -= (x[:n] - w / 2).min()
    y = p_layer.astype(float) * layer_sep
    pts = np.stack([x[seq], y[seq]], axis=1)
    for i in np.nonzero(rev)[0]:
        pts[offsets[i]:offsets[i + 1]] = pts[offsets[i]:offsets[i + 1]][::-1].copy()
    return Layout(x[:n].copy(), y[:n].copy(), layer, e, rev, pts, offsets, p_edges, p_layer, x)


def _coordinates(p_layer, pos, pw, a, b, npn, node_sep, iters):
    order = np.lexsort((pos, p_layer))
    seg = p_layer[order]
    same = seg[1:] == seg[:-1]
    gap = np.where(same, (pw[order][1:] + pw[order][:-1]) / 2 + node_sep, 0.0)
    x = np.zeros(npn)
    x = _place(order, gap, x, seg)
    if not len(a):
        return x
    for it in range(iters):
        med = _median(a, b, x, npn) if it % 2 == 0 else _median(b, a, x, npn)
        d = np.where(np.isnan(med), x, med)
        x = _place(order, gap, d, seg)
    return x
