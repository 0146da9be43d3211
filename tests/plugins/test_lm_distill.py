"""``distill`` on a language model: token-level KL to a trained teacher brings the student closer to it than the same
student trained alone for the same steps, and beats it on perplexity; hidden-state hints train
through a projection; a vocabulary mismatch and bad hints refuse."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.core.lm.lm_helpers import make_corpus
from tests.plugins.helpers import Bench, job_context
from workbench.core.data import load_dataset
from workbench.core.lm.model import tiny_llama
from workbench.core.models import load_model
from workbench.plugin import InputError, task_of
from workbench_plugins.distill import DistillJob
from workbench_plugins.train import TrainJob

TEACHER = "zoo:tiny_llama:hidden=48,layers=2,heads=2,kv_heads=1"
STUDENT = "zoo:tiny_llama:hidden=32,layers=1,heads=2,kv_heads=1"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lmdistill")
    data = load_dataset(f"text:{make_corpus(tmp / 'corpus.txt', lines=400)}:seq_len=16,vocab=300", seed=0)
    torch.manual_seed(0)
    teacher = load_model(TEACHER, data.info)
    teacher = TrainJob(max_steps=80, batch_size=16, lr=5e-3).run(job_context(teacher, data, tmp, "train")).eval()
    return data, teacher, tmp


def _kl(student, teacher, data) -> float:
    x = torch.cat([x for x, _ in data.loader("test", shuffle=False)])[:64]
    with torch.no_grad():
        s, t = student(x).flatten(0, 1), teacher(x).flatten(0, 1)
    return float(F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), reduction="batchmean", log_target=True))


def test_distill_lowers_kl_and_beats_training_alone(setup):
    data, teacher, tmp = setup
    task = task_of(data.info)
    torch.manual_seed(0)
    untrained = load_model(STUDENT, data.info).eval()
    steps = dict(max_steps=40, batch_size=16)
    ctx = job_context(teacher, data, tmp, "distill")
    student = DistillJob(student=STUDENT, **steps).run(ctx).eval()
    assert ctx.result["alpha"] == 0.9 and ctx.result["temperature"] == 1.0 and ctx.result["lr"] == 2e-3
    assert ctx.result["student_params"] < ctx.result["teacher_params"]
    torch.manual_seed(0)
    alone = TrainJob(**steps).run(job_context(load_model(STUDENT, data.info), data, tmp, "train")).eval()
    kl = {name: _kl(m, teacher, data) for name, m in (("untrained", untrained), ("distilled", student),
                                                        ("alone", alone))}
    ppl = {name: task.evaluate(m, data, "test")["perplexity"] for name, m in (("distilled", student),
                                                                              ("alone", alone))}
    assert kl["distilled"] < 0.5 * kl["untrained"] and kl["distilled"] < kl["alone"], kl
    assert ppl["distilled"] < ppl["alone"], ppl


def test_vocabulary_mismatch_and_hints_refuse(setup):
    data, teacher, tmp = setup
    other = tiny_llama((16,), 400, layers=1, hidden=32, heads=2, kv_heads=1)  # another tokenizer's vocabulary
    with pytest.raises(InputError, match="vocabulary has 300 tokens but the teacher's has 400") as err:
        DistillJob(student=STUDENT, max_steps=1).run(job_context(other, data, tmp, "distill"))
    assert "\n" not in str(err.value)
    ctx = job_context(teacher, data, tmp, "distill")
    with pytest.raises(InputError, match="decoder-block indices"):
        DistillJob(student=STUDENT, hints=["a:b"], max_steps=1).run(ctx)
    with pytest.raises(InputError, match="the student has 1 decoder blocks, no block 3"):
        DistillJob(student=STUDENT, hints=["3:1"], max_steps=1).run(job_context(teacher, data, tmp, "distill"))


def test_hidden_state_hints_train_a_projection_and_leave_no_hooks(setup):
    """Student width 32, teacher 48: the hint goes through a learned projection; the saved student has no hooks."""
    data, teacher, tmp = setup
    from workbench_plugins._lm_distill import BlockHints

    torch.manual_seed(0)
    student = load_model(STUDENT, data.info)
    x = data.example_batch(4)
    hints = BlockHints(student, teacher, [(0, 1)], x)
    assert isinstance(hints.adapters[0], torch.nn.Linear) and hints.adapters[0].weight.shape == (48, 32)
    teacher(x), student(x)
    before = float(hints.loss())
    opt = torch.optim.Adam(list(student.parameters()) + list(hints.adapters.parameters()), lr=1e-2)
    for _ in range(30):
        with torch.no_grad():
            teacher(x)
        student(x)
        loss = hints.loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.5 * before
    hints.remove()
    ctx = job_context(teacher, data, tmp, "distill")
    out = DistillJob(student=STUDENT, hints=["0:-1"], hint_weight=0.5, max_steps=3, batch_size=8).run(ctx)
    assert not any(m._forward_hooks for m in out.modules()) and not any(m._forward_hooks for m in teacher.modules())


def test_distill_runs_through_the_runner(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bench = Bench(tmp_path / "ws", f"text:{make_corpus(tmp_path / 'c.txt', lines=200)}:seq_len=16,vocab=300")
    try:
        bench.session.bench_batch = 1
        root = bench.add(STUDENT)
        out = bench.ok("distill", root, student=STUDENT, max_steps=3, batch_size=4, lr=3e-3)
        assert "perplexity" in bench.session.workspace.variant(out.variant).metrics
        assert out.result["teachers"] == [root] and out.result["teacher_perplexity"] > 1
        assert out.result["lr"] == 3e-3 and out.result["batch_size"] == 4  # chosen values beat the LM defaults
    finally:
        bench.close()
