"""Weight-only int4/int8 quantization of an ONNX model through onnxruntime's ``matmul_nbits_quantizer``.

Kept apart from the job so the benchmark and the tests call the very same code. Every algorithm comes from
onnxruntime itself (no home-made quantizer): RTN is ``DefaultWeightOnlyQuantConfig`` (MatMulNBits at 4 or 8
bits), HQQ is ``HQQWeightOnlyQuantConfig`` (4 bits), GPTQ is ``GPTQWeightOnlyQuantConfig``, which runs the copy
of Intel Neural Compressor's GPTQ that onnxruntime ships (``onnxruntime.quantization.neural_compressor``), so
no extra dependency is needed. The embedding (Gather) is quantized in a second, RTN pass into
``GatherBlockQuantized`` because neither HQQ nor GPTQ handles Gather there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ALGORITHMS = ("rtn", "gptq", "awq", "hqq")
BITS = {"rtn": (4, 8), "gptq": (4,), "hqq": (4,), "awq": ()}
NEEDS_CALIBRATION = ("gptq", "awq")
_LOGGER = "onnxruntime.quantization.matmul_nbits_quantizer"
_START = re.compile(r"start to quantize (\S+)")


@dataclass(frozen=True)
class Settings:
    """One weight-only quantization: what the job's parameters ask for."""

    bits: int = 4
    algorithm: str = "rtn"
    group_size: int = 32
    symmetric: bool = False
    accuracy_level: int = 4
    embeddings: bool = True
    percdamp: float = 0.01
    actorder: bool = False


def refusal(settings: Settings, calibration: int) -> str | None:
    """The one-line reason these settings cannot run, or None."""
    s = settings
    if s.algorithm not in ALGORITHMS:
        return f"algorithm must be one of {', '.join(ALGORITHMS)}"
    if s.algorithm == "awq":
        return ("algorithm=awq is not available on this CPU: onnxruntime's AWQ (nvidia_awq) needs CUDA and "
                "nvidia-modelopt; use gptq (calibrated) or hqq/rtn")
    if s.bits not in BITS[s.algorithm]:
        allowed = " or ".join(str(b) for b in BITS[s.algorithm])
        return f"algorithm={s.algorithm} supports bits={allowed} in onnxruntime's MatMulNBits, not bits={s.bits}"
    if s.group_size < 16 or s.group_size & (s.group_size - 1):
        return f"group_size must be a power of two of at least 16 (16, 32, 64, 128, 256), not {s.group_size}"
    if s.algorithm in NEEDS_CALIBRATION and calibration <= 0:
        return f"algorithm={s.algorithm} needs calibration data: set calibration to a number of train sequences (e.g. 128)"
    return None


def quantizable(path: Path | str) -> dict[str, int]:
    """How many MatMul nodes with a constant 2-D weight (the Linear layers) and Gathers of a constant table."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    consts = {i.name: len(i.dims) for i in model.graph.initializer}
    matmul = sum(1 for n in model.graph.node if n.op_type == "MatMul" and len(n.input) > 1
                 and consts.get(n.input[1]) == 2)
    gather = sum(1 for n in model.graph.node if n.op_type == "Gather" and consts.get(n.input[0]) == 2)
    return {"matmul": matmul, "gather": gather}


def op_counts(path: Path | str) -> dict[str, int]:
    """Node counts by op type (the quantized ops are MatMulNBits and GatherBlockQuantized)."""
    import onnx

    return dict(Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node))


class _Progress(logging.Handler):
    """Turns the quantizer's 'start to quantize NODE' lines into a callback (and so a place to cancel)."""

    def __init__(self, on_node: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.on_node = on_node

    def emit(self, record: logging.LogRecord) -> None:
        match = _START.match(record.getMessage())
        if match:
            self.on_node(match.group(1))  # may raise Cancelled: it propagates out of logger.info


@contextlib.contextmanager
def _listening(on_node: Callable[[str], None] | None, on_step: Callable[[int, int], None] | None) -> Iterator[None]:
    logger = logging.getLogger(_LOGGER)
    level, propagate = logger.level, logger.propagate
    handler = _Progress(on_node or (lambda name: None))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the quantizer logs every node at INFO: keep it off the user's terminal
    from onnxruntime.quantization.neural_compressor import weight_only

    bar = weight_only.simple_progress_bar
    if on_step is not None:
        weight_only.simple_progress_bar = lambda total, i: on_step(i, total)
    else:
        weight_only.simple_progress_bar = lambda total, i: None
    try:
        yield
    finally:
        weight_only.simple_progress_bar = bar
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


class _Reader:
    """A CalibrationDataReader over fixed int64 batches (GPTQ deep-copies and iterates it)."""

    def __init__(self, name: str, batches: Sequence[np.ndarray]) -> None:
        self.name, self.batches, self._i = name, list(batches), 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self.batches):
            return None
        self._i += 1
        return {self.name: self.batches[self._i - 1]}

    def rewind(self) -> None:
        self._i = 0

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter({self.name: b} for b in self.batches)


def quantize(src: Path | str, dst: Path | str, settings: Settings, calibration: Sequence[np.ndarray] = (),
             on_node: Callable[[str], None] | None = None,
             on_step: Callable[[int, int], None] | None = None) -> dict[str, object]:
    """Write ``src`` with weight-only quantized Linear layers (and embedding) to ``dst``; returns what was done.

    ``on_node(name)`` is called before each MatMul/Gather is quantized (RTN/HQQ), ``on_step(done, total)`` per
    GPTQ layer group; either may raise to stop.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        GPTQWeightOnlyQuantConfig,
        HQQWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    s = settings
    reason = refusal(s, len(calibration))
    if reason:
        raise ValueError(reason)
    model = onnx.load(str(src))
    level = s.accuracy_level or None
    if s.algorithm == "rtn":
        config = DefaultWeightOnlyQuantConfig(block_size=s.group_size, is_symmetric=s.symmetric, accuracy_level=level,
                                              bits=s.bits, op_types_to_quantize=("MatMul",))
    elif s.algorithm == "hqq":
        config = HQQWeightOnlyQuantConfig(block_size=s.group_size, bits=s.bits, op_types_to_quantize=("MatMul",))
    else:
        reader_cls = type("Reader", (_Reader, CalibrationDataReader), {})
        name = next(i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer})
        config = GPTQWeightOnlyQuantConfig(calibration_data_reader=reader_cls(name, calibration),
                                           percdamp=s.percdamp, block_size=128, actorder=s.actorder)
    # GPTQ takes its group size and scheme from the quantizer's own arguments (block_size, is_symmetric)
    quantizer = MatMulNBitsQuantizer(model, bits=s.bits, block_size=s.group_size, is_symmetric=s.symmetric,
                                     accuracy_level=level, algo_config=config)
    with _listening(on_node, on_step), _odd_block_zero_points():
        quantizer.process()
        out = quantizer.model.model
        embedding_note = "kept float (embeddings=false)"
        if s.embeddings and quantizable_model(out)["gather"]:
            out, embedding_note = _quantize_gather(out, s, on_node)
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    onnx.save(out, str(tmp))
    os.replace(tmp, dst)
    return {"embedding": embedding_note, "ops": op_counts(dst)}


def quantizable_model(model: object) -> dict[str, int]:
    """``quantizable`` on an in-memory ModelProto."""
    consts = {i.name: len(i.dims) for i in model.graph.initializer}  # type: ignore[attr-defined]
    nodes = model.graph.node  # type: ignore[attr-defined]
    return {"matmul": sum(1 for n in nodes if n.op_type == "MatMul" and len(n.input) > 1 and consts.get(n.input[1]) == 2),
            "gather": sum(1 for n in nodes if n.op_type == "Gather" and consts.get(n.input[0]) == 2)}


def _quantize_gather(model: object, s: Settings, on_node: Callable[[str], None] | None) -> tuple[object, str]:
    """The embedding table into GatherBlockQuantized (RTN, blocks along the hidden axis); float if ORT refuses."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    bits = s.bits if s.bits in (4, 8) else 4
    config = DefaultWeightOnlyQuantConfig(block_size=s.group_size, is_symmetric=s.symmetric, bits=bits,
                                          op_types_to_quantize=("Gather",), quant_axes=(("Gather", 1),))
    try:
        quantizer = MatMulNBitsQuantizer(onnx.ModelProto.FromString(model.SerializeToString()),  # type: ignore[attr-defined]
                                         bits=bits, block_size=s.group_size, algo_config=config)
        quantizer.process()
        out = quantizer.model.model
        options = ort.SessionOptions()
        options.log_severity_level = 3
        ort.InferenceSession(out.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - the embedding is an extra: keep it float and say why
        text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        return model, f"kept float: onnxruntime could not quantize the Gather ({type(exc).__name__}: {text})"
    return out, f"GatherBlockQuantized, {bits}-bit RTN, block {s.group_size}"


@contextlib.contextmanager
def _odd_block_zero_points() -> Iterator[None]:
    """Work around a packing bug in the neural-compressor GPTQ code onnxruntime ships (1.31): with asymmetric
    4-bit weights it packs the zero points of all rows as one stream, so a layer whose input size gives an odd
    number of groups (352 inputs, group 32: 11 groups) fails with "cannot reshape array of size 704 into shape
    (128,newaxis)". MatMulNBits wants each row's zero points packed on their own, padded to a whole byte, which
    is what this does; the GPTQ itself is the library's, untouched."""
    import onnx
    from onnxruntime.quantization.neural_compressor import weight_only as wo

    original = wo.make_matmul_weight_only_node

    def make_node(node, weight_shape, num_bits, group_size, k_blocks, q_weight, scale, zero_point,  # noqa: ANN001
                  accuracy_level=0):  # noqa: ANN001
        if zero_point is None or num_bits != 4 or k_blocks % 2 == 0:
            return original(node, weight_shape, num_bits, group_size, k_blocks, q_weight, scale, zero_point,
                            accuracy_level)
        q_node, inits = original(node, weight_shape, num_bits, group_size, k_blocks, q_weight, scale, None,
                                 accuracy_level)
        zp = np.asarray(zero_point).astype(np.uint8).reshape(-1, k_blocks)
        zp = np.concatenate([zp, np.full((zp.shape[0], 1), 8, np.uint8)], axis=1)  # pad to an even count
        packed = (zp[:, ::2] | (zp[:, 1::2] << 4)).astype(np.uint8)
        tensor = onnx.helper.make_tensor(node.input[1] + "_zp", onnx.TensorProto.UINT8, packed.shape,
                                         packed.tobytes(), raw=True)
        q_node.input.append(tensor.name)
        return q_node, [*inits, tensor]

    wo.make_matmul_weight_only_node = make_node
    try:
        yield
    finally:
        wo.make_matmul_weight_only_node = original
