"""Plugins from a development folder (``--plugin-path DIR``, the app's plugin setting): no install needed.

Each ``.py`` file and each package (a folder with ``__init__.py``) directly inside the folder is imported, and
every ``Job`` subclass with a ``name`` defined there is registered with ``origin=<folder>``. A file that fails to
import (syntax error, missing module, a ``Param`` without a type annotation) is listed as a failed plugin under
its file name; it never stops the others. Loading a folder again (the plugin manager's "Reload") re-imports its
code from disk and replaces what the folder registered before.

``WORKBENCH_PLUGIN_PATH`` (folders separated by ``os.pathsep``) names folders the same way. Every folder loaded
through :func:`load_plugin_path` is also appended to that variable, so a child process (a job's worker, started
with the "spawn" method) that calls :func:`load_plugin_path_from_env` sees the same plugins as its parent.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import pkgutil
import sys
import traceback
from pathlib import Path
from types import ModuleType

from workbench.core.errors import InputError
from workbench.core.jobs.registry import Registry, registry

ENV_VAR = "WORKBENCH_PLUGIN_PATH"

_loaded: dict[str, Path] = {}  # folder (as given to the registry's origin) -> path, in load order


def loaded_folders() -> list[Path]:
    """The development folders loaded in this process (so the app can reload them)."""
    return list(_loaded.values())


def load_plugin_folders(paths: list[Path], into: Registry | None = None, source: str = "--plugin-path") -> list[str]:
    """Import the jobs of each folder into the registry; returns the job names registered.

    A folder that does not exist is the user's error (InputError, naming ``source``); a broken plugin inside
    one is not.
    """
    reg = into or registry()
    names: list[str] = []
    for raw in paths:
        folder = Path(raw).expanduser().resolve()
        if not folder.is_dir():
            raise InputError(f"{source} {raw}: not a folder")
        names += _load_folder(folder, reg)
        _loaded[str(folder)] = folder
    return names


def env_plugin_folders(environ: dict[str, str] | None = None) -> list[Path]:
    """The folders named in ``WORKBENCH_PLUGIN_PATH``, in order, empty entries skipped."""
    value = (os.environ if environ is None else environ).get(ENV_VAR, "")
    return [Path(p) for p in value.split(os.pathsep) if p.strip()]


def export_plugin_folders(paths: list[Path], environ: dict[str, str] | None = None) -> None:
    """Append folders to ``WORKBENCH_PLUGIN_PATH`` (once each), so a spawned child process inherits them."""
    env = os.environ if environ is None else environ
    current = env_plugin_folders(env)
    known = {_key(p) for p in current}
    added = [p for p in (Path(p).expanduser().resolve() for p in paths) if _key(p) not in known]
    added = list(dict.fromkeys(added))
    if added:
        env[ENV_VAR] = os.pathsep.join(str(p) for p in [*current, *added])


def load_plugin_path_from_env(into: Registry | None = None, environ: dict[str, str] | None = None,
                              skip_loaded: bool = False) -> list[str]:
    """Load the folders of ``WORKBENCH_PLUGIN_PATH`` into the registry; returns the job names registered.

    Qt-free, so a worker process calls it at start. ``skip_loaded`` leaves out folders this process loaded
    already (the app, after the command line loaded them). A missing folder raises InputError naming the variable.
    """
    folders = env_plugin_folders(environ)
    if skip_loaded:
        folders = [f for f in folders if str(f.expanduser().resolve()) not in _loaded]
    return load_plugin_folders(folders, into=into, source=ENV_VAR)


def load_plugin_path(cli_paths: list[Path], into: Registry | None = None) -> list[str]:
    """What the command line does: ``WORKBENCH_PLUGIN_PATH``'s folders, then ``--plugin-path``'s, which are then
    exported into the variable for child processes. Returns the job names registered."""
    names = load_plugin_path_from_env(into=into)
    from_env = {_key(f) for f in env_plugin_folders()}
    names += load_plugin_folders([p for p in cli_paths if _key(p) not in from_env], into=into)
    export_plugin_folders(list(cli_paths))
    return names


def _key(path: Path) -> str:
    try:
        return str(Path(path).expanduser().resolve())
    except OSError:
        return str(path)


def _load_folder(folder: Path, reg: Registry) -> list[str]:
    origin = str(folder)
    for info in reg.plugins():
        if info.origin == origin:
            reg.unregister(info.job)
    prefix = "_wbdev_" + hashlib.sha1(origin.encode()).hexdigest()[:8] + "_"
    names: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(("_", ".")):
            continue
        if path.suffix == ".py" and path.is_file():
            target = path
        elif path.is_dir() and (path / "__init__.py").is_file():
            target = path / "__init__.py"
        else:
            continue
        module_name = prefix + path.stem
        try:
            modules = _import_fresh(module_name, target, folder, is_package=target.name == "__init__.py")
            classes = _job_classes(modules)
            for cls in classes:
                existing = next((p for p in reg.plugins() if p.job == cls.name), None)
                if existing is not None and existing.origin != origin:
                    raise TypeError(f"job name {cls.name!r} is already taken by {existing.distribution} "
                                    f"({existing.origin})")
        except Exception as exc:  # noqa: BLE001 - a broken plugin is listed as failed, never fatal
            reg.record_failure(path.name, str(path), origin, f"{type(exc).__name__}: {exc}",
                               traceback.format_exc())
            continue
        for cls in classes:
            reg.register(cls, origin=origin)
            names.append(cls.name)
    return names


def _import_fresh(name: str, init: Path, folder: Path, is_package: bool) -> list[ModuleType]:
    """Import a file or package under a private name, dropping any earlier copy (so a reload sees edits).
    The folder is on ``sys.path`` while importing, so a plugin may import its private helper modules."""
    for old in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[old]
    location = [str(init.parent)] if is_package else None
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=location)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {init}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    added = str(folder) not in sys.path
    if added:
        sys.path.insert(0, str(folder))
    try:
        spec.loader.exec_module(module)
        modules = [module]
        if is_package:
            for sub in pkgutil.walk_packages(module.__path__, prefix=name + "."):
                modules.append(importlib.import_module(sub.name))
    except BaseException:
        for old in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[old]
        raise
    finally:
        if added:
            sys.path.remove(str(folder))
    return modules


def _job_classes(modules: list[ModuleType]) -> list[type]:
    """Job subclasses with a name, defined in these modules (not merely imported into them)."""
    from workbench.core.jobs.base import Job

    found: dict[str, type] = {}
    own = {m.__name__ for m in modules}
    for module in modules:
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Job) and obj is not Job and obj.name and obj.__module__ in own:
                if obj.name in found and found[obj.name] is not obj:
                    raise TypeError(f"two job classes are named {obj.name!r}")
                found[obj.name] = obj
    return list(found.values())
