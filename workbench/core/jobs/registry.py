"""Plugin discovery through the ``workbench.plugins`` entry point group.

Each entry point is one job: its name is the job name, its value ``module:Class``. Listing reads only the
installed metadata, so it is instant and imports neither torch nor the plugins' code; a job's module is
imported the first time the job is used. A plugin that fails to import is reported and disabled, never fatal.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import sys
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any

from workbench.core.errors import InputError

GROUP = "workbench.plugins"


@dataclass
class PluginInfo:
    """One job offered by an installed distribution (or registered by hand)."""

    job: str
    target: str  # "module:Class"
    distribution: str
    version: str
    origin: str  # "built-in", "installed" or a development folder
    status: str = "not loaded"  # "not loaded" | "loaded" | "failed" | "disabled"
    error: str = ""
    details: str = ""
    job_class: Any = field(default=None, repr=False)


class Registry:
    """The jobs known to this process; thread-safe."""

    def __init__(self) -> None:
        self._plugins: dict[str, PluginInfo] = {}
        self._lock = threading.RLock()
        self._discovered = False
        self.disabled: set[str] = set()

    def discover(self, force: bool = False) -> None:
        with self._lock:
            if self._discovered and not force:
                return
            found: dict[str, PluginInfo] = {}
            for ep in md.entry_points(group=GROUP):
                dist = getattr(ep, "dist", None)
                dist_name = dist.metadata["Name"] if dist is not None else "?"
                version = dist.version if dist is not None else "?"
                origin = "built-in" if ep.value.startswith("workbench_plugins.") else "installed"
                if ep.name in found and found[ep.name].target != ep.value:
                    continue  # the first one wins; the clash is visible in the plugin list
                found[ep.name] = PluginInfo(ep.name, ep.value, dist_name, version, origin)
            if getattr(sys, "frozen", False) or not any(p.origin == "built-in" for p in found.values()):
                self._add_builtins_by_hand(found)
            for name, old in self._plugins.items():
                if old.origin not in ("built-in", "installed") and name not in found:
                    found[name] = old  # registered by hand or from a plugin folder
            self._plugins = found
            self._discovered = True

    @staticmethod
    def _add_builtins_by_hand(found: dict[str, PluginInfo]) -> None:
        """Entry points do not exist in a frozen app (or an uninstalled checkout): use the package's list."""
        from workbench import __version__

        try:
            from workbench_plugins import BUILTIN_JOBS
        except ImportError:
            return
        for name, target in BUILTIN_JOBS.items():
            found.setdefault(name, PluginInfo(name, target, "workbench", __version__, "built-in"))

    def register(self, job_class: type, origin: str = "registered") -> None:
        """Add a job class directly (tests, development folders)."""
        with self._lock:
            self.discover()
            module = getattr(job_class, "__module__", "?")
            self._plugins[job_class.name] = PluginInfo(
                job_class.name, f"{module}:{job_class.__qualname__}", origin, "dev", origin, "loaded",
                job_class=job_class,
            )

    def record_failure(self, name: str, target: str, origin: str, error: str, details: str = "") -> None:
        """List a plugin that could not be loaded (a broken file in a development folder) as failed."""
        with self._lock:
            self.discover()
            self._plugins[name] = PluginInfo(name, target, origin, "dev", origin, "failed", error, details)

    def unregister(self, job_name: str) -> None:
        with self._lock:
            self._plugins.pop(job_name, None)

    def plugins(self) -> list[PluginInfo]:
        self.discover()
        with self._lock:
            out = sorted(self._plugins.values(), key=lambda p: (p.origin != "built-in", p.job))
            for p in out:
                if p.job in self.disabled and p.status != "failed":
                    p.status = "disabled"
                elif p.status == "disabled" and p.job not in self.disabled:
                    p.status = "loaded" if p.job_class is not None else "not loaded"
            return out

    def job_names(self) -> list[str]:
        return [p.job for p in self.plugins() if p.status not in ("failed", "disabled")]

    def load(self, job_name: str) -> type:
        """The Job class for a name; InputError for an unknown, disabled or broken plugin."""
        from workbench.core.jobs.base import Job

        self.discover()
        with self._lock:
            info = self._plugins.get(job_name)
            if info is None:
                known = ", ".join(sorted(self._plugins)) or "none"
                raise InputError(f"unknown job {job_name!r} (known: {known})")
            if job_name in self.disabled:
                raise InputError(f"job {job_name!r} is disabled in the plugin manager")
            if info.job_class is not None:
                return info.job_class
            if info.status == "failed":
                raise InputError(f"plugin job {job_name!r} failed to load: {info.error}")
            try:
                module_name, _, attr = info.target.partition(":")
                obj: Any = importlib.import_module(module_name)
                for part in attr.split(".") if attr else []:
                    obj = getattr(obj, part)
                if not (isinstance(obj, type) and issubclass(obj, Job)):
                    raise TypeError(f"{info.target} is not a workbench.plugin.Job subclass")
                if obj.name != job_name:
                    raise TypeError(f"{info.target} declares name {obj.name!r}, its entry point says {job_name!r}")
            except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, never fatal
                info.status = "failed"
                info.error = f"{type(exc).__name__}: {exc}"
                info.details = traceback.format_exc()
                raise InputError(f"plugin job {job_name!r} failed to load: {info.error}") from None
            info.status = "loaded"
            info.job_class = obj
            return obj

    def load_all(self) -> None:
        """Import every plugin (the app does this off the GUI thread to build its job list)."""
        for info in self.plugins():
            if info.status == "not loaded":
                try:
                    self.load(info.job)
                except InputError:
                    pass


_registry = Registry()


def registry() -> Registry:
    """The process-wide registry."""
    return _registry
