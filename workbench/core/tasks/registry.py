"""The registry of tasks: the built-in ones, those a plugin registers, and the ``workbench.tasks`` entry points."""

from __future__ import annotations

import warnings
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from workbench.core.errors import InputError
from workbench.core.tasks.base import Task

if TYPE_CHECKING:
    from workbench.core.data import DatasetInfo

ENTRY_POINT_GROUP = "workbench.tasks"

_TASKS: dict[str, type[Task]] = {}
_plugins_loaded = False


def register_task(task_class: type[Task]) -> None:
    """Make a task available to ``task_of``; a later registration of the same name replaces the earlier one."""
    if not (isinstance(task_class, type) and issubclass(task_class, Task)) or not task_class.name:
        raise TypeError(f"register_task needs a Task subclass with a name, got {task_class!r}")
    _TASKS[task_class.name] = task_class


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            register_task(ep.load())
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the app
            warnings.warn(f"task plugin '{ep.name}' ({ep.value}) could not be loaded: {exc}", stacklevel=2)


def _builtins() -> None:
    if "classification" not in _TASKS:
        from workbench.core.tasks.classification import ClassificationTask

        _TASKS.setdefault("classification", ClassificationTask)
    if "causal_lm" not in _TASKS:
        from workbench.core.tasks.causal_lm import CausalLMTask

        _TASKS.setdefault("causal_lm", CausalLMTask)


def get_task(name: str) -> Task:
    """The task registered as ``name`` (a fresh instance; tasks keep no state)."""
    _builtins()
    if name not in _TASKS:
        _load_plugins()
    if name not in _TASKS:
        raise InputError(f"unknown task {name!r} (known: {', '.join(sorted(_TASKS))})")
    return _TASKS[name]()


def task_of(info: DatasetInfo) -> Task:
    """The task of a dataset: ``info.task``, classification when the dataset does not say."""
    return get_task(getattr(info, "task", None) or "classification")


def ensure_supported(job_name: str, info: DatasetInfo) -> None:
    """A built-in job that cannot take this dataset's kind of model says so in one line (InputError)."""
    reason = task_of(info).supports_job(job_name)
    if reason:
        raise InputError(reason)


def default_bench_batch(dataset_spec: str) -> int:
    """The latency batch of a dataset's task when the user gave none (64 classifier inputs; 1 LM sequence)."""
    from workbench.core.data import dataset_task

    return get_task(dataset_task(dataset_spec)).default_bench_batch


def list_tasks() -> list[str]:
    _builtins()
    _load_plugins()
    return sorted(_TASKS)
