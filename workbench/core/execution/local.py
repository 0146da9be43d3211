"""The executor for work done in this process: inline, except data-parallel jobs, which go to their ranks."""

from __future__ import annotations

from typing import Any

from workbench.core.execution.distributed import DistributedExecutor, LaunchOptions, wants_ranks
from workbench.core.execution.executors import InlineExecutor
from workbench.core.jobs.registry import Registry


def local_executor(session: Any, plugins: Registry | None = None, launch: LaunchOptions | None = None) -> InlineExecutor:
    """An ``InlineExecutor`` whose data-parallel requests (``processes > 1``) run through torch.distributed."""
    options = launch or LaunchOptions()
    distributed = DistributedExecutor(session, plugins, options)
    return InlineExecutor(session, plugins, options, route=lambda job: distributed if wants_ranks(job, options)
                          else None)
