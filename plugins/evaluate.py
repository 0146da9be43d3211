"""The ``evaluate`` job: the standard metrics of a variant, without making a new one."""

from __future__ import annotations

from typing import Literal

from workbench.plugin import Job, JobContext, Param


class EvaluateJob(Job):
    name = "evaluate"
    title = "Evaluate"
    description = "Measure accuracy, loss, size, MACs and latency (onnxruntime and torch) of the variant."
    produces_variant = False

    split: Literal["test", "val", "train"] = Param("test", help="which split to measure accuracy on")
    record: bool = Param(False, help="store the new figures on the variant, replacing its size and latency "
                                     "(and accuracy, on the test split): re-measure on a quiet machine")

    def run(self, ctx: JobContext) -> None:
        metrics = ctx.evaluate(ctx.model, split=self.split)
        ctx.report_metrics(metrics)
        if self.record:
            # the variant's accuracy and loss are test-split figures: another split's would mislabel them
            kept = {k: v for k, v in metrics.items() if self.split == "test" or k not in ("accuracy", "loss")}
            ctx.report_metrics(kept, store=True)
        ctx.info(", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
                           if not isinstance(v, list | dict)))
        return None
