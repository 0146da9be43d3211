"""Tasks: what a model is for decides how it is trained, checked and measured.

A ``Task`` owns the training loss, the headline metric (and whether higher is better), the check of a job's
returned model, what a latency batch is, and the measurements beyond the common ones. ``task_of(info)`` picks the
task of a dataset (``DatasetInfo.task``). Built in: ``classification`` (one score per class; accuracy) and
``causal_lm`` (next-token logits; perplexity). A plugin adds a third with ``register_task`` or through the
``workbench.tasks`` entry point group (name -> Task subclass).
"""

from workbench.core.tasks.base import Task
from workbench.core.tasks.registry import (
    default_bench_batch,
    ensure_supported,
    get_task,
    list_tasks,
    register_task,
    task_of,
)

__all__ = [
    "Task", "default_bench_batch", "ensure_supported", "get_task", "list_tasks", "register_task", "task_of",
]
