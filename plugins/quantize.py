"""The ``quantize`` job: int8 through ONNX Runtime that is measured, chosen, and never slower by surprise.

Format and types decide whether int8 pays on a CPU (QDQ with int8 activations can be slower than fp32 while
uint8 activations are 3x faster), so ``format=auto`` quantizes a few candidates, times each one on the job's
device with real test inputs, checks its validation accuracy, and keeps the fastest within
``max_accuracy_drop``. Every candidate is recorded in ``result["candidates"]``; when no candidate beats fp32
the result says so and the variant is marked "slower than fp32" (``require_speedup=true`` fails instead).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from workbench.plugin import (
    Cancelled,
    InputError,
    Job,
    JobContext,
    JobFailed,
    OnnxModel,
    Param,
    ensure_supported,
    export_onnx,
    is_onnx,
)
from workbench_plugins import _quant_ort as qo
from workbench_plugins._quant_ort import Candidate
from workbench_plugins._quant_sensitivity import node_sensitivity, worst_nodes
from workbench_plugins._quant_torch import (
    INT8_NOTE,
    TORCH_DYNAMIC_OPS,
    has_dynamic_targets,
    refuse_bf16,
    to_fp16,
)

# Preference order when ``format=auto``: what usually wins on x86 CPUs first (uint8 activations, QDQ).
_STATIC_ORDER = [("qdq", "uint8", True), ("qdq", "uint8", False), ("qoperator", "uint8", False),
                 ("qdq", "int8", True), ("qoperator", "uint8", True), ("qdq", "int8", False),
                 ("qoperator", "int8", False), ("qoperator", "int8", True)]
_EXCLUDE_STEPS = (1, 2, 4, 8, 16)
_MARGIN = 1.1  # below this speedup, a single timing on a shared machine cannot tell faster from slower


class QuantizeJob(Job):
    name = "quantize"
    title = "Quantize (int8)"
    description = ("Quantize to int8 with ONNX Runtime (static or dynamic), trying formats and types and keeping "
                   "the fastest that stays within the accuracy budget; says so when int8 is not faster here.")

    backend: Literal["onnxruntime", "torch"] = Param("onnxruntime", help="onnxruntime: int8 static/dynamic; "
                                                     "torch: dynamic int8 Linear/LSTM or fp16 weights")
    mode: Literal["auto", "static", "dynamic"] = Param(
        "auto", help="static: calibrated activations (images); dynamic: activations quantized on the fly "
        "(text, LSTM, transformers); auto picks dynamic for token inputs")
    format: Literal["auto", "qdq", "qoperator"] = Param("auto", help="auto measures the candidates and keeps "
                                                        "the fastest within max_accuracy_drop")
    activation_type: Literal["auto", "uint8", "int8"] = Param("auto", help="activation type (static mode)")
    weight_type: Literal["auto", "int8", "uint8"] = Param("auto", help="weight type (auto: int8)")
    per_channel: Literal["auto", "on", "off"] = Param("auto", help="per-channel weight scales")
    calibrate: Literal["minmax", "entropy", "percentile"] = Param("minmax", help="calibration method")
    calibration_batches: int = Param(4, min=1, max=1000, help="train-split batches used to calibrate")
    max_candidates: int = Param(4, min=1, max=8, advanced=True, help="how many format/type candidates auto tries")
    max_accuracy_drop: float = Param(0.01, min=0.0, max=1.0, help="largest validation accuracy drop allowed "
                                     "(0.01 = 1 point)")
    exclude: list[str] = Param(["auto"], help="auto: keep the most sensitive nodes float until the accuracy "
                               "target is met; none; or node names to keep float")
    sensitivity: bool = Param(True, help="measure each node's quantization error (SQNR, static mode)")
    require_speedup: bool = Param(False, help="fail instead of marking the variant when int8 is not faster")
    dtype: Literal["int8", "fp16", "bf16"] = Param("int8", help="backend=torch: int8 (dynamic) or fp16/bf16 weights")

    def run(self, ctx: JobContext) -> OnnxModel:
        ensure_supported(self.name, ctx.data.info)  # a language model: one line saying why not
        work = Path(ctx.workdir)
        fp32 = self._fp32_onnx(ctx, work)
        ctx.check_cancelled()
        if self.backend == "torch" and self.dtype != "int8":
            return self._float16(ctx, fp32, work)
        if self.backend == "onnxruntime" and self.dtype != "int8":
            raise InputError("quantize: dtype=fp16|bf16 needs backend=torch")
        pre, note = qo.preprocess(fp32, work / "pre.onnx")
        ctx.info(f"quantize: {note}")
        mode = self._mode(ctx)
        bench = ctx.data.example_batch(ctx.bench_batch).cpu().numpy()
        ctx.progress(0, 1, "measuring fp32")
        base_ms = qo.latency_ms(OnnxModel(fp32, ctx.device).session(), bench)
        base_acc = ctx.accuracy(OnnxModel(fp32, ctx.device), "val")["accuracy"]
        ctx.result.update(mode=mode, preprocess=note, fp32={"latency_ms": round(base_ms, 3),
                          "val_accuracy": round(base_acc, 4), "size_bytes": qo.file_size(fp32)})
        calib = self._calibration(ctx, mode)
        op_types = list(TORCH_DYNAMIC_OPS) if self.backend == "torch" else None
        if self.backend == "torch":
            if not has_dynamic_targets(pre):
                raise InputError("quantize: backend=torch int8 quantizes Linear/LSTM layers; this model has none "
                                 "(use backend=onnxruntime)")
            ctx.result["note_backend"] = INT8_NOTE
            ctx.info(INT8_NOTE)
        manual = [n for n in self.exclude if n.lower() not in ("auto", "none")]
        self._check_names(pre, manual)
        runs: list[dict[str, Any]] = []

        def measure(cand: Candidate) -> dict[str, Any]:
            ctx.check_cancelled()
            path = work / f"cand{len(runs)}.onnx"
            ctx.progress(len(runs), len(runs) + 1, f"quantizing: {cand.label}")
            try:
                qo.quantize(pre, path, cand, calib, self.calibrate, op_types)
                sess = OnnxModel(path, ctx.device).session()
                ms = qo.latency_ms(sess, bench, give_up_above_ms=3 * base_ms)
                acc = ctx.accuracy(OnnxModel(path, ctx.device), "val")["accuracy"]
            except (Cancelled, InputError, JobFailed):
                raise
            except Exception as exc:  # noqa: BLE001 - one failing candidate is a row, not the job's end
                row = {"candidate": cand.label, "error": f"{type(exc).__name__}: {str(exc)[:160]}"}
                runs.append(row)
                return row
            row = {"candidate": cand.label, "format": cand.fmt, "activation_type": cand.activation_type,
                   "weight_type": cand.weight_type, "per_channel": cand.per_channel, "excluded": list(cand.exclude),
                   "latency_ms": round(ms, 3), "speedup": round(base_ms / ms, 3), "val_accuracy": round(acc, 4),
                   "size_bytes": qo.file_size(path), "within_target": acc >= base_acc - self.max_accuracy_drop,
                   "path": str(path), "_cand": cand}
            runs.append(row)
            ctx.info(f"quantize: {cand.label}: {ms:.1f} ms ({base_ms / ms:.2f}x fp32), val accuracy {acc:.4f}")
            return row

        for cand in self._candidates(mode, tuple(manual)):
            measure(cand)
        sens: list[dict] | None = None
        if mode == "static" and (self.sensitivity or "auto" in self.exclude):
            sens = self._sensitivity(pre, calib, work, runs)
            ctx.result["node_sensitivity"] = sens[:50]
        best = self._best(runs)
        if best is None and "auto" in [e.lower() for e in self.exclude]:
            best = self._auto_exclude(runs, sens, pre, mode, measure, ctx)
        ctx.result["candidates"] = [{k: v for k, v in r.items() if not k.startswith("_") and k != "path"}
                                    for r in runs]
        if best is None:
            ok = [r for r in runs if "val_accuracy" in r]
            top = max(ok, key=lambda r: r["val_accuracy"]) if ok else None
            detail = f"best {top['candidate']} at {top['val_accuracy']:.4f}" if top else "every candidate failed"
            raise JobFailed(f"quantize: no int8 candidate stays within {self.max_accuracy_drop:g} of fp32's "
                            f"validation accuracy {base_acc:.4f} ({detail}); raise max_accuracy_drop or exclude nodes")
        self._verdict(ctx, best, fp32, bench)
        return OnnxModel(best["path"], ctx.device)

    # -- steps ------------------------------------------------------------------------------------------------
    def _fp32_onnx(self, ctx: JobContext, work: Path) -> Path:
        if is_onnx(ctx.model):
            return Path(ctx.model.path)
        example = ctx.data.example_batch(ctx.bench_batch)
        ctx.progress(0, 1, "exporting fp32 to ONNX")
        result = export_onnx(ctx.model, example[:2], work / "fp32.onnx", verify_batches=[example])
        ctx.result["exporter"] = result.exporter
        return result.path

    def _mode(self, ctx: JobContext) -> str:
        if self.backend == "torch":
            return "dynamic"
        if self.mode != "auto":
            return self.mode
        info = ctx.data.info
        return "dynamic" if info.kind == "text" or "int" in str(info.input_dtype) else "static"

    def _calibration(self, ctx: JobContext, mode: str) -> list[np.ndarray]:
        if mode != "static":
            return []
        batches = []
        for x, _ in ctx.data.loader("train", shuffle=False):
            batches.append(x.cpu().numpy().astype(np.int64 if not torch.is_floating_point(x) else np.float32))
            if len(batches) >= self.calibration_batches:
                break
        return batches

    def _candidates(self, mode: str, exclude: tuple[str, ...]) -> list[Candidate]:
        weights = ["int8", "uint8"] if self.weight_type == "auto" else [self.weight_type]
        pcs = {"auto": [True, False], "on": [True], "off": [False]}[self.per_channel]
        if mode == "dynamic":
            combos = itertools.product(weights, pcs)
            cands = [Candidate("dynamic", "qoperator", "uint8", w, pc, exclude) for w, pc in combos]
            cands.sort(key=lambda c: (c.weight_type != "int8", c.per_channel))
            return cands[: min(self.max_candidates, 3)]
        wanted = []
        for fmt, act, pc in _STATIC_ORDER:
            if self.format != "auto" and fmt != self.format:
                continue
            if self.activation_type != "auto" and act != self.activation_type:
                continue
            if self.activation_type == "auto" and fmt == "qoperator" and act == "int8":
                continue  # onnxruntime itself warns this pairing is slow on x64; only tried when asked for
            if pc not in pcs:
                continue
            wanted.append((fmt, act, pc))
        w = weights[0]
        return [Candidate("static", f, a, w, pc, exclude) for f, a, pc in wanted][: self.max_candidates]

    def _sensitivity(self, pre: Path, calib: list[np.ndarray], work: Path, runs: list[dict]) -> list[dict]:
        """SQNR per node on one calibration batch (at most 32 inputs), from a QDQ build of the first candidate."""
        ref = next((r["_cand"] for r in runs if "_cand" in r), None)
        cand = Candidate("static", "qdq", ref.activation_type if ref else "uint8", ref.weight_type if ref else "int8",
                         ref.per_channel if ref else True)
        qdq = work / "sens_model.onnx"
        qo.quantize(pre, qdq, cand, calib, self.calibrate)
        return node_sensitivity(pre, qdq, [calib[0][:32]], work)

    def _best(self, runs: list[dict]) -> dict | None:
        ok = [r for r in runs if r.get("within_target")]
        return min(ok, key=lambda r: r["latency_ms"]) if ok else None

    def _auto_exclude(self, runs: list[dict], sens: list[dict] | None, pre: Path, mode: str, measure: Any,
                      ctx: JobContext) -> dict | None:
        """Keep the most sensitive nodes float (1, 2, 4, ... of them) on the most accurate candidate."""
        ok = [r for r in runs if "_cand" in r]
        if not ok:
            return None
        base = max(ok, key=lambda r: r["val_accuracy"])["_cand"]
        if mode != "static" or not sens:
            ranking = self._dynamic_ranking(pre)
        else:
            ranking = [r["node"] for r in sens]
        for count in _EXCLUDE_STEPS:
            names = worst_nodes([{"node": n} for n in ranking], count)
            if len(names) < count and count > 1:
                break
            cand = Candidate(base.mode, base.fmt, base.activation_type, base.weight_type, base.per_channel,
                             tuple(dict.fromkeys(base.exclude + tuple(names))))
            ctx.info(f"quantize: keeping {len(names)} sensitive node(s) float: {', '.join(names)}")
            row = measure(cand)
            if row.get("within_target"):
                return row
        return None

    @staticmethod
    def _dynamic_ranking(pre: Path) -> list[str]:
        """Dynamic mode has no QDQ pairs to score: exclude the quantizable nodes from the output backwards."""
        import onnx

        nodes = onnx.load(str(pre), load_external_data=False).graph.node
        return [n.name for n in reversed(nodes) if n.op_type in ("MatMul", "Gemm", "Conv", "LSTM", "Gather")]

    @staticmethod
    def _check_names(pre: Path, names: list[str]) -> None:
        if not names:
            return
        import onnx

        known = {n.name for n in onnx.load(str(pre), load_external_data=False).graph.node}
        missing = [n for n in names if n not in known]
        if missing:
            sample = ", ".join(sorted(known)[:8])
            raise InputError(f"quantize: exclude: no node named {missing[0]!r} (nodes are named like {sample})")

    def _verdict(self, ctx: JobContext, best: dict, fp32: Path, bench: np.ndarray) -> None:
        """Time fp32 and the chosen int8 back to back, then say plainly whether int8 pays here."""
        fp_sess, q_sess = OnnxModel(fp32, ctx.device).session(), OnnxModel(best["path"], ctx.device).session()
        fp_ms = min(qo.latency_ms(fp_sess, bench), qo.latency_ms(fp_sess, bench))
        q_ms = max(qo.latency_ms(q_sess, bench), qo.latency_ms(q_sess, bench))
        speedup = fp_ms / q_ms
        ctx.result.update(chosen=best["candidate"], format=best.get("format"), excluded=best.get("excluded", []),
                          speedup=round(speedup, 3), latency_ms=round(q_ms, 3), fp32_latency_ms=round(fp_ms, 3))
        if speedup >= _MARGIN:
            ctx.result["note"] = f"{best['candidate']} is {speedup:.2f}x faster than fp32 on {ctx.device}"
            ctx.info("quantize: " + ctx.result["note"])
            return
        if speedup >= 1.0:
            text = (f"int8 ({best['candidate']}) is only {speedup:.2f}x as fast as fp32 on {ctx.device}: within "
                    f"timing noise, it may be slower than fp32 here")
        else:
            text = (f"no int8 candidate is faster than fp32 on {ctx.device}: the best, {best['candidate']}, is "
                    f"{1 / speedup:.2f}x slower than fp32 ({q_ms:.1f} ms vs {fp_ms:.1f} ms); kept for its size")
        if self.require_speedup:
            raise JobFailed(f"quantize: {text} (require_speedup=true)")
        ctx.result["note"] = text
        ctx.mark("slower than fp32" if speedup < 1.0 else "not clearly faster than fp32 (may be slower)")
        ctx.warn("quantize: " + text)

    def _float16(self, ctx: JobContext, fp32: Path, work: Path) -> OnnxModel:
        if self.dtype == "bf16":
            refuse_bf16()
        path = to_fp16(fp32, work / "fp16.onnx")
        model = OnnxModel(path, ctx.device)
        acc = ctx.accuracy(model, "val")["accuracy"]
        base_acc = ctx.accuracy(OnnxModel(fp32, ctx.device), "val")["accuracy"]
        ctx.result.update(dtype="fp16", val_accuracy=round(acc, 4), fp32_val_accuracy=round(base_acc, 4))
        if ctx.device.type != "cuda":
            ctx.result["note"] = ("fp16 weights halve the size; on a CPU onnxruntime computes most fp16 layers "
                                  "through casts, so expect it to be slower than fp32 here (fp16 pays on GPUs)")
            ctx.mark("fp16 on CPU: smaller, likely slower than fp32")
        if acc < base_acc - self.max_accuracy_drop:
            raise JobFailed(f"quantize: fp16 validation accuracy {acc:.4f} is more than {self.max_accuracy_drop:g} "
                            f"below fp32's {base_acc:.4f}")
        return model
