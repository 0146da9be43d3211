"""The ``optimize`` job: "4x faster, at most 1 point lost" in, a measured Pareto set of variants out.

It searches compositions of the installed jobs (structured pruning with a uniform, global or sensitivity-based
per-layer allocation; fine-tuning or distillation from the input; BatchNorm folding; int8 quantization; for a
language model, dropping layers, fine-tuning and weight-only quantization) with an Optuna multi-objective study.
Every trial is measured on this machine, paired with the input (``ctx.measure``); trials that reach the measured
Pareto front are saved as variants at once, so a cancel keeps them. The step's own variant is the winner (see
``_search.choose_best``), and its recipe is written as a pipeline file that reproduces it. docs/OPTIMIZE.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from workbench.plugin import Cancelled, InputError, Job, JobContext, JobFailed, Param, task_of
from workbench_plugins import _search_steps as S
from workbench_plugins._search import Goal, Search, Space, TrialRecord, choose_best, confident, pareto_front

METHODS = ["prune", "finetune", "distill", "quantize", "fuse", "drop_layers"]


class OptimizeJob(Job):
    name = "optimize"
    title = "Optimize to a target"
    description = ("Search compositions of prune, fine-tune or distill, fuse and quantize for a speed-up (or size) "
                   "target within an accuracy budget; every trial measured here, the Pareto set saved as variants.")
    needs_torch_model = True

    target: Literal["latency", "size"] = Param("latency", help="what to gain: onnxruntime latency or ONNX file size")
    speedup: float = Param(4.0, min=1.0, max=1000.0, help="target=latency: times faster than the input (paired)")
    size_ratio: float = Param(4.0, min=1.0, max=1000.0, help="target=size: times smaller than the input's ONNX file")
    max_drop: float = Param(0.01, min=0.0, max=1.0, help="accuracy lost at most (0.01 = 1 point); for a language "
                            "model the relative perplexity rise (0.01 = 1%)")
    budget_s: float = Param(900.0, min=1.0, max=604800.0, help="seconds the search may take")
    trials: int = Param(0, min=0, max=100000, help="stop after this many trials (0 = until the budget or the target)")
    seed: int = Param(0, min=0, max=2**31 - 1, help="the sampler's seed: the same seed proposes the same recipes")
    sampler: Literal["tpe", "nsga2"] = Param("tpe", help="Optuna's multi-objective TPE or NSGA-II", advanced=True)
    max_epochs: int = Param(6, min=0, max=1000, help="most fine-tuning epochs a trial may use")
    lr: float = Param(1e-3, min=0.0, max=10.0, help="fine-tuning learning rate", advanced=True)
    methods: list[str] = Param(list(METHODS), help="what the search may combine: " + ", ".join(METHODS))
    stop_at_target: bool = Param(True, help="stop once a trial meets the target with its whole 95% interval "
                                 "(and the front has two points or more)")
    round_to: int = Param(16, min=1, max=256, advanced=True, help="target=latency: pruned channel counts a multiple "
                          "of this (onnxruntime's fast CPU convolutions work on blocks of 8 or 16 channels)")

    def run(self, ctx: JobContext) -> Any:
        task = task_of(ctx.data.info)
        lm = task.name != "classification"
        model = ctx.model
        quality = "perplexity" if lm else "accuracy"
        base = ctx.accuracy(model, "test")
        if quality not in base:
            raise InputError(f"optimize: the {task.name} task reports no {quality}")
        goal = Goal(self.target, self.speedup if self.target == "latency" else self.size_ratio, self.max_drop,
                    quality, float(base[quality]), _input_size(ctx))
        available = _installed_jobs()
        bn = S.has_batchnorm(model)
        space = Space(language_model=lm, methods=list(self.methods), max_epochs=self.max_epochs, batchnorm=bn,
                      available=available, layers=_layers(model))
        teacher = ctx.variant_id if "distill" in available else None
        rounding = _channel_rounding(model, self.round_to) if self.target == "latency" else 1

        def plan(recipe: dict[str, Any]) -> list[S.Step]:
            return S.plan(recipe, teacher=teacher, lr=self.lr, max_drop=self.max_drop, language_model=lm,
                          has_batchnorm=bn, round_to=rounding)

        stages = S.Stages(ctx, model, ctx.seed)
        ctx.info(f"optimize: {goal.words()} within {self.budget_s:g} s; input {quality} {goal.base_quality:.4f}")

        def save(record: TrialRecord, trial_model: Any) -> dict[str, Any]:
            ctx.check_cancelled()
            saved = ctx.save_variant(
                trial_model, params={"recipe": S.describe(record.recipe), **record.recipe, "trial": record.number},
                marks=[f"optimize trial {record.number}"],
                result={"recipe": record.recipe, "steps": [s.__dict__ for s in plan(record.recipe)],
                        "search_figures": record.as_dict(goal)})
            return saved

        search = Search(ctx, goal, space, stages, plan, budget_s=self.budget_s, trials=self.trials, seed=self.seed,
                        sampler=self.sampler, stop_at_target=self.stop_at_target, on_front=save)
        try:
            search.run()
        except Cancelled:
            search.stopped = "cancelled"
            self._result(ctx, search, goal, plan, None, False)
            raise
        best, hit = choose_best(goal, search.records)
        self._result(ctx, search, goal, plan, best, hit)
        if best is None:
            errors = [r.error for r in search.records if r.error]
            raise JobFailed("optimize: no trial completed" + (f"; the first failed: {errors[0]}" if errors else
                                                              f" within the budget of {self.budget_s:g} s"))
        words = f"{best.gain:.2f}x at {goal.drop_words(best.drop)} ({S.describe(best.recipe)}, trial {best.number})"
        done = sum(r.status in ("ok", "failed", "pruned") for r in search.records)
        if hit:
            sure = "" if confident(goal, best) else " (its 95% interval reaches below the target)"
            ctx.info(f"optimize: target met after {done} trials: {words}{sure}; stopped: {search.stopped}")
        else:
            ctx.warn(f"optimize: target not reached ({goal.words()}) after {done} trials, {search.stopped}; "
                     f"the closest: {words}")
            ctx.mark(f"target not reached: {best.gain:.2f}x at {goal.drop_words(best.drop)}")
        winner = search.models.get(best.number)
        return winner if winner is not None else stages.build(plan(best.recipe))

    def _result(self, ctx: JobContext, search: Search, goal: Goal, plan: Any, best: TrialRecord | None,
                hit: bool) -> None:
        """The trials, the front and the winner's pipeline into ``ctx.result`` (also after a cancel)."""
        front = pareto_front(search.records)
        pareto = [search.saved[r.number] for r in front if r.number in search.saved]
        superseded = [v for n, v in search.saved.items() if v not in pareto]
        ctx.result.update({
            "target": {"target": goal.target, goal.gain_name: goal.value, "max_drop": goal.max_drop,
                       "quality": goal.quality, "input_" + goal.quality: round(goal.base_quality, 6),
                       "input_size_bytes": goal.base_size},
            "pareto": pareto,
            "superseded": superseded,
            "front": [r.as_dict(goal) for r in front],
            "trials": [r.as_dict(goal) for r in search.records],
            "stopped": search.stopped,
            "seconds": round(search.elapsed(), 1),
            "sampler": {"name": self.sampler, "seed": self.seed},
            "steps_run": search.stages.runs,
        })
        if best is None:
            return
        steps = plan(best.recipe)
        ctx.result["best"] = {"trial": best.number, "variant": search.saved.get(best.number), "met": hit,
                              "recipe": best.recipe, "recipe_text": S.describe(best.recipe),
                              **{k: v for k, v in best.as_dict(goal).items() if k not in ("recipe", "recipe_text")}}
        root = Path(ctx.workspace_dir) if ctx.workspace_dir is not None else None
        source = str(root / "variants" / ctx.variant_id) if root is not None and ctx.variant_id else ""
        comment = (f"optimize run {ctx.run_id}: the winner, trial {best.number} ({S.describe(best.recipe)}): "
                   f"{best.gain:.2f}x at {goal.drop_words(best.drop)}\nreproduce: workbench --batch --pipeline "
                   "THIS_FILE (it reopens the workspace, so the input variant keeps its id)")
        text = S.pipeline_text(steps, model=source or str(ctx.variant_id), dataset=ctx.data.info.spec, seed=ctx.seed,
                               out=str(root) if root is not None else None, comment=comment)
        ctx.result["pipeline"] = text
        if root is not None:
            path = root / f"optimize-{ctx.run_id}.toml"
            extra = 2
            while path.exists():  # run ids restart with each batch run: never overwrite an earlier search's file
                path = root / f"optimize-{ctx.run_id}-{extra}.toml"
                extra += 1
            try:
                path.write_text(text, encoding="utf-8")
                ctx.result["pipeline_file"] = str(path)
            except OSError as exc:
                ctx.warn(f"optimize: the pipeline file could not be written ({exc})")


def _input_size(ctx: JobContext) -> int:
    """The input variant's ONNX size (its folder holds it); measured afresh when the folder is not at hand."""
    if ctx.workspace_dir is not None and ctx.variant_id:
        path = Path(ctx.workspace_dir) / "variants" / ctx.variant_id / "model.onnx"
        if path.is_file():
            return path.stat().st_size
    return int(ctx.evaluate(ctx.model).get("size_bytes") or 1)


def _channel_rounding(model: Any, round_to: int) -> int:
    """``round_to`` for a convolutional model whose narrowest convolution has room for two blocks of it; 1 for
    the others (blocked kernels are a convolution matter, and rounding a narrow layer would stop its pruning)."""
    from torch import nn

    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups == 1] \
        if isinstance(model, nn.Module) else []
    if not widths or round_to <= 1:
        return 1
    while round_to > 1 and min(widths) < 2 * round_to:
        round_to //= 2
    return round_to


def _installed_jobs() -> set[str]:
    from workbench.core.jobs.registry import registry

    return set(registry().job_names())


def _layers(model: Any) -> int:
    config = getattr(model, "config", None)
    return int(getattr(config, "num_hidden_layers", 0) or 0)
