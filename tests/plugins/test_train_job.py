"""The train job: accuracy, determinism, schedules, freezing, resume, early stopping, adversarial, errors."""

import math

import pytest
import torch

from workbench.core.execution.runner import JobRequest
from workbench.core.models.loading import load_variant_folder
from workbench.plugin import JobFailed


def _train(make_session, runner_for, params, model="zoo:mlp:hidden=32", dataset="digits:size=8", seed=0, out=None):
    session, root = make_session(model=model, dataset=dataset, seed=seed, out=out)
    runner = runner_for(session)
    return session, root, runner.run(JobRequest("train", params, root, "cpu", seed))


def test_mlp_learns_digits_and_reloads_exactly(make_session, runner_for):
    session, root, out = _train(make_session, runner_for, {"epochs": 5, "lr": 0.005})
    assert out.status == "ok", out.error
    assert out.metrics["accuracy"] >= 0.9
    variant = session.workspace.variant(out.variant)
    model = load_variant_folder(variant.path)
    from workbench.core.variants.measure import evaluate_accuracy

    assert round(evaluate_accuracy(model, session.data)["accuracy"], 6) == out.metrics["accuracy"]
    epochs = [m["epoch"] for _, m in out.history if "epoch" in m]
    assert epochs == [1, 2, 3, 4, 5]


def test_same_seed_same_result(make_session, runner_for, tmp_path):
    a = _train(make_session, runner_for, {"epochs": 2}, out=tmp_path / "a")[2]
    b = _train(make_session, runner_for, {"epochs": 2}, out=tmp_path / "b")[2]
    assert a.metrics["accuracy"] == b.metrics["accuracy"] and a.metrics["loss"] == b.metrics["loss"]


@pytest.mark.parametrize("params", [
    {"optimizer": "sgd", "lr": 0.1, "schedule": "step", "step_size": 1},
    {"optimizer": "adamw", "weight_decay": 0.01, "schedule": "cosine", "label_smoothing": 0.1},
    {"schedule": "plateau", "grad_clip": 1.0},
    {"adversarial": "fgsm", "epsilon": 0.05},
    {"adversarial": "pgd", "epsilon": 0.05},
])
def test_options_train_to_a_useful_model(make_session, runner_for, params):
    out = _train(make_session, runner_for, {"epochs": 3, "lr": 0.005, **params})[2]
    assert out.status == "ok", out.error
    assert out.metrics["accuracy"] > 0.6
    lrs = [m["lr"] for _, m in out.history if "lr" in m]
    if params.get("schedule") == "step":
        assert lrs[1] == pytest.approx(lrs[0] * 0.1)


def test_freeze_all_but_last_keeps_the_body(make_session, runner_for):
    session, root, out = _train(make_session, runner_for, {"epochs": 1, "freeze": "all_but_last"})
    before = load_variant_folder(session.workspace.variant(root).path)
    after = load_variant_folder(session.workspace.variant(out.variant).path)
    changed = {k for k, v in after.state_dict().items() if not torch.equal(v, before.state_dict()[k])}
    assert changed == {"classifier.weight", "classifier.bias"}


def test_freeze_unknown_module_is_bad_input(make_session, runner_for):
    out = _train(make_session, runner_for, {"epochs": 1, "freeze": "nope"})[2]
    assert out.status == "failed" and out.bad_input and "nope" in out.error


def test_early_stopping_stops_before_the_last_epoch(make_session, runner_for):
    out = _train(make_session, runner_for, {"epochs": 60, "patience": 1, "lr": 0.05})[2]
    assert out.status == "ok"
    epochs = [m["epoch"] for _, m in out.history if "epoch" in m]
    assert len(epochs) < 60


def test_resume_continues_after_the_last_completed_epoch(make_session, runner_for, tmp_path):
    from workbench.core.jobs.registry import registry
    from workbench_plugins.train import TrainJob

    class Crash(Exception):
        pass

    session, root = make_session(out=tmp_path / "ws")
    runner = runner_for(session)
    original = TrainJob.run

    def crash_after_two_epochs(self, ctx):
        real_log = ctx.log

        def log(step=None, **m):
            real_log(step=step, **m)
            if m.get("epoch") == 2:
                ctx._crash_next = True

        ctx.log = log
        real_progress = ctx.progress

        def progress(done, total, text=""):
            if getattr(ctx, "_crash_next", False) and "epoch 3" in text:
                raise Crash("simulated kill during epoch 3")
            real_progress(done, total, text)

        ctx.progress = progress
        return original(self, ctx)

    TrainJob.run = crash_after_two_epochs
    try:
        first = runner.run(JobRequest("train", {"epochs": 4}, root, "cpu"))
    finally:
        TrainJob.run = original
    assert first.status == "failed" and "simulated kill" in first.error
    assert list((tmp_path / "ws" / "checkpoints").glob("train-*.pt"))
    second = runner.run(JobRequest("train", {"epochs": 4, "resume": True}, root, "cpu"))
    assert second.status == "ok"
    assert [m["epoch"] for _, m in second.history if "epoch" in m] == [3, 4]
    assert not list((tmp_path / "ws" / "checkpoints").glob("train-*.pt"))
    assert registry().load("train") is TrainJob


def test_auto_batch_halves_on_out_of_memory(make_session, runner_for, monkeypatch):
    from workbench_plugins import _training

    calls = {"n": 0}
    original = _training.TrainLoop._epoch

    def flaky(self, epoch):
        if self.batch_size > 8:
            calls["n"] += 1
            raise RuntimeError("CUDA out of memory (simulated)")
        return original(self, epoch)

    monkeypatch.setattr(_training.TrainLoop, "_epoch", flaky)
    out = _train(make_session, runner_for, {"epochs": 1, "batch_size": 32, "auto_batch": True})[2]
    assert out.status == "ok" and calls["n"] == 2


def test_every_zoo_model_trains_one_epoch(make_session, runner_for, tmp_path):
    cases = [("zoo:seed_cnn:width=0.25", "synthetic:n=96,shape=1x20x20"),
             ("zoo:lenet5:width=0.5", "synthetic:n=96,shape=1x16x16"),
             ("zoo:mlp:hidden=16", "synthetic:kind=tabular,n=96"),
             ("zoo:resnet8:width=0.25", "synthetic:n=96,shape=3x16x16"),
             ("zoo:resnet18:width=0.125", "synthetic:n=96,shape=3x16x16"),
             ("zoo:mobilenet_v2:width=0.25", "synthetic:n=96,shape=3x16x16"),
             ("zoo:lstm_classifier:width=0.25", "synthetic:kind=text,n=96,seq_len=12,vocab=50"),
             ("zoo:transformer_encoder:width=0.25", "synthetic:kind=text,n=96,seq_len=12,vocab=50")]
    for i, (model, dataset) in enumerate(cases):
        out = _train(make_session, runner_for, {"epochs": 1}, model=model, dataset=dataset, out=tmp_path / str(i))[2]
        assert out.status == "ok", (model, out.error)
        assert 0.0 <= out.metrics["accuracy"] <= 1.0 and out.metrics["params"] > 0


def test_online_learning_on_another_dataset_with_the_same_classes(make_session, runner_for, tmp_path):
    session, root, out = _train(make_session, runner_for, {"epochs": 1}, out=tmp_path / "ws")
    assert out.status == "ok"
    other, _ = make_session(dataset="digits:size=8", seed=3, out=tmp_path / "ws")
    runner = runner_for(other)
    again = runner.run(JobRequest("train", {"epochs": 1}, out.variant, "cpu"))
    assert again.status == "ok"
    mismatch, _ = make_session(dataset="synthetic:kind=tabular,features=64,classes=3", out=tmp_path / "ws")
    bad = runner_for(mismatch).run(JobRequest("train", {"epochs": 1}, out.variant, "cpu"))
    assert bad.status == "failed" and "3 classes" in bad.error


def _loop(tmp_path, loss_fn=None, **overrides):
    """A TrainLoop on digits with a bare context, for looking inside the loop; returns (loop, data, events)."""
    from tests.plugins.helpers import job_context
    from workbench.core.data import load_dataset
    from workbench.core.models import load_model
    from workbench_plugins._training import TrainLoop, TrainSettings

    data = load_dataset("digits:size=8", seed=0)
    torch.manual_seed(0)
    model = load_model("zoo:mlp:hidden=32", data.info)
    events = []
    ctx = job_context(model, data, tmp_path, job_name="train")
    ctx._emit = events.append
    settings = dict(epochs=3, batch_size=32, lr=5e-3, optimizer="adam", momentum=0.9, weight_decay=0.0,
                    schedule="constant", step_size=5, gamma=0.1, patience=0, grad_clip=1.0, amp="off",
                    auto_batch=False)
    settings.update(overrides)

    def cross_entropy(net, x, y):
        return torch.nn.functional.cross_entropy(net(x), y)

    return TrainLoop(ctx, model, TrainSettings(**settings), loss_fn or cross_entropy), data, events


@pytest.mark.parametrize("amp, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_on_the_cpu_runs_under_autocast(tmp_path, amp, dtype):
    """The AMP path is the one CUDA takes (autocast, and loss scaling for fp16), run on the CPU's autocast."""
    from workbench.core.variants.measure import evaluate_accuracy

    seen = []

    def loss_fn(net, x, y):
        logits = net(x)
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), logits.dtype))
        return torch.nn.functional.cross_entropy(logits.float(), y)

    loop, data, _ = _loop(tmp_path, loss_fn, amp=amp)
    assert (loop.scaler is not None) == (amp == "fp16")
    trained = loop.fit()
    assert seen and all(s == (True, dtype, dtype) for s in seen)
    assert next(trained.parameters()).dtype == torch.float32  # the master weights stay fp32
    assert evaluate_accuracy(trained, data)["accuracy"] > 0.85


def test_losses_read_in_groups_give_the_same_run(tmp_path):
    """On a GPU the loop reads step losses 16 at a time; the metrics and the model must not change."""
    runs = []
    for read_every in (1, 5):
        loop, _, events = _loop(tmp_path / str(read_every))
        loop.read_every = read_every
        model = loop.fit()
        steps = [(e.data["step"], {k: v for k, v in e.data["metrics"].items() if k != "samples_per_s"})
                 for e in events if e.kind == "metric"]
        runs.append((steps, model.state_dict()))
    (steps_1, state_1), (steps_5, state_5) = runs
    assert len(steps_1) > 100 and steps_1 == steps_5
    assert all(torch.equal(state_1[k], state_5[k]) for k in state_1)


def test_a_non_finite_loss_read_in_a_group_names_its_own_step(tmp_path):
    calls = []

    def loss_fn(net, x, y):
        calls.append(1)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        return loss * math.inf if len(calls) == 7 else loss

    loop, _, _ = _loop(tmp_path, loss_fn)
    loop.read_every = 5
    with pytest.raises(JobFailed, match=r"non-finite loss \(inf\) at epoch 1, step 7:"):
        loop.fit()
    assert len(calls) == 10  # found when the second group of five was read


def test_mixed_precision_job_trains_without_warnings(make_session, runner_for):
    session, root, out = _train(make_session, runner_for, {"epochs": 3, "lr": 0.005, "amp": "bf16"})
    assert out.status == "ok", out.error
    assert out.metrics["accuracy"] > 0.85


def test_divergence_guard_trips_on_explosion_not_on_noise():
    from workbench_plugins._training import DivergenceGuard

    guard = DivergenceGuard(100.0)
    assert not any(guard.diverged(v) for v in [2.3, 2.0, 50.0, 1.5, 0.8, 120.0, 0.5])  # spikes are smoothed
    assert any(guard.diverged(v) for v in [1e4] * 30)
    fine_tune = DivergenceGuard(100.0)  # a near-zero start is floored at 1.0: noise of 0.5 is not divergence
    assert not any(fine_tune.diverged(v) for v in [0.001, 0.5, 0.3, 0.9, 0.2])
    assert not any(DivergenceGuard(0.0).diverged(v) for v in [1.0, 1e30])


def test_diverging_adam_fails_the_job_and_keeps_the_workspace(make_session, runner_for):
    session, root, out = _train(make_session, runner_for, {"epochs": 2, "lr": 1e6})
    assert out.status == "failed"
    assert "the loss diverged at epoch 1" in out.error and "lr=1e+06" in out.error
    assert [v.id for v in session.workspace.variants()] == [root]


def test_a_model_that_learned_nothing_is_flagged(make_session, runner_for):
    session, root, out = _train(make_session, runner_for, {"epochs": 1, "lr": 0.0})
    assert out.status == "ok", out.error
    assert out.metrics["accuracy"] <= 0.15 and "at chance level" in out.marks
    learned = _train(make_session, runner_for, {"epochs": 3, "lr": 0.005}, out=session.workspace.root.parent / "b")[2]
    assert learned.metrics["accuracy"] > 0.8 and "at chance level" not in learned.marks
