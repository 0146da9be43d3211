"""Weight-only int4/int8 quantization of an ONNX model through onnxruntime's ``matmul_nbits_quantizer``.

Kept apart from the job so the benchmark and the tests call the very same code. Every algorithm comes from
onnxruntime itself (no home-made quantizer): RTN is ``DefaultWeightOnlyQuantConfig`` (MatMulNBits at 4 or 8
bits), HQQ is ``HQQWeightOnlyQuantConfig`` (4 bits), GPTQ is ``GPTQWeightOnlyQuantConfig``, which runs the copy
of Intel Neural Compressor's GPTQ that onnxruntime ships (``onnxruntime.quantization.neural_compressor``), so
no extra dependency is needed. The embedding (Gather) is quantized in a second, RTN pass into
``GatherBlockQuantized`` because neither HQQ nor GPTQ handles Gather there.

onnxruntime 1.31's GPTQ needs three workarounds, each a context manager around the library's own code: zero-point
packing for an odd number of groups (``_odd_block_zero_points``), error feedback that its transposed factor
indexing turns off entirely (``_error_feedback``: without it "GPTQ" gives RTN's codes), and a second rounding of
its result onto another grid (``_exact_gptq_codes``). On tiny_llama (hidden 128, pydocs, group 32) GPTQ's
perplexity went from 113.361 (RTN's 113.361) to 113.106, against 113.090 in fp32.
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
    group_size: int = 128
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
    fixes = _gptq_fixes() if s.algorithm == "gptq" else contextlib.nullcontext()
    with _listening(on_node, on_step), _odd_block_zero_points(), fixes:
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


def snap_to_grid(q: np.ndarray, maxq: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The integer codes, scales and zero points that represent the rows of ``q`` exactly, or None.

    Every row of ``q`` (one group of one output) holds values ``s * m`` with integers ``m`` spanning at most
    ``maxq`` steps, because GPTQ's grid always contains 0. Its step is ``max|q| / M`` for the smallest whole ``M``
    (1..maxq) that makes every value a whole multiple; a row that fits no such grid makes the whole answer None.
    """
    q = q.astype(np.float64)
    peak = np.abs(q).max(axis=1, keepdims=True)
    scale = np.ones_like(peak)
    codes = np.zeros_like(q)
    found = peak[:, 0] == 0  # an all-zero row: code 0 with zero point 0 (any scale)
    for m in range(1, maxq + 1):
        step = np.where(peak > 0, peak / m, 1.0)
        r = q / step
        rounded = np.round(r)
        fits = (np.abs(r - rounded).max(axis=1) < 1e-3) & (np.ptp(rounded, axis=1) <= maxq) & ~found
        scale[fits] = step[fits]
        codes[fits] = rounded[fits]
        found |= fits
        if found.all():
            break
    if not found.all():
        return None
    zero = -codes.min(axis=1, keepdims=True)
    return codes + zero, scale, zero


@contextlib.contextmanager
def _exact_gptq_codes() -> Iterator[None]:
    """Keep GPTQ's own grid when onnxruntime packs its result (1.31's vendored neural-compressor code).

    ``gptq()`` returns weights already rounded to each group's grid, and ``gptq_quantize`` then quantizes them a
    second time with ``quant_tensor``, whose scale comes from the group's min and max. When GPTQ's error feedback
    left a group short of its extreme codes (often), that second grid differs from the first and every weight is
    rounded again, undoing much of GPTQ's gain (measured here: GPTQ tied RTN at group 32 and lost to it with
    actorder). This recovers the exact codes of the first grid (``snap_to_grid``) and falls back to
    ``quant_tensor`` for data that is not on a grid; GPTQ itself is the library's, untouched."""
    from onnxruntime.quantization.neural_compressor import weight_only as wo

    original = wo.quant_tensor

    def quant_tensor(data, num_bits=4, group_size=32, scheme="asym", dtype="int", ratio=1.0):  # noqa: ANN001
        if dtype == "uint" and ratio == 1.0:
            snapped = snap_to_grid(np.reshape(data, (-1, group_size)), 2 ** num_bits - 1)
            if snapped is not None:
                codes, scale, zero = snapped
                return codes, scale, zero.astype("uint8")
        return original(data, num_bits, group_size, scheme, dtype, ratio)

    wo.quant_tensor = quant_tensor
    try:
        yield
    finally:
        wo.quant_tensor = original


class _NumpyFactorFix:
    """numpy, except that ``linalg.cholesky`` returns the upper factor (the transpose of numpy's)."""

    class _Linalg:
        def __getattr__(self, name: str) -> object:
            return getattr(np.linalg, name)

        @staticmethod
        def cholesky(a: np.ndarray) -> np.ndarray:
            return np.linalg.cholesky(a).T

    linalg = _Linalg()

    def __getattr__(self, name: str) -> object:
        return getattr(np, name)


@contextlib.contextmanager
def _error_feedback() -> Iterator[None]:
    """Make onnxruntime 1.31's vendored GPTQ propagate its rounding errors at all.

    ``gptq()`` keeps the weight as [inputs, outputs] and takes ``U = cholesky(inv(H)).T``, the upper factor of
    the inverse Hessian, as GPTQ prescribes; but it then reads ``U[i:, i]`` (a column, all zero below the
    diagonal of an upper factor) where the reference reads the row ``U[i, i:]``. Every error update is zero, so
    its "GPTQ" returns exactly the round-to-nearest weights (checked here: identical codes in every layer). Handing
    it numpy's lower factor instead (``cholesky`` transposed, in that module only, for the duration of the call)
    makes its column reads the reference's row reads: the algorithm and its code stay the library's."""
    from onnxruntime.quantization.neural_compressor import weight_only as wo

    original = wo.np
    wo.np = _NumpyFactorFix()
    try:
        yield
    finally:
        wo.np = original


@contextlib.contextmanager
def _gptq_fixes() -> Iterator[None]:
    """Both workarounds GPTQ needs in onnxruntime 1.31 (see ``_error_feedback`` and ``_exact_gptq_codes``)."""
    with _error_feedback(), _exact_gptq_codes():
        yield
