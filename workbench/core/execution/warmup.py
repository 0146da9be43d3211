"""Import ahead of time what a first job would otherwise import lazily on the worker thread.

Importing is pure Python holding the GIL for hundreds of milliseconds at a time (torch's optimizer pulls in
torch._dynamo; the first export pulls in torch.onnx, onnx and onnxruntime); done in the middle of a job it freezes
the app's event loop. The app calls ``warm_up`` on a background thread right after start-up instead.
"""

from __future__ import annotations

import io


def warm_up() -> None:
    import onnx
    import onnxruntime
    import torch
    from torch import nn

    from workbench.core.variants.export import _export_torchscript

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 2))
    x = torch.zeros(2, 1, 6, 6)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(x).sum().backward()
    optimizer.step()
    buffer = io.BytesIO()
    model.eval()
    _export_torchscript(model, x, buffer, 17)
    onnx.checker.check_model(onnx.load_from_string(buffer.getvalue()))
    onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
