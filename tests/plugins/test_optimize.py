"""The optimize job: a seeded search is reproducible, a cancel keeps the trials, a short budget and an unreachable
target return the best so far and say so, the front is saved and the winner's pipeline replays it."""

from __future__ import annotations

import math

import pytest

from workbench.core.execution.runner import JobRequest
from workbench.core.jobs.events import METRIC
from workbench.core.pipeline import load_pipeline_file
from workbench.core.workspace.store import Workspace
from workbench.plugin import Job
from workbench_plugins._search import Goal, TrialRecord, choose_best, confident, met, pareto_front

MODEL = "zoo:mlp:hidden=32"
DATASET = "digits:size=8"


def _search(runner, root, **params):
    out = runner.run(JobRequest("optimize", {"max_epochs": 1, "lr": 0.005, **params}, root, "cpu", 0))
    assert out.status == "ok", out.error
    return out


def _recipes(outcome):
    return [(t["recipe"], t["status"]) for t in outcome.result["trials"]]


@pytest.mark.slow  # two searches of six measured trials: about 30 s on an idle laptop
def test_a_seeded_search_proposes_the_same_recipes_and_saves_its_front(make_session, runner_for, tmp_path):
    # target=size: sizes and accuracies are exact on a CPU, so the sampler sees the same figures both times
    params = {"target": "size", "size_ratio": 50, "trials": 6, "seed": 3, "methods": ["prune", "finetune"]}
    runs = []
    for name in ("a", "b"):
        session, root = make_session(model=MODEL, dataset=DATASET, out=tmp_path / name)
        runs.append((session, root, _search(runner_for(session), root, **params)))
    (session, root, first), (_, _, second) = runs
    assert _recipes(first) == _recipes(second)
    assert len({str(r) for r, _ in _recipes(first)}) >= 4  # it explored, not one recipe six times
    sizes = [[t.get("size_bytes") for t in o.result["trials"]] for o in (first, second)]
    assert sizes[0] == sizes[1]
    result = first.result
    variants = {v.id: v for v in session.workspace.variants()}
    assert result["pareto"] and all(v in variants for v in result["pareto"])
    assert all(variants[v].parent == root and variants[v].job == "optimize" for v in result["pareto"])
    front = result["front"]
    gains = [t["size_ratio"] for t in front]
    drops = [t["drop"] for t in front]
    assert gains == sorted(gains) and drops == sorted(drops)  # faster costs accuracy along the front
    assert first.variant not in result["pareto"] and variants[first.variant].parent == root
    assert result["best"]["trial"] in [t["trial"] for t in front]
    assert not result["best"]["met"] and "target not reached" in " ".join(first.marks)


def test_cancelling_keeps_the_trials_and_the_variants_saved_so_far(make_session, runner_for):
    session, root = make_session(model=MODEL, dataset=DATASET)
    runner = runner_for(session)
    handle = runner.submit(JobRequest("optimize", {"max_epochs": 1, "budget_s": 600, "speedup": 100,
                                                   "stop_at_target": False}, root, "cpu", 0))
    seen = []

    def cancel_after_two(event):
        if event.run_id == handle.run_id and event.kind == METRIC and "trial_speedup" in event.data["metrics"]:
            seen.append(event)
            if len(seen) == 2:
                handle.cancel()

    unsubscribe = runner.bus.subscribe(cancel_after_two)
    try:
        outcome = handle.wait(300)
    finally:
        unsubscribe()
    assert outcome is not None and outcome.status == "cancelled"
    trials = outcome.result["trials"]
    assert sum(t["status"] == "ok" for t in trials) >= 2 and outcome.result["stopped"] == "cancelled"
    saved = {v.id for v in session.workspace.variants()}
    assert outcome.result["pareto"] and set(outcome.result["pareto"]) <= saved
    assert outcome.variant is None  # no step variant for a cancelled run; the front variants stay


def test_a_budget_of_seconds_returns_the_best_so_far_with_a_message(workbench_run_job):
    run = workbench_run_job("optimize", {"budget_s": 1, "max_epochs": 1, "speedup": 50}, model=MODEL,
                            dataset=DATASET)
    assert run.outcome.status == "ok", run.outcome.error
    result = run.outcome.result
    assert sum(t["status"] == "ok" for t in result["trials"]) >= 1  # how many fit in 1 s depends on the machine
    assert "budget" in result["stopped"]
    warnings = [e.data["message"] for e in run.events_of("log") if e.data["level"] == "warning"]
    assert any("target not reached" in w and "budget" in w for w in warnings)
    assert run.outcome.variant and run.outcome.metrics["speedup"]["vs"] == run.outcome.input_variant
    assert result["best"]["trial"] == result["front"][-1]["trial"] or result["best"]["drop"] <= 0.01


def test_an_unreachable_target_says_so_and_returns_the_closest(workbench_run_job):
    run = workbench_run_job("optimize", {"speedup": 1000, "trials": 3, "max_epochs": 1},
                            model=MODEL, dataset=DATASET)
    assert run.outcome.status == "ok", run.outcome.error
    result = run.outcome.result
    assert not result["best"]["met"] and result["stopped"] == "3 trials done"
    assert any(m.startswith("target not reached") for m in run.outcome.marks)
    ok = [t for t in result["trials"] if t["status"] == "ok"]
    within = [t for t in ok if t["drop"] <= 0.01]
    if within:  # the closest: the fastest trial within the accuracy budget
        assert result["best"]["speedup"] == max(t["speedup"] for t in within)
    progress = run.events_of("progress")
    assert progress and "trial 3/3" in progress[-1].data["text"]
    plotted = [e.data["metrics"] for e in run.events_of("metric")]
    assert [m["trial_speedup"] for m in plotted] == pytest.approx([t["speedup"] for t in ok], abs=1e-4)


def test_the_winners_pipeline_replays_its_recipe(make_session, runner_for):
    from workbench.core.batch import run_batch

    # 28x28 digits: fine-tuning augments the images, so the replay depends on the training's own seeding
    session, root = make_session(model="zoo:mlp:hidden=16", dataset="digits")
    out = _search(runner_for(session), root, target="size", size_ratio=2, max_drop=0.2, trials=2,
                  methods=["prune", "finetune"])
    best = out.result["best"]
    path = out.result["pipeline_file"]
    assert open(path).read() == out.result["pipeline"]
    pipe = load_pipeline_file(path)
    assert [s.job for s in pipe.steps] == ["prune"] + (["train"] if best["recipe"].get("epochs") else [])
    assert pipe.steps[0].params["amount"] == best["recipe"]["amount"]
    assert run_batch(pipe, quiet=True, inline=True) == 0
    replayed = Workspace(session.workspace.root).variants()[-1]  # the replay reopened this workspace
    assert replayed.parent != root or len(pipe.steps) == 1
    assert replayed.metrics["size_bytes"] == best["size_bytes"]
    assert math.isclose(replayed.metrics["accuracy"], best["accuracy"], abs_tol=1e-9)


def _record(number, gain, drop):
    r = TrialRecord(number, {"amount": number / 10})
    r.status, r.gain, r.gain_ci, r.drop = "ok", gain, (gain * 0.95, gain * 1.05), drop
    return r


def test_front_and_winner_rules():
    goal = Goal("latency", 4.0, 0.01, "accuracy", 0.95, 1000)
    records = [_record(1, 2.0, -0.01), _record(2, 4.3, 0.005), _record(3, 4.1, 0.02), _record(4, 6.0, 0.03),
               _record(5, 3.0, 0.0)]
    assert [r.number for r in pareto_front(records)] == [1, 5, 2, 4]
    best, hit = choose_best(goal, records)
    assert hit and best.number == 2 and confident(goal, best)
    unsure = _record(6, 4.05, 0.0)  # met, more accurate, but its interval reaches below 4x
    assert met(goal, unsure) and not confident(goal, unsure)
    assert choose_best(goal, [*records, unsure])[0].number == 2
    best, hit = choose_best(Goal("latency", 8.0, 0.01, "accuracy", 0.95, 1000), records)
    assert not hit and best.number == 2  # the fastest within the accuracy budget
    best, hit = choose_best(Goal("latency", 8.0, 0.001, "accuracy", 0.95, 1000), records)
    assert not hit and best.number == 5  # within 0.1 point: trials 1 and 5, and 5 is faster
    best, hit = choose_best(Goal("latency", 8.0, 0.001, "accuracy", 0.95, 1000), records[1:4])
    assert not hit and best.number == 2  # none within the budget: the smallest drop
    with pytest.raises(Exception, match="unknown 'bogus'"):
        from workbench_plugins._search import Space

        Space(language_model=False, methods=["bogus"], max_epochs=1, batchnorm=False, available=set())


def test_distill_into_the_input_model_keeps_its_shape(make_session, runner_for):
    """distill:student=input (what a distillation trial and its pipeline run): the input learns from a teacher."""
    session, root = make_session(model="zoo:mlp:hidden=64", dataset=DATASET)
    runner = runner_for(session)
    small = runner.run(JobRequest("prune", {"method": "structured", "amount": 0.5}, root, "cpu", 0))
    out = runner.run(JobRequest("distill", {"student": "input", "teachers": [root], "epochs": 1, "lr": 0.005},
                                small.variant, "cpu", 0))
    assert out.status == "ok", out.error
    assert out.metrics["params"] == small.metrics["params"] < session.workspace.variant(root).metrics["params"]
    assert session.workspace.variant(out.variant).result["teachers"] == [root]
    bad = runner.run(JobRequest("distill", {"student": "input", "epochs": 1}, small.variant, "cpu", 0))
    assert bad.status == "failed" and bad.bad_input and "teachers" in bad.error


class _StagesProbe(Job):
    """Builds one recipe twice through the search's cache, with the sensitivity allocation at the largest amount."""

    name = "test_optimize_stages"
    needs_torch_model = True

    def run(self, ctx):
        from workbench_plugins import _search_steps as S

        recipe = {"amount": 0.85, "allocation": "sensitivity", "epochs": 1, "tune": "train"}
        steps = S.plan(recipe, teacher=None, lr=0.005, max_drop=0.01, language_model=False, has_batchnorm=False)
        stages = S.Stages(ctx, ctx.model, ctx.seed)
        first = stages.build(steps)
        runs = stages.runs
        again = stages.build(steps[:1])  # the pruned model before fine-tuning, from the cache
        ctx.result.update(jobs=[s.job for s in steps], runs=[runs, stages.runs], same=stages.build(steps) is first,
                          pruned_params=sum(p.numel() for p in again.parameters()))
        return first


def test_recipes_share_cached_steps_and_sensitivity_reaches_the_largest_amount(workbench_run_job):
    run = workbench_run_job(_StagesProbe, model=MODEL, dataset=DATASET)
    assert run.outcome.status == "ok", run.outcome.error
    result = run.outcome.result
    assert result["jobs"] == ["prune", "train"] and result["runs"] == [2, 2] and result["same"]
    root_params = run.session.workspace.variant(run.outcome.input_variant).metrics["params"]
    assert result["pruned_params"] == run.outcome.metrics["params"] < root_params / 2
