"""The built-in jobs, written exactly as a third-party plugin would be: only ``workbench.plugin`` is imported,
and each job is registered through the ``workbench.plugins`` entry point group (see pyproject.toml).

``BUILTIN_JOBS`` repeats those entry points for a frozen app, where entry points do not exist.
"""

BUILTIN_JOBS = {
    "train": "workbench_plugins.train:TrainJob",
    "evaluate": "workbench_plugins.evaluate:EvaluateJob",
    "export": "workbench_plugins.export:ExportJob",
}
