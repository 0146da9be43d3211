"""Render a resnet-like model in the graph view to docs/screenshots/graph_resnet.png (offscreen).

    python bench/graph_screenshot.py [out.png] [--onnx]

Uses the zoo's resnet18 (width 0.25) when the zoo is available, else a small local resnet.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import torch  # noqa: E402
from torch import nn  # noqa: E402


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + idt)


class SmallResNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(_Block(16, 16, 1), _Block(16, 16, 1))
        self.layer2 = nn.Sequential(_Block(16, 32, 2), _Block(32, 32, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet_model() -> nn.Module:
    try:
        from workbench.core.models.zoo import build_zoo_model

        return build_zoo_model("resnet18", (1, 28, 28), 10, {"width": 0.25})
    except Exception:  # noqa: BLE001 - the zoo is optional for this script
        return SmallResNet()


def main(argv: list[str]) -> int:
    out = Path(next((a for a in argv[1:] if not a.startswith("--")), ROOT / "docs/screenshots/graph_resnet.png"))
    from PySide6.QtWidgets import QApplication

    from workbench.core.graph.from_torch import graph_from_torch
    from workbench.ui.graph_view import GraphView

    app = QApplication.instance() or QApplication([])
    model = resnet_model().eval()
    x = torch.randn(1, 1, 28, 28)
    if "--onnx" in argv:
        import io

        import onnx

        from workbench.core.graph.from_onnx import graph_from_onnx

        buf = io.BytesIO()
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=17, input_names=["x"])
        graph = graph_from_onnx(onnx.load_from_string(buf.getvalue()))
    else:
        graph = graph_from_torch(model, x)
    view = GraphView()
    view.resize(1100, 1500)
    view.show()
    view.set_graph(graph)
    # Collapse every top-level block but one with a downsampling shortcut, so the whole
    # architecture fits while one residual block shows its branch.
    groups = graph.groups
    parents = {g.parent for g in groups.values() if g.parent}
    units = [g.id for g in groups.values()
             if (g.parent is None and g.id not in parents) or (g.parent is not None and groups[g.parent].parent is None)]
    keep = next((u for u in units if any(groups[c].parent == u for c in groups
                                         if c.endswith(("shortcut", "downsample")))), None)
    for u in units:
        if u != keep:
            view.collapse(u)
    view.fit()
    app.processEvents()
    out.parent.mkdir(parents=True, exist_ok=True)
    view.grab().save(str(out))
    print(f"{out} nodes={len(graph.nodes)} source={graph.source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
