"""Test helpers for plugin authors. The pytest fixtures live in ``workbench.testing.fixtures`` and load
automatically (pytest11 entry point ``workbench``): ``workbench_run_job`` and ``workbench_main_window``.
"""

from workbench.testing.fixtures import TINY_DATASET, TINY_MODEL, JobRun

__all__ = ["TINY_DATASET", "TINY_MODEL", "JobRun"]
