"""The standard metrics of every variant (report contract, section 2): accuracy, loss, sizes, MACs, latency."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from workbench.core.models.onnx_model import OnnxModel, is_onnx
from workbench.core.variants import timing
from workbench.core.variants.timing import DEFAULT_BUDGET, Latency, TimingBudget

if TYPE_CHECKING:
    from workbench.core.data import DataBundle


def evaluate_accuracy(model: Any, data: DataBundle, split: str = "test", device: torch.device | str = "cpu",
                      check: Any = None) -> dict[str, float]:
    """The task's quality metrics on a whole split, in eval mode: top-1 accuracy and mean cross-entropy for a
    classifier (``workbench.core.tasks``; perplexity, loss and token accuracy for a language model)."""
    from workbench.core.tasks import task_of

    return task_of(data.info).evaluate(model, data, split, device, check)


def count_params(model: Any) -> tuple[int, int]:
    """(parameters, non-zero parameters); for ONNX, the initializers' elements (int8 or float)."""
    if is_onnx(model):
        import numpy as np
        import onnx
        from onnx import numpy_helper

        proto = onnx.load(str(model.path))
        params = nonzero = 0
        for init in proto.graph.initializer:
            array = numpy_helper.to_array(init)
            if "zero_point" in init.name or init.name.endswith("scale"):
                continue  # quantization bookkeeping, not weights
            params += int(array.size)
            nonzero += int(np.count_nonzero(array))
        return params, nonzero
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())
    return int(params), int(nonzero)


def count_macs(model: Any, example: torch.Tensor) -> int:
    """Multiply-accumulates for one sample, from the layers that dominate cost (conv, linear, LSTM, attention)."""
    if is_onnx(model):
        try:
            from workbench.core.graph.from_onnx import macs_per_sample

            return int(macs_per_sample(model.path))  # divided by the graph's own batch, when it fixes one
        except Exception:  # noqa: BLE001 - MACs are informative; never fail a job on them
            return 0
    total = 0

    def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
        nonlocal total
        out = output[0] if isinstance(output, tuple) else output
        if isinstance(module, nn.Conv2d | nn.Conv1d):
            k = 1
            for s in module.kernel_size:
                k *= s
            total += out.numel() * (module.in_channels // module.groups) * k
        elif isinstance(module, nn.Linear):
            total += out.numel() * module.in_features
        elif isinstance(module, nn.LSTM):
            x = inputs[0]
            steps = x.shape[1] if module.batch_first else x.shape[0]
            batch = x.shape[0] if module.batch_first else x.shape[1]
            h, i = module.hidden_size, module.input_size
            per_step = 4 * h * (i + h) + 4 * h * (h + h) * (module.num_layers - 1)
            total += batch * steps * per_step * (2 if module.bidirectional else 1)
        elif isinstance(module, nn.MultiheadAttention):
            x = inputs[0]
            batch, seq = (x.shape[0], x.shape[1]) if module.batch_first else (x.shape[1], x.shape[0])
            e = module.embed_dim
            total += batch * (4 * seq * e * e + 2 * seq * seq * e)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, nn.Conv2d | nn.Conv1d | nn.Linear | nn.LSTM | nn.MultiheadAttention)]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total)


def onnx_runner(onnx_path: Path, batch: torch.Tensor, device: torch.device | str = "cpu") -> Callable[[], Any]:
    """A call running one batch through onnxruntime on the device's execution provider.

    On a GPU provider the batch is put on the device once and the outputs stay there (IO binding), so the figure
    is the model's time, as the torch latency measures it, and not host-device copies, which onnxruntime's own
    guide warns make it look slower than it is."""
    session = OnnxModel(onnx_path, device).session()
    name = session.get_inputs()[0].name
    array = batch.cpu().numpy()
    if "int64" in session.get_inputs()[0].type:
        array = array.astype("int64")
    if session.get_providers()[0] == "CUDAExecutionProvider":
        return bound_run(session, array, "cuda", torch.device(device).index or 0)
    return lambda: session.run(None, {name: array})


def latency_onnx(onnx_path: Path, batch: torch.Tensor, device: torch.device | str = "cpu",
                 budget: TimingBudget = DEFAULT_BUDGET, check: Any = None) -> Latency:
    """Median milliseconds (with a 95% interval) for one batch through onnxruntime."""
    return timing.measure(onnx_runner(onnx_path, batch, device), budget, check)


def latency_onnx_ms(onnx_path: Path, batch: torch.Tensor, device: torch.device | str = "cpu",
                    budget: TimingBudget = DEFAULT_BUDGET) -> float:
    """Median milliseconds for one batch through onnxruntime (jobs comparing candidates use it)."""
    return latency_onnx(onnx_path, batch, device, budget).ms


def bound_run(session: Any, array: Any, device_type: str, device_id: int = 0) -> Any:
    """A call that runs ``session`` on ``array`` already placed on the device, outputs left there; it returns
    the outputs (OrtValues) so that a caller can check them."""
    import onnxruntime as ort

    binding = session.io_binding()
    binding.bind_ortvalue_input(session.get_inputs()[0].name,
                                ort.OrtValue.ortvalue_from_numpy(array, device_type, device_id))
    for output in session.get_outputs():
        binding.bind_output(output.name, device_type, device_id)

    def run() -> list[Any]:
        session.run_with_iobinding(binding)
        return binding.get_outputs()

    return run


@contextlib.contextmanager
def torch_runner(model: nn.Module, batch: torch.Tensor, device: torch.device | str = "cpu") -> Iterator[Callable[[], None]]:
    """A call running one batch through PyTorch (eval and inference mode, synchronised on CUDA), with the
    process's thread count fixed for the measurement; the model's training flag is restored afterwards."""
    device = torch.device(device)
    batch = batch.to(device)
    was_training = model.training
    threads = torch.get_num_threads()
    torch.set_num_threads(timing.fixed_threads())
    model.eval()

    def run() -> None:
        with torch.inference_mode():
            model(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    try:
        yield run
    finally:
        model.train(was_training)
        torch.set_num_threads(threads)


def latency_torch(model: nn.Module, batch: torch.Tensor, device: torch.device | str = "cpu",
                  budget: TimingBudget = DEFAULT_BUDGET, check: Any = None) -> Latency:
    """Median milliseconds (with a 95% interval) for one batch through PyTorch."""
    with torch_runner(model, batch, device) as run:
        return timing.measure(run, budget, check)


def latency_torch_ms(model: nn.Module, batch: torch.Tensor, device: torch.device | str = "cpu",
                     budget: TimingBudget = DEFAULT_BUDGET) -> float:
    """Median milliseconds for one batch through PyTorch."""
    return latency_torch(model, batch, device, budget).ms


def bench_batch(data: DataBundle, size: int = 64) -> torch.Tensor:
    """A batch of ``size`` real test inputs (repeated when the test split is smaller)."""
    x = data.example_batch(size)
    if x.shape[0] < size:
        reps = -(-size // max(x.shape[0], 1))
        x = x.repeat(reps, *([1] * (x.dim() - 1)))[:size]
    return x
