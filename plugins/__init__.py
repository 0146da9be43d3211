"""The built-in jobs, written exactly as a third-party plugin would be: only ``workbench.plugin`` is imported,
and each job is registered through the ``workbench.plugins`` entry point group (see pyproject.toml).

``BUILTIN_JOBS`` repeats those entry points for a frozen app, where entry points do not exist.
"""

BUILTIN_JOBS = {
    "train": "workbench_plugins.train:TrainJob",
    "evaluate": "workbench_plugins.evaluate:EvaluateJob",
    "export": "workbench_plugins.export:ExportJob",
    "prune": "workbench_plugins.prune:PruneJob",
    "prune_sensitivity": "workbench_plugins.prune_sensitivity:PruneSensitivityJob",
    "quantize": "workbench_plugins.quantize:QuantizeJob",
    "quantize_weights": "workbench_plugins.quantize_weights:QuantizeWeightsJob",
    "distill": "workbench_plugins.distill:DistillJob",
    "drop_layers": "workbench_plugins.drop_layers:DropLayersJob",
    "fuse": "workbench_plugins.fuse:FuseJob",
    "generate": "workbench_plugins.generate:GenerateJob",
    "optimize": "workbench_plugins.optimize:OptimizeJob",
}
