"""``workbench --new-plugin NAME``: write a small, installable plugin package that works as is.

The package has a ``pyproject.toml`` registering the job in the ``workbench.plugins`` entry point group, a job
with two typed parameters that logs metrics, reports progress, checks for cancel and returns a model, a test
that runs it through the shipped pytest fixtures, and a README. ``pip install -e DIR`` makes the job appear in
``workbench --list-plugins`` and the app.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from workbench.core.errors import InputError

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")

_PYPROJECT = '''\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "{title}: a Workbench plugin."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["workbench-nn", "torch"]

[project.optional-dependencies]
test = ["pytest"]

# The entry point's name is the job name (``--job {name}``); listing plugins reads it without importing code.
[project.entry-points."workbench.plugins"]
{name} = "{package}.job:{cls}"

[tool.setuptools]
packages = ["{package}"]
'''

_JOB = '''\
"""The ``{name}`` job: zero the smallest weights of each layer (magnitude pruning), layer by layer.

Replace the body of ``run`` with your own optimization; keep the shape: read ``ctx.model``, log metrics,
report progress, call ``ctx.check_cancelled()`` between steps, return the new model.
"""

from __future__ import annotations

import torch
from torch import nn

from workbench.plugin import InputError, Job, JobContext, Param


class {cls}(Job):
    name = "{name}"
    title = "{title}"
    description = "Zero the smallest-magnitude weights of each Linear/Conv layer."
    needs_torch_model = True  # the job edits PyTorch weights, so an ONNX-only variant is refused up front

    amount: float = Param(0.3, min=0.0, max=0.99, help="fraction of each layer's weights set to zero")
    skip_last: bool = Param(True, help="leave the classifier (the last layer) untouched")

    def run(self, ctx: JobContext) -> nn.Module:
        model = ctx.model
        layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
        if self.skip_last:
            layers = layers[:-1]
        if not layers:
            raise InputError("{name}: the model has no Linear or Conv layer to prune")
        with torch.no_grad():
            for step, (layer_name, module) in enumerate(layers, start=1):
                ctx.check_cancelled()
                weight = module.weight
                k = int(self.amount * weight.numel())
                if k > 0:
                    threshold = weight.abs().flatten().kthvalue(k).values
                    weight.mul_((weight.abs() > threshold).to(weight.dtype))
                sparsity = float((weight == 0).float().mean())
                ctx.log(step=step, sparsity=sparsity)
                ctx.progress(step, len(layers), text=layer_name)
        ctx.result["layers"] = [n for n, _ in layers]
        ctx.mark(f"{{self.amount:.0%}} of weights zeroed")
        return model
'''

_TEST = '''\
"""Runs the job headless on a tiny model and dataset with the fixtures Workbench ships (pytest11 plugin)."""

from {package}.job import {cls}


def test_job_makes_a_variant_and_logs_sparsity(workbench_run_job):
    run = workbench_run_job({cls}, {{"amount": 0.5}})
    assert run.outcome.status == "ok", run.outcome.error
    assert run.outcome.variant != run.outcome.input_variant
    sparsity = [m["sparsity"] for _, m in run.outcome.history]
    assert sparsity and all(s >= 0.49 for s in sparsity)
    assert run.outcome.metrics["nonzero_params"] < run.outcome.metrics["params"]


def test_bad_parameters_are_refused(workbench_run_job):
    run = workbench_run_job({cls}, {{"amount": 2}})
    assert run.outcome.status == "failed" and run.outcome.bad_input
'''

_README = '''\
# {dist}

A [Workbench](https://example.invalid/workbench) plugin adding the job `{name}` ({title}).

```
pip install -e .                       # register the job (entry point group workbench.plugins)
workbench --list-plugins               # {name} is listed
workbench --batch --model zoo:mlp --dataset digits --job train:epochs=1 --job {name}:amount=0.5
pip install -e .[test] && pytest       # the tests use the fixtures Workbench ships (workbench_run_job)
```

Parameters: `amount` (float, 0..0.99, default 0.3) and `skip_last` (bool, default true).
Edit `{package}/job.py`; the guide is `docs/PLUGINS.md` in Workbench.
'''


def validate_name(name: str) -> str:
    """A job name usable in ``--job NAME:k=v`` and as part of a Python package name; hyphens become '_'."""
    clean = name.strip().lower().replace("-", "_")
    if not _NAME.match(clean) or keyword.iskeyword(clean):
        raise InputError(f"plugin name {name!r}: use letters, digits and '_' (starting with a letter, "
                         "at most 48 characters), e.g. my_pruner")
    return clean


def scaffold_plugin(name: str, directory: Path) -> Path:
    """Write the package ``DIRECTORY/workbench-NAME`` and return its path; never overwrites anything."""
    job = validate_name(name)
    dist = "workbench-" + job.replace("_", "-")
    package = "workbench_" + job
    cls = "".join(part.capitalize() for part in job.split("_")) + "Job"
    title = job.replace("_", " ").capitalize()
    root = Path(directory).expanduser() / dist
    if root.exists():
        raise InputError(f"{root} already exists; choose another name or --dir")
    fields = {"name": job, "dist": dist, "package": package, "cls": cls, "title": title}
    files = {
        "pyproject.toml": _PYPROJECT,
        f"{package}/__init__.py": f'"""The {job} Workbench plugin."""\n',
        f"{package}/job.py": _JOB,
        f"tests/test_{job}.py": _TEST,
        "README.md": _README,
    }
    try:
        root.mkdir(parents=True)
        for rel, template in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(template.format(**fields), encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write the plugin to {root}: {exc.strerror or exc}") from None
    return root
