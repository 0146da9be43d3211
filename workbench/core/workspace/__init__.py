"""The workspace: SQLite index + variant folders, written atomically."""

from workbench.core.workspace.store import Variant, Workspace

__all__ = ["Variant", "Workspace"]
