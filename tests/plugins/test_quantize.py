"""The quantize job on small image models: candidates, the fastest within the budget, honest verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tests.plugins.helpers import job_context, train_briefly
from workbench.core.data import load_dataset
from workbench.core.models.loading import load_model
from workbench.core.variants.measure import evaluate_accuracy
from workbench.plugin import InputError, JobFailed, OnnxModel
from workbench_plugins import _quant_ort
from workbench_plugins.quantize import QuantizeJob

DATA = "synthetic:kind=image,shape=1x12x12,n=480,classes=4"


def accuracy_of(model, data) -> float:
    return evaluate_accuracy(model, data, "test")["accuracy"]


@pytest.fixture(scope="module")
def data():
    return load_dataset(DATA, seed=0)


@pytest.fixture(scope="module")
def cnn(data):
    model = load_model("zoo:lenet5", data.info)
    return train_briefly(model, data, epochs=3)


def _op_types(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_auto_measures_candidates_and_keeps_the_fastest_within_budget(cnn, data, tmp_path):
    ctx = job_context(cnn, data, tmp_path)
    out = QuantizeJob().run(ctx)
    assert isinstance(out, OnnxModel) and out.path.is_file()
    res = ctx.result
    rows = res["candidates"]
    assert len(rows) >= 3 and {r["format"] for r in rows} == {"qdq", "qoperator"}
    for row in rows:
        assert row["latency_ms"] > 0 and 0 <= row["val_accuracy"] <= 1 and row["size_bytes"] > 0
    fp32_acc = res["fp32"]["val_accuracy"]
    within = [r for r in rows if r["val_accuracy"] >= fp32_acc - 0.01]
    chosen = next(r for r in rows if r["candidate"] == res["chosen"])
    assert chosen["latency_ms"] == min(r["latency_ms"] for r in within)
    assert out.path.stat().st_size < 0.6 * res["fp32"]["size_bytes"]  # tiny model: scales weigh
    assert "QuantizeLinear" in _op_types(out.path) or "QLinearConv" in _op_types(out.path)
    # test accuracy of the int8 file stays within a point of fp32's (plus one sample of slack)
    slack = 1 / data.info.sizes["test"]
    assert accuracy_of(out, data) >= accuracy_of(cnn, data) - 0.01 - slack
    assert accuracy_of(cnn, data) > 0.6  # the model learned something, so the comparison means something
    assert res["note"]
    if res["speedup"] < 1.0:
        assert "slower than fp32" in ctx.marks and "slower" in res["note"]
    sens = res["node_sensitivity"]
    assert sens and all({"node", "op", "sqnr_db", "local_sqnr_db"} <= set(s) for s in sens)
    scores = [s["sqnr_db"] for s in sens if s["sqnr_db"] is not None]
    assert scores == sorted(scores)
    json.dumps(res)  # the result is stored as JSON


def _fake_latency(slow_int8: bool):
    def latency(sess, batch, **kwargs) -> float:
        ops = {n.op_type for n in onnx.load(sess._model_path).graph.node}
        int8 = bool(ops & {"QuantizeLinear", "QLinearConv", "DynamicQuantizeLinear", "MatMulInteger"})
        return (20.0 if slow_int8 else 5.0) if int8 else 10.0
    return latency


def test_slower_int8_is_said_and_marked(cnn, data, tmp_path, monkeypatch):
    monkeypatch.setattr(_quant_ort, "latency_ms", _fake_latency(slow_int8=True))
    ctx = job_context(cnn, data, tmp_path)
    out = QuantizeJob(format="qdq", per_channel="on", sensitivity=False).run(ctx)
    assert out.path.is_file()
    assert "slower than fp32" in ctx.marks
    assert "slower" in ctx.result["note"] and ctx.result["speedup"] == pytest.approx(0.5)


def test_require_speedup_fails_instead(cnn, data, tmp_path, monkeypatch):
    monkeypatch.setattr(_quant_ort, "latency_ms", _fake_latency(slow_int8=True))
    with pytest.raises(JobFailed, match="slower"):
        QuantizeJob(format="qdq", per_channel="on", sensitivity=False, require_speedup=True).run(
            job_context(cnn, data, tmp_path))


def test_faster_int8_is_not_marked(cnn, data, tmp_path, monkeypatch):
    monkeypatch.setattr(_quant_ort, "latency_ms", _fake_latency(slow_int8=False))
    ctx = job_context(cnn, data, tmp_path)
    QuantizeJob(format="qoperator", activation_type="uint8", per_channel="off", sensitivity=False).run(ctx)
    assert ctx.marks == [] and ctx.result["speedup"] == pytest.approx(2.0)
    assert [r["candidate"] for r in ctx.result["candidates"]] == ["qoperator au8/ws8"]


def test_explicit_format_and_onnx_input(cnn, data, tmp_path):
    from workbench.plugin import export_onnx

    x = data.example_batch(16)
    fp32 = export_onnx(cnn, x[:2], tmp_path / "in.onnx", verify_batches=[x]).path
    ctx = job_context(OnnxModel(fp32), data, tmp_path / "w")
    (tmp_path / "w").mkdir()
    out = QuantizeJob(format="qoperator", activation_type="uint8", per_channel="off", sensitivity=False).run(ctx)
    assert "QLinearConv" in _op_types(out.path) and "QuantizeLinear" in _op_types(out.path)
    assert "exporter" not in ctx.result  # ONNX input is used as is


def test_exclude_by_hand_keeps_nodes_float(cnn, data, tmp_path):
    ctx = job_context(cnn, data, tmp_path)
    pre, _ = _quant_ort.preprocess(QuantizeJob()._fp32_onnx(ctx, tmp_path), tmp_path / "p.onnx")
    convs = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv"]
    ctx2 = job_context(cnn, data, tmp_path / "w")
    (tmp_path / "w").mkdir()
    out = QuantizeJob(format="qoperator", activation_type="uint8", per_channel="off", exclude=[convs[0]],
                      sensitivity=False).run(ctx2)
    graph = onnx.load(str(out.path)).graph
    assert any(n.name == convs[0] and n.op_type == "Conv" for n in graph.node)
    assert any(n.op_type == "QLinearConv" for n in graph.node)
    assert ctx2.result["excluded"] == [convs[0]]
    with pytest.raises(InputError, match="no node named"):
        QuantizeJob(exclude=["nope"]).run(job_context(cnn, data, tmp_path / "w"))


def test_exclude_auto_keeps_worst_nodes_float_until_target(cnn, data, tmp_path, monkeypatch):
    """A stand-in accuracy that only recovers once some quantization is removed drives the auto loop."""
    ctx = job_context(cnn, data, tmp_path)
    first: list[int] = []

    def accuracy(model, split="val"):
        count = sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(model.path)).graph.node)
        if count == 0:
            return {"accuracy": 0.9}  # fp32
        first.append(count)
        return {"accuracy": 0.9 if count < first[0] else 0.5}

    monkeypatch.setattr(ctx, "accuracy", accuracy)
    QuantizeJob(format="qdq", per_channel="on", activation_type="uint8").run(ctx)
    rows = ctx.result["candidates"]
    assert len(rows) >= 2 and not rows[0]["within_target"]
    chosen = next(r for r in rows if r["candidate"] == ctx.result["chosen"])
    worst = []
    for s in ctx.result["node_sensitivity"]:
        if s["node"] not in worst:
            worst.append(s["node"])
    assert chosen["within_target"] and chosen["excluded"] == worst[: len(chosen["excluded"])]


def test_accuracy_budget_unmet_fails(cnn, data, tmp_path, monkeypatch):
    ctx = job_context(cnn, data, tmp_path)
    monkeypatch.setattr(ctx, "accuracy", lambda m, split="val": {
        "accuracy": 0.5 if "cand" in Path(m.path).name else 0.9})
    with pytest.raises(JobFailed, match="no int8 candidate stays within"):
        QuantizeJob(format="qdq", per_channel="on", exclude=["none"], sensitivity=False).run(ctx)


def test_torch_backend_fp16_and_bf16(cnn, data, tmp_path):
    ctx = job_context(cnn, data, tmp_path)
    out = QuantizeJob(backend="torch", dtype="fp16").run(ctx)
    model = onnx.load(str(out.path))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    x = data.example_batch(8)
    assert out(x).dtype == torch.float32
    np.testing.assert_allclose(out(x).numpy(), cnn(x).detach().numpy(), atol=5e-2)
    assert "fp16" in ctx.result["note"] and ctx.marks
    with pytest.raises(InputError, match="bf16"):
        QuantizeJob(backend="torch", dtype="bf16").run(job_context(cnn, data, tmp_path))
    with pytest.raises(InputError, match="backend=torch"):
        QuantizeJob(dtype="fp16").run(job_context(cnn, data, tmp_path))


def test_candidates_for_auto_are_few_and_skip_known_slow_pairing():
    cands = QuantizeJob()._candidates("static", ())
    assert len(cands) == 4
    assert not any(c.fmt == "qoperator" and c.activation_type == "int8" for c in cands)
    asked = QuantizeJob(format="qoperator", activation_type="int8", per_channel="off")._candidates("static", ())
    assert [(c.fmt, c.activation_type, c.per_channel) for c in asked] == [("qoperator", "int8", False)]
    assert all(c.mode == "dynamic" for c in QuantizeJob()._candidates("dynamic", ()))


def test_batch_cli_records_candidates_and_real_sizes(tmp_path):
    from workbench.cli import main

    out = tmp_path / "run"
    code = main(["--batch", "--model", "zoo:lenet5", "--dataset", DATA, "--seed", "0",
                 "--job", "train:epochs=2", "--job", "quantize:max_candidates=2", "--out", str(out)])
    assert code == 0
    steps = json.loads((out / "report.json").read_text())["steps"]
    fp32, q = steps[0], steps[1]
    assert q["status"] == "ok" and len(q["result"]["candidates"]) == 2
    assert q["metrics"]["size_bytes"] < 0.6 * fp32["metrics"]["size_bytes"]
    folder = out / "variants" / q["variant"]
    assert (folder / "model.onnx").stat().st_size == q["metrics"]["size_bytes"]
    assert q["result"]["note"] and q["result"]["chosen"]
