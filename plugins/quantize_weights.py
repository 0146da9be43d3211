"""The ``quantize_weights`` job: int4/int8 weight-only quantization of a language model, run by onnxruntime.

Every Linear (the lm head included) becomes a MatMulNBits node and, by default, the embedding a
GatherBlockQuantized one, through onnxruntime's ``matmul_nbits_quantizer`` (RTN, HQQ, or GPTQ calibrated on the
train split). The variant is that ONNX file: perplexity, size and prefill latency are measured on it by the usual
variant measurement, paired with the fp32 parent. Weight-only int4 pays on a CPU because the prefill of a
language model is bound by reading weights; ``accuracy_level=4`` (int8 activations inside MatMulNBits) is what
makes it faster than fp32 here, so it is the default.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np

from workbench.plugin import (
    InputError,
    Job,
    JobContext,
    JobFailed,
    OnnxModel,
    Param,
    is_onnx,
    task_of,
)
from workbench_plugins import _lm_quant as lq


class QuantizeWeightsJob(Job):
    name = "quantize_weights"
    title = "Quantize weights (int4/int8)"
    description = ("Weight-only int4/int8 quantization of a language model's Linear layers and embedding "
                   "(RTN, HQQ or calibrated GPTQ) into onnxruntime's MatMulNBits: a smaller file, a faster CPU prefill.")

    bits: int = Param(4, min=2, max=8, help="weight bits: 4 (or 8 with rtn)")
    algorithm: Literal["rtn", "gptq", "awq", "hqq"] = Param(
        "rtn", help="rtn: round to nearest (fast, no data); gptq: error-compensating, calibrated on train sequences; "
        "hqq: half-quadratic, no data; awq: not available on CPU")
    group_size: int = Param(128, min=16, max=4096, help="weights sharing one scale (a power of two >= 16); 128, the "
                            "usual choice for GPTQ/AWQ, is the fastest here, 32 the most accurate")
    calibration: int = Param(128, min=0, max=100000, help="train-split sequences for gptq calibration (0: none)")
    symmetric: bool = Param(False, help="symmetric scales (no zero points); asymmetric is more accurate")
    accuracy_level: int = Param(4, min=0, max=4, advanced=True, help="MatMulNBits compute: 4 = int8 activations "
                                "(fastest on CPU), 1 = fp32, 0 = unset")
    embeddings: bool = Param(True, help="also quantize the token embedding (GatherBlockQuantized)")
    percdamp: float = Param(0.01, min=0.0, max=1.0, advanced=True, help="gptq: Hessian dampening")
    require_speedup: bool = Param(False, help="fail instead of marking the variant when int4/int8 is not faster here")
    actorder: bool = Param(False, advanced=True, help="gptq: quantize columns by decreasing Hessian diagonal "
                           "(onnxruntime then packs groups in the original order: worse here)")

    def run(self, ctx: JobContext) -> OnnxModel:
        info = ctx.data.info
        if getattr(info, "task", "classification") != "causal_lm":
            raise InputError("quantize_weights works on language models only (use quantize for classifiers)")
        settings = lq.Settings(bits=self.bits, algorithm=self.algorithm, group_size=self.group_size,
                               symmetric=self.symmetric, accuracy_level=self.accuracy_level,
                               embeddings=self.embeddings, percdamp=self.percdamp, actorder=self.actorder)
        reason = lq.refusal(settings, self.calibration)
        if reason:
            raise InputError(f"quantize_weights: {reason}")
        work = Path(ctx.workdir)
        work.mkdir(parents=True, exist_ok=True)
        fp32 = self._fp32_onnx(ctx, work)
        ctx.check_cancelled()
        found = lq.quantizable(fp32)
        if not found["matmul"]:
            raise InputError("quantize_weights: the model has no Linear layer (MatMul with a constant weight) to quantize")
        calib = self._calibration(ctx, fp32) if self.algorithm in lq.NEEDS_CALIBRATION else []
        ctx.check_cancelled()
        total = found["matmul"] + (found["gather"] if self.embeddings else 0)
        done = [0]

        def on_node(name: str) -> None:
            ctx.check_cancelled()
            done[0] += 1
            ctx.progress(min(done[0], total), total, text=f"quantizing {name}")

        def on_step(i: int, n: int) -> None:
            ctx.check_cancelled()
            ctx.progress(i, n, text=f"gptq: layer group {i}/{n}")
            ctx.log(step=i, gptq_layer_groups_done=i)

        ctx.info(f"quantize_weights: {self.algorithm} int{self.bits}, group {self.group_size}, "
                 f"{found['matmul']} Linear layers" + (f", {len(calib)} calibration batches" if calib else ""))
        out = work / f"{self.algorithm}_int{self.bits}.onnx"
        try:
            done_info = lq.quantize(fp32, out, settings, calib, on_node=on_node, on_step=on_step)
        except (InputError, JobFailed):
            raise
        except Exception as exc:
            if type(exc).__name__ == "Cancelled":
                raise
            text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise JobFailed(f"quantize_weights: onnxruntime's quantizer failed ({type(exc).__name__}: {text})") from None
        ctx.check_cancelled()
        ops = done_info["ops"]
        nbits = int(ops.get("MatMulNBits", 0))
        if nbits == 0:
            raise JobFailed("quantize_weights: onnxruntime left every Linear layer float (no MatMulNBits node)")
        fp_size, q_size = fp32.stat().st_size, out.stat().st_size
        ctx.result.update(algorithm=self.algorithm, bits=self.bits, group_size=self.group_size,
                          symmetric=self.symmetric, accuracy_level=self.accuracy_level,
                          calibration_sequences=int(sum(len(b) for b in calib)),
                          linear_layers=found["matmul"], quantized_linear=nbits,
                          embedding=done_info["embedding"],
                          gather_block_quantized=int(ops.get("GatherBlockQuantized", 0)),
                          fp32_size_bytes=fp_size, size_bytes=q_size, size_ratio=round(q_size / fp_size, 4),
                          library="onnxruntime.quantization.matmul_nbits_quantizer")
        ctx.info(f"quantize_weights: {nbits} MatMulNBits, embedding {done_info['embedding']}; "
                 f"{q_size / fp_size:.2f}x the fp32 file")
        ctx.mark(f"int{self.bits} {self.algorithm} g{self.group_size}")
        self._verdict(ctx, fp32, out)
        return OnnxModel(out, ctx.device)

    def _verdict(self, ctx: JobContext, fp32: Path, out: Path) -> None:
        """Time the quantized prefill against fp32, paired, and say plainly whether it pays on this machine.

        Weight-only int4 is faster only where reading the weights dominates (large layers); on a small model the
        dequantization costs more than it saves, and the user must not mistake a smaller file for a faster one."""
        from workbench.core.variants import measure as m
        from workbench.core.variants import timing

        task = task_of(ctx.data.info)
        batch = task.bench_input(ctx.data, ctx.bench_batch)
        ctx.progress(0, 1, "timing the quantized prefill against fp32")
        _, _, speedup = timing.compare(m.onnx_runner(out, batch, ctx.device), m.onnx_runner(fp32, batch, ctx.device),
                                       "fp32", timing.TimingBudget(seconds=1.0), ctx.check_cancelled)
        low, high = speedup.ci
        ctx.result.update(speedup=round(speedup.ratio, 3), speedup_ci=[round(low, 3), round(high, 3)])
        what = f"int{self.bits} weights ({self.algorithm})"
        if speedup.significant and speedup.ratio > 1.0:
            ctx.result["note"] = (f"{what}: prefill {speedup.ratio:.2f}x as fast as fp32 on {ctx.device} "
                                  f"(95% CI {low:.2f}-{high:.2f})")
            ctx.info("quantize_weights: " + ctx.result["note"])
            return
        if speedup.significant:
            text = (f"{what} make the prefill {1 / speedup.ratio:.2f}x slower than fp32 on {ctx.device} "
                    f"(95% CI {1 / high:.2f}-{1 / low:.2f}x): the layers are too small for weight reads to dominate; "
                    "kept for its size")
            mark = "slower than fp32"
        else:
            text = (f"{what}: prefill {speedup.ratio:.2f}x fp32's speed on {ctx.device}, not distinguishable from "
                    f"it (95% CI {low:.2f}-{high:.2f}); kept for its size")
            mark = "not faster than fp32"
        if self.require_speedup:
            raise JobFailed(f"quantize_weights: {text} (require_speedup=true)")
        ctx.result["note"] = text
        ctx.mark(mark)
        ctx.warn("quantize_weights: " + text)

    def _fp32_onnx(self, ctx: JobContext, work: Path) -> Path:
        """The parent's ONNX prefill (exported at the latency batch's fixed shape, verified) or the ONNX input."""
        if is_onnx(ctx.model):
            return Path(ctx.model.path)
        task = task_of(ctx.data.info)
        example = task.bench_input(ctx.data, ctx.bench_batch)
        ctx.progress(0, 1, "exporting fp32 to ONNX")
        result = task.export_onnx(ctx.model, example, work / "fp32.onnx", verify_batches=[example])
        return Path(result.path)

    def _calibration(self, ctx: JobContext, fp32: Path) -> list[np.ndarray]:
        """``calibration`` train sequences in batches of the ONNX file's fixed batch size (its input shape)."""
        import onnx

        dims = onnx.load(str(fp32), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        fixed = dims[0].dim_value if dims and dims[0].dim_value > 0 else 0
        batch = fixed or min(16, self.calibration)
        wanted = math.ceil(self.calibration / batch)
        out: list[np.ndarray] = []
        for x, _ in ctx.data.loader("train", batch_size=batch, shuffle=False):
            ctx.check_cancelled()
            arr = x.cpu().numpy().astype(np.int64)
            if arr.shape[0] < batch:
                break  # a short last batch does not fit a fixed-shape graph
            out.append(arr)
            if len(out) >= wanted:
                break
        if not out:
            raise InputError("quantize_weights: the train split has no calibration sequence")
        return out
