"""A job that composes others (a search, a recipe): ctx.run_job, ctx.save_variant and ctx.measure."""

from __future__ import annotations

from workbench.core.execution.runner import JobRequest
from workbench.core.jobs.registry import registry
from workbench.plugin import Job


class Compose(Job):
    name = "test_compose"

    def run(self, ctx):
        pruned = ctx.run_job("prune", ctx.model, amount=0.5, method="structured")
        assert pruned.model is not None
        extra = ctx.save_variant(pruned.model, params={"recipe": "prune 0.5"}, marks=["from a search"])
        ctx.result["extra"] = extra["id"]
        ctx.result["figures"] = ctx.measure(pruned.model, vs=ctx.variant_id)
        evaluated = ctx.run_job("evaluate", pruned.model)
        ctx.result["sub_reported"] = sorted(evaluated.reported)
        return pruned.model


def test_a_job_runs_others_saves_extra_variants_and_measures_paired(make_session, runner_for):
    registry().register(Compose)
    try:
        session, root = make_session(model="zoo:mlp:hidden=64")
        outcome = runner_for(session).run(JobRequest("test_compose", {}, root, "cpu"))
    finally:
        registry().unregister("test_compose")
    assert outcome.status == "ok", outcome.error
    variants = {v.id: v for v in session.workspace.variants()}
    extra = variants[outcome.result["extra"]]
    assert extra.parent == root and extra.job == "test_compose" and extra.marks == ["from a search"]
    assert extra.metrics["speedup"]["vs"] == root
    assert variants[outcome.variant].parent == root and len(variants) == 3
    figures = outcome.result["figures"]
    assert figures["speedup"]["vs"] == root and "latency_ms_ci" in figures
    assert figures["params"] < variants[root].metrics["params"]
    assert "accuracy" in outcome.result["sub_reported"]
