"""Latency through onnxruntime: the plain run on CPU, and the IO-bound run that a GPU provider takes."""

import numpy as np
import pytest
import torch

from workbench.core.models.onnx_model import OnnxModel
from workbench.core.variants import measure
from workbench.core.variants.export import export_onnx


@pytest.fixture
def onnx_file(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    batch = torch.randn(8, 16)
    path = tmp_path / "m.onnx"
    export_onnx(model, batch[:2], path, verify_batches=[batch])
    return path, model, batch


def test_bound_run_gives_the_plain_run_outputs(onnx_file):
    path, model, batch = onnx_file
    session = OnnxModel(path).session()
    run = measure.bound_run(session, batch.numpy(), "cpu")
    outputs = run()
    assert len(outputs) == 1
    np.testing.assert_allclose(outputs[0].numpy(), model(batch).detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(run()[0].numpy(), outputs[0].numpy())  # the binding is reusable


def test_a_gpu_provider_is_timed_through_io_binding(onnx_file, monkeypatch):
    """Without a GPU here, pretend the session's first provider is CUDA: the timer must take the bound run."""
    path, _, batch = onnx_file
    real_session, real_bound_run = OnnxModel.session, measure.bound_run
    calls = []

    class CudaLooking:
        def __init__(self, session):
            self._s = session

        def get_providers(self):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

        def __getattr__(self, name):
            return getattr(self._s, name)

    def bound_on_cpu(session, array, device_type, device_id=0):
        calls.append((device_type, device_id))
        return real_bound_run(session._s, array, "cpu", 0)

    monkeypatch.setattr(OnnxModel, "session", lambda self: CudaLooking(real_session(self)))
    monkeypatch.setattr(measure, "bound_run", bound_on_cpu)
    assert measure.latency_onnx_ms(path, batch, "cuda:1") > 0
    assert calls == [("cuda", 1)]


def test_cpu_latency_is_positive_and_on_the_cpu_provider(onnx_file):
    path, _, batch = onnx_file
    assert OnnxModel(path, "cuda").session().get_providers()[-1] == "CPUExecutionProvider"
    assert measure.latency_onnx_ms(path, batch, "cpu") > 0
