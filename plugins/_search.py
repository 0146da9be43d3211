"""The ``optimize`` search: an Optuna multi-objective study over recipes, each trial measured on this machine.

Two objectives, maximised and minimised: the gain (the paired onnxruntime speed-up over the input, or how many
times smaller its ONNX file is) and the quality drop (accuracy points lost; the relative perplexity rise for a
language model). The accuracy budget is a constraint the sampler knows (TPE and NSGA-II favour feasible trials).
Optuna proposes, the trial runs the recipe's jobs (``_search_steps``) and is measured paired with the input;
Optuna learns from the figures. Everything Optuna does not do is here: the budget, the target, cancel, the
measured Pareto front and the choice of the winner.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workbench.plugin import Cancelled, InputError, JobContext, JobFailed
from workbench_plugins._search_steps import Stages, Step, describe, recipe_key

EPS = 1e-9
MAX_REPEATS = 25  # proposals in a row that were all measured before: the space is exhausted


@dataclass(frozen=True)
class Goal:
    """What the user asked for, and the input's figures it is measured against."""

    target: str            # "latency" | "size"
    value: float           # the speed-up (or size ratio) wanted
    max_drop: float        # accuracy points (fraction) or relative perplexity rise
    quality: str           # "accuracy" | "perplexity"
    base_quality: float
    base_size: int

    @property
    def gain_name(self) -> str:
        return "speedup" if self.target == "latency" else "size_ratio"

    def gain(self, figures: dict[str, Any]) -> tuple[float, tuple[float, float]]:
        """The gain and its 95% interval (a size ratio is exact)."""
        if self.target == "latency":
            sp = figures.get("speedup") or {}
            ratio = float(sp.get("ratio", 0.0))
            low, high = (sp.get("ci") or [ratio, ratio])[:2]
            return ratio, (float(low), float(high))
        ratio = self.base_size / max(int(figures.get("size_bytes") or 1), 1)
        return ratio, (ratio, ratio)

    def drop(self, figures: dict[str, Any]) -> float:
        value = float(figures.get(self.quality, math.nan))
        if self.quality == "perplexity":
            return value / max(self.base_quality, EPS) - 1.0
        return self.base_quality - value

    def drop_words(self, drop: float) -> str:
        """``-0.4 pt`` (accuracy points lost) or ``+3.1% ppl``."""
        if self.quality == "perplexity":
            return f"{drop * 100:+.1f}% ppl"
        return f"{-drop * 100:+.1f} pt"

    def words(self) -> str:
        what = f"{self.value:g}x faster" if self.target == "latency" else f"{self.value:g}x smaller"
        return f"{what}, {self.drop_words(self.max_drop).lstrip('+-')} at most"


@dataclass
class TrialRecord:
    """One trial: its recipe, what happened, and its measured figures."""

    number: int
    recipe: dict[str, Any]
    status: str = "running"  # ok | failed | pruned | repeat | cancelled
    seconds: float = 0.0
    gain: float = 0.0
    gain_ci: tuple[float, float] = (0.0, 0.0)
    drop: float = math.nan
    figures: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    variant: str | None = None
    note: str = ""
    steps_run: int = 0
    #: every paired measurement of the gain (the trial's, then its variant's when saved): (ratio, low, high)
    measurements: list[tuple[float, float, float]] = field(default_factory=list)

    def add_measurement(self, ratio: float, ci: tuple[float, float]) -> None:
        """Pool another measurement: the geometric mean of the ratios, and an interval from the lowest low to
        the highest high. Load that changes between measuring sessions moves a ratio more than one session's
        interval admits, so a claim rests on all of them, never on the luckiest."""
        self.measurements.append((ratio, ci[0], ci[1]))
        ratios = [m[0] for m in self.measurements]
        self.gain = math.exp(sum(math.log(max(r, EPS)) for r in ratios) / len(ratios))
        self.gain_ci = (min(m[1] for m in self.measurements), max(m[2] for m in self.measurements))

    def as_dict(self, goal: Goal) -> dict[str, Any]:
        out: dict[str, Any] = {"trial": self.number, "recipe": dict(self.recipe), "recipe_text": describe(self.recipe),
                               "status": self.status, "seconds": round(self.seconds, 2)}
        if self.figures:
            keep = (goal.quality, "latency_ms", "latency_ms_ci", "size_bytes", "params", "macs", "speedup")
            out.update({k: self.figures[k] for k in keep if k in self.figures})
            out[goal.gain_name] = round(self.gain, 4)
            out[f"{goal.gain_name}_ci"] = [round(self.gain_ci[0], 4), round(self.gain_ci[1], 4)]
            if len(self.measurements) > 1:
                out["measurements"] = [[round(v, 4) for v in m] for m in self.measurements]
            out["drop"] = round(self.drop, 6)
        for key in ("error", "variant", "note"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


def dominates(a: TrialRecord, b: TrialRecord) -> bool:
    """``a`` is at least as good on both objectives and better on one."""
    return a.gain >= b.gain and a.drop <= b.drop and (a.gain > b.gain or a.drop < b.drop)


def pareto_front(records: list[TrialRecord]) -> list[TrialRecord]:
    """The measured trials no other measured trial dominates (the first of identical points), by gain."""
    ok = [r for r in records if r.status == "ok"]
    front = []
    for r in ok:
        if any(dominates(o, r) for o in ok):
            continue
        if any(o.gain == r.gain and o.drop == r.drop for o in front):
            continue
        front.append(r)
    return sorted(front, key=lambda r: r.gain)


def met(goal: Goal, r: TrialRecord) -> bool:
    return r.status == "ok" and r.gain >= goal.value - EPS and r.drop <= goal.max_drop + EPS


def confident(goal: Goal, r: TrialRecord) -> bool:
    """Met, with the whole 95% interval of the gain at or above the target."""
    return met(goal, r) and r.gain_ci[0] >= goal.value - EPS


def choose_best(goal: Goal, records: list[TrialRecord]) -> tuple[TrialRecord | None, bool]:
    """(the winner, whether it meets the target). Meeting it: the confident ones first, then the one most sure
    to meet it (the highest low end of its gain's interval: the accuracy on the test split is exact, the latency
    is not), then the least drop. Missing it: the largest gain within the accuracy budget; when no trial stays
    within it, the smallest drop."""
    ok = [r for r in records if r.status == "ok"]
    if not ok:
        return None, False
    hits = [r for r in ok if met(goal, r)]
    if hits:
        return max(hits, key=lambda r: (confident(goal, r), r.gain_ci[0], -r.drop, r.gain)), True
    within = [r for r in ok if r.drop <= goal.max_drop + EPS]
    if within:
        return max(within, key=lambda r: (r.gain, -r.drop)), False
    return min(ok, key=lambda r: (r.drop, -r.gain)), False


class Space:
    """The recipes Optuna may propose, for a classifier or a language model, limited to ``methods``."""

    def __init__(self, *, language_model: bool, methods: list[str], max_epochs: int, batchnorm: bool,
                 available: set[str], layers: int = 0) -> None:
        self.lm, self.max_epochs, self.batchnorm = language_model, max_epochs, batchnorm
        m = set(methods)
        unknown = m - {"prune", "finetune", "distill", "quantize", "fuse", "drop_layers"}
        if unknown:
            raise InputError(f"methods: unknown {sorted(unknown)[0]!r} (known: prune, finetune, distill, quantize, "
                             "fuse, drop_layers)")
        if language_model:
            self.drop = min(max(layers - 1, 0), 8) if "drop_layers" in available and m & {"drop_layers", "prune"} \
                else 0
            self.quant = ["none"] + ([q for q in ("int8", "int4")] if "quantize_weights" in available
                                     and "quantize" in m else [])
            self.tune = "finetune" in m or "distill" in m
            if not self.drop and len(self.quant) == 1:
                raise InputError("optimize: a language model is compressed by drop_layers and quantize_weights, and "
                                 "neither is installed (or allowed by methods)")
            return
        self.prune = "prune" in m
        self.tunes = [t for t, name in (("train", "finetune"), ("distill", "distill")) if name in m]
        self.fuse = "fuse" in m and batchnorm
        self.quantize = "quantize" in m
        if not (self.prune or self.quantize):
            raise InputError("methods: give prune or quantize (fine-tuning and fusing alone do not make it faster "
                             "or smaller)")

    def suggest(self, trial: Any) -> dict[str, Any]:
        """A recipe from Optuna's trial, normalised so that recipes doing the same work compare equal."""
        r: dict[str, Any] = {}
        if self.lm:
            r["drop"] = trial.suggest_int("drop", 0, self.drop) if self.drop else 0
            r["steps"] = trial.suggest_categorical("steps", [0, 50, 100, 200]) if self.tune else 0
            r["quantize"] = trial.suggest_categorical("quantize", self.quant) if len(self.quant) > 1 else "none"
            return r
        if self.prune:
            r["amount"] = round(trial.suggest_float("amount", 0.0, 0.85, step=0.05), 2)
            r["allocation"] = trial.suggest_categorical("allocation", ["uniform", "global", "sensitivity"])
            if r["amount"] == 0:
                r["allocation"] = "uniform"
        if self.tunes and self.max_epochs > 0:
            r["epochs"] = trial.suggest_int("epochs", 0, self.max_epochs)
            r["tune"] = trial.suggest_categorical("tune", self.tunes) if len(self.tunes) > 1 else self.tunes[0]
            if r["epochs"] == 0:
                r["tune"] = self.tunes[0]
        if self.fuse:
            r["fuse"] = trial.suggest_categorical("fuse", [False, True])
        if self.quantize:
            r["quantize"] = trial.suggest_categorical("quantize", ["none", "int8"])
        return r

    def first_guesses(self, goal: Goal) -> list[dict[str, Any]]:
        """Recipes tried first, from the target: channel pruning cuts MACs (and weights) about quadratically, so
        a gain of S suggests removing 1 - 1/sqrt(S) of the channels, aimed a third higher since latency falls
        less than MACs; that model quantized to int8 next (it shares the fine-tuning, so it is cheap and often a
        second point of the front); int8 alone (the accurate end of the front, no fine-tuning); then int8 (about
        2x faster, 4x smaller) leaving half the gain to pruning."""
        if self.lm:
            return [{"drop": 0, **({"steps": 0} if self.tune else {}), "quantize": self.quant[-1]}] \
                if len(self.quant) > 1 else [{"drop": min(self.drop, 1), **({"steps": 100} if self.tune else {})}]

        def amount(gain: float) -> float:
            if gain <= 1.0:
                return 0.0
            return min(0.85, max(0.1, round((1 - 1 / math.sqrt(gain * 4 / 3)) * 20) / 20))

        base: dict[str, Any] = {}
        if self.tunes and self.max_epochs > 0:
            base.update(epochs=1, tune=self.tunes[0])  # one epoch first: on a busy CPU an epoch can take minutes
        if self.fuse:
            base["fuse"] = False
        guesses = []
        if self.quantize:
            alone = {**({"amount": 0.0, "allocation": "uniform"} if self.prune else {}), **base, "quantize": "int8"}
            if "epochs" in alone:
                alone["epochs"] = 0  # nothing pruned: nothing to recover by fine-tuning
            guesses.append(alone)  # no fine-tuning either: cheap, and the accurate end of the front
        if self.prune:
            fp32 = {"quantize": "none"} if self.quantize else {}
            with_int8 = amount(goal.value / (2.0 if goal.target == "latency" else 4.0))
            if self.quantize and with_int8 > 0:
                first = {"amount": with_int8, "allocation": "uniform", **base}
                guesses.append({**first, "quantize": "int8"})
                guesses.append({**first, **fp32})  # the same fine-tuned model in float: the cache shares it
            guesses.append({"amount": amount(goal.value), "allocation": "uniform", **base, **fp32})
        return [g for i, g in enumerate(guesses) if g not in guesses[:i]]


class Search:
    """Runs the study until the budget, the trial limit or the target; every trial is kept in ``records``."""

    def __init__(self, ctx: JobContext, goal: Goal, space: Space, stages: Stages,
                 plan: Callable[[dict[str, Any]], list[Step]], *, budget_s: float, trials: int, seed: int,
                 sampler: str, stop_at_target: bool,
                 on_front: Callable[[TrialRecord, Any], dict[str, Any] | None]) -> None:
        self.ctx, self.goal, self.space, self.stages, self.plan = ctx, goal, space, stages, plan
        self.budget_s, self.max_trials, self.seed, self.sampler_name = budget_s, trials, seed, sampler
        self.stop_at_target, self.on_front = stop_at_target, on_front
        self.records: list[TrialRecord] = []
        self.models: dict[int, Any] = {}  # the models of the current front, by trial number
        self.saved: dict[int, str] = {}    # trial number -> variant id (saved when it reached the front)
        self.stopped = ""
        self.start = time.monotonic()
        self.step_seconds: dict[str, list[float]] = {}
        self.measure_seconds: list[float] = []

    # the study ---------------------------------------------------------------------------------------------
    def _study(self) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # the accuracy budget is a constraint (trial.set_constraint): both samplers favour the feasible trials
        with warnings.catch_warnings():  # multivariate TPE is marked experimental; it is Optuna's advice here
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if self.sampler_name == "nsga2":
                sampler = optuna.samplers.NSGAIISampler(seed=self.seed, population_size=8)
            else:
                sampler = optuna.samplers.TPESampler(seed=self.seed, multivariate=True, n_startup_trials=4)
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        for guess in self.space.first_guesses(self.goal):
            study.enqueue_trial(_optuna_params(guess), skip_if_exists=True)
        return study

    def run(self) -> None:
        """Trials until a stop; on cancel the trials so far stay in ``records`` and ``Cancelled`` goes on."""
        import optuna

        study = self._study()
        seen: dict[tuple[Any, ...], TrialRecord] = {}
        repeats = 0
        while True:
            reason = self._stop_reason()
            if reason:
                self.stopped = reason
                return
            self.ctx.check_cancelled()
            trial = study.ask()
            recipe = self.space.suggest(trial)
            record = TrialRecord(len(self.records) + 1, recipe)
            key = recipe_key(recipe)
            if key in seen:  # the sampler proposed a recipe measured before: tell it the same figures
                first = seen[key]
                repeats += 1
                record.status, record.note = "repeat", f"same recipe as trial {first.number}"
                self.records.append(record)
                if first.status == "ok":
                    trial.set_constraint("drop", first.drop - self.goal.max_drop)
                    study.tell(trial, [first.gain, first.drop])
                else:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                if repeats >= MAX_REPEATS:
                    self.stopped = "every recipe the sampler proposes was measured already"
                    return
                continue
            repeats = 0
            steps = self.plan(recipe)
            estimate = self._estimate(steps)
            if self._done() and self.elapsed() + estimate > self.budget_s:
                self.stopped = f"the budget of {self.budget_s:g} s would run out during the next trial"
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                return
            hopeless = self._hopeless(steps)
            if hopeless:
                record.status, record.note = "pruned", hopeless
                self.records.append(record)
                seen[key] = record
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                continue
            self.records.append(record)
            seen[key] = record
            try:
                model = self._evaluate(record, steps)
            except Cancelled:
                record.status = "cancelled"
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
            except (InputError, JobFailed) as exc:
                self._failed(record, str(exc))
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            except Exception as exc:  # noqa: BLE001 - a recipe that breaks a job is a failed trial, not the search
                self._failed(record, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}")
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            trial.set_constraint("drop", record.drop - self.goal.max_drop)
            study.tell(trial, [record.gain, record.drop])
            self._keep_front(record, model)
            self._report(record)

    # one trial ----------------------------------------------------------------------------------------------
    def _evaluate(self, record: TrialRecord, steps: list[Step]) -> Any:
        started = time.monotonic()
        before = self.stages.runs
        timings: list[tuple[Step, float]] = []
        last = [time.monotonic()]

        def on_step(step: Step) -> None:
            now = time.monotonic()
            if timings:
                timings[-1] = (timings[-1][0], now - last[0])
            timings.append((step, 0.0))
            last[0] = now

        model = self.stages.build(steps, on_step)
        if timings:
            timings[-1] = (timings[-1][0], time.monotonic() - last[0])
        for step, seconds in timings:
            self.step_seconds.setdefault(_cost_key(step), []).append(seconds / _units(step))
        t0 = time.monotonic()
        figures = self.ctx.measure(model, vs=self.ctx.variant_id)
        self.measure_seconds.append(time.monotonic() - t0)
        record.figures = figures
        record.add_measurement(*self.goal.gain(figures))
        record.drop = self.goal.drop(figures)
        if not math.isfinite(record.drop):
            raise JobFailed(f"the trial's model has no {self.goal.quality}")
        record.status = "ok"
        record.steps_run = self.stages.runs - before
        record.seconds = time.monotonic() - started
        return model

    def _failed(self, record: TrialRecord, error: str) -> None:
        record.status, record.error = "failed", error
        self.ctx.warn(f"optimize trial {record.number} ({describe(record.recipe)}) failed: {error}")

    def _keep_front(self, record: TrialRecord, model: Any) -> None:
        """Save a trial that reaches the front now (so a cancel or a crash later keeps it); forget the models of
        trials it pushed off."""
        front = pareto_front(self.records)
        numbers = {r.number for r in front}
        for n in [n for n in self.models if n not in numbers]:
            del self.models[n]
        if record.number in numbers:
            self.models[record.number] = model
            t0 = time.monotonic()
            saved = self.on_front(record, model)
            self.measure_seconds.append(time.monotonic() - t0)
            if saved:
                record.variant = saved["id"]
                self.saved[record.number] = saved["id"]
                if self.goal.target == "latency" and "speedup" in saved.get("metrics", {}):
                    record.add_measurement(*self.goal.gain(saved["metrics"]))  # saving measured it again

    def _report(self, record: TrialRecord) -> None:
        goal = self.goal
        best, hit = choose_best(goal, self.records)
        metrics = {f"trial_{goal.gain_name}": record.gain, f"trial_{goal.quality}": record.figures[goal.quality],
                   "trial_drop": record.drop, "front_size": float(len(pareto_front(self.records)))}
        if best is not None:
            metrics[f"best_{goal.gain_name}"] = best.gain
        self.ctx.log(step=record.number, **metrics)
        self.ctx.info(f"trial {record.number}: {describe(record.recipe)}: {record.gain:.2f}x "
                      f"({record.gain_ci[0]:.2f}-{record.gain_ci[1]:.2f}), {goal.drop_words(record.drop)}, "
                      f"{record.seconds:.0f} s" + (f", saved as {record.variant}" if record.variant else ""))
        self.progress()

    def progress(self) -> None:
        goal = self.goal
        best, _ = choose_best(goal, self.records)
        done = sum(r.status not in ("repeat",) for r in self.records)
        shown = f"trial {done}" + (f"/{self.max_trials}" if self.max_trials else "")
        if best is not None:
            shown += f", best {best.gain:.1f}x at {goal.drop_words(best.drop)}"
        left = max(0.0, self.budget_s - self.elapsed())
        shown += f", {left:.0f} s left"
        if self.max_trials:
            self.ctx.progress(min(done, self.max_trials), self.max_trials, text=shown)
        else:
            self.ctx.progress(min(int(self.elapsed()), int(self.budget_s)), int(self.budget_s), text=shown)

    # stopping, estimates, hopeless trials ---------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def _done(self) -> int:
        return sum(r.status in ("ok", "failed") for r in self.records)

    def _stop_reason(self) -> str:
        tried = sum(r.status in ("ok", "failed", "pruned") for r in self.records)
        if self.max_trials and tried >= self.max_trials:
            return f"{self.max_trials} trials done"
        if self.stop_at_target and any(confident(self.goal, r) for r in self.records) \
                and len(pareto_front(self.records)) >= 2:  # a set to choose from, not a single point
            return "the target is met (its whole 95% interval) and the front has two points or more"
        if self._done() and self.elapsed() >= self.budget_s:
            return f"the budget of {self.budget_s:g} s is spent"
        return ""

    def _estimate(self, steps: list[Step]) -> float:
        """Seconds the trial should take: its uncached steps at the pace seen so far, and its measurements."""
        key: tuple[Any, ...] = ()
        total = 0.0
        for step in steps:
            key = key + (step.key(),)
            if key in self.stages.cache:
                continue
            seen = self.step_seconds.get(_cost_key(step))
            if seen:
                total += _median(seen) * _units(step)
        if self.measure_seconds:
            total += 2 * _median(self.measure_seconds)  # measuring it, and saving it should it reach the front
        return total

    def _hopeless(self, steps: list[Step]) -> str:
        """A trial whose structure was measured before (same pruning, fusing and quantizing; only the
        fine-tuning differs) cannot reach the front when a trial at least as fast lost nothing at all: it would
        have to beat the input's own quality."""
        shape = _structure(steps)
        same = [r for r in self.records if r.status == "ok" and _structure(self.plan(r.recipe)) == shape]
        if not same:
            return ""
        gain = max(r.gain for r in same)
        better = [r for r in self.records if r.status == "ok" and r.gain >= gain and r.drop <= 0.0]
        if better:
            return (f"trial {better[0].number} is at least as fast ({better[0].gain:.2f}x) and lost nothing: "
                    "fine-tuning this structure differently cannot reach the front")
        return ""


def _optuna_params(recipe: dict[str, Any]) -> dict[str, Any]:
    return dict(recipe)


def _cost_key(step: Step) -> str:
    if step.job == "prune":
        return f"prune:{step.params.get('allocation', step.params.get('scope', 'uniform'))}"
    return step.job


def _units(step: Step) -> float:
    """Training steps cost per epoch (or per optimizer step); the others per run."""
    if step.job in ("train", "distill"):
        return float(step.params.get("max_steps") or step.params.get("epochs") or 1)
    return 1.0


def _structure(steps: list[Step]) -> tuple[Any, ...]:
    return tuple(s.key() for s in steps if s.job not in ("train", "distill"))


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]
