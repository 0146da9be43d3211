"""The house's shape: no module of workbench takes part in an import cycle (function-level imports included,
``if TYPE_CHECKING`` ones not), and the layers of pyproject.toml's import-linter contract hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import networkx as nx

ROOT = Path(__file__).resolve().parents[2]


def test_no_import_cycles():
    graph = grimp.build_graph("workbench", "workbench_plugins", exclude_type_checking_imports=True)
    imports = nx.DiGraph()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            imports.add_edge(module, imported)
    cycles = [sorted(c) for c in nx.strongly_connected_components(imports) if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_the_import_contracts_hold():
    result = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Layers of the core" in result.stdout
