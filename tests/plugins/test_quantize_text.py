"""Text models (LSTM, Transformer) quantize dynamically and still classify within a point of fp32."""

from __future__ import annotations

import onnx
import pytest
import torch

from tests.plugins.helpers import job_context, train_briefly
from workbench.core.data import load_dataset
from workbench.core.models.loading import load_model
from workbench.core.variants.measure import evaluate_accuracy
from workbench.plugin import InputError, export_onnx
from workbench_plugins.quantize import QuantizeJob


@pytest.fixture(scope="module")
def text():
    return load_dataset("synthetic:kind=text,n=480,seq_len=16", seed=0)


def _trained(spec: str, data, epochs: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    return train_briefly(load_model(spec, data.info), data, epochs=epochs)


@pytest.mark.parametrize("spec", ["zoo:lstm_classifier:width=0.5", "zoo:transformer_encoder:width=0.5"])
def test_text_models_quantize_dynamically_within_a_point(spec, text, tmp_path):
    model = _trained(spec, text)
    fp32_acc = evaluate_accuracy(model, text, "test")["accuracy"]
    assert fp32_acc > 0.6
    ctx = job_context(model, text, tmp_path)
    out = QuantizeJob().run(ctx)
    assert ctx.result["mode"] == "dynamic"
    assert all(r.get("candidate", "").startswith("dynamic") for r in ctx.result["candidates"])
    ops = {n.op_type for n in onnx.load(str(out.path)).graph.node}
    assert ops & {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul"}
    int8_acc = evaluate_accuracy(out, text, "test")["accuracy"]
    assert int8_acc >= fp32_acc - 0.01 - 1 / text.info.sizes["test"]
    assert ctx.result["note"]


def test_torch_backend_dynamic_int8_says_how(text, tmp_path):
    model = _trained("zoo:lstm_classifier:width=0.5", text, epochs=1)
    ctx = job_context(model, text, tmp_path)
    out = QuantizeJob(backend="torch").run(ctx)
    assert "onnxruntime" in ctx.result["note_backend"] and "deprecated" in ctx.result["note_backend"]
    ops = {n.op_type for n in onnx.load(str(out.path)).graph.node}
    assert "DynamicQuantizeLSTM" in ops or "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops


def test_torch_backend_int8_needs_linear_or_lstm(tmp_path):
    data = load_dataset("synthetic:kind=image,shape=1x8x8,n=64", seed=0)
    conv_only = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 8), torch.nn.Flatten())
    x = data.example_batch(4)
    path = export_onnx(conv_only, x[:2], tmp_path / "c.onnx").path
    from workbench.plugin import OnnxModel

    with pytest.raises(InputError, match="Linear/LSTM"):
        QuantizeJob(backend="torch").run(job_context(OnnxModel(path), data, tmp_path))
