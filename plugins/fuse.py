"""The ``fuse`` job: merge layers (BatchNorm folding, onnxruntime graph fusion) or whole models (soups, ensembles)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from workbench.plugin import (
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
from workbench_plugins._fusion import (
    Ensemble,
    check_same_architecture,
    count_batchnorm,
    fold_batchnorm,
    optimize_onnx,
    soup,
)

TOLERANCE = 1e-4


class FuseJob(Job):
    name = "fuse"
    title = "Fuse"
    description = ("Fold BatchNorm into convolutions, optimize the ONNX graph, average same-architecture "
                   "variants into a model soup, or combine variants into one ensemble model.")

    method: Literal["conv_bn", "onnx_graph", "average", "ensemble"] = Param("conv_bn", help="what to fuse")
    level: Literal["basic", "extended", "all"] = Param(
        "extended", help="onnx_graph: onnxruntime optimization level ('all' adds CPU-only layout changes)")
    soup: Literal["uniform", "greedy"] = Param(
        "greedy", help="average: uniform mean, or greedy (add a variant only if validation accuracy holds)")
    combine: Literal["logits", "probs"] = Param("logits", help="ensemble: average the logits or the probabilities")
    include_input: bool = Param(True, help="average/ensemble: the input variant is one of the models")

    def run(self, ctx: JobContext) -> Any:
        ensure_supported(self.name, ctx.data.info)  # a language model: one line saying why not
        if self.method == "conv_bn":
            return self._conv_bn(ctx)
        if self.method == "onnx_graph":
            return self._onnx_graph(ctx)
        models, ids = self._members(ctx)
        if self.method == "average":
            return self._average(ctx, models, ids)
        return self._ensemble(ctx, models, ids)

    # conv_bn ---------------------------------------------------------------------------------------------------
    def _conv_bn(self, ctx: JobContext) -> nn.Module:
        model = ctx.model
        if is_onnx(model):
            raise InputError("fuse:method=conv_bn needs a PyTorch variant (for ONNX use method=onnx_graph)")
        before = count_batchnorm(model)
        fused, folded, how = fold_batchnorm(model)
        left = count_batchnorm(fused)
        diff, scale = _max_diff(model, fused, ctx)
        if diff > TOLERANCE * max(1.0, scale):
            raise JobFailed(f"BatchNorm folding changed the outputs by {diff:.3g} (limit {TOLERANCE:g})")
        ctx.result.update(bn_before=before, bn_folded=folded, bn_left=left, max_abs_diff=diff, traced_with=how)
        ctx.info(f"folded {folded} of {before} BatchNorm layers ({how}); max output difference {diff:.2e}")
        if before == 0:
            ctx.warn("the model has no BatchNorm layer: nothing to fold")
        elif left:
            ctx.warn(f"{left} BatchNorm layers could not be folded (not directly after a conv or linear layer)")
            ctx.mark(f"{left} BN left")
        return fused.to(ctx.device)

    # onnx_graph ------------------------------------------------------------------------------------------------
    def _onnx_graph(self, ctx: JobContext) -> OnnxModel:
        import numpy as np
        import onnx
        import onnxruntime as ort

        batch = ctx.data.example_batch(16)
        if is_onnx(ctx.model):
            source = ctx.model.path
        else:
            source = ctx.workdir / "input.onnx"
            cpu_model = _cpu_eval_copy(ctx.model)
            export_onnx(cpu_model, batch[:2], source, verify_batches=[batch])
        target = ctx.workdir / f"optimized-{self.level}.onnx"
        optimize_onnx(source, target, self.level)
        nodes_before = len(onnx.load(str(source)).graph.node)
        nodes_after = len(onnx.load(str(target)).graph.node)

        plain = ort.SessionOptions()
        plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        plain.log_severity_level = 3
        reference = ort.InferenceSession(str(source), plain, providers=["CPUExecutionProvider"])
        optimized = ort.InferenceSession(str(target), plain, providers=["CPUExecutionProvider"])
        feed = batch.cpu().numpy()
        expected = reference.run(None, {reference.get_inputs()[0].name: feed})[0]
        got = optimized.run(None, {optimized.get_inputs()[0].name: feed})[0]
        diff = float(np.max(np.abs(expected - got)))
        if diff > TOLERANCE * max(1.0, float(np.max(np.abs(expected)))):
            raise JobFailed(f"the optimized graph changed the outputs by {diff:.3g} (limit {TOLERANCE:g})")
        ops_after = sorted({n.op_type for n in onnx.load(str(target)).graph.node})
        ctx.result.update(level=self.level, nodes_before=nodes_before, nodes_after=nodes_after,
                          max_abs_diff=diff, ops_after=ops_after)
        ctx.info(f"onnxruntime level {self.level}: {nodes_before} -> {nodes_after} nodes, max difference {diff:.2e}")
        if self.level == "all":
            ctx.mark("CPU-only layout")
        return OnnxModel(target, ctx.device)

    # average and ensemble --------------------------------------------------------------------------------------
    def _members(self, ctx: JobContext) -> tuple[list[nn.Module], list[str]]:
        own = ctx.variant_id or "input"
        ids = list(dict.fromkeys(([own] if self.include_input else []) + list(self.values["with"])))
        if len(ids) < 2:
            raise InputError(f"fuse:method={self.method} needs at least two models: give with=v0003,v0004")
        models = [ctx.model if vid == own else ctx.variant(vid) for vid in ids]
        for model, vid in zip(models, ids):
            if not isinstance(model, nn.Module):
                raise InputError(f"fuse:method={self.method} needs PyTorch variants; {vid} is ONNX-only")
        return models, ids

    def _average(self, ctx: JobContext, models: list[nn.Module], ids: list[str]) -> nn.Module:
        check_same_architecture(models, ids)
        scores = []
        for model, vid in zip(models, ids):
            ctx.check_cancelled()
            scores.append(ctx.accuracy(model, "val")["accuracy"])
            ctx.info(f"ingredient {vid}: validation accuracy {scores[-1]:.4f}")
        if self.soup == "uniform":
            chosen = list(range(len(models)))
            result = soup(models)
            best = ctx.accuracy(result, "val")["accuracy"]
        else:
            order = sorted(range(len(models)), key=lambda i: -scores[i])
            chosen, best = [order[0]], scores[order[0]]
            result = models[order[0]]
            for i in order[1:]:
                ctx.check_cancelled()
                candidate = soup([models[j] for j in chosen + [i]])
                score = ctx.accuracy(candidate, "val")["accuracy"]
                kept = score >= best
                ctx.info(f"greedy soup + {ids[i]}: validation accuracy {score:.4f} ({'kept' if kept else 'left out'})")
                if kept:
                    chosen, best, result = chosen + [i], score, candidate
            if len(chosen) == 1:
                result = soup([models[order[0]]])
        ctx.result.update(soup=self.soup, ingredients=[ids[i] for i in chosen], candidates=ids,
                          ingredient_val_accuracy={ids[i]: round(s, 6) for i, s in enumerate(scores)},
                          soup_val_accuracy=round(best, 6))
        ctx.info(f"{self.soup} soup of {len(chosen)} of {len(ids)} variants: validation accuracy {best:.4f}")
        return result.to(ctx.device)

    def _ensemble(self, ctx: JobContext, models: list[nn.Module], ids: list[str]) -> nn.Module:
        x = ctx.data.example_batch(2).to(ctx.device)
        with torch.no_grad():
            for model, vid in zip(models, ids):
                out = model.eval()(x)
                if out.ndim != 2 or out.shape[1] != ctx.data.info.num_classes:
                    raise InputError(f"ensemble: {vid} outputs {tuple(out.shape[1:])} scores, expected "
                                     f"{ctx.data.info.num_classes}")
        ensemble = Ensemble([m.to(ctx.device) for m in models], self.combine).eval()
        ctx.result.update(members=ids, combine=self.combine)
        return ensemble


def _cpu_eval_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).cpu().eval()


def _max_diff(a: nn.Module, b: nn.Module, ctx: JobContext) -> tuple[float, float]:
    """Largest absolute output difference between two models on a test batch, and the output scale."""
    x = ctx.data.example_batch(32).to(ctx.device)
    a.eval()
    b.eval()
    with torch.inference_mode():
        ya, yb = a(x).float(), b(x).float()
    return float((ya - yb).abs().max()), float(ya.abs().max())


def _declare_with(job: type[Job]) -> None:
    """``with`` is a Python keyword, so it cannot be a class attribute in the body: declare it here, after
    ``method``, so that ``fuse:method=average,with=v0003,v0004`` works on the command line and in pipelines."""
    param = Param([], help="average/ensemble: the other variant ids, e.g. v0003,v0004")
    param.__set_name__(job, "with")
    param.bind_annotation(list[str])
    setattr(job, "with", param)
    declared = {}
    for key, value in job._declared.items():
        declared[key] = value
        if key == "method":
            declared["with"] = param
    job._declared = declared


_declare_with(FuseJob)
