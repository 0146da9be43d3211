"""Data-parallel jobs through torch.distributed (gloo on the CPU): the launcher, rank errors, cancel, DDP accuracy."""

from __future__ import annotations

import json
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from tests.conftest import run_cli
from workbench.core.batch import run_distributed_batch
from workbench.core.errors import InputError, JobFailed
from workbench.core.execution.distributed import (
    LaunchOptions,
    _rank_error,
    _Tail,
)
from workbench.core.execution.runner import JobRequest, Runner
from workbench.core.jobs.events import METRIC
from workbench.core.pipeline import Pipeline, Step

FAILING_PLUGIN = '''
from workbench.plugin import Job, JobFailed, Param


class Boom(Job):
    name = "boom"
    data_parallel = True
    processes: int = Param(1, min=1, max=8, help="ranks")

    def run(self, ctx):
        if ctx.parallel.rank == 1:
            raise JobFailed("rank one broke on purpose")
        ctx.parallel.sum(1.0)  # blocks until the peer is gone, like a rank waiting in an all-reduce
        return ctx.model
'''


def test_launch_options_are_checked():
    LaunchOptions(2, 2, 1, "10.0.0.1", 29500).check()
    for bad in (LaunchOptions(0), LaunchOptions(2, 2, 2), LaunchOptions(2, master_port=70000)):
        with pytest.raises(InputError):
            bad.check()


def test_tail_returns_complete_lines_only(tmp_path):
    path = tmp_path / "events.jsonl"
    tail = _Tail(path)
    assert tail.read() == []
    path.write_text('{"kind": "metric"}\n{"kind": "lo')
    assert tail.read() == [{"kind": "metric"}]
    with path.open("a") as f:
        f.write('g"}\n')
    assert tail.read() == [{"kind": "log"}]


def test_ranks_split_each_global_batch_of_the_single_process_order():
    """Interleaving the ranks' shares gives exactly the order a one-process train loader uses."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from workbench.core.execution.distributed_rank import SameOrderSampler

    n, seed, epoch = 37, 5, 3
    generator = torch.Generator()
    generator.manual_seed(seed + epoch)
    single = [int(v) for (b,) in DataLoader(TensorDataset(torch.arange(n)), batch_size=8, shuffle=True,
                                            generator=generator) for v in b]
    shares = []
    for rank in range(2):
        sampler = SameOrderSampler(range(n), num_replicas=2, rank=rank, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        shares.append(list(sampler))
    assert len(shares[0]) == len(shares[1]) == 19  # padded to an even split, like DistributedSampler
    assert [v for pair in zip(*shares) for v in pair][:n] == single


def test_rank_error_prefers_the_first_real_failure(tmp_path):
    errors = tmp_path / "errors"
    errors.mkdir()
    (errors / "rank-0.json").write_text(json.dumps({"rank": 0, "kind": "error", "message": "RuntimeError: peer "
                                                    "closed", "time": 1.0}))
    (errors / "rank-1.json").write_text(json.dumps({"rank": 1, "kind": "input", "message": "bad batch", "time": 2.0}))
    err = _rank_error(tmp_path, tmp_path / "launcher.log", 1)
    assert isinstance(err, InputError) and str(err) == "rank 1: bad batch"
    (errors / "rank-1.json").unlink()
    (errors / "rank-0.json").unlink()
    (tmp_path / "launcher.log").write_text("torchrun said\nlast words\n")
    err = _rank_error(tmp_path, tmp_path / "launcher.log", 1)
    assert isinstance(err, JobFailed) and "last words" in str(err)


def test_processes_without_the_launcher_is_a_clear_error(make_session):
    session, root = make_session()
    from workbench.core.execution.executors import InlineExecutor

    runner = Runner(session, executor=lambda device: InlineExecutor(session))  # no distributed executor behind it
    try:
        outcome = runner.run(JobRequest("train", {"epochs": 1, "processes": 2}, root, "cpu"))
    finally:
        runner.shutdown()
    assert outcome.status == "failed" and outcome.bad_input
    assert "distributed launcher" in outcome.error
    assert len(session.workspace.variants()) == 1


def test_nproc_needs_a_data_parallel_step():
    pipe = Pipeline(model="zoo:mlp", dataset="digits:size=8", steps=[Step("evaluate", {})])
    args = type("Args", (), {"nproc_per_node": 2, "nnodes": 1, "node_rank": 0, "master_addr": None,
                             "master_port": None, "quiet": True, "json": False, "trust": False})()
    with pytest.raises(InputError, match="data-parallel"):
        run_distributed_batch(pipe, args)


@pytest.mark.skipif(sys.platform == "win32", reason="process groups (killpg) are POSIX")
def test_a_failing_rank_fails_the_job_and_keeps_the_workspace(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "boom.py").write_text(textwrap.dedent(FAILING_PLUGIN))
    out = tmp_path / "ws"
    result = run_cli("--batch", "--plugin-path", str(plugins), "--model", "zoo:mlp:hidden=16", "--dataset",
                     "digits:size=8", "--job", "boom", "--nproc-per-node", "2", "--out", str(out), "--quiet",
                     timeout=240)
    assert result.returncode == 1, result.stderr
    assert "rank 1: rank one broke on purpose" in result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["steps"][-1]["status"] == "failed"
    from workbench.core.workspace import Workspace

    ws = Workspace(out)
    try:
        assert [v.id for v in ws.variants()] == ["v0001"]
    finally:
        ws.close()
    assert sorted(p.name for p in (out / "variants").iterdir()) == ["v0001"]


def _descendants() -> set[int]:
    """Live (non-zombie) descendant processes of this one, from /proc."""
    parents: dict[int, tuple[int, str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = (int(fields[1]), fields[0])
    import os

    found, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, (ppid, state) in parents.items() if ppid in frontier and state != "Z"} - found
        found |= frontier
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cancel_stops_every_rank(make_session):
    session, root = make_session(model="zoo:mlp:hidden=16")
    runner = Runner(session, launch=LaunchOptions())
    first_metric = threading.Event()
    runner.bus.subscribe(lambda e: first_metric.set() if e.kind == METRIC else None)
    before = _descendants()
    handle = runner.submit(JobRequest("train", {"epochs": 200, "processes": 2}, root, "cpu"))
    try:
        assert first_metric.wait(180), "rank 0's metrics never arrived"
        launched = _descendants() - before
        assert len(launched) >= 3  # torchrun and its two ranks
        handle.cancel()
        outcome = handle.wait(60)
    finally:
        runner.shutdown()
    assert outcome is not None and outcome.status == "cancelled"
    assert outcome.history, "rank 0's metrics were replayed into the job's history"
    assert launched & _descendants() == set()
    assert len(session.workspace.variants()) == 1


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    """Same global batch, epochs and seed: within 1 point of test accuracy, and exactly one new variant."""
    accuracy = {}
    for nproc in (1, 2):
        out = tmp_path / f"n{nproc}"
        result = run_cli("--batch", "--model", "zoo:seed_cnn", "--dataset", "digits", "--seed", "0", "--job",
                         "train:epochs=3,batch_size=32", "--nproc-per-node", str(nproc), "--out", str(out),
                         "--json", timeout=400)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        step = report["steps"][-1]
        assert step["status"] == "ok" and step["parent"] == "v0001" and step["variant"] == "v0002"
        assert sorted(p.name for p in Path(out, "variants").iterdir()) == ["v0001", "v0002"]
        accuracy[nproc] = step["metrics"]["accuracy"]
        if nproc == 2:
            assert step["params"]["processes"] == 2
            history = json.loads((out / "report.json").read_text())
            assert history["steps"][-1]["metrics"]["accuracy"] == accuracy[2]
    assert accuracy[1] > 0.85
    assert abs(accuracy[2] - accuracy[1]) <= 0.01, accuracy


def test_two_nodes_on_one_machine(tmp_path):
    """--nnodes 2: node 1 (another machine in real use, here a second command) starts its rank, node 0 owns the
    workspace; the follower needs no copy of the model (rank 0 broadcasts the variant) and writes nothing."""
    import subprocess

    from workbench.core.execution.distributed import _free_port

    port = str(_free_port())
    common = ["--batch", "--model", "zoo:seed_cnn", "--dataset", "digits", "--seed", "0", "--job",
              "train:epochs=2,batch_size=32", "--nproc-per-node", "1", "--nnodes", "2",
              "--master-addr", "127.0.0.1", "--master-port", port]
    exe = Path(sys.executable).parent / "workbench"
    follower = subprocess.Popen([str(exe), *common, "--node-rank", "1", "--out", str(tmp_path / "node1")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        result = run_cli(*common, "--node-rank", "0", "--out", str(tmp_path / "node0"), "--json", timeout=400)
        follower_out, follower_err = follower.communicate(timeout=120)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert result.returncode == 0, result.stderr
    assert follower.returncode == 0, follower_err
    step = json.loads(result.stdout)["steps"][-1]
    assert step["status"] == "ok" and step["variant"] == "v0002" and step["metrics"]["accuracy"] > 0.8
    assert sorted(p.name for p in (tmp_path / "node0" / "variants").iterdir()) == ["v0001", "v0002"]
    assert "node 1: step 1/1 train: starting 1 ranks" in follower_err
    assert not (tmp_path / "node1").exists()


def test_a_language_model_trains_in_two_ranks_like_in_one(tmp_path):
    """A language model's variant is a Hugging Face folder (config, tokenizer, weights): the ranks must get all
    of it (they once got only the weights and failed with 'not a Hugging Face model folder'), rank 0 must save it
    as such a folder, and the same global batches give the one-process run's perplexity."""
    perplexity = {}
    for nproc in (1, 2):
        out = tmp_path / f"n{nproc}"
        result = run_cli("--batch", "--model", "zoo:tiny_llama:hidden=32,layers=2,heads=2,kv_heads=1", "--dataset",
                         "pydocs:seq_len=32", "--seed", "0", "--job", "train:max_steps=6,batch_size=4",
                         "--nproc-per-node", str(nproc), "--out", str(out), "--json", timeout=400)
        assert result.returncode == 0, result.stderr
        step = json.loads(result.stdout)["steps"][-1]
        assert step["status"] == "ok" and step["variant"] == "v0002" and step["task"] == "causal_lm"
        assert {"config.json", "tokenizer.json", "model.safetensors"} <= {p.name for p in (out / "variants" / "v0002").iterdir()}
        perplexity[nproc] = step["metrics"]["perplexity"]
    assert perplexity[2] == pytest.approx(perplexity[1], rel=2e-3), perplexity
