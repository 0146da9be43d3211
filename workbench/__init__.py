"""Workbench: see, train, prune, quantize, distill and fuse neural networks, then export them to ONNX."""

__version__ = "0.1.0"
