"""The ``export`` job: an ONNX file with a dynamic batch axis, verified against torch before it is kept."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

from workbench.plugin import (
    Cancelled,
    InputError,
    Job,
    JobContext,
    OnnxModel,
    Param,
    export_onnx,
    is_onnx,
    task_of,
)


class ExportJob(Job):
    name = "export"
    title = "Export to ONNX"
    description = ("Export to ONNX (dynamo exporter first, TorchScript as the fallback), check it with "
                   "onnx.checker and verify it against torch on the test split.")
    produces_variant = False

    opset: int = Param(18, min=9, max=23, help="ONNX opset version")
    exporter: Literal["dynamo", "torchscript"] = Param("dynamo", help="exporter to try first")
    atol: float = Param(1e-4, min=0.0, max=1.0, help="largest allowed absolute difference from torch")
    path: str = Param("", help="where to write the .onnx file (default: the workspace's exports folder)")
    kv_cache: bool = Param(True, help="language models: also write one decode step with a static KV cache "
                                      "(NAME.decode.onnx beside the prefill), verified by greedy generation")
    cache_len: int = Param(0, min=0, max=1_000_000, help="language models: KV cache slots of the decode graph, "
                                                         "prompt and continuation together (0: the seq_len)")

    def run(self, ctx: JobContext) -> None:
        target = self._target(ctx)
        if is_onnx(ctx.model):
            shutil.copyfile(ctx.model.path, target)
            ctx.result.update(path=str(target), exporter="none (the variant is ONNX already)")
        elif task_of(ctx.data.info).name != "classification":  # a language model: prefill logits at a fixed shape
            task = task_of(ctx.data.info)
            example = task.bench_input(ctx.data, ctx.bench_batch).cpu()
            batches = [x for x, _ in ctx.data.loader("test", batch_size=example.shape[0], shuffle=False)]
            ctx.progress(0, 2, "exporting")
            result = task.export_onnx(ctx.model, example, target, opset=self.opset, verify_batches=batches[:8])
            if self.kv_cache:
                ctx.progress(0, 2, "exporting the KV-cache decode step")
                self._decode_graph(ctx, target, self.cache_len or int(example.shape[1]), example[0].tolist())
        else:
            batches = [x for x, _ in ctx.data.loader("test", shuffle=False)]
            ctx.progress(0, 2, "exporting")
            result = export_onnx(ctx.model, batches[0][:2].cpu(), target, opset=self.opset, prefer=self.exporter,
                                 verify_batches=batches, atol=self.atol)
        if not is_onnx(ctx.model):
            ctx.result.update(path=str(result.path), exporter=result.exporter, opset=result.opset,
                              max_abs_diff=result.max_abs_diff, top1_agreement=result.top1_agreement)
            if result.fallback_reason:
                ctx.result["fallback_reason"] = result.fallback_reason
                ctx.warn(f"export: the {self.exporter} exporter was not used ({result.fallback_reason})")
            ctx.info(f"exported with the {result.exporter} exporter (opset {result.opset}) to {result.path}; "
                     f"max abs difference {result.max_abs_diff:.2e}, top-1 agreement {result.top1_agreement:.4f}")
        ctx.progress(1, 2, "measuring")
        ctx.report_metrics(ctx.evaluate(OnnxModel(target, ctx.device)))
        ctx.progress(2, 2, "done")
        return None

    def _decode_graph(self, ctx: JobContext, target: Path, max_len: int, prompt: list[int]) -> None:
        """The decode step beside the prefill; optional, so a failure is a warning with the reason, never the
        job's failure (the prefill export above already holds)."""
        from workbench.core.lm.onnx_decode import export_decoder_with_cache

        decode_path = target.with_suffix(".decode.onnx")
        try:
            out = export_decoder_with_cache(ctx.model, decode_path, max_len, opset=self.opset,
                                            verify_prompt=prompt[: max(1, min(8, max_len // 2))])
        except Cancelled:
            raise  # the user's Stop is not an export failure to warn about
        except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds; the prefill export stands
            reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            ctx.result["decode_error"] = reason
            ctx.warn(f"export: no KV-cache decode graph ({reason}); the prefill graph is written")
            return
        ctx.result.update(decode_path=str(out.path), decode_max_len=out.max_len,
                          decode_max_abs_diff=out.max_abs_diff)
        ctx.info(f"KV-cache decode step ({out.max_len} slots) written to {out.path}; greedy generation of "
                 f"{out.tokens_checked} tokens matches torch, max abs logit difference {out.max_abs_diff:.2e}")

    def _target(self, ctx: JobContext) -> Path:
        if self.path:
            target = Path(self.path).expanduser()
            if target.suffix.lower() != ".onnx":
                raise InputError(f"export path {self.path!r} must end in .onnx")
        else:
            folder = ctx.workspace_dir / "exports" if ctx.workspace_dir is not None else ctx.workdir
            target = folder / f"{ctx.variant_id}.onnx"
        target.parent.mkdir(parents=True, exist_ok=True)
        return target
