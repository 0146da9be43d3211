"""``backend=torch`` of the quantize job: what the installed torch can give a variant that can be measured.

Every variant is measured through ONNX Runtime (report contract), so the result must be an ONNX file:
- ``dtype=int8``: torch 2.14 deprecates ``torch.ao.quantization.quantize_dynamic`` (its successor, torchao, is
  not part of the workbench) and the quantized modules it makes do not export to ONNX. The same recipe (dynamic
  int8 weights of Linear/LSTM layers, activations quantized on the fly) is applied to the exported graph by
  onnxruntime's ``quantize_dynamic`` on the MatMul/Gemm/LSTM nodes, and the result says so.
- ``dtype=fp16``: fp16 weights and compute, float32 inputs and outputs (onnxruntime's float16 converter).
- ``dtype=bf16``: refused with the reason: onnxruntime has no bf16 kernels for these layers.
"""

from __future__ import annotations

from pathlib import Path

from workbench.plugin import InputError

TORCH_DYNAMIC_OPS = ("MatMul", "Gemm", "LSTM", "Attention")

INT8_NOTE = ("backend=torch int8: torch.ao.quantization.quantize_dynamic is deprecated in this torch (successor: "
             "torchao) and its int8 Linear/LSTM modules cannot be exported to ONNX, where every variant is "
             "measured; the same dynamic int8 recipe for Linear/LSTM (MatMul, Gemm, LSTM nodes) was applied "
             "with onnxruntime.quantization.quantize_dynamic instead")


def has_dynamic_targets(path: Path) -> bool:
    """Whether the graph has any node the torch-style dynamic recipe quantizes (Linear, LSTM, attention)."""
    import onnx

    return any(n.op_type in TORCH_DYNAMIC_OPS for n in onnx.load(str(path), load_external_data=False).graph.node)


def to_fp16(src: Path, dst: Path) -> Path:
    """fp16 weights and activations inside, float32 at the model's input and output (so callers are unchanged)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
    return dst


def refuse_bf16() -> None:
    raise InputError("quantize: dtype=bf16 is not available: onnxruntime, which measures every variant, has no "
                     "bf16 kernels for these layers; use dtype=fp16 (GPU) or dtype=int8")
