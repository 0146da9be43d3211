"""The distill job: soft-target loss, single and ensemble teachers, feature hints, teacher reference, errors."""

import pytest
import torch
import torch.nn.functional as F

from tests.plugins.helpers import trained_variant
from workbench.core.execution.runner import JobRequest
from workbench.core.models.loading import load_variant_folder
from workbench_plugins._distillation import kd_loss, parse_hints

TEACHER = "zoo:mlp:hidden=64"
STUDENT = "zoo:mlp:hidden=8,depth=1"


@pytest.fixture
def trained(make_session, runner_for):
    """A session with a trained MLP teacher; returns (session, runner, teacher id)."""
    return trained_variant(make_session, runner_for, TEACHER, epochs=4, lr=0.005)


def test_kd_loss_reduces_to_cross_entropy_and_vanishes_on_equal_logits():
    s, t, y = torch.randn(6, 4), torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    assert torch.allclose(kd_loss(s, t, y, 4.0, 0.0), F.cross_entropy(s, y))
    assert kd_loss(s, s, y, 3.0, 1.0).abs() < 1e-6
    soft = F.kl_div(F.log_softmax(s / 2, 1), F.softmax(t / 2, 1), reduction="batchmean")
    assert torch.allclose(kd_loss(s, t, y, 2.0, 1.0), 4 * soft, atol=1e-6)


def test_student_learns_from_the_teacher_and_logs_its_reference(trained):
    session, runner, teacher = trained
    out = runner.run(JobRequest("distill", {"student": STUDENT, "epochs": 4}, teacher, "cpu", 0))
    assert out.status == "ok", out.error
    result = session.workspace.variant(out.variant).result
    assert result["student_params"] < result["teacher_params"] / 4
    assert out.metrics["params"] == result["student_params"]
    assert out.metrics["accuracy"] > 0.8
    refs = [m["teacher_accuracy"] for _, m in out.history if "teacher_accuracy" in m]
    assert len(refs) == 4 and len(set(refs)) == 1 and refs[0] == pytest.approx(result["teacher_val_accuracy"])
    assert [m["epoch"] for _, m in out.history if "epoch" in m] == [1, 2, 3, 4]
    reloaded = load_variant_folder(session.workspace.variant(out.variant).path)
    assert sum(p.numel() for p in reloaded.parameters()) == result["student_params"]


def test_ensemble_teacher_and_variant_student(trained):
    session, runner, teacher = trained
    other = runner.run(JobRequest("train", {"epochs": 2, "lr": 0.005}, teacher, "cpu", 1))
    small = runner.run(JobRequest("distill", {"student": STUDENT, "epochs": 1}, teacher, "cpu", 0))
    params = {"teachers": [teacher, other.variant], "student": small.variant, "epochs": 2}
    out = runner.run(JobRequest("distill", params, teacher, "cpu", 0))
    assert out.status == "ok", out.error
    result = session.workspace.variant(out.variant).result
    assert result["teachers"] == [teacher, other.variant]
    assert out.metrics["params"] == session.workspace.variant(small.variant).metrics["params"]


def test_feature_hints_train_an_adapter(make_session, runner_for):
    session, root = make_session(model="zoo:resnet8:width=0.5")
    runner = runner_for(session)
    params = {"student": "zoo:resnet8:width=0.25", "epochs": 1, "hints": ["layers.0:layers.0", "stem:stem"]}
    out = runner.run(JobRequest("distill", params, root, "cpu", 0))
    assert out.status == "ok", out.error
    model = load_variant_folder(session.workspace.variant(out.variant).path)
    assert not any(m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("params, words", [
    ({"hints": ["nope"]}, "student_layer:teacher_layer"),
    ({"hints": ["missing:features.0"]}, "missing"),
    ({"student": ""}, "student"),
    ({"teachers": ["v0999"]}, "v0999"),
])
def test_bad_input_is_reported(make_session, runner_for, params, words):
    session, root = make_session(model=TEACHER)
    out = runner_for(session).run(JobRequest("distill", {"student": STUDENT, "epochs": 1, **params}, root, "cpu", 0))
    assert out.status == "failed" and words in out.error


def test_parse_hints():
    assert parse_hints(["a.b:c", " x : y "]) == [("a.b", "c"), ("x", "y")]
