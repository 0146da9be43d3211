"""The GPU paths: the runner's worker thread on cuda, AMP (bf16, fp16), onnxruntime's CUDA execution provider and
torch.distributed with nccl. Every test skips on a machine without CUDA; ``bench/gpu_check.sh`` runs them.
"""

from __future__ import annotations

import pytest
import torch

from workbench.core.execution.runner import JobRequest, Runner
from workbench.core.jobs.events import LOG, STARTED

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _run(session, request: JobRequest, launch=None):
    runner = Runner(session, launch=launch)
    events = []
    runner.bus.subscribe(events.append)
    try:
        return runner.run(request), events
    finally:
        runner.shutdown()


def test_worker_thread_trains_on_cuda(make_session):
    session, root = make_session(model="zoo:mlp:hidden=64")
    outcome, events = _run(session, JobRequest("train", {"epochs": 3}, root, "cuda"))
    assert outcome.status == "ok", outcome.error
    assert [e.data["device"] for e in events if e.kind == STARTED] == ["cuda"]
    assert outcome.metrics["accuracy"] > 0.8
    assert outcome.metrics["latency_torch_ms"] > 0
    assert session.workspace.variant(outcome.variant).path.joinpath("model.onnx").exists()


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains(make_session, amp):
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    session, root = make_session(model="zoo:mlp:hidden=64")
    outcome, events = _run(session, JobRequest("train", {"epochs": 3, "amp": amp}, root, "cuda"))
    assert outcome.status == "ok", outcome.error
    warnings = [e.data["message"] for e in events if e.kind == LOG and e.data.get("level") == "warning"]
    assert not any("amp" in w for w in warnings), warnings
    assert outcome.metrics["accuracy"] > 0.8


def test_onnxruntime_cuda_provider_latency(make_session, tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime {ort.__version__} has no CUDA execution provider (install onnxruntime-gpu)")
    from workbench.core.models.onnx_model import OnnxModel
    from workbench.core.variants.export import export_onnx
    from workbench.core.variants.measure import bench_batch, latency_onnx_ms

    session, root = make_session(model="zoo:mlp:hidden=64")
    model = session.load_variant(root, "cpu").eval()
    batch = bench_batch(session.data, 64)
    path = tmp_path / "m.onnx"
    export_onnx(model, batch[:2], path, verify_batches=[batch])
    gpu = OnnxModel(path, "cuda")
    assert gpu.session().get_providers()[0] == "CUDAExecutionProvider"
    torch.testing.assert_close(gpu(batch), OnnxModel(path, "cpu")(batch), rtol=1e-3, atol=1e-4)
    assert latency_onnx_ms(path, batch, "cuda") > 0


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_nccl_rank_trains(make_session, strategy):
    """One launched rank on one GPU goes through torchrun, nccl, DDP/FSDP2 and the sharded validation."""
    from workbench.core.execution.distributed import LaunchOptions

    session, root = make_session(model="zoo:mlp:hidden=64")
    request = JobRequest("train", {"epochs": 3, "strategy": strategy}, root, "cuda")
    outcome, _ = _run(session, request, LaunchOptions(launch_single=True))
    assert outcome.status == "ok", outcome.error
    assert outcome.metrics["accuracy"] > 0.8
    assert any("val_accuracy" in m for _, m in outcome.history)
    assert len(session.workspace.variants()) == 2


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_gpus_train_data_parallel(make_session):
    session, root = make_session(model="zoo:mlp:hidden=64")
    outcome, _ = _run(session, JobRequest("train", {"epochs": 3, "processes": 2}, root, "cuda"))
    assert outcome.status == "ok", outcome.error
    assert outcome.metrics["accuracy"] > 0.8
