"""MACs of quantized ONNX graphs equal their float parent's: QDQ, QOperator, dynamic, 4-bit weights."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
quantization = pytest.importorskip("onnxruntime.quantization")
import numpy as np  # noqa: E402
from torch import nn  # noqa: E402

from workbench.core.graph import graph_from_onnx  # noqa: E402
from workbench.core.graph.from_onnx import macs_per_sample  # noqa: E402


class SmallCNN(nn.Module):
    """Conv, grouped conv, a residual add, a concat and two linears: each becomes a different quantized op."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.c3 = nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(8 * 6 * 6, 16)
        self.out = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.c1(x))
        b = torch.sigmoid(self.c2(a)) + a
        x = torch.relu(self.c3(torch.cat([a, b], 1)))
        return self.out(torch.relu(self.fc(x.flatten(1))))


class Reader(quantization.CalibrationDataReader):
    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self._it = iter([{"input": rng.standard_normal((4, 1, 8, 8)).astype("float32")} for _ in range(3)])

    def get_next(self):
        return next(self._it, None)


def _export(model: nn.Module, x: torch.Tensor, path: Path, dynamic: bool = True) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}} if dynamic else None)
    return path


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("quant")
    torch.manual_seed(0)
    model = SmallCNN().eval()
    fp32 = _export(model, torch.randn(4, 1, 8, 8), d / "fp32.onnx")
    out = {"fp32": fp32}
    QF = quantization.QuantFormat
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, fmt, per_channel in [("qdq", QF.QDQ, False), ("qdq_pc", QF.QDQ, True),
                                       ("qoperator", QF.QOperator, False)]:
            out[name] = d / f"{name}.onnx"
            quantization.quantize_static(str(fp32), str(out[name]), Reader(), quant_format=fmt,
                                         per_channel=per_channel)
        out["dynamic"] = d / "dynamic.onnx"
        quantization.quantize_dynamic(str(fp32), str(out["dynamic"]),
                                      op_types_to_quantize=["Conv", "MatMul", "Gemm"])
    return out


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_float_graph_counts_per_sample(graphs):
    # c1 8*6*6*1*9, c2 8*6*6*4*9 (two groups), c3 8*6*6*16, fc 16*288, out 4*16
    assert macs_per_sample(graphs["fp32"]) == 2592 + 10368 + 4608 + 4608 + 64


@pytest.mark.parametrize("fmt, ops", [
    ("qdq", {"DequantizeLinear", "Conv", "Gemm"}),
    ("qdq_pc", {"DequantizeLinear", "Conv", "Gemm"}),
    ("qoperator", {"QLinearConv", "QGemm", "QLinearAdd", "QLinearConcat", "QLinearSigmoid"}),
    ("dynamic", {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"}),
])
def test_quantized_graph_has_the_parents_macs(graphs, fmt, ops):
    assert ops <= _ops(graphs[fmt]), f"{fmt} graph lacks the ops this test is about: {_ops(graphs[fmt])}"
    assert macs_per_sample(graphs[fmt]) == macs_per_sample(graphs["fp32"])


def test_qoperator_contrib_ops_get_shapes(graphs):
    """QGemm is a com.microsoft op that ONNX shape inference does not know; its output shape is derived."""
    g = graph_from_onnx(graphs["qoperator"])
    qgemm = [n for n in g.nodes if n.op == "QGemm"]
    assert [n.out_shape for n in qgemm] == [("batch", 16), ("batch", 4)]
    assert [n.macs for n in qgemm] == [16 * 288, 4 * 16]
    conv = [n for n in g.nodes if n.op == "QLinearConv"]
    assert [n.macs for n in conv] == [2592, 10368, 4608]


def test_qdq_weight_shape_through_dequantize_without_inference(graphs):
    """With no inferred shape for the dequantized weight, the weight's shape is read from its initializer."""
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(graphs["qdq"])))
    dq_out = {n.output[0] for n in inferred.graph.node if n.op_type == "DequantizeLinear"}
    kept = [vi for vi in inferred.graph.value_info if vi.name not in dq_out]
    del inferred.graph.value_info[:]
    inferred.graph.value_info.extend(kept)
    g = graph_from_onnx(inferred, infer_shapes=False)
    assert g.macs == macs_per_sample(graphs["fp32"])


def test_matmul_nbits_and_fixed_batch(tmp_path):
    class Tx(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.o = nn.Linear(32, 32), nn.Linear(32, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.q(x)
            return self.o(torch.softmax(h @ h.transpose(1, 2), -1) @ h)

    torch.manual_seed(0)
    model = Tx().eval()
    per_sample = 5 * 32 * 32 + 5 * 5 * 32 + 5 * 5 * 32 + 5 * 32 * 8
    fixed = _export(model, torch.randn(3, 5, 32), tmp_path / "fixed.onnx", dynamic=False)
    assert graph_from_onnx(fixed).macs == 3 * per_sample
    assert macs_per_sample(fixed) == per_sample
    fp32 = _export(model, torch.randn(3, 5, 32), tmp_path / "tx.onnx")
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=4, block_size=32)
        q.process()
    q.model.save_model_to_file(str(tmp_path / "nbits.onnx"))
    assert "MatMulNBits" in _ops(tmp_path / "nbits.onnx")
    assert macs_per_sample(tmp_path / "nbits.onnx") == macs_per_sample(fp32) == per_sample
