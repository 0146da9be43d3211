"""The export job: a verified ONNX file, the exporter it used, and a failed job when the file differs from torch."""

from __future__ import annotations

import threading

import onnx
import pytest
import torch

from workbench.core.data import load_dataset
from workbench.core.variants import export as core_export
from workbench.plugin import JobContext, JobFailed
from workbench_plugins.export import ExportJob


class Linear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class DiffersWhenExported(Linear):
    """Traces to a different graph than it runs: the kind of export a user would never notice by eye."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        return y.flip(1) if torch.onnx.is_in_onnx_export() else y


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic:kind=image,shape=1x8x8,n=96", seed=0)


def _ctx(model, data, tmp_path) -> JobContext:
    evaluate = lambda m, split="test": {"accuracy": 1.0}  # noqa: E731 - measuring is the session's job
    return JobContext(run_id=1, job_name="export", model=model, data=data, device=torch.device("cpu"),
                      workdir=tmp_path, emit=lambda e: None, cancel_event=threading.Event(), evaluate=evaluate,
                      load_variant=None, variant_id="v0001")


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_export_is_verified_and_says_which_exporter(exporter, data, tmp_path):
    ctx = _ctx(Linear().eval(), data, tmp_path)
    ExportJob(exporter=exporter, path=str(tmp_path / "m.onnx")).run(ctx)
    res = ctx.result
    assert res["exporter"] == exporter and "fallback_reason" not in res
    assert res["max_abs_diff"] <= 1e-4 and res["top1_agreement"] >= 0.999
    model = onnx.load(res["path"])
    onnx.checker.check_model(model)
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # dynamic batch axis


def test_dynamo_failure_falls_back_to_torchscript_and_says_so(data, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("dynamo cannot trace this")

    monkeypatch.setattr(core_export, "_export_dynamo", broken)
    ctx = _ctx(Linear().eval(), data, tmp_path)
    ExportJob(exporter="dynamo", path=str(tmp_path / "m.onnx")).run(ctx)
    assert ctx.result["exporter"] == "torchscript"
    assert "dynamo cannot trace this" in ctx.result["fallback_reason"]


def test_export_that_differs_from_torch_fails_the_job(data, tmp_path):
    target = tmp_path / "bad.onnx"
    with pytest.raises(JobFailed, match="does not match torch"):
        ExportJob(path=str(target)).run(_ctx(DiffersWhenExported().eval(), data, tmp_path))
    assert not target.exists()  # no half-verified file is left behind


def test_tampered_file_is_caught(data, tmp_path, monkeypatch):
    """Both exporters write a file from other weights: verification, not the exporter, must catch it."""
    real_ts = core_export._export_torchscript

    def tampered(model, example, path, opset):
        other = Linear()
        with torch.no_grad():
            other.fc[1].weight.mul_(-1)
        real_ts(other, example, path, opset)

    monkeypatch.setattr(core_export, "_export_torchscript", tampered)
    monkeypatch.setattr(core_export, "_export_dynamo", tampered)
    with pytest.raises(JobFailed, match="top-1 agreement"):
        ExportJob(path=str(tmp_path / "t.onnx")).run(_ctx(Linear().eval(), data, tmp_path))


def test_batch_with_a_model_whose_onnx_differs_exits_1_with_the_reason(tmp_path, capsys):
    """Every variant is exported to be measured, so the broken export is caught before any job runs."""
    from workbench.cli import main

    module = tmp_path / "sneaky.py"
    module.write_text(
        "import torch\n"
        "class Sneaky(torch.nn.Module):\n"
        "    def __init__(self, input_shape=(1, 8, 8), num_classes=4):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(64, num_classes)\n"
        "    def forward(self, x):\n"
        "        y = self.fc(x.flatten(1))\n"
        "        return y.flip(1) if torch.onnx.is_in_onnx_export() else y\n")
    out = tmp_path / "run"
    code = main(["--batch", "--model", f"py:{module}:Sneaky", "--dataset", "synthetic:kind=image,shape=1x8x8,n=96",
                 "--job", "export", "--out", str(out)])
    assert code == 1
    assert "does not match torch" in capsys.readouterr().err
