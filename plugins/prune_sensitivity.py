"""The ``prune_sensitivity`` job: which layers can be pruned, and by how much.

For every prunable layer group it prunes a copy of the model to each ratio (that layer only, coupled layers
included, no fine-tuning) and measures the validation accuracy. The curves go to the result (table, chart, and a
heat colour per layer on the graph view); a greedy allocation over them gives per-layer ratios that reach the
target overall ratio with the least measured loss, the same allocation ``prune:allocation=sensitivity`` applies.
"""

from __future__ import annotations

from typing import Literal

from workbench.plugin import Job, JobContext, Param, ensure_supported
from workbench_plugins import _pruning as P
from workbench_plugins._training import check_fits

DEFAULT_IGNORE = list(P.DEFAULT_IGNORE)


class PruneSensitivityJob(Job):
    name = "prune_sensitivity"
    title = "Pruning sensitivity"
    description = ("Validation accuracy of each layer pruned alone at several ratios, and the per-layer ratios "
                   "that reach a target with the least loss (what prune:allocation=sensitivity uses).")
    produces_variant = False
    needs_torch_model = True

    ratios: list[str] = Param(list(P.DEFAULT_RATIOS), help="fractions of channels to remove, one curve point each")
    importance: Literal["l1", "l2", "taylor", "bn_scale"] = Param("l1", help="which channels go first")
    amount: float = Param(0.5, min=0.0, max=0.95, help="target overall fraction of channels for the allocation")
    ignore: list[str] = Param(list(DEFAULT_IGNORE), help="module names kept at full width")

    def run(self, ctx: JobContext) -> None:
        ensure_supported(self.name, ctx.data.info)  # a language model: one line saying why not
        model = ctx.model
        check_fits(model, ctx)
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


def _table(curves: dict[str, dict[str, float]], allocation: dict[str, float]) -> str:
    """The curves as a text table (one row per layer), for the log and the CLI."""
    ratios = list(next(iter(curves.values())).keys()) if curves else []
    width = max([len("layer")] + [len(n) for n in curves])
    lines = ["layer".ljust(width) + "".join(f"{r:>7}" for r in ratios) + "  alloc"]
    for name, curve in curves.items():
        lines.append(name.ljust(width) + "".join(f"{curve[r]:7.3f}" for r in ratios) + f"  {allocation[name]:.2f}")
    return "\n".join(lines)
