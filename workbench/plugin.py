"""The public plugin API: the only module plugin authors import.

A plugin is a ``Job`` subclass registered through the ``workbench.plugins`` entry point group::

    from workbench.plugin import Job, Param

    class Shrink(Job):
        name = "shrink"
        title = "Shrink weights"
        factor: float = Param(0.5, min=0.0, max=1.0, help="multiply every weight by this")

        def run(self, ctx):
            for p in ctx.model.parameters():
                p.data.mul_(self.factor)
            return ctx.model
"""

from typing import Literal

from workbench.core.errors import Cancelled, InputError, JobFailed
from workbench.core.jobs.base import Job, JobContext
from workbench.core.jobs.params import Param
from workbench.core.lm.generate import Generation, generate_text
from workbench.core.models.onnx_model import OnnxModel, is_onnx
from workbench.core.tasks import Task, ensure_supported, register_task, task_of
from workbench.core.variants.export import ExportResult, export_onnx

__all__ = [
    "Cancelled", "ExportResult", "Generation", "InputError", "Job", "JobContext", "JobFailed", "Literal", "OnnxModel", "Param",
    "Task", "ensure_supported", "export_onnx", "generate_text", "is_onnx", "register_task",
    "task_of",
]
