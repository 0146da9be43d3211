"""Render what structured pruning changed, in the graph view: docs/screenshots/graph_prune_diff.png (offscreen).

    python bench/graph_diff_screenshot.py [out.png]

Runs the real ``prune`` job (50% of the channels, Torch-Pruning) on seed_cnn in a scratch workspace, then shows
the pruned variant's graph with the diff against its parent: pruned layers outlined with their new channel counts.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else ROOT / "docs/screenshots/graph_prune_diff.png"
    from PySide6.QtWidgets import QApplication

    from workbench.core.batch import open_session
    from workbench.core.execution.runner import JobRequest, Runner
    from workbench.core.graph import diff_graphs, graph_from_torch
    from workbench.core.models.loading import load_variant_folder
    from workbench.core.pipeline import Pipeline
    from workbench.ui.graph_view import GraphView

    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        session, root = open_session(Pipeline(model="zoo:seed_cnn", dataset="digits", device="cpu", out=tmp))
        runner = Runner(session)
        pruned = runner.run(JobRequest("prune", {"amount": 0.5}, root, "cpu"))
        runner.shutdown()
        if pruned.status != "ok":
            print(f"prune failed: {pruned.error}")
            return 1
        x = session.data.example_batch(1)
        before = graph_from_torch(load_variant_folder(session.workspace.variant(root).path), x)
        after = graph_from_torch(load_variant_folder(session.workspace.variant(pruned.variant).path), x)
        session.workspace.close()
    diff = diff_graphs(before, after)
    view = GraphView()
    view.resize(900, 1300)
    view.show()
    view.set_graph(after, diff=diff)
    view.fit()
    app.processEvents()
    out.parent.mkdir(parents=True, exist_ok=True)
    view.grab().save(str(out))
    print(f"{out}: {len(diff)} changed nodes: " + "; ".join(f"{c.node_name}: {c.text}" for c in list(diff.values())[:6]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
