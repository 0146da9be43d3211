"""The ``prune_sensitivity`` job: which layers can be pruned, and by how much.

For every prunable layer group it prunes a copy of the model to each ratio (that layer only, coupled layers
included, no fine-tuning) and measures the validation accuracy. The curves go to the result (table, chart, and a
heat colour per layer on the graph view); a greedy allocation over them gives per-layer ratios that reach the
target overall ratio with the least measured loss, the same allocation ``prune:allocation=sensitivity`` applies.

A decoder language model is measured by ``_lm_sensitivity``: each Linear of every block (and the head) pruned alone
to each ratio with unstructured magnitude or Wanda, the validation perplexity against the ratio, and the same
result keys (the curves hold perplexity, lower is better).
"""

from __future__ import annotations

from typing import Any, Literal

from workbench.core.lm import is_language_model
from workbench.plugin import InputError, Job, JobContext, Param, ensure_supported
from workbench_plugins import _lm_sensitivity as LMS
from workbench_plugins import _pruning as P
from workbench_plugins._training import check_fits

DEFAULT_IGNORE = list(P.DEFAULT_IGNORE)


class PruneSensitivityJob(Job):
    name = "prune_sensitivity"
    title = "Pruning sensitivity"
    description = ("Validation accuracy (perplexity, for a language model) of each layer pruned alone at several "
                   "ratios, and the per-layer ratios that reach a target with the least loss (what "
                   "prune:allocation=sensitivity uses).")
    produces_variant = False
    needs_torch_model = True

    ratios: list[str] = Param(list(P.DEFAULT_RATIOS), help="fractions of channels (language models: of weights) to "
                              "remove, one curve point each; a language model measures 0.25,0.5,0.75 unless given")
    importance: Literal["l1", "l2", "taylor", "bn_scale"] = Param("l1", help="which channels go first")
    amount: float = Param(0.5, min=0.0, max=0.95, help="target overall fraction of channels for the allocation")
    ignore: list[str] = Param(list(DEFAULT_IGNORE), help="module names kept at full width")
    method: Literal["wanda", "l1_unstructured"] = Param(
        "wanda", help="language models: how each layer is pruned (wanda: |W| x input norm; l1_unstructured: |W|)")
    granularity: Literal["linear", "block"] = Param(
        "linear", help="language models: one curve per Linear, or per decoder block (7x fewer measurements)")
    calibration: int = Param(32, min=0, max=100000, help="language models: train sequences for wanda's input norms",
                             advanced=True)
    val_sequences: int = Param(64, min=0, max=1000000,
                               help="language models: validation sequences per measurement (0 = the whole split)",
                               advanced=True)

    def run(self, ctx: JobContext) -> None:
        ensure_supported(self.name, ctx.data.info)  # a task this job cannot take: one line saying why not
        model = ctx.model
        check_fits(model, ctx)
        if is_language_model(model):
            return self._language_model(ctx, model)
        ratios = P.parse_ratios(self.ratios)
        sens = P.measure_sensitivity(ctx, model, self.importance, ratios, ignore=self.ignore,
                                     default_ignore=DEFAULT_IGNORE)
        channels = {layer.name: layer.channels for layer in sens["layers"]}
        allocation, check = {n: 0.0 for n in channels}, {}
        if self.amount > 0:
            allocation, check = P.choose_allocation(ctx, model, sens, self.amount, self.importance,
                                                    ignore=self.ignore, default_ignore=DEFAULT_IGNORE)
        model.zero_grad(set_to_none=True)
        curves = P.curves_for_result(sens)
        ctx.result.update({
            "sensitivity": curves, "allocation": allocation, "allocation_check": check, "heat": P.heat_of(sens),
            "channels": channels,
            "coupled": {layer.name: list(layer.coupled) for layer in sens["layers"] if layer.coupled},
            "ratios": [f"{r:g}" for r in ratios], "amount": self.amount,
        })
        ctx.report_metrics({"val_accuracy": round(sens["baseline"]["accuracy"], 6),
                                 "val_loss": round(sens["baseline"].get("loss", 0.0), 6), "layers": len(channels)})
        ctx.info(_table(curves, allocation))
        return None

    def _language_model(self, ctx: JobContext, model: Any) -> None:
        """Perplexity against sparsity per Linear (plugins/_lm_sensitivity.py); the model is left unchanged."""
        if self.importance != "l1":
            raise InputError(f"importance={self.importance} ranks channels of a classifier; a language model's "
                             "weights are ranked by method=wanda|l1_unstructured")
        given = [str(r) for r in self.ratios] != list(P.DEFAULT_RATIOS)
        ratios = P.parse_ratios(self.ratios) if given else list(LMS.LM_RATIOS)
        result = LMS.measure_language_model(
            ctx, model, ratios=ratios, amount=self.amount, method=self.method, granularity=self.granularity,
            calibration=self.calibration, val_sequences=self.val_sequences, ignore=self.ignore,
            default_ignore=DEFAULT_IGNORE)
        baseline = result.pop("baseline")
        ctx.result.update(result)
        ctx.report_metrics({"val_perplexity": round(baseline["perplexity"], 6), "val_loss": round(baseline["loss"], 6),
                            "layers": len(result["sensitivity"])})
        ctx.info("val perplexity (lower is better) with each layer pruned alone, and the allocation:\n"
                 + _table(result["sensitivity"], result["allocation"]))
        return None


def _table(curves: dict[str, dict[str, float]], allocation: dict[str, float]) -> str:
    """The curves as a text table (one row per layer), for the log and the CLI."""
    ratios = list(next(iter(curves.values())).keys()) if curves else []
    width = max([len("layer")] + [len(n) for n in curves])
    lines = ["layer".ljust(width) + "".join(f"{r:>7}" for r in ratios) + "  alloc"]
    for name, curve in curves.items():
        lines.append(name.ljust(width) + "".join(f"{curve[r]:7.3f}" for r in ratios) + f"  {allocation[name]:.2f}")
    return "\n".join(lines)
