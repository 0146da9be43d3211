"""Helpers shared by the plugin tests: a quick training loop, a tiny trained Llama, a bare JobContext, and a
workspace bench."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from workbench.core.data import load_dataset
from workbench.core.execution.runner import JobRequest, Runner, RunOutcome
from workbench.core.execution.session import Session
from workbench.core.models import load_model
from workbench.core.workspace import Workspace
from workbench.plugin import JobContext


def trained_tiny_llama(tmp: Path, model_spec: str) -> Iterator[tuple[str, object, dict, Path]]:
    """A module fixture's body: ``model_spec`` trained one epoch of Adam on a small generated corpus, seeded;
    yields (dataset spec, data, state dict, tmp) with the tokenizer cache kept in ``tmp``."""
    from tests.core.lm.lm_helpers import make_corpus
    from workbench.core.tasks.causal_lm import CausalLMTask

    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp / "cache"))
    try:
        spec = f"text:{make_corpus(tmp / 'corpus.txt', lines=300)}:seq_len=32,vocab=300"
        data = load_dataset(spec, seed=0)
        torch.manual_seed(0)
        model = load_model(model_spec, data.info)
        opt = torch.optim.Adam(model.parameters(), lr=5e-3)
        task = CausalLMTask()
        model.train()
        for x, y in data.loader("train", batch_size=16, shuffle=True):  # one epoch: enough for the orderings
            opt.zero_grad()
            task.training_loss(model(x), y).backward()
            opt.step()
        yield spec, data, {k: v.clone() for k, v in model.state_dict().items()}, tmp
    finally:
        mp.undo()


def fresh_copy(model_spec: str, trained: tuple[str, object, dict, Path]) -> torch.nn.Module:
    """A new model from ``model_spec`` holding the trained weights of ``trained_tiny_llama``, in eval mode."""
    _, data, state, _ = trained
    model = load_model(model_spec, data.info)
    model.load_state_dict(state)
    return model.eval()


def train_briefly(model: torch.nn.Module, data, epochs: int = 3, lr: float = 3e-3) -> torch.nn.Module:
    """A few epochs of Adam, seeded: enough for a model whose accuracy after a job means something."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for x, y in data.loader("train", shuffle=True):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()


def job_context(model, data, workdir: Path, job_name: str = "quantize", bench_batch: int = 32) -> JobContext:
    """A context for calling ``Job.run`` directly, without a runner or a workspace."""
    from workbench.core.variants.measure import evaluate_accuracy

    return JobContext(run_id=1, job_name=job_name, model=model, data=data, device=torch.device("cpu"),
                      workdir=workdir, emit=lambda event: None, cancel_event=threading.Event(),
                      evaluate=lambda m, split="test": {}, load_variant=None, variant_id="v0001",
                      accuracy=lambda m, split="val": evaluate_accuracy(m, data, split, "cpu"),
                      bench_batch=bench_batch)


class Bench:
    """A workspace + runner on one dataset, for driving jobs exactly as the CLI does."""

    def __init__(self, root: Path, dataset: str) -> None:
        self.data = load_dataset(dataset, seed=0)
        self.session = Session(Workspace(root), self.data, seed=0)
        self.runner = Runner(self.session)

    def add(self, spec: str) -> str:
        return self.session.add_root(load_model(spec, self.data.info), spec).id

    def run(self, job: str, variant: str, **params: object) -> RunOutcome:
        return self.runner.run(JobRequest(job, dict(params), variant, "cpu", 0))

    def ok(self, job: str, variant: str, **params: object) -> RunOutcome:
        outcome = self.run(job, variant, **params)
        assert outcome.status == "ok", outcome.error
        return outcome

    def folder(self, variant: str) -> Path:
        return self.session.workspace.variant(variant).path

    def close(self) -> None:
        self.runner.shutdown()
        self.session.workspace.close()


def trained_variant(make_session, runner_for, model: str, **train_params: object):
    """A session whose root ``model`` was trained once; returns (session, runner, trained variant id)."""
    session, root = make_session(model=model)
    runner = runner_for(session)
    out = runner.run(JobRequest("train", dict(train_params), root, "cpu", 0))
    assert out.status == "ok", out.error
    return session, runner, out.variant
